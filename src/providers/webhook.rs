//! The `webhook` provider: a JSON POST of the rendered message to the
//! lender's own gateway, signed `X-Duebell-Signature: t=<unix>,v1=<hex
//! HMAC-SHA256(secret, "t.body")>`, with `Idempotency-Key: <message id>` so
//! the gateway can drop a repeat. Answers: 2xx accepted (409 too: it already
//! has it); 410 or `{"code":"opted_out"}` the recipient refused; 429 and 5xx
//! transient; other 4xx permanent.

use async_trait::async_trait;

use super::http::{retry_after, transport_error};
use super::{Keys, Lookup, Outbound, Provider, ProviderError, Receipt};

pub struct WebhookProvider {
    name: String,
    url: String,
    secret: String,
    idempotent: bool,
    client: reqwest::Client,
}

impl WebhookProvider {
    /// `kind = "webhook"`: `url`, `secret` (HMAC-SHA256 key), `idempotent`.
    pub fn from_config(keys: &mut Keys<'_>) -> Option<WebhookProvider> {
        let c = keys.config;
        let url = keys.need(c.url.as_deref(), "url");
        let secret = keys.need_secret(c.secret.as_ref(), "secret");
        Some(WebhookProvider::new(keys.name(), url, secret, c.idempotent))
    }
}

impl WebhookProvider {
    pub fn new(name: &str, url: String, secret: String, idempotent: bool) -> Self {
        WebhookProvider {
            name: name.to_owned(),
            url,
            secret,
            idempotent,
            client: reqwest::Client::new(),
        }
    }
}

#[async_trait]
impl Provider for WebhookProvider {
    fn name(&self) -> &str {
        &self.name
    }

    async fn send(&self, m: &Outbound) -> Result<Receipt, ProviderError> {
        let body = serde_json::to_vec(m).unwrap_or_default();
        let ts = chrono::Utc::now().timestamp();
        let resp = self
            .client
            .post(&self.url)
            .header("content-type", "application/json")
            .header(
                "x-duebell-signature",
                crate::signing::webhook_signature(&self.secret, ts, &body),
            )
            .header("idempotency-key", m.message_id.to_string())
            .body(body)
            .send()
            .await
            .map_err(|e| transport_error(&e))?;
        let status = resp.status().as_u16();
        let ra = retry_after(resp.headers());
        let json: serde_json::Value = resp.json().await.unwrap_or_default();
        let code = json["code"].as_str().map(str::to_owned);
        match status {
            200..=299 | 409 => Ok(Receipt {
                provider_ref: json["id"]
                    .as_str()
                    .map_or_else(|| format!("{}:{}", self.name, m.message_id), str::to_owned),
            }),
            410 => Err(ProviderError::Policy {
                code: code.unwrap_or_else(|| "410".into()),
            }),
            _ if code.as_deref() == Some("opted_out") => Err(ProviderError::Policy {
                code: "opted_out".into(),
            }),
            429 | 500..=599 => Err(ProviderError::Transient {
                code: format!("HTTP {status}"),
                retry_after: ra,
                maybe_delivered: false,
                throttle: status == 429,
            }),
            _ => Err(ProviderError::Permanent {
                code: code.unwrap_or_else(|| format!("HTTP {status}")),
            }),
        }
    }

    async fn lookup(&self, _q: &super::LookupQuery) -> Lookup {
        Lookup::Unanswered
    }

    fn replay_safe(&self) -> bool {
        self.idempotent
    }
}
