//! Prometheus metrics: counters, gauges and summaries recorded in-process, in
//! Prometheus text. A leaf: the gauges read from the store at scrape time
//! are added by the API's `/metrics` route.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

type Key = (String, String);

#[derive(Debug, Default)]
pub struct Metrics {
    counters: Mutex<BTreeMap<Key, f64>>,
    gauges: Mutex<BTreeMap<Key, f64>>,
    summaries: Mutex<BTreeMap<Key, (f64, u64)>>,
}

pub fn labels(pairs: &[(&str, &str)]) -> String {
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

    /// Makes a counter exist (at 0) before anything counts it, so every
    /// documented series is there from the first scrape.
    pub fn declare_counter(&self, name: &str, l: &[(&str, &str)]) {
        self.counters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((name.to_owned(), labels(l)))
            .or_default();
    }

    /// Makes a summary exist (count 0) before anything is observed.
    pub fn declare_summary(&self, name: &str, l: &[(&str, &str)]) {
        self.summaries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((name.to_owned(), labels(l)))
            .or_default();
    }

    /// Makes a gauge exist at `value` unless it is set already.
    pub fn declare_gauge(&self, name: &str, l: &[(&str, &str)], value: f64) {
        self.gauges
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((name.to_owned(), labels(l)))
            .or_insert(value);
    }

    /// The sum of a counter over all its labels.
    pub fn counter_total(&self, name: &str) -> f64 {
        self.counters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|((n, _), _)| n == name)
            .map(|(_, v)| v)
            .sum()
    }

    /// Every series of `name` whose labels include `label="value"`: the
    /// counter or gauge value, or a summary's (sum, count) as (sum / count).
    pub fn series(&self, name: &str, label: &str, value: &str) -> Vec<(String, f64)> {
        let want = labels(&[(label, value)]);
        let has = |l: &str| l.split(',').any(|p| p == want);
        let mut out: Vec<(String, f64)> = Vec::new();
        for map in [&self.counters, &self.gauges] {
            out.extend(
                map.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .iter()
                    .filter(|((n, l), _)| n == name && has(l))
                    .map(|((_, l), v)| (l.clone(), *v)),
            );
        }
        out.extend(
            self.summaries
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .filter(|((n, l), _)| n == name && has(l))
                .map(|((_, l), (sum, count))| {
                    let mean = if *count == 0 {
                        0.0
                    } else {
                        sum / *count as f64
                    };
                    (l.clone(), mean)
                }),
        );
        out
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

    /// Every counter, gauge and summary recorded in this process, in
    /// Prometheus text, appended to `out`.
    pub fn render_into(&self, out: &mut String) {
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
    }
}
