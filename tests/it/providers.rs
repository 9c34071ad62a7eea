//! Providers against loopback peers that check requests as the provider
//! would and script its answers; failover and the circuit breaker; Twilio
//! callbacks; no duplicate after a crash mid-send.

use std::sync::Arc;
use std::time::Duration;

use duebell::dispatch::Outcome;
use duebell::domain::Channel;
use duebell::providers::{ProviderConfig, ProviderKind, RoutingConfig};
use duebell::store::MessageState;
use wiremock::matchers::{body_string_contains, header, header_exists, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::{book, Harness};

const SID: &str = "AC0123456789abcdef0123456789abcdef";
const TOKEN: &str = "twilio-auth-token-123";

fn provider(name: &str, kind: ProviderKind, url: &str) -> ProviderConfig {
    let mut p = duebell::providers::default_providers().remove(0);
    p.name = name.into();
    p.kind = kind;
    p.dir = None;
    p.url = Some(url.into());
    match kind {
        ProviderKind::Twilio => {
            p.account_sid = Some(SID.into());
            p.auth_token = Some(TOKEN.into());
            p.from = Some("+15005550006".into());
        }
        _ => p.secret = Some("webhook-secret-0123456789".into()),
    }
    p.timeout = duebell::config::ConfigDuration(Duration::from_millis(700));
    p.cool_down = duebell::config::ConfigDuration(Duration::from_millis(300));
    p
}

/// A harness whose engine sends SMS through `providers` (in order).
async fn harness_with(providers: Vec<ProviderConfig>) -> (Harness, duebell::engine::Engine) {
    harness_with_templates(providers, None).await
}

/// As `harness_with`, with the templates in `templates` when given.
async fn harness_with_templates(
    providers: Vec<ProviderConfig>,
    templates: Option<&std::path::Path>,
) -> (Harness, duebell::engine::Engine) {
    let names: Vec<String> = providers.iter().map(|p| p.name.clone()).collect();
    let h = Harness::with("2026-12-10T03:00:00Z", |c| {
        if let Some(t) = templates {
            c.templates.dir = t.to_owned();
        }
        c.providers = providers.clone();
        c.providers
            .push(duebell::providers::default_providers().remove(0));
        c.routing = RoutingConfig {
            sms: names.clone(),
            email: vec!["outbox".into()],
        };
        c.providers.last_mut().unwrap().dir =
            Some(std::env::temp_dir().join("duebell-test-outbox"));
        c.caps.rules.clear();
    })
    .await;
    let engine = duebell::engine::Engine::build(&h.config, h.store.clone(), None).unwrap();
    (h, engine)
}

/// Loans due today for borrowers B0..Bn, all SMS only, planned now.
async fn due_sms(h: &Harness, n: usize) {
    let rows: Vec<String> = (0..n)
        .map(|i| {
            format!(
                "L{i},B{i},Sam Lee,+1212555{:04},,en,America/New_York,2026-12-09,40.00,USD,active",
                100 + i
            )
        })
        .collect();
    let rows: Vec<&str> = rows.iter().map(String::as_str).collect();
    h.import("book.csv", &book(&rows)).await;
    // 22:00 local the evening before would be closed; pick 10:00 New York.
    h.set("2026-12-10T15:00:00Z");
    h.tick().await;
}

#[tokio::test]
async fn twilio_gets_a_signed_form_post_and_its_errors_are_classified() {
    let server = MockServer::start().await;
    let api = format!("/2010-04-01/Accounts/{SID}/Messages.json");
    // Borrower-specific answers, by the To number.
    let answer = |to: &str, resp: ResponseTemplate| {
        Mock::given(method("POST"))
            .and(path(api.clone()))
            .and(header_exists("authorization"))
            .and(body_string_contains(format!("To=%2B1212555{to}")))
            .respond_with(resp)
    };
    answer(
        "0100",
        ResponseTemplate::new(201)
            .set_body_json(serde_json::json!({"sid": "SM100", "status": "queued"})),
    )
    .mount(&server)
    .await;
    answer(
        "0101",
        ResponseTemplate::new(400)
            .set_body_json(serde_json::json!({"code": 21211, "message": "invalid To"})),
    )
    .mount(&server)
    .await;
    answer(
        "0102",
        ResponseTemplate::new(400)
            .set_body_json(serde_json::json!({"code": 21610, "message": "unsubscribed"})),
    )
    .mount(&server)
    .await;
    answer("0103", ResponseTemplate::new(503))
        .mount(&server)
        .await;
    answer(
        "0104",
        ResponseTemplate::new(201).set_delay(Duration::from_secs(3)),
    )
    .mount(&server)
    .await;
    // Last: a 429 with Retry-After pauses the whole provider.
    answer(
        "0105",
        ResponseTemplate::new(429)
            .insert_header("retry-after", "120")
            .set_body_json(serde_json::json!({"code": 20429})),
    )
    .mount(&server)
    .await;
    let (h, engine) = harness_with(vec![provider(
        "twilio",
        ProviderKind::Twilio,
        &server.uri(),
    )])
    .await;
    due_sms(&h, 6).await;
    let mut outcomes = Vec::new();
    loop {
        match engine.dispatcher.dispatch_next(h.now()).await.unwrap() {
            Outcome::Idle => break,
            o => outcomes.push(o),
        }
    }
    let by_borrower: std::collections::HashMap<String, (MessageState, String)> = h
        .messages()
        .await
        .into_iter()
        .map(|m| {
            (
                m.borrower_id.clone(),
                (m.state, m.reason.unwrap_or_default()),
            )
        })
        .collect();
    assert_eq!(by_borrower["B0"].0, MessageState::Sent);
    assert_eq!(
        by_borrower["B1"],
        (MessageState::Failed, "twilio: permanent error 21211".into())
    );
    assert_eq!(by_borrower["B2"].0, MessageState::Suppressed);
    let b2 = h.store.plan_borrower("B2", h.now()).await.unwrap().unwrap();
    assert!(
        b2.contact(Channel::Sms).unwrap().opted_out,
        "21610 opts the number out"
    );
    assert_eq!(
        by_borrower["B3"].0,
        MessageState::Deferred,
        "{:?}",
        by_borrower["B3"]
    );
    assert_eq!(
        by_borrower["B4"].0,
        MessageState::Sending,
        "a timeout may have delivered: kept for a look-up, never resent: {:?}",
        by_borrower["B4"]
    );
    assert_eq!(
        by_borrower["B5"].0,
        MessageState::Deferred,
        "{:?}",
        by_borrower["B5"]
    );
    // The request is what Twilio expects.
    let req = server
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .find(|r| String::from_utf8_lossy(&r.body).contains("To=%2B12125550100"))
        .unwrap();
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&req.body)
        .into_owned()
        .collect();
    let get = |k: &str| {
        form.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    assert_eq!(get("From"), "+15005550006");
    assert!(get("Body").contains("Sam Lee"));
    let callback = get("StatusCallback");
    assert!(
        callback.starts_with(&format!(
            "{}/webhooks/twilio/twilio/status?m=",
            h.config.api.public_url
        )),
        "{callback}"
    );
    use base64::Engine;
    let auth = req.headers.get("authorization").unwrap().to_str().unwrap();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(auth.trim_start_matches("Basic "))
        .unwrap();
    assert_eq!(
        String::from_utf8(decoded).unwrap(),
        format!("{SID}:{TOKEN}")
    );
}

#[tokio::test]
async fn a_failing_provider_is_opened_traffic_fails_over_and_it_comes_back_when_healthy() {
    let a = MockServer::start().await;
    let b = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(6)
        .mount(&a)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({"id": "a-ok"})))
        .mount(&a)
        .await;
    Mock::given(method("POST"))
        .and(header_exists("x-duebell-signature"))
        .and(header_exists("idempotency-key"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({"id": "b-ok"})))
        .mount(&b)
        .await;
    let (h, engine) = harness_with(vec![
        provider("a", ProviderKind::Webhook, &a.uri()),
        provider("b", ProviderKind::Webhook, &b.uri()),
    ])
    .await;
    due_sms(&h, 12).await;
    // While A fails, every message still goes out, through B.
    for _ in 0..8 {
        assert!(
            matches!(engine.dispatcher.dispatch_next(h.now()).await.unwrap(), Outcome::Sent { ref provider, .. } if provider == "b")
        );
    }
    // A was tried until its breaker opened (5 failures), then skipped.
    assert_eq!(a.received_requests().await.unwrap().len(), 5);
    let metrics = engine.dispatcher.metrics.failing_providers();
    assert_eq!(metrics, vec!["a".to_string()]);
    // After the cool-down one probe goes to A; it fails (its 6th 503), so A
    // stays open; the next probe succeeds and A takes traffic again.
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert!(
        matches!(engine.dispatcher.dispatch_next(h.now()).await.unwrap(), Outcome::Sent { ref provider, .. } if provider == "b")
    );
    assert_eq!(a.received_requests().await.unwrap().len(), 6);
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert!(
        matches!(engine.dispatcher.dispatch_next(h.now()).await.unwrap(), Outcome::Sent { ref provider, .. } if provider == "a")
    );
    assert!(
        matches!(engine.dispatcher.dispatch_next(h.now()).await.unwrap(), Outcome::Sent { ref provider, .. } if provider == "a")
    );
    assert!(engine.dispatcher.metrics.failing_providers().is_empty());
    engine.dispatcher.drain(h.now()).await.unwrap();
    let sent = h
        .messages()
        .await
        .into_iter()
        .filter(|m| m.state == MessageState::Sent)
        .count();
    assert_eq!(sent, 12);
    // Every message accepted exactly once across both providers: A's first
    // six answers were 503s (not accepted), everything after was accepted.
    let body_id = |r: &wiremock::Request| {
        serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["message_id"].to_string()
    };
    let mut accepted: Vec<String> = a
        .received_requests()
        .await
        .unwrap()
        .iter()
        .skip(6)
        .map(body_id)
        .collect();
    accepted.extend(b.received_requests().await.unwrap().iter().map(body_id));
    assert_eq!(accepted.len(), 12, "{accepted:?}");
    accepted.sort();
    accepted.dedup();
    assert_eq!(accepted.len(), 12, "a message was accepted twice");
}

#[tokio::test]
async fn a_rate_limit_holds_a_provider_to_its_rate() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    let mut p = provider("gw", ProviderKind::Webhook, &server.uri());
    p.rate = Some(duebell::providers::guard::Rate::parse("20/s").unwrap());
    let (h, engine) = harness_with(vec![p]).await;
    due_sms(&h, 30).await;
    engine.dispatcher.drain(h.now()).await.unwrap();
    assert_eq!(server.received_requests().await.unwrap().len(), 30);
    // Every send went through the limiter, and it held sends back (30 sends
    // at 20/s cannot all pass at once). How closely it holds the rate is
    // measured by the dispatch benchmark, not asserted here.
    let mut metrics = String::new();
    engine.dispatcher.metrics.render_into(&mut metrics);
    let line = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .unwrap_or("0")
            .parse()
            .unwrap()
    };
    assert_eq!(
        line("duebell_rate_limit_wait_seconds_count{provider=\"gw\"}"),
        30.0,
        "{metrics}"
    );
    assert!(
        line("duebell_rate_limit_wait_seconds_sum{provider=\"gw\"}") > 0.0,
        "{metrics}"
    );
}

#[tokio::test]
async fn twilio_callbacks_need_a_valid_signature_and_apply_receipts_and_stop_words() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(201).set_body_json(serde_json::json!({"sid": "SM100"})))
        .mount(&server)
        .await;
    let (h, _engine) = one_twilio_send(&server).await;
    let (addr, _) =
        serve_callbacks(&h, Some(TOKEN), &[("twilio".into(), ProviderKind::Twilio)]).await;
    let c = reqwest::Client::new();
    let post = |route: &str, params: Vec<(&str, &str)>, good: bool| {
        let owned: Vec<(String, String)> = params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let url = format!("https://lender.example.com/webhooks/twilio/twilio/{route}");
        let sig = if good {
            duebell::providers::twilio::signature(TOKEN, &url, &owned)
        } else {
            "forged".into()
        };
        c.post(format!("http://{addr}/webhooks/twilio/twilio/{route}"))
            .header("x-twilio-signature", sig)
            .form(&owned)
            .send()
    };
    let receipt = vec![
        ("MessageSid", "SM100"),
        ("MessageStatus", "delivered"),
        ("AccountSid", SID),
    ];
    // A message whose send was interrupted before Twilio's SID was stored
    // is reconciled by the callback, which carries our id in its URL.
    let sent = h
        .messages()
        .await
        .into_iter()
        .find(|m| m.channel == Channel::Sms)
        .unwrap();
    let with_id = format!("status?m={}", sent.id);
    let forged = post("status", receipt.clone(), false).await.unwrap();
    let status = forged.status();
    assert_eq!(status, 403, "{}", forged.text().await.unwrap());
    for _ in 0..2 {
        // Twilio repeats callbacks: the second changes nothing.
        assert_eq!(
            post(&with_id, receipt.clone(), true)
                .await
                .unwrap()
                .status(),
            200
        );
    }
    let m = h
        .messages()
        .await
        .into_iter()
        .find(|m| m.channel == Channel::Sms)
        .unwrap();
    assert_eq!(m.state, MessageState::Delivered);
    let events = h.store.message_events(m.id).await.unwrap();
    assert_eq!(
        events
            .iter()
            .filter(|e| e.to == MessageState::Delivered)
            .count(),
        1
    );

    assert_eq!(
        post(
            "inbound",
            vec![("From", "+12125550100"), ("Body", " ｓｔｏｐ ")],
            false
        )
        .await
        .unwrap()
        .status(),
        403
    );
    assert!(
        !h.store
            .plan_borrower("B0", h.now())
            .await
            .unwrap()
            .unwrap()
            .contact(Channel::Sms)
            .unwrap()
            .opted_out
    );
    assert_eq!(
        post(
            "inbound",
            vec![("From", "+12125550100"), ("Body", " ｓｔｏｐ ")],
            true
        )
        .await
        .unwrap()
        .status(),
        200
    );
    assert!(
        h.store
            .plan_borrower("B0", h.now())
            .await
            .unwrap()
            .unwrap()
            .contact(Channel::Sms)
            .unwrap()
            .opted_out
    );
    assert_eq!(
        post(
            "inbound",
            vec![("From", "+12125550100"), ("Body", "START")],
            true
        )
        .await
        .unwrap()
        .status(),
        200
    );
    assert!(
        !h.store
            .plan_borrower("B0", h.now())
            .await
            .unwrap()
            .unwrap()
            .contact(Channel::Sms)
            .unwrap()
            .opted_out
    );
}

/// Serves the API over the harness's store on a free port, as the daemon
/// would for provider callbacks; `twilio` is the `twilio` provider's token.
/// The deployment key the callback server signs with.
fn callback_signer() -> duebell::signing::Signer {
    duebell::signing::Signer::new(vec![1; 32])
}

/// The API's callback routes over the harness's store, for `providers`
/// (name, kind); Twilio callbacks checked with the `twilio` auth token.
async fn serve_callbacks(
    h: &Harness,
    twilio: Option<&str>,
    providers: &[(String, ProviderKind)],
) -> (std::net::SocketAddr, Arc<duebell::metrics::Metrics>) {
    let metrics: Arc<duebell::metrics::Metrics> = Arc::default();
    let state = duebell::api::ApiState {
        store: h.store.clone(),
        clock: Arc::new(h.clock.clone()),
        access: Arc::default(),
        providers: Arc::new(providers.iter().cloned().collect()),
        unsubscribe: Arc::new(callback_signer()),
        pauses: Arc::default(),
        metrics: metrics.clone(),
        replan: Arc::default(),
        replanner: None,
        work: Arc::default(),
        default_tz: chrono_tz::Asia::Shanghai,
        ready: Arc::default(),
        twilio_tokens: Arc::new(
            twilio
                .map(|t| [("twilio".to_string(), t.into())].into())
                .unwrap_or_default(),
        ),
        public_url: "https://lender.example.com".into(),
        stop_words: Arc::default(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, duebell::api::router(state)).await });
    (addr, metrics)
}

/// Shipped templates plus provider sidecars for `due_today`.
fn templates_with_sidecars() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("cp")
        .arg("-r")
        .arg(crate::support::repo_root().join("templates/."))
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    // Every SMS template is approved at both providers (a route through
    // them alone must be able to carry every step); `due_today` in zh-CN
    // is the one the tests send.
    for locale in ["zh-CN", "en"] {
        for entry in std::fs::read_dir(dir.path().join(locale))
            .unwrap()
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(template) = name.strip_suffix(".sms.j2") else {
                continue;
            };
            if template.starts_with('_') {
                continue;
            }
            let (code, id) = if template == "due_today" && locale == "zh-CN" {
                ("SMS_100", "200")
            } else {
                ("SMS_999", "999")
            };
            std::fs::write(
                dir.path().join(format!("{locale}/{template}.sms.toml")),
                format!("[aliyun]\ntemplate_code = \"{code}\"\nparams = {{ name = \"borrower.name\", amount = \"loan.amount_due | money(loan.currency)\" }}\n\n[tencent]\ntemplate_id = \"{id}\"\nparams = [\"borrower.name\", \"loan.amount_due | money(loan.currency)\"]\n"),
            )
            .unwrap();
        }
    }
    dir
}

async fn china_harness(
    kind: ProviderKind,
    url: &str,
    templates: &std::path::Path,
) -> (Harness, duebell::engine::Engine) {
    let mut p = provider("cn", kind, url);
    p.access_key_id = Some("testId".into());
    p.access_key_secret = Some("testSecret".into());
    p.sign_name = Some("示例金融".into());
    p.sdk_app_id = Some("1400000000".into());
    p.countries = vec![86];
    harness_with_templates(vec![p], Some(templates)).await
}

/// Three Shanghai borrowers due today: numbers ending 01, 02, 03.
async fn due_cn(h: &Harness) {
    h.import(
        "book.csv",
        &book(&[
            "C1,BC1,王伟,+8613800000001,,zh-CN,Asia/Shanghai,2026-12-10,1234.50,CNY,active",
            "C2,BC2,李娜,+8613800000002,,zh-CN,Asia/Shanghai,2026-12-10,99.00,CNY,active",
            "C3,BC3,张敏,+8613800000003,,zh-CN,Asia/Shanghai,2026-12-10,10.00,CNY,active",
            "C4,BC4,刘洋,+8613800000004,,zh-CN,Asia/Shanghai,2026-12-10,10.00,CNY,active",
            "C5,BC5,陈静,+8613800000005,,zh-CN,Asia/Shanghai,2026-12-10,10.00,CNY,active",
        ]),
    )
    .await;
    h.set("2026-12-10T03:00:00Z");
    h.tick().await;
}

struct AliyunSigned;

/// An Aliyun request's query parameter (empty if absent), and whether the
/// request carries a valid signature by `testSecret`.
fn aliyun_request(req: &wiremock::Request) -> (impl Fn(&str) -> String, bool) {
    let params: Vec<(String, String)> = req.url.query_pairs().into_owned().collect();
    let signed = params
        .iter()
        .find(|(n, _)| n == "Signature")
        .is_some_and(|(_, v)| {
            *v == duebell::providers::aliyun::signature("GET", "testSecret", &params)
        });
    let get = move |k: &str| {
        params
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    (get, signed)
}

impl wiremock::Match for AliyunSigned {
    fn matches(&self, req: &wiremock::Request) -> bool {
        let (get, signed) = aliyun_request(req);
        signed
            && get("AccessKeyId") == "testId"
            && get("Action") == "SendSms"
            && get("TemplateCode") == "SMS_100"
            && get("SignName") == "示例金融"
            && !get("OutId").is_empty()
            && serde_json::from_str::<serde_json::Value>(&get("TemplateParam"))
                .is_ok_and(|v| v["amount"].is_string())
    }
}

#[tokio::test]
async fn aliyun_requests_are_signed_and_codes_classified() {
    use wiremock::matchers::query_param;
    let server = MockServer::start().await;
    let ok = |phone: &str, code: &str| {
        Mock::given(method("GET"))
            .and(AliyunSigned)
            .and(query_param("PhoneNumbers", phone))
            .respond_with(ResponseTemplate::new(200).set_body_json(
                serde_json::json!({"Code": code, "Message": code, "BizId": format!("biz-{phone}")}),
            ))
    };
    ok("13800000001", "OK").mount(&server).await;
    ok("13800000002", "isv.MOBILE_NUMBER_ILLEGAL")
        .mount(&server)
        .await;
    ok("13800000003", "isv.BUSINESS_LIMIT_CONTROL")
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(AliyunSigned)
        .and(query_param("PhoneNumbers", "13800000004"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(AliyunSigned)
        .and(query_param("PhoneNumbers", "13800000005"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(3)))
        .mount(&server)
        .await;
    let templates = templates_with_sidecars();
    let (h, engine) = china_harness(ProviderKind::Aliyun, &server.uri(), templates.path()).await;
    due_cn(&h).await;
    engine.dispatcher.drain(h.now()).await.unwrap();
    let states: std::collections::HashMap<String, (MessageState, String)> = h
        .messages()
        .await
        .into_iter()
        .filter(|m| m.channel == Channel::Sms)
        .map(|m| {
            (
                m.borrower_id.clone(),
                (m.state, m.reason.unwrap_or_default()),
            )
        })
        .collect();
    assert_eq!(states["BC1"].0, MessageState::Sent, "{states:?}");
    assert_eq!(
        states["BC2"],
        (
            MessageState::Failed,
            "cn: permanent error isv.MOBILE_NUMBER_ILLEGAL".into()
        )
    );
    assert_eq!(states["BC3"].0, MessageState::Deferred, "{states:?}");
    assert_eq!(
        states["BC4"].0,
        MessageState::Deferred,
        "5xx is transient: {states:?}"
    );
    assert_eq!(
        states["BC5"].0,
        MessageState::Sending,
        "a timeout is not resent blindly: {states:?}"
    );
    assert_eq!(
        server.received_requests().await.unwrap().len(),
        5,
        "every request matched the signature check"
    );
    // Aliyun is asked (QuerySendDetails, signed like a send): its record
    // carries our OutId, so the message is sent.
    let bc5 = in_flight_id(&h, "BC5").await;
    Mock::given(method("GET"))
        .and(AliyunQuery("13800000005"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "Code": "OK", "TotalCount": 1,
            "SmsSendDetailDTOs": {"SmsSendDetailDTO": [
                {"PhoneNum": "13800000005", "SendStatus": 3, "OutId": "999999", "BizId": "biz-other"},
                {"PhoneNum": "13800000005", "SendStatus": 3, "OutId": bc5.to_string(), "BizId": "biz-late"}
            ]}
        })))
        .mount(&server)
        .await;
    assert_eq!(engine.dispatcher.reconcile(h.now()).await.unwrap(), (1, 0));
    let m = message_of(&h, "BC5").await;
    assert_eq!(m.state, MessageState::Sent, "{m:?}");
    assert_eq!(m.provider.as_deref(), Some("cn"));
}

#[tokio::test]
async fn a_per_number_limit_delays_the_message_and_never_fails_over() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(AliyunSigned)
        .respond_with(ResponseTemplate::new(200).set_body_json(
            serde_json::json!({"Code": "isv.BUSINESS_LIMIT_CONTROL", "Message": "limit", "BizId": ""}),
        ))
        .mount(&server)
        .await;
    let templates = templates_with_sidecars();
    let (mut h, _) = china_harness(ProviderKind::Aliyun, &server.uri(), templates.path()).await;
    // The outbox stands behind Aliyun: it would take anything.
    h.config.routing.sms.push("outbox".into());
    let engine = duebell::engine::Engine::build(&h.config, h.store.clone(), None).unwrap();
    due_cn(&h).await;
    engine.dispatcher.drain(h.now()).await.unwrap();
    for m in h
        .messages()
        .await
        .into_iter()
        .filter(|m| m.channel == Channel::Sms)
    {
        assert_eq!(m.state, MessageState::Deferred, "{m:?}");
        assert!(
            m.reason
                .as_deref()
                .unwrap_or("")
                .contains("isv.BUSINESS_LIMIT_CONTROL"),
            "{m:?}"
        );
        assert!(
            m.not_before >= h.now() + chrono::Duration::minutes(59),
            "{m:?}"
        );
    }
}

#[tokio::test]
async fn forged_or_misdirected_receipts_change_nothing_and_are_counted() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(AliyunSigned)
        .respond_with(
            ResponseTemplate::new(200).set_body_json(
                serde_json::json!({"Code": "OK", "Message": "OK", "BizId": "biz-real"}),
            ),
        )
        .mount(&server)
        .await;
    let templates = templates_with_sidecars();
    let (h, engine) = china_harness(ProviderKind::Aliyun, &server.uri(), templates.path()).await;
    due_cn(&h).await;
    engine.dispatcher.drain(h.now()).await.unwrap();
    let bc1 = h
        .messages()
        .await
        .into_iter()
        .find(|m| m.borrower_id == "BC1" && m.channel == Channel::Sms)
        .unwrap();
    assert_eq!(bc1.state, MessageState::Sent);
    let (addr, metrics) = serve_callbacks(
        &h,
        None,
        &[
            ("cn".into(), ProviderKind::Aliyun),
            ("tw".into(), ProviderKind::Twilio),
        ],
    )
    .await;
    let token = callback_signer().callback_token("cn");
    let c = reqwest::Client::new();
    let report = |out_id: i64, biz_id: &str| serde_json::json!([{"out_id": out_id.to_string(), "biz_id": biz_id, "success": false, "err_code": "MOBILE_NUMBER_ILLEGAL"}]);
    let post = |path: String, body: serde_json::Value| {
        c.post(format!("http://{addr}{path}")).json(&body).send()
    };
    // No such provider, a provider of another kind, a wrong token: the
    // routes do not exist for a stranger.
    for path in [
        format!(
            "/webhooks/aliyun/nope/report/{}",
            callback_signer().callback_token("nope")
        ),
        format!(
            "/webhooks/aliyun/tw/report/{}",
            callback_signer().callback_token("tw")
        ),
        "/webhooks/aliyun/cn/report/0123456789abcdef0123456789abcdef".to_owned(),
        "/webhooks/aliyun/cn/report".to_owned(),
    ] {
        let r = post(path.clone(), report(bc1.id, "biz-real"))
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{path}");
    }
    // The right route, but our id with a reference the provider never gave
    // it, or another message's id: acknowledged (providers retry), applied
    // to nothing.
    let other = h
        .messages()
        .await
        .into_iter()
        .find(|m| m.id != bc1.id)
        .unwrap();
    for body in [report(bc1.id, "biz-forged"), report(other.id, "biz-real")] {
        let r = post(format!("/webhooks/aliyun/cn/report/{token}"), body)
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let states = |id: i64| {
        let h = &h;
        async move {
            h.messages()
                .await
                .into_iter()
                .find(|m| m.id == id)
                .unwrap()
                .state
        }
    };
    assert_eq!(states(bc1.id).await, MessageState::Sent);
    assert_eq!(states(other.id).await, other.state);
    let mut text = String::new();
    metrics.render_into(&mut text);
    for line in [
        "duebell_callbacks_refused_total{kind=\"aliyun\",why=\"unknown provider\"} 2",
        "duebell_callbacks_refused_total{kind=\"aliyun\",why=\"bad token\"} 1",
        "duebell_receipts_unmatched_total{provider=\"cn\"} 2",
    ] {
        assert!(text.contains(line), "no {line} in\n{text}");
    }
    // The genuine receipt applies.
    let r = post(
        format!("/webhooks/aliyun/cn/report/{token}"),
        report(bc1.id, "biz-real"),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(states(bc1.id).await, MessageState::Undelivered);
}

struct TencentSigned;

impl wiremock::Match for TencentSigned {
    fn matches(&self, req: &wiremock::Request) -> bool {
        let h = |k: &str| {
            req.headers
                .get(k)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        let ts: i64 = h("x-tc-timestamp").parse().unwrap_or(0);
        let body = String::from_utf8_lossy(&req.body).into_owned();
        let sig = duebell::providers::tencent::signature(
            "testSecret",
            "sms",
            &h("host"),
            &h("x-tc-action"),
            &h("content-type"),
            ts,
            &body,
        );
        let json: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        h("authorization").ends_with(&format!("Signature={sig}"))
            && h("authorization").contains("Credential=testId/")
            && h("x-tc-version") == "2021-01-11"
            && json["TemplateId"] == "200"
            && json["SmsSdkAppId"] == "1400000000"
            && json["TemplateParamSet"]
                .as_array()
                .is_some_and(|a| a.len() == 2)
            && json["SessionContext"].is_string()
    }
}

#[tokio::test]
async fn tencent_requests_are_signed_and_a_200_can_carry_a_failure() {
    let server = MockServer::start().await;
    let answer = |phone: &str, code: &str| {
        Mock::given(method("POST"))
            .and(TencentSigned)
            .and(body_string_contains(phone.to_owned()))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "Response": {"SendStatusSet": [{"SerialNo": format!("serial-{phone}"), "PhoneNumber": phone, "Code": code, "Message": code}], "RequestId": "r"}
            })))
    };
    answer("+8613800000001", "Ok").mount(&server).await;
    answer("+8613800000002", "FailedOperation.PhoneNumberInBlacklist")
        .mount(&server)
        .await;
    answer("+8613800000003", "LimitExceeded.PhoneNumberDailyLimit")
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(TencentSigned)
        .and(body_string_contains("+8613800000004"))
        .respond_with(ResponseTemplate::new(502))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(TencentSigned)
        .and(body_string_contains("+8613800000005"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(3)))
        .mount(&server)
        .await;
    let templates = templates_with_sidecars();
    let (h, engine) = china_harness(ProviderKind::Tencent, &server.uri(), templates.path()).await;
    due_cn(&h).await;
    engine.dispatcher.drain(h.now()).await.unwrap();
    let states: std::collections::HashMap<String, MessageState> = h
        .messages()
        .await
        .into_iter()
        .filter(|m| m.channel == Channel::Sms)
        .map(|m| (m.borrower_id.clone(), m.state))
        .collect();
    assert_eq!(states["BC1"], MessageState::Sent);
    assert_eq!(
        states["BC2"],
        MessageState::Suppressed,
        "a blacklisted number is opted out, not failed over"
    );
    // The audit names the provider that refused the number.
    let bc2 = h
        .messages()
        .await
        .into_iter()
        .find(|m| m.borrower_id == "BC2" && m.channel == Channel::Sms)
        .unwrap();
    assert_eq!(bc2.provider.as_deref(), Some("cn"), "{bc2:?}");
    assert!(
        h.store
            .plan_borrower("BC2", h.now())
            .await
            .unwrap()
            .unwrap()
            .contact(Channel::Sms)
            .unwrap()
            .opted_out
    );
    assert_eq!(
        states["BC3"],
        MessageState::Deferred,
        "a per-number limit delays that message only"
    );
    assert_eq!(states["BC4"], MessageState::Deferred);
    assert_eq!(states["BC5"], MessageState::Sending);
    assert_eq!(server.received_requests().await.unwrap().len(), 5);
    // Tencent's status pull lists only sends the carrier reported on: an
    // empty answer proves nothing, so it is asked again with backoff and,
    // after the look-up window, a person decides (saying what was tried).
    Mock::given(method("POST"))
        .and(header("x-tc-action", "PullSmsSendStatusByPhoneNumber"))
        .and(header_exists("authorization"))
        .and(body_string_contains("+8613800000005"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "Response": {"PullSmsSendStatusSet": [], "RequestId": "r"}
        })))
        .mount(&server)
        .await;
    assert_eq!(engine.dispatcher.reconcile(h.now()).await.unwrap(), (0, 1));
    assert_eq!(message_of(&h, "BC5").await.state, MessageState::Sending);
    h.clock.advance(chrono::Duration::minutes(31));
    engine.dispatcher.reconcile(h.now()).await.unwrap();
    let m = message_of(&h, "BC5").await;
    assert_eq!(m.state, MessageState::Unknown, "{m:?}");
    let reason = m.reason.unwrap_or_default();
    assert!(reason.contains("cn could not account for it"), "{reason}");
    // Delivery callbacks repeat; each applies once.
    let (addr, _) = serve_callbacks(&h, None, &[("cn".into(), ProviderKind::Tencent)]).await;
    let report = serde_json::json!([{"sid": "serial-+8613800000001", "report_status": "SUCCESS", "mobile": "13800000001"}]);
    let token = callback_signer().callback_token("cn");
    for _ in 0..2 {
        let r = reqwest::Client::new()
            .post(format!("http://{addr}/webhooks/tencent/cn/report/{token}"))
            .json(&report)
            .send()
            .await
            .unwrap();
        assert_eq!(r.json::<serde_json::Value>().await.unwrap()["result"], 0);
    }
    let m = h
        .messages()
        .await
        .into_iter()
        .find(|m| m.borrower_id == "BC1" && m.channel == Channel::Sms)
        .unwrap();
    assert_eq!(m.state, MessageState::Delivered);
    assert_eq!(
        h.store
            .message_events(m.id)
            .await
            .unwrap()
            .iter()
            .filter(|e| e.to == MessageState::Delivered)
            .count(),
        1
    );
}

/// The id of a borrower's SMS message.
async fn in_flight_id(h: &Harness, borrower: &str) -> i64 {
    message_of(h, borrower).await.id
}

async fn message_of(h: &Harness, borrower: &str) -> duebell::store::MessageView {
    h.messages()
        .await
        .into_iter()
        .find(|m| m.borrower_id == borrower && m.channel == Channel::Sms)
        .unwrap()
}

/// A signed Aliyun `QuerySendDetails` for one number.
struct AliyunQuery(&'static str);

impl wiremock::Match for AliyunQuery {
    fn matches(&self, req: &wiremock::Request) -> bool {
        let (get, signed) = aliyun_request(req);
        signed
            && get("Action") == "QuerySendDetails"
            && get("PhoneNumber") == self.0
            && get("SendDate") == "20261210"
    }
}

/// A send that timed out is looked up: Twilio's list shows no such message
/// two minutes on, so it is planned again through the normal claim and sent
/// once; the look-up asked with the account's credentials.
#[tokio::test]
async fn a_timed_out_send_the_provider_never_got_is_sent_again_once() {
    let server = MockServer::start().await;
    let api = format!("/2010-04-01/Accounts/{SID}/Messages.json");
    Mock::given(method("POST"))
        .and(path(api.clone()))
        .respond_with(ResponseTemplate::new(201).set_delay(Duration::from_secs(3)))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(api.clone()))
        .respond_with(
            ResponseTemplate::new(201)
                .set_body_json(serde_json::json!({"sid": "SM-second", "status": "queued"})),
        )
        .mount(&server)
        .await;
    // The list holds only someone else's message to this number.
    Mock::given(method("GET"))
        .and(path(api.clone()))
        .and(wiremock::matchers::query_param("To", "+12125550100"))
        .and(header_exists("authorization"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "messages": [{"sid": "SM-other", "to": "+12125550100", "from": "+15550000000",
                          "date_created": "Thu, 10 Dec 2026 15:00:01 +0000"}]
        })))
        .mount(&server)
        .await;
    let (h, engine) = one_twilio_send(&server).await;
    assert_eq!(message_of(&h, "B0").await.state, MessageState::Sending);
    // Too soon to tell: asked again later.
    assert_eq!(engine.dispatcher.reconcile(h.now()).await.unwrap(), (0, 1));
    assert_eq!(message_of(&h, "B0").await.state, MessageState::Sending);
    h.clock.advance(chrono::Duration::minutes(3));
    engine.dispatcher.reconcile(h.now()).await.unwrap();
    let m = message_of(&h, "B0").await;
    assert_eq!(m.state, MessageState::Planned, "{m:?}");
    engine.dispatcher.drain(h.now()).await.unwrap();
    let m = message_of(&h, "B0").await;
    assert_eq!(m.state, MessageState::Sent, "{m:?}");
    let posts = posts_to(&server).await;
    assert_eq!(posts, 2, "the first (never received) and the one resend");
}

/// A timed-out Twilio send that did arrive is found in the list (our
/// sender, the attempt's minute) and recorded sent, never resent.
#[tokio::test]
async fn a_timed_out_send_the_provider_got_is_found_and_not_resent() {
    let server = MockServer::start().await;
    let api = format!("/2010-04-01/Accounts/{SID}/Messages.json");
    Mock::given(method("POST"))
        .and(path(api.clone()))
        .respond_with(ResponseTemplate::new(201).set_delay(Duration::from_secs(3)))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(api.clone()))
        .and(wiremock::matchers::query_param("To", "+12125550100"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "messages": [
                {"sid": "SM-ours", "to": "+12125550100", "from": "+15005550006",
                 "date_created": "Thu, 10 Dec 2026 15:00:01 +0000"},
                {"sid": "SM-yesterday", "to": "+12125550100", "from": "+15005550006",
                 "date_created": "Wed, 09 Dec 2026 15:00:01 +0000"}
            ]
        })))
        .mount(&server)
        .await;
    let (h, engine) = one_twilio_send(&server).await;
    assert_eq!(engine.dispatcher.reconcile(h.now()).await.unwrap(), (1, 0));
    let m = message_of(&h, "B0").await;
    assert_eq!(m.state, MessageState::Sent, "{m:?}");
    let posts = posts_to(&server).await;
    assert_eq!(posts, 1);
}

/// One SMS due now through a Twilio at `server`, dispatched once.
async fn one_twilio_send(server: &MockServer) -> (Harness, duebell::engine::Engine) {
    let (h, engine) = harness_with(vec![provider(
        "twilio",
        ProviderKind::Twilio,
        &server.uri(),
    )])
    .await;
    due_sms(&h, 1).await;
    engine.dispatcher.drain(h.now()).await.unwrap();
    (h, engine)
}

/// How many POSTs (sends) `server` received.
async fn posts_to(server: &MockServer) -> usize {
    server
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.method == wiremock::http::Method::POST)
        .count()
}

/// A webhook gateway that declares a `status_url` is asked about sends left
/// in flight, signed like a send: one it has is recorded sent, one it never
/// got goes back to the normal claim.
#[tokio::test]
async fn a_webhook_status_url_answers_for_sends_left_in_flight() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/send"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(3)))
        .up_to_n_times(2)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/send"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({"id": "gw-2"})))
        .mount(&server)
        .await;
    let mut p = provider(
        "gw",
        ProviderKind::Webhook,
        &format!("{}/send", server.uri()),
    );
    p.status_url = Some(format!("{}/status", server.uri()));
    let (h, engine) = harness_with(vec![p]).await;
    due_sms(&h, 2).await;
    engine.dispatcher.drain(h.now()).await.unwrap();
    let b0 = in_flight_id(&h, "B0").await;
    let b1 = in_flight_id(&h, "B1").await;
    assert_eq!(message_of(&h, "B0").await.state, MessageState::Sending);
    assert_eq!(message_of(&h, "B1").await.state, MessageState::Sending);
    let query = |id: i64| format!("message_id={id}&attempt_id=a1");
    for (id, resp) in [
        (
            b0,
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({"status": "accepted", "id": "gw-1"})),
        ),
        (b1, ResponseTemplate::new(404)),
    ] {
        Mock::given(method("GET"))
            .and(path("/status"))
            .and(wiremock::matchers::query_param(
                "message_id",
                id.to_string(),
            ))
            .and(header_exists("x-duebell-signature"))
            .respond_with(resp)
            .mount(&server)
            .await;
    }
    assert_eq!(engine.dispatcher.reconcile(h.now()).await.unwrap(), (1, 1));
    let m0 = message_of(&h, "B0").await;
    assert_eq!(
        (m0.state, m0.provider.as_deref()),
        (MessageState::Sent, Some("gw"))
    );
    assert_eq!(message_of(&h, "B1").await.state, MessageState::Planned);
    // The look-up is signed over its query string with the gateway's secret.
    let req = server
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.method == wiremock::http::Method::GET)
        .unwrap();
    let q = req.url.query().unwrap().to_owned();
    assert!(q == query(b0) || q == query(b1), "{q}");
    crate::support::assert_signed_over(&req, "webhook-secret-0123456789", q.as_bytes());
    engine.dispatcher.drain(h.now()).await.unwrap();
    assert_eq!(message_of(&h, "B1").await.state, MessageState::Sent);
    assert_eq!(posts_to(&server).await, 3, "two timed out, one resend");
}
