//! Every parser that takes outside input, fed hostile input: CSV and JSONL
//! rows, the TOML config, templates, API JSON bodies, provider callback
//! bodies and forms. The property is the same everywhere: an answer (a value
//! or a clear error), never a panic. Cases per property: 256 by default,
//! `DUEBELL_FUZZ_CASES` to run longer (CI runs the default, a bounded time).

use duebell::providers::{aliyun, tencent, twilio};
use duebell::sources::rows;
use proptest::prelude::*;

fn cases() -> u32 {
    std::env::var("DUEBELL_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

const BOOK: &str =
    "loan_id,borrower_id,name,phone,email,locale,timezone,due_date,amount_due,currency,status\n\
L1,B1,王伟,+8613800000001,wei@example.com,zh-CN,Asia/Shanghai,2026-12-10,1234.50,CNY,active\n\
L2,B2,\"Lee, Ann\",+12125550100,,en,America/New_York,2026-12-11,99.00,USD,active\n";

/// A valid text with random bytes replaced, inserted or cut: mostly
/// well-formed, broken in one place, which is where parsers go wrong.
fn mutated(base: &'static str) -> impl Strategy<Value = Vec<u8>> {
    let len = base.len();
    prop::collection::vec((0..len, any::<u8>(), 0u8..3), 0..8).prop_map(move |edits| {
        let mut b = base.as_bytes().to_vec();
        for (at, byte, op) in edits {
            let at = at.min(b.len());
            match op {
                0 if at < b.len() => b[at] = byte,
                1 => b.insert(at, byte),
                _ if at < b.len() => {
                    b.remove(at);
                }
                _ => {}
            }
        }
        b
    })
}

fn interesting_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[\"\\\\,\\n\\r{}%【】 a-zA-Z0-9.:+-]{0,80}",
        Just("\u{feff}".to_owned()),
        Just("\"".repeat(50)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn csv_books_never_panic(bytes in prop_oneof![mutated(BOOK), prop::collection::vec(any::<u8>(), 0..400)]) {
        if let Ok((columns, records)) = rows::csv_records(&bytes) {
            let _ = rows::detect_kind(&columns);
            for rec in records.flatten() {
                let _ = rows::loan_row(&rec);
                let _ = rows::payment_row(&rec);
            }
        }
    }

    #[test]
    fn jsonl_books_never_panic(lines in prop::collection::vec(prop_oneof![
        interesting_text(),
        Just(r#"{"loan_id":"L1","borrower_id":"B1","amount_due":1e400,"due_date":null}"#.to_owned()),
        Just(r#"{"loan_id":["x"],"phone":{"a":1}}"#.to_owned()),
    ], 0..6)) {
        let text = lines.join("\n");
        let _ = rows::jsonl_columns(text.as_bytes());
        for rec in rows::jsonl_records(text.as_bytes()).flatten() {
            let _ = rows::loan_row(&rec);
            let _ = rows::payment_row(&rec);
        }
    }

    #[test]
    fn configs_never_panic(bytes in mutated(duebell::cli::generate::SHIPPED_CONFIG)) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = duebell::config::load_from_str(&text, std::path::Path::new("fuzz.toml"), Vec::new());
    }

    #[test]
    fn config_values_of_the_wrong_shape_never_panic(
        key in prop::sample::select(vec![
            "store.url", "store.max_connections", "daemon.claim_lease", "api.tokens",
            "quiet_hours.rules", "caps.rules", "policy.steps", "providers", "routing.sms",
            "templates.required", "lender.localized", "opt_out.sms",
        ]),
        value in prop_oneof![
            Just("-1".to_owned()), Just("\"\"".to_owned()), Just("[]".to_owned()),
            Just("{}".to_owned()), Just("[{}]".to_owned()), Just("1e999".to_owned()),
            Just("[[1]]".to_owned()), Just("\"25:99-08:00\"".to_owned()),
            Just("[{ name = \"x\", max = 4294967296 }]".to_owned()),
        ],
    ) {
        let text = match key.split_once('.') {
            Some((table, field)) => format!("[{table}]\n{field} = {value}\n"),
            None => format!("{key} = {value}\n"),
        };
        let _ = duebell::config::load_from_str(&text, std::path::Path::new("fuzz.toml"), Vec::new());
        let env = vec![(format!("DUEBELL_{}", key.to_uppercase().replace('.', "__")), value.clone())];
        let _ = duebell::config::load_from_str("", std::path::Path::new("fuzz.toml"), env);
    }

    #[test]
    fn provider_callback_bodies_never_panic(body in prop_oneof![
        any::<String>(),
        Just(r#"[{"out_id":"1","biz_id":"b","success":"yes"}]"#.to_owned()),
        Just(r#"[{"out_id":"99999999999999999999","biz_id":7}]"#.to_owned()),
        Just(r#"[{"sid":null,"report_status":["x"]}]"#.to_owned()),
        Just("[[[[[]]]]]".to_owned()),
    ]) {
        if let Ok(serde_json::Value::Array(reports)) = serde_json::from_str::<serde_json::Value>(&body) {
            for r in &reports {
                let _ = aliyun::read_report(r);
                let _ = tencent::read_report(r);
            }
        }
        let params = twilio::form(body.as_bytes());
        let _ = twilio::read_status("tw", &params, Some(&body));
        let _ = twilio::read_inbound(&params);
        let _ = twilio::verify("token", "https://x/y", &params, &body);
    }
}

/// Templates and API bodies need a daemon or a folder: fewer, slower cases.
mod slow {
    use super::*;
    use crate::templates::config_with_templates;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(cases() / 8))]

        #[test]
        fn templates_never_panic_and_always_end(
            body in prop_oneof![
                interesting_text(),
                Just("{% for i in range(999999999) %}{{ i }}{% endfor %}".to_owned()),
                Just("{{ borrower.name * 99999999 }}".to_owned()),
                Just("{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}".to_owned()),
                Just("{% include '_loans.sms.j2' %}{% include 'tomorrow.sms.j2' %}".to_owned()),
                Just("{{ loan.amount_due | money(loan.currency) | money }}".to_owned()),
                Just("{{ loan.due_date | date('%Y-%m-%d %Q') }}".to_owned()),
            ],
        ) {
            let dir = tempfile::tempdir().unwrap();
            let cfg = config_with_templates(dir.path(), "");
            std::fs::write(
                dir.path().join("templates/en/tomorrow.sms.j2"),
                format!("{{{{ lender.name }}}} {body} {{{{ opt_out }}}}"),
            )
            .unwrap();
            let config = duebell::config::load(&cfg, Vec::new()).unwrap().config;
            let _ = duebell::engine::load_templates(&config);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(cases() / 4))]

        #[test]
        fn api_bodies_never_panic(
            route in prop::sample::select(vec![
                ("put", "/v1/loans/L1"), ("post", "/v1/payments"), ("post", "/v1/holds"),
                ("post", "/v1/opt-outs"), ("delete", "/v1/opt-outs"), ("post", "/v1/pause"),
                ("post", "/v1/resume"), ("get", "/v1/messages?limit=-1&state=%00"),
                ("delete", "/v1/holds/99999999999999999999999"), ("post", "/u/m1.zz"),
            ]),
            body in prop_oneof![
                any::<String>(),
                Just(r#"{"payment_id":"P","loan_id":"L1","amount":"1e40","paid_at":"2026-13-01T00:00:00Z"}"#.to_owned()),
                Just(r#"{"loan_id":"L1","kind":"promise_to_pay","until":"9999-99-99"}"#.to_owned()),
                Just(r#"{"borrower_id":"B1","name":"\u0000","phone":"+0","amount_due":"-0","currency":"XXX"}"#.to_owned()),
                Just(r#"{"channel":"fax","address":""}"#.to_owned()),
            ],
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let (base, stop) = crate::api::daemon_for_fuzz().await;
                let c = reqwest::Client::new();
                let r = c
                    .request(route.0.to_uppercase().parse().unwrap(), format!("{base}{}", route.1))
                    .bearer_auth(crate::api::TOKEN)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                // A client's mistake is a 4xx with a body; never a 5xx.
                assert!(r.status().as_u16() < 500, "{} {}: {}", route.0, route.1, r.status());
                stop.await;
            });
        }
    }
}
