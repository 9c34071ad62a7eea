//! The dispatcher's single step, `dispatch_next`: claim the next due message
//! (re-checking eligibility, quiet hours and caps in the claim transaction),
//! render it, hand it to a provider, record the outcome. Before the provider
//! call the message is durably `sending` with an attempt id, so a crash can
//! never lead to a blind resend: `reconcile` asks the provider or marks it
//! `unknown` for an operator.

mod batch;
mod context;
mod offer;
mod pauses;
mod reconcile;

pub use batch::{Claimed, Done};
pub use context::context_for;
pub use pauses::Pauses;

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use chrono_tz::Tz;

use crate::compliance::caps::Subject;
use crate::compliance::{Gate, GateDecision};
use crate::domain::Channel;
use crate::eligibility;
use crate::policy::PolicyConfig;
use crate::providers::{Outbound, ProviderError, Router};
use crate::reason::Reason;
use crate::store::{ClaimView, Finish, Store, StoreError, Verdict};
use crate::templates::context::ContextSource;
use crate::templates::TemplateSet;

/// How long the outcome of a send is retried against a busy store.
const RECORD_PATIENCE: std::time::Duration = std::time::Duration::from_secs(120);

/// Transient failures are retried this many times, then the message fails.
pub const MAX_ATTEMPTS: i64 = 5;

/// What one step did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing due now.
    Idle,
    /// The claim decided without sending (deferred, cancelled, expired).
    Decided(Verdict),
    Sent {
        message_id: i64,
        provider: String,
    },
    Retrying {
        message_id: i64,
        reason: Reason,
    },
    Failed {
        message_id: i64,
        reason: Reason,
    },
    /// Claimed ahead and released unsent when the sending loop stopped:
    /// planned again.
    Released {
        message_id: i64,
    },
}

/// The rules and parts the dispatcher needs; cheap to clone.
#[derive(Clone)]
pub struct Dispatcher {
    pub store: Arc<dyn Store>,
    pub gate: Arc<Gate>,
    pub policy: Arc<PolicyConfig>,
    pub templates: Arc<TemplateSet>,
    pub router: Router,
    pub context: Arc<ContextSource>,
    pub default_tz: Tz,
    pub default_locale: String,
    pub sms_signature: String,
    /// Forbidden phrases for firm and formal steps, checked on each message.
    pub tone: Arc<crate::templates::ToneConfig>,
    /// Base URL for one-click unsubscribe links in email.
    pub unsubscribe_base: String,
    pub unsubscribe: Arc<crate::signing::Signer>,
    pub pauses: Arc<Pauses>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// This process's name on its claims.
    pub instance: Arc<str>,
    /// How long a claim holds without renewal.
    pub claim_lease: std::time::Duration,
    /// Sends the daemon keeps in flight at once: the routed providers'
    /// `concurrency`, summed (each provider's own limit is its guard's).
    pub width: usize,
    /// Messages this process has claimed and not yet recorded: its own
    /// sends in flight, which reconciliation leaves alone.
    pub in_hand: reconcile::InHandSet,
}

/// Decides a claim: eligibility, then the gate.
pub fn decide(view: &ClaimView, now: DateTime<Utc>, gate: &Gate, default_tz: Tz) -> Verdict {
    let zones = eligibility::borrower_zones(&view.borrower, default_tz);
    let today = now.with_timezone(&zones.primary).date_naive();
    if view.expires_at.is_some_and(|exp| now >= exp) {
        return Verdict::Expire {
            reason: Reason::window_closed_at_claim(),
        };
    }
    if let Err(reason) = eligibility::contact(view.contact.as_ref(), view.channel) {
        return Verdict::Cancel { reason };
    }
    let eligible = match eligibility::loans(&view.borrower.holds, &view.loans, today) {
        Ok(eligible) => eligible,
        Err(reason) => return Verdict::Cancel { reason },
    };
    let subject = Subject {
        channel: view.channel,
        contact_point: view.contact.as_ref().map(|c| c.id),
        loans: &eligible,
    };
    match gate.evaluate(now, &zones, &subject, &view.borrower.recent) {
        GateDecision::Allow {
            window,
            caps,
            packs,
            ..
        } => Verdict::Send {
            attempt_id: format!("a{}", view.attempts + 1),
            loans: eligible,
            window: match packs.is_empty() {
                true => format!("window {window}; caps {}", caps.join(", ")),
                false => format!(
                    "window {window}; caps {}; packs {}",
                    caps.join(", "),
                    packs.join(", ")
                ),
            },
        },
        GateDecision::Defer { until, because } => match view.expires_at {
            Some(exp) if until >= exp => Verdict::Expire {
                reason: because.until_past_window(),
            },
            _ => Verdict::Defer {
                until,
                reason: because,
            },
        },
        GateDecision::Never { because } => Verdict::Expire { reason: because },
    }
}

/// Backoff before retry `attempt` (1-based): 30 s doubling to at most an
/// hour, with ±20% jitter derived from the message id (deterministic, so
/// simulations repeat).
pub fn backoff(
    attempt: i64,
    message_id: i64,
    retry_after: Option<std::time::Duration>,
) -> Duration {
    let base = Duration::seconds(30 * (1i64 << (attempt - 1).clamp(0, 7))).min(Duration::hours(1));
    let jitter = ((message_id.wrapping_mul(2654435761) % 41) - 20) as f64 / 100.0;
    let with_jitter =
        base + Duration::milliseconds((base.num_milliseconds() as f64 * jitter) as i64);
    match retry_after.and_then(|d| Duration::from_std(d).ok()) {
        Some(ra) => with_jitter.max(ra),
        None => with_jitter,
    }
}

impl Dispatcher {
    /// Claims, renders, sends and records one message (the batched path,
    /// one at a time).
    pub async fn dispatch_next(&self, now: DateTime<Utc>) -> Result<Outcome, StoreError> {
        let Some((view, verdict)) = self.claim(now, 1).await?.pop() else {
            return Ok(Outcome::Idle);
        };
        let Verdict::Send {
            attempt_id, loans, ..
        } = verdict
        else {
            return Ok(Outcome::Decided(verdict));
        };
        let done = self.send_claimed(now, view, attempt_id, loans).await;
        self.record_all(now, std::slice::from_ref(&done)).await?;
        Ok(done.outcome.clone())
    }

    async fn send(
        &self,
        now: DateTime<Utc>,
        view: &ClaimView,
        attempt_id: &str,
        loans: &[i64],
    ) -> Result<(Finish, Outcome), String> {
        let id = view.message_id;
        let zones = eligibility::borrower_zones(&view.borrower, self.default_tz);
        let today = now.with_timezone(&zones.primary).date_naive();
        let locale = view
            .borrower
            .locale
            .clone()
            .unwrap_or_else(|| self.default_locale.clone());
        let stage = self
            .policy
            .steps
            .iter()
            .find(|s| s.id == view.step)
            .map(|s| s.stage.clone())
            .unwrap_or_default();
        let mut ctx = context_for(
            &self.context,
            &view.borrower,
            &view.loans,
            loans,
            view.channel,
            &locale,
            &view.step,
            &stage,
            today,
        );
        ctx.offer = self.offer(now, view, loans, zones.primary, &locale).await;
        let unsubscribe = (view.channel == Channel::Email).then(|| {
            format!(
                "{}/u/{}",
                self.unsubscribe_base.trim_end_matches('/'),
                self.unsubscribe.token(id)
            )
        });
        if let Some(u) = &unsubscribe {
            ctx.unsubscribe_url = u.clone();
        }
        let rendered = self
            .templates
            .render(&view.template, &ctx, &self.sms_signature)
            .map_err(|p| p.to_string())?;
        self.tone
            .check_message(&stage, &ctx, &rendered.content)
            .map_err(|phrase| {
                format!(
                    "not sent: the {stage} message rendered the forbidden phrase `{phrase}` ([tone] forbidden); fix template `{}`",
                    view.template
                )
            })?;
        let to = view
            .contact
            .as_ref()
            .map(|c| c.address.clone())
            .unwrap_or_default();
        let (html, subject) = match &rendered.content {
            crate::templates::Content::Email { html, subject, .. } => {
                (Some(html.clone()), Some(subject.clone()))
            }
            crate::templates::Content::Sms { .. } => (None, None),
        };
        let out = Outbound {
            message_id: id,
            attempt_id: attempt_id.to_owned(),
            channel: view.channel,
            to,
            subject: subject.clone(),
            body: rendered.content.body().to_owned(),
            html,
            segments: rendered.content.segments(),
            template: rendered.template.clone(),
            template_version: rendered.version.clone(),
            step: view.step.clone(),
            borrower_id: view.borrower.external_id.clone(),
            loan_ids: view
                .loans
                .iter()
                .filter(|l| loans.contains(&l.pk))
                .map(|l| l.external_id.clone())
                .collect(),
            loan_steps: view
                .loans
                .iter()
                .filter(|l| loans.contains(&l.pk))
                .map(|l| l.step.clone().unwrap_or_default())
                .collect(),
            unsubscribe_url: unsubscribe,
            provider_params: rendered.provider.clone(),
            bounce_token: (view.channel == Channel::Email).then(|| self.unsubscribe.verp_token(id)),
        };
        let providers = self.router.for_recipient(view.channel, &out.to);
        // Try providers in order. A transient failure that certainly did not
        // deliver moves to the next provider at once (and, repeated, opens
        // that provider's breaker); anything else ends the attempt here.
        let mut last = None;
        let mut unsupported: Vec<(String, String)> = Vec::new();
        for p in &providers {
            if self.pauses.is_paused(Some(p.name())) {
                last = Some((
                    p.name().to_owned(),
                    ProviderError::Transient {
                        code: "paused".into(),
                        retry_after: Some(std::time::Duration::from_secs(60)),
                        maybe_delivered: false,
                        throttle: false,
                    },
                ));
                continue;
            }
            let started = std::time::Instant::now();
            let result = p.send(&out).await;
            self.metrics.observe(
                "duebell_provider_latency_seconds",
                &[("provider", p.name())],
                started.elapsed().as_secs_f64(),
            );
            let class = match &result {
                Ok(_) => "ok",
                Err(ProviderError::Transient { .. }) => "transient",
                Err(ProviderError::Permanent { .. }) => "permanent",
                Err(ProviderError::Policy { .. }) => "policy",
                Err(ProviderError::Bounced { .. }) => "bounced",
                Err(ProviderError::Unsupported { .. }) => "unsupported",
                Err(ProviderError::RecipientLimited { .. }) => "recipient_limited",
            };
            self.metrics.inc(
                "duebell_provider_results_total",
                &[("provider", p.name()), ("class", class)],
                1.0,
            );
            match result {
                Ok(receipt) => {
                    tracing::info!(message_id = id, provider = p.name(), channel = %view.channel, step = %view.step, "sent");
                    tracing::trace!(message_id = id, body = %out.body, "sent body");
                    return Ok((
                        Finish::Sent {
                            provider: p.name().to_owned(),
                            provider_ref: receipt.provider_ref,
                            template_version: rendered.version.clone(),
                            subject,
                            body: out.body.clone(),
                        },
                        Outcome::Sent {
                            message_id: id,
                            provider: p.name().to_owned(),
                        },
                    ));
                }
                Err(ProviderError::Policy { code }) => {
                    // The recipient refused: never fail over.
                    let reason = Reason::parse(format!("recipient opted out ({code})"));
                    return Ok((
                        Finish::OptedOut {
                            provider: p.name().to_owned(),
                            reason: reason.clone(),
                        },
                        Outcome::Failed {
                            message_id: id,
                            reason,
                        },
                    ));
                }
                Err(ProviderError::Bounced { code }) => {
                    // The address cannot receive: suppress it everywhere,
                    // never fail over (another relay would bounce too).
                    self.metrics
                        .inc("duebell_bounces_total", &[("class", "hard_at_send")], 1.0);
                    // The gate let it through, so the address was valid.
                    self.metrics.inc(
                        "duebell_addresses_suppressed_total",
                        &[("reason", "hard_bounce")],
                        1.0,
                    );
                    let reason = Reason::parse(code);
                    return Ok((
                        Finish::Bounced {
                            provider: p.name().to_owned(),
                            reason: reason.clone(),
                        },
                        Outcome::Failed {
                            message_id: id,
                            reason,
                        },
                    ));
                }
                Err(ProviderError::Permanent { code }) => {
                    let reason = Reason::parse(format!("permanent error {code}"));
                    return Ok((
                        Finish::Failed {
                            provider: p.name().to_owned(),
                            reason: reason.clone(),
                        },
                        Outcome::Failed {
                            message_id: id,
                            reason,
                        },
                    ));
                }
                Err(ProviderError::Transient {
                    code,
                    maybe_delivered: true,
                    ..
                }) => {
                    // It may have gone out: never fail over or resend; the
                    // reconciliation asks this provider what became of it.
                    let reason = Reason::parse(format!(
                        "{code} after the request was sent; it may have been delivered"
                    ));
                    tracing::warn!(message_id = id, provider = p.name(), "{reason}");
                    return Ok((
                        Finish::Ambiguous {
                            provider: p.name().to_owned(),
                            reason: reason.clone(),
                        },
                        Outcome::Retrying {
                            message_id: id,
                            reason,
                        },
                    ));
                }
                Err(ProviderError::RecipientLimited { code, retry_after }) => {
                    // The number has had its share at this provider: wait,
                    // never route around a limit that protects the borrower.
                    let at = now
                        + Duration::from_std(retry_after).unwrap_or_else(|_| Duration::hours(1));
                    let reason =
                        Reason::parse(format!("retry: recipient limit {code} at {}", p.name()));
                    return Ok((
                        Finish::Retry {
                            at,
                            provider: p.name().to_owned(),
                            reason: reason.clone(),
                        },
                        Outcome::Retrying {
                            message_id: id,
                            reason,
                        },
                    ));
                }
                Err(ProviderError::Unsupported { code }) => {
                    tracing::debug!(
                        message_id = id,
                        provider = p.name(),
                        "{code}; trying the next provider"
                    );
                    unsupported.push((p.name().to_owned(), code));
                }
                Err(e) => {
                    tracing::warn!(
                        message_id = id,
                        provider = p.name(),
                        "provider refused: {e}"
                    );
                    last = Some((p.name().to_owned(), e));
                }
            }
        }
        let Some((provider, err)) = last else {
            if let Some((first, _)) = unsupported.first() {
                let reason = Reason::parse(format!(
                    "no provider can carry it: {}",
                    unsupported
                        .iter()
                        .map(|(p, c)| format!("{p}: {c}"))
                        .collect::<Vec<_>>()
                        .join("; ")
                ));
                return Ok((
                    Finish::Failed {
                        provider: first.clone(),
                        reason: reason.clone(),
                    },
                    Outcome::Failed {
                        message_id: id,
                        reason,
                    },
                ));
            }
            return Err(format!(
                "no provider serves {} to this recipient",
                view.channel
            ));
        };
        let ProviderError::Transient {
            code, retry_after, ..
        } = err
        else {
            unreachable!("only transient errors reach here");
        };
        Ok(if view.attempts < MAX_ATTEMPTS {
            let at = now + backoff(view.attempts, id, retry_after);
            let reason = Reason::parse(format!("transient error {code}"));
            (
                Finish::Retry {
                    at,
                    provider,
                    reason: reason.clone(),
                },
                Outcome::Retrying {
                    message_id: id,
                    reason,
                },
            )
        } else {
            let reason = Reason::parse(format!(
                "transient error {code}; gave up after {} attempts",
                view.attempts
            ));
            (
                Finish::Failed {
                    provider,
                    reason: reason.clone(),
                },
                Outcome::Failed {
                    message_id: id,
                    reason,
                },
            )
        })
    }
}
