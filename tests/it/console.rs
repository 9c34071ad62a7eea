//! The console's routes against a daemon running in-process from a config
//! file in a temporary folder (with its own copy of the templates), as an
//! operator runs it: accounts made with `duebell users`, logins, roles,
//! CSRF, publishing templates and saving settings into the files, and the
//! daemon using both without a restart.

use crate::console_support::{add_user, users, write_shipped_config};
use crate::console_support::{ConsoleDaemon, ADMIN_TOKEN, PASSWORD, VIEWER_TOKEN};
use crate::support::duebell;

const SMS: &str = "/v1/templates/en/due_today/sms";
const GOOD: &str = "{{ lender.name }}: Hi {{ borrower.name }}, your payment is due today. Pay: {{ lender.payment_link }} {{ opt_out }}\n";

/// Due today at 10:00 in Shanghai (02:00 UTC), English, SMS and email.
const AMY: &str =
    "A1,BA,Amy Chen,+8613812345678,amy@example.com,en,Asia/Shanghai,2026-12-01,100.00,CNY,active";

#[tokio::test]
async fn every_route_refuses_a_caller_without_the_role_and_a_change_without_the_csrf_token() {
    let d = ConsoleDaemon::start("2026-11-30T02:00:00Z", &[AMY]).await;
    let c = reqwest::Client::new();
    // No caller at all.
    let r = c
        .get(format!("{}/v1/templates", d.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // A page without a session goes to the login page.
    let r = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("{}/console/templates", d.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(
        r.headers()["location"],
        "/console/login?next=%2Fconsole%2Ftemplates"
    );

    let vic = d.login("vic").await;
    let (s, t) = vic.get(SMS).await;
    assert_eq!(s, 200, "{t}");
    let base = t["base"].as_str().unwrap().to_owned();
    // A viewer reads but does not publish, with or without the token.
    let (s, e) = vic
        .send(
            "PUT",
            SMS,
            serde_json::json!({ "files": { "en/due_today.sms.j2": GOOD }, "base": base }),
        )
        .await;
    assert_eq!(s, 403, "{e}");
    assert!(
        e["error"].as_str().unwrap().contains("editor, admin"),
        "{e}"
    );
    // Nor asks for an impact preview (a pass over the whole book).
    assert_eq!(
        vic.send("POST", "/v1/settings/impact", serde_json::json!({}))
            .await
            .0,
        403
    );
    // A viewer does not see borrowers.
    assert_eq!(vic.get("/v1/borrowers?q=BA").await.0, 403);
    assert_eq!(vic.get("/v1/borrowers/BA/timeline").await.0, 403);

    let eve = d.login("eve").await;
    // An editor's change without the CSRF token is refused, and nothing changes.
    let r = eve
        .client
        .put(format!("{}{SMS}", d.base))
        .header("cookie", &eve.cookie)
        .json(&serde_json::json!({ "files": { "en/due_today.sms.j2": GOOD }, "base": base }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("CSRF"));
    let r = eve
        .client
        .put(format!("{}{SMS}", d.base))
        .header("cookie", &eve.cookie)
        .header("x-csrf-token", "not-the-token")
        .json(&serde_json::json!({ "files": { "en/due_today.sms.j2": GOOD }, "base": base }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_ne!(d.template_file("en/due_today.sms.j2"), GOOD);
    // Editors do not run operations or read the audit.
    assert_eq!(
        eve.send("POST", "/v1/pause", serde_json::json!({})).await.0,
        403
    );
    assert_eq!(eve.get("/v1/audit").await.0, 403);
    assert_eq!(eve.get("/v1/changes").await.0, 403);

    // API tokens meet the same checks: the viewer client reads, cannot publish.
    let r = c
        .get(format!("{}{SMS}", d.base))
        .bearer_auth(VIEWER_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .put(format!("{}{SMS}", d.base))
        .bearer_auth(VIEWER_TOKEN)
        .json(&serde_json::json!({ "files": { "en/due_today.sms.j2": GOOD }, "base": base }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // A token nobody has is refused where a caller is needed, and does not
    // matter on an open route (a scraper with a stale token still scrapes).
    let r = c
        .get(format!("{}{SMS}", d.base))
        .bearer_auth("nobody-has-this-token-0123")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = c
        .get(format!("{}/metrics", d.base))
        .bearer_auth("nobody-has-this-token-0123")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // The admin token needs no CSRF token (it is not a cookie).
    let r = c
        .put(format!("{}{SMS}", d.base))
        .bearer_auth(ADMIN_TOKEN)
        .json(&serde_json::json!({ "files": { "en/due_today.sms.j2": GOOD }, "base": base }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert_eq!(d.template_file("en/due_today.sms.j2"), GOOD);

    // Compliance sees borrowers, masked.
    let cora = d.login("cora").await;
    let (s, found) = cora.get("/v1/borrowers?q=%2B8613812345678").await;
    assert_eq!(s, 200, "{found}");
    assert_eq!(found["borrowers"][0]["borrower_id"], "BA");
    let shown = found["borrowers"][0]["contacts"].to_string();
    assert!(
        !shown.contains("13812345678") && !shown.contains("amy@example.com"),
        "{shown}"
    );
    // ...but does not publish templates.
    assert_eq!(
        cora.send("PUT", SMS, serde_json::json!({ "files": {}, "base": base }))
            .await
            .0,
        403
    );

    // The OpenAPI document lists the console's routes with their roles.
    let doc: serde_json::Value = c
        .get(format!("{}/openapi.json", d.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        doc["paths"]["/v1/templates/{locale}/{name}/{channel}"]["put"]["x-roles"],
        "editor, admin"
    );
    assert_eq!(
        doc["paths"]["/v1/settings"]["put"]["x-roles"],
        "editor, admin"
    );
    assert_eq!(
        doc["paths"]["/v1/audit"]["get"]["x-roles"],
        "compliance, admin"
    );
    d.stop().await;
}

#[tokio::test]
async fn logins_are_limited_per_account_and_sessions_end_when_idle_or_logged_out() {
    let d = ConsoleDaemon::start("2026-11-30T02:00:00Z", &[AMY]).await;
    let c = reqwest::Client::new();
    let login = |name: &'static str, pw: &'static str| {
        let c = c.clone();
        let url = format!("{}/v1/session", d.base);
        async move {
            c.post(url)
                .json(&serde_json::json!({ "name": name, "password": pw }))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(login("nobody", "whatever-it-is").await, 401);
    for _ in 0..5 {
        assert_eq!(login("eve", "wrong password!!").await, 401);
    }
    // Locked: even the right password is refused until the window passes.
    assert_eq!(login("eve", PASSWORD).await, 429);
    let metrics = c
        .get(format!("{}/metrics", d.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("duebell_console_logins_total{outcome=\"password\"} 5"),
        "{metrics}"
    );
    assert!(
        metrics.contains("duebell_console_logins_total{outcome=\"locked\"} 1"),
        "{metrics}"
    );
    d.clock.advance(chrono::Duration::minutes(16));
    assert_eq!(login("eve", PASSWORD).await, 200);

    // A session unused for longer than console.session_idle (30m) ends.
    let eve = d.login("eve").await;
    assert_eq!(eve.get("/v1/session").await.0, 200);
    d.clock.advance(chrono::Duration::minutes(29));
    assert_eq!(eve.get("/v1/session").await.0, 200);
    d.clock.advance(chrono::Duration::minutes(31));
    assert_eq!(eve.get("/v1/session").await.0, 401);

    // Logging out ends the session.
    let eve = d.login("eve").await;
    // Logging in again from a browser that has a session needs no token.
    let r = c
        .post(format!("{}/v1/session", d.base))
        .header("cookie", &eve.cookie)
        .json(&serde_json::json!({ "name": "ada", "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        eve.send("DELETE", "/v1/session", serde_json::json!({}))
            .await
            .0,
        200
    );
    assert_eq!(eve.get("/v1/session").await.0, 401);

    // A disabled account cannot log in, and its sessions end at once.
    let vic = d.login("vic").await;
    // Off the runtime's thread: the daemon runs on it, and a transaction
    // it has open must go on to its commit while the command waits.
    let mut cmd = duebell(&[
        "--config",
        d.config.to_str().unwrap(),
        "users",
        "disable",
        "vic",
    ]);
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(vic.get("/v1/session").await.0, 401);
    assert_eq!(login("vic", PASSWORD).await, 401);
    d.stop().await;
}

#[tokio::test]
async fn users_are_managed_from_the_command_line_with_hashed_passwords() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_shipped_config(dir.path());
    let cfg = config.to_str().unwrap();
    add_user(&config, "ada", "admin");
    // A short password, a taken name and a bad role are refused clearly.
    let short = users(&config, &["add", "bob", "--role", "editor"], "short\n");
    assert!(!short.status.success());
    assert!(String::from_utf8_lossy(&short.stderr).contains("shorter than 12"));
    let again = users(
        &config,
        &["add", "ada", "--role", "viewer"],
        &format!("{PASSWORD}\n"),
    );
    assert!(String::from_utf8_lossy(&again.stderr).contains("already an account `ada`"));
    let bad = duebell(&["--config", cfg, "users", "add", "x", "--role", "root"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    let list = duebell(&["--config", cfg, "users", "list"])
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&list.stdout);
    assert!(
        list.contains("ada") && list.contains("admin") && list.contains("active"),
        "{list}"
    );
    // The store keeps an argon2id hash, never the password.
    let store = crate::support::open_store(dir.path()).await;
    let user = store.db().user("ada").await.unwrap().unwrap();
    assert!(
        user.password_hash.starts_with("$argon2id$"),
        "{}",
        user.password_hash
    );
    assert!(!user.password_hash.contains(PASSWORD));
    store.close().await;
}

#[tokio::test]
async fn a_template_is_previewed_checked_published_as_a_version_and_used_by_the_next_message() {
    // No loan yet: the book arrives after the edit.
    let mut d = ConsoleDaemon::start("2026-12-01T02:00:00Z", &[]).await;
    let eve = d.login("eve").await;
    let (_, t) = eve.get(SMS).await;
    let base = t["base"].as_str().unwrap().to_owned();
    let original = t["files"]["en/due_today.sms.j2"]
        .as_str()
        .unwrap()
        .to_owned();
    // The files as first seen are the first version.
    assert_eq!(t["versions"].as_array().unwrap().len(), 1, "{t}");

    // Preview: the real renderer, with the SMS count and every problem.
    let (s, p) = eve
        .send("POST", &format!("{SMS}/preview"), serde_json::json!({ "files": { "en/due_today.sms.j2": GOOD }, "sample": "one_loan_before_due" }))
        .await;
    assert_eq!(s, 200, "{p}");
    assert_eq!(p["problems"], serde_json::json!([]));
    assert!(
        p["rendered"]["content"]["body"]
            .as_str()
            .unwrap()
            .contains("your payment is due today"),
        "{p}"
    );
    let parts = p["rendered"]["content"]["count"]["segments"]
        .as_u64()
        .unwrap();
    assert!((1..=3).contains(&parts), "{p}");
    assert!(
        p["rendered"]["content"]["china_count"].is_object(),
        "the 【signature】 count: {p}"
    );
    let broken = "{{ lender.name }}: {% if %} {{ opt_out }}";
    let (_, p) = eve
        .send(
            "POST",
            &format!("{SMS}/preview"),
            serde_json::json!({ "files": { "en/due_today.sms.j2": broken } }),
        )
        .await;
    let problems = p["problems"].as_array().unwrap();
    assert!(!problems.is_empty(), "{p}");
    assert_eq!(problems[0]["file"], "en/due_today.sms.j2");
    assert_eq!(problems[0]["line"], 1);
    let no_opt_out = "{{ lender.name }}: pay today.";
    let (_, p) = eve
        .send(
            "POST",
            &format!("{SMS}/preview"),
            serde_json::json!({ "files": { "en/due_today.sms.j2": no_opt_out } }),
        )
        .await;
    assert!(
        p["problems"].to_string().contains("opt"),
        "a missing opt-out is a problem: {p}"
    );

    // A template that fails a check cannot be published; the file stays.
    for text in [broken, no_opt_out] {
        let (s, e) = eve
            .send(
                "PUT",
                SMS,
                serde_json::json!({ "files": { "en/due_today.sms.j2": text }, "base": base }),
            )
            .await;
        assert_eq!(s, 422, "{e}");
        assert!(!e["problems"].as_array().unwrap().is_empty());
        assert_eq!(d.template_file("en/due_today.sms.j2"), original);
    }
    // A file outside the template is refused.
    let (s, _) = eve
        .send(
            "PUT",
            SMS,
            serde_json::json!({ "files": { "en/late_firm.sms.j2": GOOD }, "base": base }),
        )
        .await;
    assert_eq!(s, 422);

    // Publish.
    let (s, published) = eve
        .send("PUT", SMS, serde_json::json!({ "files": { "en/due_today.sms.j2": GOOD }, "base": base, "note": "plainer wording" }))
        .await;
    assert_eq!(s, 200, "{published}");
    assert_eq!(d.template_file("en/due_today.sms.j2"), GOOD);
    let version = published["template_version"].as_str().unwrap().to_owned();
    // An editor holding the old base cannot overwrite it silently.
    let (s, e) = eve
        .send(
            "PUT",
            SMS,
            serde_json::json!({ "files": { "en/due_today.sms.j2": original }, "base": base }),
        )
        .await;
    assert_eq!(s, 409, "{e}");
    // Nor can an edit on disk be overwritten: it becomes a version of its own.
    let (_, t) = eve.get(SMS).await;
    let history = t["versions"].as_array().unwrap();
    assert_eq!(history.len(), 2, "{t}");
    assert_eq!(history[0]["actor"], "eve");
    assert_eq!(history[0]["summary"], "plainer wording");
    assert_eq!(history[0]["template_version"], version.as_str());
    let diff = history[0]["diff"].to_string();
    assert!(
        diff.contains(
            "[\"+\",\"{{ lender.name }}: Hi {{ borrower.name }}, your payment is due today."
        ),
        "{diff}"
    );
    assert!(diff.contains("[\"-\","), "{diff}");

    // The daemon uses it without a restart: the next message is rendered
    // from the new version.
    let sent = d.first_sms_after_book(&[AMY]).await;
    assert!(
        sent["body"]
            .as_str()
            .unwrap()
            .contains("your payment is due today"),
        "{sent}"
    );
    assert_eq!(sent["template_version"], version.as_str());
    // ...and the borrower's timeline shows that version.
    let cora = d.login("cora").await;
    let (_, tl) = cora.get("/v1/borrowers/BA/timeline").await;
    assert!(tl.to_string().contains(&version), "{tl}");

    // Roll back to the first version.
    let first = history[1]["id"].as_i64().unwrap();
    let (s, r) = eve
        .send(
            "POST",
            &format!("{SMS}/rollback"),
            serde_json::json!({ "version": first, "base": t["base"] }),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(d.template_file("en/due_today.sms.j2"), original);
    let (_, t) = eve.get(SMS).await;
    assert_eq!(
        t["versions"][0]["summary"],
        format!("rolled back to version {first}")
    );
    d.stop().await;
}

#[tokio::test]
async fn quiet_hours_are_changed_in_the_config_file_with_an_impact_preview_and_applied_at_once() {
    // 10:00 in Shanghai: Amy's due-today messages may go now.
    let d = ConsoleDaemon::start("2026-12-01T02:00:00Z", &[]).await;
    let eve = d.login("eve").await;
    let (s, settings) = eve.get("/v1/settings").await;
    assert_eq!(s, 200, "{settings}");
    assert_eq!(
        settings["quiet_hours"][0]["every_day"],
        serde_json::json!(["08:00-21:00"])
    );
    let base = settings["base"].as_str().unwrap().to_owned();
    let before = std::fs::read_to_string(&d.config).unwrap();

    // An invalid window is refused with its key, and nothing is written.
    let (s, e) = eve
        .send("PUT", "/v1/settings", serde_json::json!({ "base": base, "quiet_hours": [{ "name": "default", "every_day": ["25:00-18:00"] }] }))
        .await;
    assert_eq!(s, 422, "{e}");
    assert_eq!(e["problems"][0]["key"], "quiet_hours.rules[0].every_day[0]");
    assert_eq!(std::fs::read_to_string(&d.config).unwrap(), before);

    // The impact over the current book: a window opening at 11:00 defers
    // what is due now.
    // (Imported beside the daemon, which does not plan it before its
    // next tick: the test clock stands still.)
    d.import_beside("extra.csv", &[AMY]).await;
    let later = serde_json::json!([{ "name": "default", "every_day": ["11:00-21:00"] }]);
    let (s, impact) = eve
        .send(
            "POST",
            "/v1/settings/impact",
            serde_json::json!({ "quiet_hours": later }),
        )
        .await;
    assert_eq!(s, 200, "{impact}");
    assert!(impact["would"]["defer"].as_u64().unwrap() >= 1, "{impact}");
    assert_eq!(impact["would"]["release"], 0, "{impact}");

    // Save: the file keeps its comments and other sections; the daemon
    // reloads it.
    let (s, saved) = eve
        .send(
            "PUT",
            "/v1/settings",
            serde_json::json!({ "base": base, "quiet_hours": later, "note": "later mornings" }),
        )
        .await;
    assert_eq!(s, 200, "{saved}");
    let after = std::fs::read_to_string(&d.config).unwrap();
    assert!(after.contains("every_day = [\"11:00-21:00\"]"), "{after}");
    assert!(
        after.contains("# Rules: for each channel and zone the first matching rule applies."),
        "comments kept"
    );
    assert!(
        after.contains("[[caps.rules]]\nname = \"sms_per_day\""),
        "other sections kept"
    );
    assert_eq!(
        after.lines().count() + 5,
        before.lines().count(),
        "only the rule's empty lists went: {after}"
    );
    let (_, now) = eve.get("/v1/settings").await;
    assert_eq!(
        now["quiet_hours"][0]["every_day"],
        serde_json::json!(["11:00-21:00"])
    );
    // Someone holding the old base cannot overwrite it.
    let (s, _) = eve
        .send("PUT", "/v1/settings", serde_json::json!({ "base": base, "quiet_hours": [{ "name": "default", "every_day": ["08:00-21:00"] }] }))
        .await;
    assert_eq!(s, 409);
    // The change log says who changed what, before and after.
    let ada = d.login("ada").await;
    let (_, log) = ada.get("/v1/changes").await;
    let change = log["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["kind"] == "settings")
        .unwrap()
        .clone();
    assert_eq!(change["actor"], "eve");
    assert!(change["before"].as_str().unwrap().contains("08:00-21:00"));
    assert!(change["after"].as_str().unwrap().contains("11:00-21:00"));
    // The daemon reloaded: to the running config, the same proposal now
    // changes nothing.
    let (_, impact) = eve
        .send(
            "POST",
            "/v1/settings/impact",
            serde_json::json!({ "quiet_hours": later }),
        )
        .await;
    assert_eq!(impact["would"]["defer"], 0, "{impact}");
    assert_eq!(impact["current"], impact["proposed"], "{impact}");
    d.stop().await;
}

#[tokio::test]
async fn holds_and_opt_outs_from_the_console_are_in_the_change_log_and_the_audit_downloads() {
    let d = ConsoleDaemon::start("2026-11-30T02:00:00Z", &[AMY]).await;
    let cora = d.login("cora").await;
    let (s, r) = cora
        .send(
            "POST",
            "/v1/holds",
            serde_json::json!({ "borrower_id": "BA", "kind": "dispute" }),
        )
        .await;
    assert_eq!(s, 201, "{r}");
    let (s, r) = cora
        .send(
            "POST",
            "/v1/opt-outs",
            serde_json::json!({ "borrower_id": "BA", "channel": "sms" }),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    let (_, log) = cora.get("/v1/changes").await;
    let kinds: Vec<String> = log["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| format!("{} {}", c["actor"], c["summary"]))
        .collect();
    assert!(
        kinds.contains(&"\"cora\" \"POST /v1/holds\"".to_owned()),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&"\"cora\" \"POST /v1/opt-outs\"".to_owned()),
        "{kinds:?}"
    );
    let r = cora
        .client
        .get(format!(
            "{}/v1/audit?from=2026-11-01&to=2026-12-31&format=csv",
            d.base
        ))
        .header("cookie", &cora.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .contains("duebell-audit-2026-11-01-2026-12-31.csv"));
    let (s, e) = cora.get("/v1/audit?from=yesterday").await;
    assert_eq!(s, 422, "{e}");
    d.stop().await;
}

#[tokio::test]
async fn operations_show_each_provider_and_pause_it_and_only_unknown_messages_are_released() {
    let mut d = ConsoleDaemon::start("2026-12-01T02:00:00Z", &[]).await;
    let sent = d.first_sms_after_book(&[AMY]).await;
    let vic = d.login("vic").await;
    let (s, ops) = vic.get("/v1/operations").await;
    assert_eq!(s, 200, "{ops}");
    let outbox = &ops["providers"][0];
    assert_eq!(outbox["name"], "outbox");
    assert_eq!(outbox["kind"], "file");
    assert_eq!(outbox["paused"], false);
    assert_eq!(outbox["circuit_open"], false);
    assert!(outbox["results"]["ok"].as_f64().unwrap() >= 1.0, "{ops}");
    assert!(
        ops["messages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["state"] == "sent"),
        "{ops}"
    );
    // A viewer cannot pause; an admin can, and the page shows it.
    assert_eq!(
        vic.send(
            "POST",
            "/v1/pause",
            serde_json::json!({ "provider": "outbox" })
        )
        .await
        .0,
        403
    );
    let ada = d.login("ada").await;
    let (s, r) = ada
        .send(
            "POST",
            "/v1/pause",
            serde_json::json!({ "provider": "outbox" }),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    let (_, ops) = vic.get("/v1/operations").await;
    assert_eq!(ops["providers"][0]["paused"], true, "{ops}");
    // Only unknown or failed messages are released or cancelled.
    let id = sent["message_id"].as_i64().or_else(|| sent["id"].as_i64());
    let (_, messages) = ada.get("/v1/messages?state=sent").await;
    let id = id.unwrap_or_else(|| messages["messages"][0]["id"].as_i64().unwrap());
    let (s, e) = ada
        .send(
            "POST",
            &format!("/v1/messages/{id}/release"),
            serde_json::json!({}),
        )
        .await;
    assert_eq!(s, 409, "{e}");
    assert!(e["error"]
        .as_str()
        .unwrap()
        .contains("only unknown or failed"));
    let (s, _) = ada
        .send("POST", "/v1/messages/999999/cancel", serde_json::json!({}))
        .await;
    assert_eq!(s, 404);
    assert_eq!(
        vic.send(
            "POST",
            &format!("/v1/messages/{id}/cancel"),
            serde_json::json!({})
        )
        .await
        .0,
        403
    );
    d.stop().await;
}
