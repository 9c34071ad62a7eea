//! Asynchronous bounces and complaints: each SMTP provider with a
//! `bounce_mailbox` has its mailbox read (IMAP or POP3, see
//! `providers/mailbox.rs`), each piece of mail read for what it reports
//! (`providers/bounce.rs`), matched to its message by the signed token in
//! the Return-Path it was mailed back to, and applied to the store once:
//! a hard bounce suppresses the address, soft bounces suppress it after
//! `[bounces] soft_limit` within `soft_window`, a complaint opts it out.
//!
//! Mail is removed (or moved) only after its report is recorded, so a crash
//! in between reads it again, and the store, keyed by the mail's digest,
//! applies it once. A bounce whose token does not verify is a forgery (or
//! from another deployment): counted and removed, never applied. Mail that
//! is not a report (an auto-reply, a borrower writing back) is left in an
//! IMAP mailbox, flagged seen, for a person.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use sha2::Digest;

use crate::domain::ConfigDuration;
use crate::metrics::Metrics;
use crate::providers::bounce::{self, BounceClass};
use crate::providers::mailbox::{self, MailboxConfig};
use crate::providers::{ProviderConfig, ProviderKind};
use crate::signing::Signer;
use crate::store::{BounceOutcome, BounceRecord, Store};

/// `[bounces]`: when soft bounces suppress an address.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BouncesConfig {
    /// Soft bounces (delays, full mailboxes, other temporary failures)
    /// within `soft_window` that suppress the address; 0: never.
    pub soft_limit: u32,
    pub soft_window: ConfigDuration,
}

impl Default for BouncesConfig {
    fn default() -> Self {
        BouncesConfig {
            soft_limit: 3,
            soft_window: ConfigDuration(Duration::from_secs(7 * 24 * 3600)),
        }
    }
}

impl BouncesConfig {
    pub fn validate(&self) -> Vec<(String, String)> {
        if self.soft_limit > 0 && self.soft_window.get() < Duration::from_secs(3600) {
            vec![(
                "bounces.soft_window".into(),
                "must be at least 1h for soft bounces to add up (or set soft_limit = 0)".into(),
            )]
        } else {
            Vec::new()
        }
    }
}

/// One SMTP provider's bounce mailbox.
#[derive(Debug, Clone)]
pub struct Mailbox {
    /// The provider's name.
    pub provider: String,
    /// The Return-Path's local part (`bounces`).
    pub local_part: String,
    pub config: MailboxConfig,
}

/// Every configured bounce mailbox (config validation has checked each).
pub fn mailboxes(providers: &[ProviderConfig]) -> Vec<Mailbox> {
    providers
        .iter()
        .filter(|p| p.kind == ProviderKind::Smtp)
        .filter_map(|p| {
            let config = p.bounce_mailbox.clone()?;
            let (local, _) = p.return_path.as_deref()?.rsplit_once('@')?;
            Some(Mailbox {
                provider: p.name.clone(),
                local_part: local.to_owned(),
                config,
            })
        })
        .collect()
}

/// What one reading of a mailbox found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PollSummary {
    pub read: usize,
    pub hard: usize,
    pub soft: usize,
    pub complaint: usize,
    /// Addresses newly suppressed or opted out.
    pub suppressed: usize,
    /// A token that does not verify.
    pub forged: usize,
    /// No token, or one naming no message.
    pub unmatched: usize,
    /// Not a bounce or complaint.
    pub unrecognized: usize,
    /// Applied before (read again).
    pub seen: usize,
}

impl std::fmt::Display for PollSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "read {}: hard {}, soft {}, complaint {}, addresses suppressed {}, forged {}, unmatched {}, not a report {}, already applied {}",
            self.read,
            self.hard,
            self.soft,
            self.complaint,
            self.suppressed,
            self.forged,
            self.unmatched,
            self.unrecognized,
            self.seen
        )
    }
}

/// Mail fetched per round trip of a session.
const BATCH: usize = 200;

/// What became of one piece of mail.
enum Handled {
    /// Recorded (or provably not applicable): remove it.
    Done,
    /// Not a report: leave it for a person.
    Keep,
}

/// Reads a mailbox once, until it holds nothing more to handle. A store
/// error stops the reading; what was not recorded stays in the mailbox.
pub async fn poll(
    mb: &Mailbox,
    store: &dyn Store,
    signer: &Signer,
    metrics: &Metrics,
    cfg: &BouncesConfig,
    now: DateTime<Utc>,
) -> Result<PollSummary, String> {
    let mut summary = PollSummary::default();
    let mut session = mailbox::open(&mb.config).await?;
    loop {
        let mails = session.fetch(BATCH).await?;
        let fetched = mails.len();
        let (mut done, mut keep) = (Vec::new(), Vec::new());
        let mut failed = None;
        for mail in mails {
            summary.read += 1;
            match handle(
                mb,
                &mail.raw,
                store,
                signer,
                metrics,
                cfg,
                now,
                &mut summary,
            )
            .await
            {
                Ok(Handled::Done) => done.push(mail.id),
                Ok(Handled::Keep) => keep.push(mail.id),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        session.finish(&done).await?;
        session.keep(&keep).await?;
        if let Some(e) = failed {
            let _ = session.close().await;
            return Err(format!(
                "{}: while recording a report: {e}",
                mb.config.describe()
            ));
        }
        if fetched < BATCH {
            break;
        }
    }
    session.close().await?;
    Ok(summary)
}

#[allow(clippy::too_many_arguments)]
async fn handle(
    mb: &Mailbox,
    raw: &[u8],
    store: &dyn Store,
    signer: &Signer,
    metrics: &Metrics,
    cfg: &BouncesConfig,
    now: DateTime<Utc>,
    summary: &mut PollSummary,
) -> Result<Handled, crate::store::StoreError> {
    let count = |class: &str| metrics.inc("duebell_bounces_total", &[("class", class)], 1.0);
    let digest = hex::encode(sha2::Sha256::digest(raw));
    let report = bounce::read(raw, &mb.local_part);
    let Some(class) = report.class else {
        summary.unrecognized += 1;
        count("not_a_report");
        tracing::info!(mailbox = %mb.provider, digest = %&digest[..12], why = %report.reason, "mail in the bounce mailbox is not a bounce or complaint; left for a person");
        return Ok(Handled::Keep);
    };
    let ours = report.tokens.iter().find_map(|t| signer.verify_verp(t));
    let Some(message_id) = ours else {
        if report.tokens.is_empty() {
            summary.unmatched += 1;
            count("unmatched");
            tracing::warn!(mailbox = %mb.provider, digest = %&digest[..12], class = class.as_str(), "a report with no Return-Path token of ours; not applied");
        } else {
            summary.forged += 1;
            count("forged");
            tracing::warn!(mailbox = %mb.provider, digest = %&digest[..12], class = class.as_str(), "a report whose Return-Path token does not verify (forged, or another deployment's); not applied");
        }
        return Ok(Handled::Done);
    };
    let record = BounceRecord {
        digest: &digest,
        mailbox: &mb.provider,
        message_id,
        class: class.as_str(),
        status: &report.status,
        format: report.format,
        reason: &report.reason,
        soft_limit: cfg.soft_limit,
        soft_window: chrono::Duration::from_std(cfg.soft_window.get())
            .unwrap_or(chrono::Duration::MAX),
    };
    match store.record_bounce(now, &record).await? {
        BounceOutcome::Seen => summary.seen += 1,
        BounceOutcome::NoMessage => {
            summary.unmatched += 1;
            count("unmatched");
            tracing::warn!(mailbox = %mb.provider, message_id, "a report for a message this store does not hold; not applied");
        }
        BounceOutcome::Recorded {
            address,
            suppressed,
            soft_count,
        } => {
            match class {
                BounceClass::Hard => summary.hard += 1,
                BounceClass::Soft => summary.soft += 1,
                BounceClass::Complaint => summary.complaint += 1,
            }
            count(class.as_str());
            if let Some(why) = suppressed {
                summary.suppressed += 1;
                metrics.inc(
                    "duebell_addresses_suppressed_total",
                    &[("reason", why)],
                    1.0,
                );
            }
            tracing::info!(
                mailbox = %mb.provider,
                message_id,
                class = class.as_str(),
                status = %report.status,
                address = %crate::domain::mask_email(&address),
                suppressed = suppressed.unwrap_or("no"),
                soft_count,
                "bounce mailbox report applied"
            );
        }
    }
    Ok(Handled::Done)
}

/// Reads every mailbox once (`duebell bounces poll`), each independently.
pub async fn poll_all(
    boxes: &[Mailbox],
    store: &dyn Store,
    signer: &Signer,
    metrics: &Metrics,
    cfg: &BouncesConfig,
    now: DateTime<Utc>,
) -> Vec<(String, Result<PollSummary, String>)> {
    let mut out = Vec::new();
    for mb in boxes {
        let r = poll(mb, store, signer, metrics, cfg, now).await;
        if let Err(e) = &r {
            metrics.inc(
                "duebell_bounce_mailbox_errors_total",
                &[("provider", &mb.provider)],
                1.0,
            );
            tracing::warn!(mailbox = %mb.provider, "cannot read the bounce mailbox: {e}");
        }
        out.push((mb.provider.clone(), r));
    }
    out
}

/// The daemon's reader of one mailbox: reads it at once, then every
/// `every`, until `stop`. A failure (server down, bad password) is logged
/// and counted, and the next reading comes at the usual time.
pub async fn keep_reading(
    mb: Mailbox,
    store: std::sync::Arc<dyn Store>,
    signer: std::sync::Arc<Signer>,
    metrics: std::sync::Arc<Metrics>,
    cfg: BouncesConfig,
    clock: std::sync::Arc<dyn crate::clock::Clock>,
    stop: tokio_util::sync::CancellationToken,
) {
    loop {
        let reading = poll_all(
            std::slice::from_ref(&mb),
            store.as_ref(),
            &signer,
            &metrics,
            &cfg,
            clock.now(),
        );
        let results = tokio::select! {
            _ = stop.cancelled() => return,
            r = reading => r,
        };
        for (_, r) in results {
            if let Ok(s) = r {
                if s.read > 0 {
                    tracing::info!(mailbox = %mb.provider, "bounce mailbox: {s}");
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(mb.config.every.get()) => {}
        }
    }
}
