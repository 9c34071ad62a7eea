//! Providers: where rendered messages go. Each adapter classifies its own
//! errors (transient, permanent, policy) so the dispatcher never matches on
//! a provider's codes.

pub mod aliyun;
pub mod file;
pub mod guard;
pub mod http;
pub mod recorder;
pub mod smtp;
pub mod tencent;
pub mod twilio;
pub mod webhook;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::domain::Channel;
use crate::domain::Secret;

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
    /// Whether a send interrupted before its answer may be sent again: the
    /// provider drops a repeat of the same idempotency key (a webhook whose
    /// gateway is configured `idempotent = true`).
    fn replay_safe(&self) -> bool {
        false
    }
}

/// `[[providers]]`: one adapter instance. Which keys apply depends on `kind`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    pub name: String,
    pub kind: ProviderKind,
    /// `file`: the outbox folder.
    #[serde(default)]
    pub dir: Option<std::path::PathBuf>,
    /// `webhook`: the gateway URL; `twilio`: the API base (tests point it at
    /// loopback; default https://api.twilio.com).
    #[serde(default)]
    pub url: Option<String>,
    /// `webhook`: HMAC-SHA256 key for `X-Duebell-Signature`.
    #[serde(default)]
    pub secret: Option<Secret>,
    /// `webhook`: the gateway drops a repeated `Idempotency-Key`, so a send
    /// interrupted by a crash is replayed rather than left `unknown`.
    #[serde(default)]
    pub idempotent: bool,
    /// `twilio`: account SID and auth token.
    #[serde(default)]
    pub account_sid: Option<String>,
    #[serde(default)]
    pub auth_token: Option<Secret>,
    /// `twilio`: the sender number, or a messaging service SID.
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub messaging_service_sid: Option<String>,
    /// Sends per second/minute/hour this provider accepts: `"10/s"`. SMS are
    /// charged per part. Absent: unlimited.
    #[serde(default)]
    pub rate: Option<guard::Rate>,
    /// Sends allowed at once above the steady rate (default: 5 ms worth).
    #[serde(default)]
    pub burst: Option<u32>,
    /// Calls in flight at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: u32,
    /// How long one call may take.
    #[serde(default = "default_timeout")]
    pub timeout: crate::domain::ConfigDuration,
    /// `aliyun`: AccessKeyId and secret; `tencent`: SecretId and SecretKey.
    #[serde(default)]
    pub access_key_id: Option<String>,
    #[serde(default)]
    pub access_key_secret: Option<Secret>,
    /// `aliyun`, `tencent`: the approved signature name (without 【】).
    #[serde(default)]
    pub sign_name: Option<String>,
    /// `smtp`: the relay's host and port, `security` (plain, starttls,
    /// tls), and optional `username`/`password`. `from` is the sender, e.g.
    /// "Example Finance <reminders@example.com>".
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub security: Option<smtp::Security>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<Secret>,
    /// `tencent`: the SmsSdkAppId.
    #[serde(default)]
    pub sdk_app_id: Option<String>,
    /// `aliyun`, `tencent`: region (default cn-hangzhou / ap-guangzhou).
    #[serde(default)]
    pub region: Option<String>,
    /// Calling codes this provider serves (`[86]`); empty: all.
    #[serde(default)]
    pub countries: Vec<u16>,
    /// How long an open circuit breaker waits before probing again.
    #[serde(default = "default_cool_down")]
    pub cool_down: crate::domain::ConfigDuration,
}

fn default_cool_down() -> crate::domain::ConfigDuration {
    crate::domain::ConfigDuration(guard::BREAKER_COOL_DOWN)
}

fn default_concurrency() -> u32 {
    8
}

fn default_timeout() -> crate::domain::ConfigDuration {
    crate::domain::ConfigDuration(std::time::Duration::from_secs(10))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// Appends SMS to `sms.jsonl` and writes one `.eml` per email in a folder.
    File,
    /// JSON POST of the rendered message to the lender's own gateway.
    Webhook,
    /// Twilio Programmable Messaging.
    Twilio,
    /// Aliyun Dysmsapi SendSms (pre-approved templates).
    Aliyun,
    /// Tencent Cloud SMS SendSms (pre-approved templates).
    Tencent,
    /// Email through an SMTP relay.
    Smtp,
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
        url: None,
        secret: None,
        idempotent: false,
        account_sid: None,
        auth_token: None,
        from: None,
        messaging_service_sid: None,
        host: None,
        port: None,
        security: None,
        username: None,
        password: None,
        access_key_id: None,
        access_key_secret: None,
        sign_name: None,
        sdk_app_id: None,
        region: None,
        rate: None,
        burst: None,
        concurrency: default_concurrency(),
        timeout: default_timeout(),
        countries: vec![],
        cool_down: default_cool_down(),
    }]
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
            let need =
                |v: &Option<String>, f: &str, problems: &mut Vec<(String, String)>| -> String {
                    match v {
                        Some(x) if !x.is_empty() => x.clone(),
                        _ => {
                            problems.push((
                                key(f),
                                format!("a {:?} provider needs `{f}`", p.kind).to_lowercase(),
                            ));
                            String::new()
                        }
                    }
                };
            let need_secret =
                |v: &Option<Secret>, f: &str, problems: &mut Vec<(String, String)>| -> String {
                    let plain = v.as_ref().map(|s| s.expose().to_owned());
                    need(&plain, f, problems)
                };
            let inner: Arc<dyn Provider> = match p.kind {
                ProviderKind::File => match &p.dir {
                    Some(dir) => Arc::new(file::FileProvider::new(&p.name, dir.clone())),
                    None => {
                        problems.push((
                            key("dir"),
                            "a file provider needs `dir`, the outbox folder".into(),
                        ));
                        continue;
                    }
                },
                ProviderKind::Webhook => {
                    let url = need(&p.url, "url", &mut problems);
                    let secret = need_secret(&p.secret, "secret", &mut problems);
                    Arc::new(webhook::WebhookProvider::new(
                        &p.name,
                        url,
                        secret,
                        p.idempotent,
                    ))
                }
                ProviderKind::Twilio => {
                    let sid = need(&p.account_sid, "account_sid", &mut problems);
                    let token = need_secret(&p.auth_token, "auth_token", &mut problems);
                    if p.from.is_none() && p.messaging_service_sid.is_none() {
                        problems.push((
                            key("from"),
                            "a twilio provider needs `from` or `messaging_service_sid`".into(),
                        ));
                    }
                    let callback = format!(
                        "{}/webhooks/twilio/{}/status",
                        public_url.trim_end_matches('/'),
                        p.name
                    );
                    Arc::new(twilio::TwilioProvider::new(
                        &p.name,
                        p.url
                            .clone()
                            .unwrap_or_else(|| "https://api.twilio.com".into()),
                        sid,
                        token,
                        p.from.clone(),
                        p.messaging_service_sid.clone(),
                        callback,
                    ))
                }
                ProviderKind::Aliyun => Arc::new(aliyun::AliyunProvider::new(
                    &p.name,
                    p.url
                        .clone()
                        .unwrap_or_else(|| "https://dysmsapi.aliyuncs.com".into()),
                    need(&p.access_key_id, "access_key_id", &mut problems),
                    need_secret(&p.access_key_secret, "access_key_secret", &mut problems),
                    need(&p.sign_name, "sign_name", &mut problems),
                    p.region.clone().unwrap_or_else(|| "cn-hangzhou".into()),
                )),
                ProviderKind::Tencent => Arc::new(tencent::TencentProvider::new(
                    &p.name,
                    p.url
                        .clone()
                        .unwrap_or_else(|| "https://sms.tencentcloudapi.com".into()),
                    need(&p.access_key_id, "access_key_id", &mut problems),
                    need_secret(&p.access_key_secret, "access_key_secret", &mut problems),
                    need(&p.sdk_app_id, "sdk_app_id", &mut problems),
                    need(&p.sign_name, "sign_name", &mut problems),
                    p.region.clone().unwrap_or_else(|| "ap-guangzhou".into()),
                )),
                ProviderKind::Smtp => {
                    let host = need(&p.host, "host", &mut problems);
                    let from = need(&p.from, "from", &mut problems);
                    let security = p.security.unwrap_or(smtp::Security::Starttls);
                    let port = p.port.unwrap_or(match security {
                        smtp::Security::Tls => 465,
                        smtp::Security::Starttls => 587,
                        smtp::Security::Plain => 25,
                    });
                    match smtp::SmtpProvider::new(
                        &p.name,
                        host,
                        port,
                        security,
                        p.username.clone(),
                        p.password.as_ref().map(|s| s.expose().to_owned()),
                        from,
                    ) {
                        Ok(s) => Arc::new(s),
                        Err(e) => {
                            problems.push((key("from"), e));
                            continue;
                        }
                    }
                }
            };
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
        let code = (channel == Channel::Sms)
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
