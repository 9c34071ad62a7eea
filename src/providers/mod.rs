//! Providers: where rendered messages go. Each adapter classifies its own
//! errors (transient, permanent, policy) so the dispatcher never matches on
//! a provider's codes.

pub mod file;
pub mod recorder;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

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
    pub provider_params: crate::templates::ProviderParams,
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
    Transient {
        code: String,
        retry_after: Option<std::time::Duration>,
    },
    /// This message will never go through this provider (bad number, bad template).
    Permanent { code: String },
    /// The recipient refused (opted out at the provider): never fail over.
    Policy { code: String },
}

impl fmt::Display for ProviderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProviderError::Transient { code, .. } => write!(f, "transient error {code}"),
            ProviderError::Permanent { code } => write!(f, "permanent error {code}"),
            ProviderError::Policy { code } => write!(f, "recipient opted out ({code})"),
        }
    }
}

#[async_trait]
pub trait Provider: Send + Sync {
    fn name(&self) -> &str;
    async fn send(&self, message: &Outbound) -> Result<Receipt, ProviderError>;
    /// Whether an earlier attempt reached the provider, for reconciling
    /// messages left `sending` by a crash. `None`: the provider cannot tell.
    async fn lookup(&self, message_id: i64, attempt_id: &str) -> Option<Receipt>;
}

/// `[[providers]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    pub name: String,
    pub kind: ProviderKind,
    /// `file`: the outbox folder.
    #[serde(default)]
    pub dir: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// Appends SMS to `sms.jsonl` and writes one `.eml` per email in a folder.
    File,
}

/// `[routing]`: providers per channel, in order of preference.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingConfig {
    pub sms: Vec<String>,
    pub email: Vec<String>,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        RoutingConfig {
            sms: vec!["outbox".into()],
            email: vec!["outbox".into()],
        }
    }
}

pub fn default_providers() -> Vec<ProviderConfig> {
    vec![ProviderConfig {
        name: "outbox".into(),
        kind: ProviderKind::File,
        dir: Some("var/outbox".into()),
    }]
}

/// Providers by channel, in order.
#[derive(Clone, Default)]
pub struct Router {
    pub sms: Vec<Arc<dyn Provider>>,
    pub email: Vec<Arc<dyn Provider>>,
}

impl Router {
    pub fn build(
        providers: &[ProviderConfig],
        routing: &RoutingConfig,
    ) -> Result<Router, Vec<(String, String)>> {
        let mut problems = Vec::new();
        let mut built: Vec<(String, Arc<dyn Provider>)> = Vec::new();
        for (i, p) in providers.iter().enumerate() {
            match p.kind {
                ProviderKind::File => match &p.dir {
                    Some(dir) => built.push((
                        p.name.clone(),
                        Arc::new(file::FileProvider::new(&p.name, dir.clone())),
                    )),
                    None => problems.push((
                        format!("providers[{i}].dir"),
                        "a file provider needs `dir`, the outbox folder".into(),
                    )),
                },
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
        if problems.is_empty() {
            Ok(Router { sms, email })
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

    /// A router sending everything to one provider (simulate, tests).
    pub fn single(p: Arc<dyn Provider>) -> Router {
        Router {
            sms: vec![p.clone()],
            email: vec![p],
        }
    }
}
