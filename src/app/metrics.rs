//! The daemon's metric series, declared at start-up.

use crate::config::Config;

/// Every series the README documents, present (at zero) from the first
/// scrape: dashboards and alerts need not special-case "never happened".
pub(super) fn declare(m: &crate::metrics::Metrics, config: &Config) {
    use crate::providers::ProviderKind;
    m.declare_summary("duebell_planner_tick_seconds", &[]);
    m.declare_counter("duebell_store_busy_retries_total", &[]);
    m.declare_counter("duebell_console_csrf_refused_total", &[]);
    for outcome in ["ok", "password", "unknown_account", "disabled", "locked"] {
        m.declare_counter("duebell_console_logins_total", &[("outcome", outcome)]);
    }
    m.declare_counter("duebell_bounces_total", &[("class", "hard_at_send")]);
    m.declare_counter(
        "duebell_addresses_suppressed_total",
        &[("reason", "hard_bounce")],
    );
    let boxes = crate::bounces::mailboxes(&config.providers);
    if !boxes.is_empty() {
        for class in [
            "hard",
            "soft",
            "complaint",
            "forged",
            "unmatched",
            "not_a_report",
        ] {
            m.declare_counter("duebell_bounces_total", &[("class", class)]);
        }
        for reason in ["soft_bounces", "complaint"] {
            m.declare_counter("duebell_addresses_suppressed_total", &[("reason", reason)]);
        }
    }
    for mb in &boxes {
        m.declare_counter(
            "duebell_bounce_mailbox_errors_total",
            &[("provider", &mb.provider)],
        );
    }
    for s in config.policy.steps.iter().filter_map(|s| s.offer.as_ref()) {
        for state in ["made", "taken", "expired", "void"] {
            m.declare_counter(
                "duebell_offers_total",
                &[("kind", s.kind.as_str()), ("state", state)],
            );
        }
    }
    for what in ["templates", "config"] {
        m.declare_counter("duebell_reload_rejected_total", &[("what", what)]);
    }
    for p in &config.providers {
        let name = p.name.as_str();
        m.declare_summary("duebell_rate_limit_wait_seconds", &[("provider", name)]);
        m.declare_summary("duebell_provider_latency_seconds", &[("provider", name)]);
        m.declare_counter(
            "duebell_provider_results_total",
            &[("provider", name), ("class", "ok")],
        );
        m.declare_gauge("duebell_circuit_open", &[("provider", name)], 0.0);
        let refusals: &[&str] = match p.kind {
            ProviderKind::Twilio => &["unknown provider", "bad signature"],
            ProviderKind::Aliyun | ProviderKind::Tencent => &["unknown provider", "bad token"],
            _ => &[],
        };
        let kind = format!("{:?}", p.kind).to_lowercase();
        for why in refusals {
            m.declare_counter(
                "duebell_callbacks_refused_total",
                &[("kind", kind.as_str()), ("why", why)],
            );
        }
        m.declare_counter("duebell_receipts_unmatched_total", &[("provider", name)]);
        for outcome in ["found", "not_sent", "unanswered"] {
            m.declare_counter(
                "duebell_lookups_total",
                &[("provider", name), ("outcome", outcome)],
            );
        }
    }
    // A callback for a provider that is not configured can come any time.
    for kind in ["twilio", "aliyun", "tencent"] {
        m.declare_counter(
            "duebell_callbacks_refused_total",
            &[("kind", kind), ("why", "unknown provider")],
        );
    }
}
