//! `[[providers]]` and `[routing]`. A provider table is read flat, as
//! written, so every config error keeps its exact key and line; `kind` says
//! which adapter reads the rest, and each adapter (`from_config` in its own
//! file) takes the keys it owns through `Keys` and checks them.

use serde::Deserialize;

use super::{guard, smtp};
use crate::domain::{ConfigDuration, Secret};

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
    /// `webhook`: where the gateway answers "did you get this one?" for a
    /// send left in flight (README: look-ups). Absent: it cannot be asked.
    #[serde(default)]
    pub status_url: Option<String>,
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
    pub timeout: ConfigDuration,
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
    /// `smtp`: the bounce address, e.g. "bounces@mail.example.com". Each
    /// email's envelope sender becomes `bounces+<signed token>@…`, so a
    /// bounce names its message (README: bounces).
    #[serde(default)]
    pub return_path: Option<String>,
    /// `smtp`: the mailbox that `return_path` delivers to, read for
    /// bounces and complaints.
    #[serde(default)]
    pub bounce_mailbox: Option<super::mailbox::MailboxConfig>,
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
    pub cool_down: ConfigDuration,
}

fn default_cool_down() -> ConfigDuration {
    ConfigDuration(guard::BREAKER_COOL_DOWN)
}

fn default_concurrency() -> u32 {
    8
}

fn default_timeout() -> ConfigDuration {
    ConfigDuration(std::time::Duration::from_secs(10))
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
        status_url: None,
        account_sid: None,
        auth_token: None,
        from: None,
        messaging_service_sid: None,
        host: None,
        port: None,
        security: None,
        username: None,
        password: None,
        return_path: None,
        bounce_mailbox: None,
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

/// What an adapter reads from its table: each key it needs or may use,
/// with the problems of those it needs and cannot have, keyed
/// `providers[i].KEY`.
pub struct Keys<'a> {
    index: usize,
    pub config: &'a ProviderConfig,
    problems: Vec<(String, String)>,
}

impl<'a> Keys<'a> {
    pub fn new(index: usize, config: &'a ProviderConfig) -> Keys<'a> {
        Keys {
            index,
            config,
            problems: Vec::new(),
        }
    }

    pub fn name(&self) -> &'a str {
        &self.config.name
    }

    /// A problem with one of the provider's keys.
    pub fn problem(&mut self, key: &str, message: impl Into<String>) {
        self.problems
            .push((format!("providers[{}].{key}", self.index), message.into()));
    }

    /// A key this kind cannot work without.
    pub fn need(&mut self, value: Option<&str>, key: &str) -> String {
        match value {
            Some(v) if !v.is_empty() => v.to_owned(),
            _ => {
                let kind = format!("{:?}", self.config.kind).to_lowercase();
                self.problem(key, format!("a {kind} provider needs `{key}`"));
                String::new()
            }
        }
    }

    /// A secret this kind cannot work without.
    pub fn need_secret(&mut self, value: Option<&Secret>, key: &str) -> String {
        self.need(value.map(Secret::expose), key)
    }

    pub fn into_problems(self) -> Vec<(String, String)> {
        self.problems
    }
}
