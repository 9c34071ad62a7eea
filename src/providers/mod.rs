//! Providers: where rendered messages go. Each adapter classifies its own
//! errors (transient, permanent, policy) so the dispatcher never matches on
//! a provider's codes.

pub mod aliyun;
pub mod bounce;
mod config;
pub mod file;
pub mod guard;
pub mod http;
pub mod mailbox;
pub mod recorder;
pub mod smtp;
mod smtp_wire;
pub mod tencent;
pub mod twilio;
pub mod webhook;
pub mod window;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;

use crate::domain::Channel;

/// A message ready for a provider.
#[derive(Debug, Clone, Serialize)]
pub struct Outbound {
    /// Our message id, passed to providers that echo it back.
    pub message_id: i64,
    pub attempt_id: String,
    pub channel: Channel,
    /// E.164 phone or email address.
    pub to: String,
    pub subject: Option<String>,
    /// SMS body or the plain-text part of an email.
    pub body: String,
    pub html: Option<String>,
    pub segments: Option<usize>,
    pub template: String,
    pub template_version: String,
    pub step: String,
    pub borrower_id: String,
    pub loan_ids: Vec<String>,
    /// Each loan's own step, parallel to `loan_ids`.
    pub loan_steps: Vec<String>,
    /// RFC 8058 one-click unsubscribe URL (email).
    pub unsubscribe_url: Option<String>,
    /// Pre-approved template parameters for providers that need them.
    pub provider_params: crate::domain::ProviderParams,
    /// Email: the signed token an SMTP provider with a `return_path` puts
    /// in the envelope sender (`bounces+<token>@domain`), so a bounce names
    /// this message.
    #[serde(skip)]
    pub bounce_token: Option<String>,
}

/// An earlier attempt to account for: ours ids, the recipient, when it was
/// claimed, and the time now (look-ups decide "provably not there" against
/// the provider's own reporting delay, measured on the caller's clock).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupQuery {
    pub message_id: i64,
    pub attempt_id: String,
    /// E.164 phone or email address (empty when the contact point is gone).
    pub to: String,
    pub since: chrono::DateTime<chrono::Utc>,
    pub now: chrono::DateTime<chrono::Utc>,
}

impl LookupQuery {
    /// How long ago the attempt was made.
    pub fn age(&self) -> chrono::Duration {
        self.now - self.since
    }
}

/// What a provider can say about an earlier attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// It arrived.
    Found(Receipt),
    /// It provably never arrived (the provider keeps a complete record):
    /// safe to send again through the normal claim.
    NotSent,
    /// The provider cannot tell.
    Unanswered,
}

/// A provider accepted a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The provider's id for it.
    pub provider_ref: String,
}

/// Why a provider did not accept a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderError {
    /// Try again later (timeouts, 5xx, throttling).
    /// With `maybe_delivered` (a timeout after the request went out) the
    /// provider may have it: never fail over or resend blindly.
    Transient {
        code: String,
        retry_after: Option<std::time::Duration>,
        maybe_delivered: bool,
        /// The provider itself asked us to slow down (HTTP 429, Twilio
        /// 20429): pause it for `retry_after`. A per-recipient limit only
        /// delays this message.
        throttle: bool,
    },
    /// This message will never go through this provider (bad number, bad template).
    Permanent { code: String },
    /// The recipient refused (opted out at the provider): never fail over.
    Policy { code: String },
    /// The address cannot receive (a hard bounce: SMTP 5.1.x, 5.2.x, 5.7.1
    /// at RCPT or DATA): suppress it, never fail over.
    Bounced { code: String },
    /// This provider cannot carry this message at all (no template approved
    /// at it), decided before any request: the next provider may.
    Unsupported { code: String },
    /// The recipient has had as much as the provider lets one number have
    /// (a frequency or daily limit): this message waits, and does not fail
    /// over, because the limit protects the borrower, not the provider.
    RecipientLimited {
        code: String,
        retry_after: std::time::Duration,
    },
}

impl fmt::Display for ProviderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProviderError::Transient { code, .. } => write!(f, "transient error {code}"),
            ProviderError::Permanent { code } => write!(f, "permanent error {code}"),
            ProviderError::Policy { code } => write!(f, "recipient opted out ({code})"),
            ProviderError::Bounced { code } => write!(f, "hard bounce ({code})"),
            ProviderError::Unsupported { code } => write!(f, "cannot carry it ({code})"),
            ProviderError::RecipientLimited { code, .. } => write!(f, "recipient limit {code}"),
        }
    }
}

#[async_trait]
pub trait Provider: Send + Sync {
    fn name(&self) -> &str;
    async fn send(&self, message: &Outbound) -> Result<Receipt, ProviderError>;
    /// Whether an earlier attempt reached the provider, for reconciling
    /// messages left `sending` by a crash.
    async fn lookup(&self, q: &LookupQuery) -> Lookup;
    /// Whether `lookup` can ever answer (a provider with no record to ask
    /// always says `Unanswered`: nothing is gained by asking again).
    fn can_look_up(&self) -> bool {
        false
    }
    /// Whether a send interrupted before its answer may be sent again: the
    /// provider drops a repeat of the same idempotency key (a webhook whose
    /// gateway is configured `idempotent = true`).
    fn replay_safe(&self) -> bool {
        false
    }
}

pub use config::{default_providers, Keys, ProviderConfig, ProviderKind, RoutingConfig};

fn into_dyn<P: Provider + 'static>(p: P) -> Arc<dyn Provider> {
    Arc::new(p)
}

/// Providers by channel, in order.
#[derive(Clone, Default)]
pub struct Router {
    pub sms: Vec<Arc<dyn Provider>>,
    pub email: Vec<Arc<dyn Provider>>,
    /// Provider name → the calling codes it serves (empty: all).
    countries: std::collections::HashMap<String, Vec<u16>>,
}

impl Router {
    /// Builds every configured adapter behind its guard (rate limit,
    /// concurrency, timeout, circuit breaker). `public_url` is where
    /// providers call back (Twilio status callbacks).
    pub fn build(
        providers: &[ProviderConfig],
        routing: &RoutingConfig,
        public_url: &str,
        metrics: Arc<crate::metrics::Metrics>,
        shared_rate: Option<Arc<dyn guard::SharedRate>>,
    ) -> Result<Router, Vec<(String, String)>> {
        let mut problems = Vec::new();
        let mut built: Vec<(String, Arc<dyn Provider>)> = Vec::new();
        let mut names = std::collections::HashSet::new();
        for (i, p) in providers.iter().enumerate() {
            let key = |f: &str| format!("providers[{i}].{f}");
            if !names.insert(p.name.clone()) {
                problems.push((key("name"), format!("`{}` is used twice", p.name)));
            }
            let mut keys = config::Keys::new(i, p);
            let inner: Option<Arc<dyn Provider>> = match p.kind {
                ProviderKind::File => file::FileProvider::from_config(&mut keys).map(into_dyn),
                ProviderKind::Webhook => {
                    webhook::WebhookProvider::from_config(&mut keys).map(into_dyn)
                }
                ProviderKind::Twilio => {
                    twilio::TwilioProvider::from_config(&mut keys, public_url).map(into_dyn)
                }
                ProviderKind::Aliyun => {
                    aliyun::AliyunProvider::from_config(&mut keys).map(into_dyn)
                }
                ProviderKind::Tencent => {
                    tencent::TencentProvider::from_config(&mut keys).map(into_dyn)
                }
                ProviderKind::Smtp => smtp::SmtpProvider::from_config(&mut keys).map(into_dyn),
            };
            problems.extend(keys.into_problems());
            let Some(inner) = inner else { continue };
            match guard::Guarded::new(inner, p, metrics.clone(), shared_rate.clone()) {
                Ok(g) => built.push((p.name.clone(), Arc::new(g))),
                Err(e) => problems.push((key("rate"), e)),
            }
        }
        let pick = |names: &[String], key: &str, problems: &mut Vec<(String, String)>| {
            let mut out = Vec::new();
            for (i, n) in names.iter().enumerate() {
                match built.iter().find(|(b, _)| b == n) {
                    Some((_, p)) => out.push(p.clone()),
                    None => problems.push((
                        format!("routing.{key}[{i}]"),
                        format!("no provider named `{n}` in [[providers]]"),
                    )),
                }
            }
            if out.is_empty() {
                problems.push((
                    format!("routing.{key}"),
                    "names no provider; messages on this channel could never be sent".into(),
                ));
            }
            out
        };
        let sms = pick(&routing.sms, "sms", &mut problems);
        let email = pick(&routing.email, "email", &mut problems);
        let countries = providers
            .iter()
            .map(|p| (p.name.clone(), p.countries.clone()))
            .collect();
        if problems.is_empty() {
            Ok(Router {
                sms,
                email,
                countries,
            })
        } else {
            Err(problems)
        }
    }

    /// Every provider for a channel, preferred first.
    pub fn for_channel(&self, channel: Channel) -> &[Arc<dyn Provider>] {
        match channel {
            Channel::Sms => &self.sms,
            Channel::Email => &self.email,
        }
    }

    /// The providers for one recipient, in order: for SMS, those serving the
    /// number's calling code (e.g. +86 through one provider, the rest
    /// through another).
    pub fn for_recipient(&self, channel: Channel, to: &str) -> Vec<Arc<dyn Provider>> {
        // Only parse the number when some provider serves only some codes.
        let restricted = self.countries.values().any(|list| !list.is_empty());
        let code = (channel == Channel::Sms && restricted)
            .then(|| {
                crate::domain::PhoneNumber::parse(to)
                    .ok()
                    .map(|p| p.country_code())
            })
            .flatten();
        self.for_channel(channel)
            .iter()
            .filter(|p| match (self.countries.get(p.name()), code) {
                (Some(list), Some(c)) if !list.is_empty() => list.contains(&c),
                _ => true,
            })
            .cloned()
            .collect()
    }

    /// A router sending everything to one provider (simulate, tests).
    pub fn single(p: Arc<dyn Provider>) -> Router {
        Router {
            sms: vec![p.clone()],
            email: vec![p],
            countries: Default::default(),
        }
    }
}
