//! `duebell simulate`: the real planner, compliance gate and dispatcher in
//! virtual time over a throwaway copy of the store (or of a `--data` book),
//! with every provider replaced by a recorder and timed events (payments,
//! opt-outs, holds, inbound SMS) applied at their instants. It drives the
//! same `Engine` as `duebell run`, so it predicts what the daemon will do.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde::Serialize;

use crate::clock::{Clock, TestClock};
use crate::config::Config;
use crate::domain::{parse_date, parse_instant, Channel, HoldKind, LoanId, PaymentId, PhoneNumber};
use crate::engine::Engine;
use crate::error::ExitStatus;
use crate::providers::recorder::Recorder;
use crate::providers::Router;
use crate::store::{PaymentRow, Store};

#[derive(Debug, Clone, clap::Args)]
pub struct SimulateArgs {
    /// Loan-book or payments files to simulate instead of the store (repeatable).
    #[arg(long)]
    pub data: Vec<PathBuf>,
    /// JSONL of timed events.
    #[arg(long)]
    pub events: Option<PathBuf>,
    /// Start instant, RFC 3339.
    #[arg(long)]
    pub from: String,
    /// Days to simulate.
    #[arg(long)]
    pub days: u32,
    #[arg(long, value_enum, default_value = "jsonl")]
    pub format: SimFormat,
    /// Write here instead of stdout.
    #[arg(long)]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SimFormat {
    Jsonl,
    Table,
    Svg,
}

/// A timed event.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Payment {
        payment_id: PaymentId,
        loan_id: LoanId,
        amount: rust_decimal::Decimal,
    },
    OptOut {
        borrower_id: String,
        channel: Channel,
    },
    Hold {
        loan_id: Option<String>,
        borrower_id: Option<String>,
        kind: HoldKind,
        until: Option<NaiveDate>,
    },
    InboundSms {
        from: PhoneNumber,
        body: String,
    },
}

/// Reads an events file; errors are `PATH:LINE: field: reason`.
pub fn read_events(path: &Path) -> Result<Vec<(DateTime<Utc>, Event)>, Vec<String>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| vec![format!("{}: cannot read: {e}", path.display())])?;
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at_line = |field: &str, reason: String| {
            format!("{}:{}: {field}: {reason}", path.display(), i + 1)
        };
        let v: serde_json::Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(e) => {
                errors.push(at_line("row", format!("is not a JSON object: {e}")));
                continue;
            }
        };
        let field = |name: &str| -> Result<String, String> {
            match &v[name] {
                serde_json::Value::String(s) => Ok(s.clone()),
                serde_json::Value::Number(n) => Ok(n.to_string()),
                serde_json::Value::Null => Err(at_line(name, "is missing".into())),
                other => Err(at_line(name, format!("must be a string, not {other}"))),
            }
        };
        let opt = |name: &str| field(name).ok();
        let parsed = (|| -> Result<(DateTime<Utc>, Event), String> {
            let at = parse_instant(&field("at")?).map_err(|e| at_line("at", e.0))?;
            let ev = match field("type")?.as_str() {
                "payment" => Event::Payment {
                    payment_id: PaymentId::parse(&field("payment_id")?)
                        .map_err(|e| at_line("payment_id", e.0))?,
                    loan_id: LoanId::parse(&field("loan_id")?)
                        .map_err(|e| at_line("loan_id", e.0))?,
                    amount: crate::domain::money_amount(&field("amount")?)
                        .map_err(|e| at_line("amount", e.0))?,
                },
                "opt_out" => Event::OptOut {
                    borrower_id: field("borrower_id")?,
                    channel: Channel::parse(&field("channel")?)
                        .map_err(|e| at_line("channel", e.0))?,
                },
                "hold" => {
                    let (loan_id, borrower_id) = (opt("loan_id"), opt("borrower_id"));
                    if loan_id.is_none() && borrower_id.is_none() {
                        return Err(at_line(
                            "loan_id",
                            "a hold needs loan_id or borrower_id".into(),
                        ));
                    }
                    Event::Hold {
                        loan_id,
                        borrower_id,
                        kind: HoldKind::parse(&field("kind")?).map_err(|e| at_line("kind", e.0))?,
                        until: opt("until")
                            .map(|u| parse_date(&u))
                            .transpose()
                            .map_err(|e| at_line("until", e.0))?,
                    }
                }
                "inbound_sms" => Event::InboundSms {
                    from: PhoneNumber::parse(&field("from")?).map_err(|e| at_line("from", e.0))?,
                    body: field("body")?,
                },
                other => {
                    return Err(at_line(
                        "type",
                        format!(
                        "`{other}` is not an event type; use payment, opt_out, hold or inbound_sms"
                    ),
                    ))
                }
            };
            Ok((at, ev))
        })();
        match parsed {
            Ok(e) => out.push(e),
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    out.sort_by_key(|(at, _)| *at);
    Ok(out)
}

/// One recorded send.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SimSend {
    pub at: DateTime<Utc>,
    pub message_id: i64,
    pub borrower_id: String,
    pub loan_ids: Vec<String>,
    /// Each loan's own step (a consolidated message may carry loans at
    /// different steps; `step` is the message's lead step).
    pub loan_steps: Vec<String>,
    pub channel: Channel,
    pub step: String,
    pub template: String,
    pub provider: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub segments: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    pub body: String,
}

/// Applies one event at `at`. Returns the borrower it touched (external
/// id), or `None` when that is not known without a search (an inbound
/// STOP names an address).
pub async fn apply(
    store: &dyn Store,
    at: DateTime<Utc>,
    ev: &Event,
    stop_words: &crate::compliance::StopWords,
) -> Result<Option<String>, String> {
    let owner = |loan: LoanId| async move {
        let view = store.loan(&loan).await.map_err(|e| e.to_string())?;
        Ok::<_, String>(view.map(|v| v.borrower_id))
    };
    let touched = match ev {
        Event::Payment { loan_id, .. } => owner(loan_id.clone()).await?,
        Event::OptOut { borrower_id, .. } => Some(borrower_id.clone()),
        Event::Hold {
            borrower_id: Some(b),
            ..
        } => Some(b.clone()),
        Event::Hold {
            loan_id: Some(l), ..
        } => match LoanId::parse(l) {
            Ok(id) => owner(id).await?,
            Err(_) => None,
        },
        Event::Hold { .. } | Event::InboundSms { .. } => None,
    };
    let r = match ev {
        Event::Payment {
            payment_id,
            loan_id,
            amount,
        } => {
            let mut tx = store.begin_import(at).await.map_err(|e| e.to_string())?;
            let row = PaymentRow {
                line: 0,
                payment: crate::domain::Payment {
                    id: payment_id.clone(),
                    loan: loan_id.clone(),
                    amount: *amount,
                    paid_at: at,
                },
            };
            tx.upsert_payments(&[row])
                .await
                .map_err(|e| e.to_string())?;
            tx.commit().await.map_err(|e| e.to_string())
        }
        Event::OptOut {
            borrower_id,
            channel,
        } => store
            .set_opt_out(at, borrower_id, *channel, true, "event")
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
        Event::Hold {
            loan_id,
            borrower_id,
            kind,
            until,
        } => store
            .add_hold(
                at,
                borrower_id.as_deref(),
                loan_id.as_deref(),
                *kind,
                *until,
            )
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
        Event::InboundSms { from, body } => match stop_words.classify(body) {
            Some(true) => store
                .opt_out_address(at, Channel::Sms, from.as_str(), "inbound STOP")
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            _ => Ok(()),
        },
    };
    r.map(|()| touched)
}

/// Runs a simulation and returns every send.
pub async fn simulate(
    config: &Config,
    data: &[PathBuf],
    events: Vec<(DateTime<Utc>, Event)>,
    from: DateTime<Utc>,
    days: u32,
) -> anyhow::Result<Vec<SimSend>> {
    let dir = tempfile::tempdir()?;
    let mut config = config.clone();
    let source_store = config.store.clone();
    config.store.url = format!("sqlite://{}", dir.path().join("sim.db").display());
    // A throwaway store needs no fsync per commit.
    config.store.synchronous = crate::config::Synchronous::Off;
    if data.is_empty() {
        let src = crate::store::open(&source_store).await?;
        src.snapshot_to(&dir.path().join("sim.db")).await?;
        src.close().await;
    }
    let store = crate::store::open(&config.store).await?;
    for path in data {
        let report =
            crate::sources::import_file(store.as_ref(), path, from, crate::sources::Progress::Off)
                .await?;
        for e in &report.errors {
            tracing::warn!("{e}");
        }
    }
    let clock = TestClock::at(from);
    let recorder = Arc::new(Recorder::new(Arc::new(clock.clone())));
    let engine = Engine::build(
        &config,
        store.clone(),
        Some(Router::single(recorder.clone())),
    )
    .map_err(|p| anyhow::anyhow!("{}", p.join("\n")))?;
    let stop_words =
        crate::compliance::StopWords::new(&config.opt_out.stop_words, &config.opt_out.start_words);
    let end = from + Duration::days(i64::from(days));
    let schedule = &config.policy.tick.schedule;
    let mut next_tick = from;
    let mut events = events.into_iter().peekable();
    // The first pass reads the whole book; later ticks only the borrowers
    // whose next look has come, and each event re-plans the borrower it
    // touched, as the daemon's API does: the work follows the book.
    let mut full = true;
    let mut last_pass = from;
    loop {
        let now = clock.now();
        let mut touched = Vec::new();
        while let Some((at, ev)) = events.next_if(|(at, _)| *at <= now) {
            let who = apply(store.as_ref(), at.max(from), &ev, &stop_words)
                .await
                .map_err(anyhow::Error::msg)?;
            touched.push(who);
        }
        if !touched.is_empty() || full || now >= next_tick {
            // A payment may take an offer (and settle its loan) before the
            // planner looks at the loan again.
            crate::offers::settle(store.as_ref(), now, None).await?;
            touched.sort();
            touched.dedup();
            for who in &touched {
                match who {
                    Some(who) => {
                        engine.replan_borrower(now, who).await?;
                    }
                    // An inbound STOP: what it opted out can no longer go
                    // (it decides nothing new for the planner).
                    None => {
                        store.cancel_ineligible(now, None, None).await?;
                    }
                }
            }
        }
        if full || now >= next_tick {
            let pass = match std::mem::take(&mut full) {
                true => crate::planner::Pass::Full,
                false => crate::planner::Pass::Due {
                    previous: last_pass,
                },
            };
            last_pass = now;
            let tick = engine.plan_pass(now, pass, None).await?;
            // Ticks before the next local midnight would decide nothing new:
            // jump to the first cron tick at or after it.
            let from_instant = tick
                .next_change
                .map_or(now, |t| (t - Duration::seconds(1)).max(now));
            next_tick = schedule.after(&from_instant).next().unwrap_or(end);
        }
        engine.dispatch(now).await?;
        let mut next = next_tick;
        if let Some((at, _)) = events.peek() {
            next = next.min(*at);
        }
        if let Some(at) = store.next_pending_at().await? {
            next = next.min(at);
        }
        let next = next.max(now + Duration::seconds(1));
        if next >= end {
            break;
        }
        clock.set(next);
    }
    // Every decision, not only the sends: what was deferred, suppressed,
    // cancelled or expired, and why (by reason class), on stderr.
    let mut summary: BTreeMap<(String, String, String), u64> = BTreeMap::new();
    for (state, channel, _, reason, n) in store.message_breakdown().await? {
        let class = reason.map_or("other", |r| r.code().as_str());
        *summary
            .entry((
                state.as_str().to_owned(),
                channel.as_str().to_owned(),
                class.to_owned(),
            ))
            .or_default() += n;
    }
    eprintln!("decisions at the end of the simulation (state, channel, reason):");
    for ((state, channel, class), n) in &summary {
        eprintln!("  {state:<11} {channel:<6} {class:<14} {n}");
    }
    crate::offers::settle(store.as_ref(), end, None).await?;
    let offers = store.offers(None).await?;
    if !offers.is_empty() {
        let count = |s: crate::domain::OfferState| offers.iter().filter(|o| o.state == s).count();
        use crate::domain::OfferState::{Expired, Open, Taken, Void};
        eprintln!(
            "offers: made {}, taken {}, expired {}, still open {} (never sent: {})",
            offers.len() - count(Void),
            count(Taken),
            count(Expired),
            count(Open),
            count(Void)
        );
    }
    store.close().await;
    let provider_for = |ch: Channel| -> String {
        match ch {
            Channel::Sms => config.routing.sms.first().cloned().unwrap_or_default(),
            Channel::Email => config.routing.email.first().cloned().unwrap_or_default(),
        }
    };
    Ok(recorder
        .take()
        .into_iter()
        .map(|(at, m)| SimSend {
            at,
            message_id: m.message_id,
            borrower_id: m.borrower_id,
            loan_ids: m.loan_ids,
            loan_steps: m.loan_steps,
            channel: m.channel,
            step: m.step,
            template: m.template,
            provider: provider_for(m.channel),
            segments: m.segments,
            subject: m.subject,
            body: m.body,
        })
        .collect())
}

/// Sends per (UTC day, channel, step).
pub fn per_day(sends: &[SimSend]) -> BTreeMap<(NaiveDate, Channel, String), u64> {
    let mut m = BTreeMap::new();
    for s in sends {
        *m.entry((s.at.date_naive(), s.channel, s.step.clone()))
            .or_insert(0) += 1;
    }
    m
}

fn table(sends: &[SimSend]) -> String {
    let mut out = format!(
        "{:<10}  {:<6}  {:<10}  {:>5}\n",
        "date", "chan", "step", "sends"
    );
    for ((day, ch, step), n) in per_day(sends) {
        out.push_str(&format!(
            "{day:<10}  {:<6}  {step:<10}  {n:>5}\n",
            ch.as_str()
        ));
    }
    out.push_str(&format!("total: {}\n", sends.len()));
    out
}

/// A stacked bar chart of sends per day by step.
fn svg(sends: &[SimSend], from: DateTime<Utc>, days: u32) -> String {
    let counts = per_day(sends);
    let mut steps: Vec<String> = counts.keys().map(|(_, _, s)| s.clone()).collect();
    steps.sort();
    steps.dedup();
    let palette = [
        "#2563eb", "#16a34a", "#f59e0b", "#dc2626", "#7c3aed", "#0891b2", "#db2777", "#65a30d",
        "#9ca3af",
    ];
    let mut by_day: BTreeMap<NaiveDate, BTreeMap<&str, u64>> = BTreeMap::new();
    for ((d, _, s), n) in &counts {
        *by_day.entry(*d).or_default().entry(s.as_str()).or_default() += n;
    }
    let max = by_day
        .values()
        .map(|m| m.values().sum::<u64>())
        .max()
        .unwrap_or(1)
        .max(1);
    let (w, h, left, bottom) = (900.0, 420.0, 50.0, 60.0);
    let bar_w = (w - left - 20.0) / f64::from(days.max(1));
    let scale = (h - bottom - 30.0) / max as f64;
    let mut out = format!("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"11\">\n");
    out.push_str(&format!(
        "<text x=\"{left}\" y=\"16\" font-size=\"14\">Sends per day by step ({} total)</text>\n",
        sends.len()
    ));
    out.push_str(&format!("<text x=\"8\" y=\"{}\">{max}</text>\n", 34));
    for d in 0..days {
        let day = (from + Duration::days(i64::from(d))).date_naive();
        let x = left + f64::from(d) * bar_w;
        let mut y = h - bottom;
        if let Some(m) = by_day.get(&day) {
            for (i, s) in steps.iter().enumerate() {
                let n = m.get(s.as_str()).copied().unwrap_or(0);
                if n == 0 {
                    continue;
                }
                let bh = n as f64 * scale;
                y -= bh;
                out.push_str(&format!(
                    "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{bh:.1}\" fill=\"{}\"><title>{day} {s}: {n}</title></rect>\n",
                    (bar_w - 2.0).max(1.0),
                    palette[i % palette.len()]
                ));
            }
        }
        if d % 5 == 0 {
            out.push_str(&format!(
                "<text x=\"{x:.1}\" y=\"{}\">{}</text>\n",
                h - bottom + 14.0,
                day.format("%m-%d")
            ));
        }
    }
    for (i, s) in steps.iter().enumerate() {
        let x = left + (i as f64) * 95.0;
        out.push_str(&format!("<rect x=\"{x}\" y=\"{}\" width=\"10\" height=\"10\" fill=\"{}\"/><text x=\"{}\" y=\"{}\">{s}</text>\n", h - 24.0, palette[i % palette.len()], x + 14.0, h - 15.0));
    }
    out.push_str("</svg>\n");
    out
}

/// `duebell simulate`.
pub async fn run(config: &Config, args: &SimulateArgs) -> ExitStatus {
    let from = match parse_instant(&args.from) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("duebell: --from: {e}");
            return ExitStatus::BadConfig;
        }
    };
    let events = match args.events.as_deref().map(read_events).transpose() {
        Ok(e) => e.unwrap_or_default(),
        Err(errors) => {
            for e in errors {
                eprintln!("{e}");
            }
            return ExitStatus::BadConfig;
        }
    };
    let sends = match simulate(config, &args.data, events, from, args.days).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("duebell: simulation failed: {e:#}");
            return ExitStatus::Failed;
        }
    };
    let text = match args.format {
        SimFormat::Jsonl => sends
            .iter()
            .map(|s| serde_json::to_string(s).unwrap_or_default() + "\n")
            .collect(),
        SimFormat::Table => table(&sends),
        SimFormat::Svg => svg(&sends, from, args.days),
    };
    let written = match &args.output {
        Some(p) => std::fs::write(p, text).map_err(|e| format!("{}: {e}", p.display())),
        None => std::io::stdout()
            .write_all(text.as_bytes())
            .map_err(|e| e.to_string()),
    };
    match written {
        Ok(()) => ExitStatus::Ok,
        Err(e) => {
            eprintln!("duebell: cannot write the output: {e}");
            ExitStatus::Failed
        }
    }
}
