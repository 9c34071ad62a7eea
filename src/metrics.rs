//! Prometheus metrics: counters and summaries recorded in-process, plus
//! gauges read from the store at scrape time (messages by state, channel,
//! provider and reason; outbox depth).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

use crate::api::Pauses;
use crate::store::{Store, StoreError};

type Key = (String, String);

#[derive(Debug, Default)]
pub struct Metrics {
    counters: Mutex<BTreeMap<Key, f64>>,
    gauges: Mutex<BTreeMap<Key, f64>>,
    summaries: Mutex<BTreeMap<Key, (f64, u64)>>,
}

fn labels(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            format!(
                "{k}=\"{}\"",
                v.replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', " ")
            )
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// A short, bounded label for a free-text reason.
pub fn reason_class(reason: &str) -> &'static str {
    let r = reason.to_ascii_lowercase();
    if r.starts_with("quiet hours") {
        "quiet_hours"
    } else if r.starts_with("contact cap") {
        "cap"
    } else if r.contains("opted out") {
        "opted_out"
    } else if r.contains("hold") {
        "hold"
    } else if r.contains("no longer active") || r.contains(" paid") || r.contains(" closed") {
        "loan_inactive"
    } else if r.starts_with("no ") && r.contains("address") {
        "no_address"
    } else if r.starts_with("missed")
        || r.contains("window closed")
        || r.contains("after the step's window")
    {
        "window_passed"
    } else if r.starts_with("due") {
        "due"
    } else if r.contains("retry") || r.contains("transient") {
        "retry"
    } else {
        "other"
    }
}

impl Metrics {
    pub fn inc(&self, name: &str, l: &[(&str, &str)], by: f64) {
        *self
            .counters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((name.to_owned(), labels(l)))
            .or_default() += by;
    }

    pub fn set(&self, name: &str, l: &[(&str, &str)], value: f64) {
        self.gauges
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((name.to_owned(), labels(l)), value);
    }

    pub fn observe(&self, name: &str, l: &[(&str, &str)], value: f64) {
        let mut s = self.summaries.lock().unwrap_or_else(|e| e.into_inner());
        let e = s.entry((name.to_owned(), labels(l))).or_default();
        e.0 += value;
        e.1 += 1;
    }

    /// Providers whose circuit breaker is open.
    pub fn failing_providers(&self) -> Vec<String> {
        self.gauges
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|((name, _), v)| name == "duebell_circuit_open" && **v > 0.0)
            .filter_map(|((_, l), _)| l.split('"').nth(1).map(str::to_owned))
            .collect()
    }

    pub async fn render(&self, store: &dyn Store, pauses: &Pauses) -> Result<String, StoreError> {
        let mut out = String::new();
        out.push_str("# HELP duebell_messages Messages by state, channel, provider and reason class.\n# TYPE duebell_messages gauge\n");
        let mut depth = 0u64;
        let mut grouped: BTreeMap<String, u64> = BTreeMap::new();
        for (state, channel, provider, reason, n) in store.message_breakdown().await? {
            if state.is_pending() {
                depth += n;
            }
            let l = labels(&[
                ("state", state.as_str()),
                ("channel", channel.as_str()),
                ("provider", provider.as_deref().unwrap_or("")),
                ("reason", reason_class(reason.as_deref().unwrap_or(""))),
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
            u8::from(pauses.all.load(std::sync::atomic::Ordering::SeqCst))
        );
        let mut last = String::new();
        for ((name, l), v) in self
            .counters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            if *name != last {
                let _ = writeln!(out, "# TYPE {name} counter");
                last.clone_from(name);
            }
            let _ = writeln!(out, "{name}{{{l}}} {v}");
        }
        for ((name, l), v) in self.gauges.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            if *name != last {
                let _ = writeln!(out, "# TYPE {name} gauge");
                last.clone_from(name);
            }
            let _ = writeln!(out, "{name}{{{l}}} {v}");
        }
        for ((name, l), (sum, count)) in self
            .summaries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            if *name != last {
                let _ = writeln!(out, "# TYPE {name} summary");
                last.clone_from(name);
            }
            let _ = writeln!(out, "{name}_sum{{{l}}} {sum}\n{name}_count{{{l}}} {count}");
        }
        Ok(out)
    }
}
