//! `GET /metrics`: the gauges read from the store at scrape time (messages
//! by state, channel, provider and reason class; outbox depth; pause), then
//! everything the process recorded (`crate::metrics`).

use std::collections::BTreeMap;
use std::fmt::Write;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::{ApiError, ApiState};
use crate::metrics::labels;

pub(super) async fn metrics(State(s): State<ApiState>) -> Result<Response, ApiError> {
    let mut out = format!(
        "# HELP duebell_build_info The running binary's version.\n# TYPE duebell_build_info gauge\nduebell_build_info{{version=\"{}\"}} 1\n",
        env!("CARGO_PKG_VERSION")
    );
    out.push_str("# HELP duebell_messages Messages by state, channel, provider and reason class.\n# TYPE duebell_messages gauge\n");
    let mut depth = 0u64;
    let mut grouped: BTreeMap<String, u64> = BTreeMap::new();
    // Every state and channel is a series from the first scrape, at 0 until
    // a message is in it (provider and reason empty).
    for state in crate::store::MessageState::ALL {
        for channel in [crate::domain::Channel::Sms, crate::domain::Channel::Email] {
            let l = labels(&[
                ("state", state.as_str()),
                ("channel", channel.as_str()),
                ("provider", ""),
                ("reason", ""),
            ]);
            grouped.insert(l, 0);
        }
    }
    for (state, channel, provider, reason, n) in s.store.message_breakdown().await? {
        if state.is_pending() {
            depth += n;
        }
        let l = labels(&[
            ("state", state.as_str()),
            ("channel", channel.as_str()),
            ("provider", provider.as_deref().unwrap_or("")),
            ("reason", reason.map_or("other", |r| r.code().as_str())),
        ]);
        *grouped.entry(l).or_default() += n;
    }
    for (l, n) in grouped {
        let _ = writeln!(out, "duebell_messages{{{l}}} {n}");
    }
    let _ = writeln!(out, "# HELP duebell_outbox_depth Messages planned or deferred.\n# TYPE duebell_outbox_depth gauge\nduebell_outbox_depth {depth}");
    let _ = writeln!(
        out,
        "# TYPE duebell_paused gauge\nduebell_paused {}",
        u8::from(s.pauses.all.load(std::sync::atomic::Ordering::SeqCst))
    );
    s.metrics.render_into(&mut out);
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response())
}
