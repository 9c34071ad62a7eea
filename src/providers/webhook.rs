//! The `webhook` provider: a JSON POST of the rendered message to the
//! lender's own gateway, signed `X-Duebell-Signature: t=<unix>,v1=<hex
//! HMAC-SHA256(secret, "t.body")>`, with `Idempotency-Key: <message id>` so
//! the gateway can drop a repeat. Answers: 2xx accepted (409 too: it already
//! has it); 410 or `{"code":"opted_out"}` the recipient refused; 429 and 5xx
//! transient; other 4xx permanent. With `status_url`, a send left in
//! flight is looked up there (see `lookup`).

use async_trait::async_trait;

use super::http::{retry_after, transport_error};
use super::{Keys, Lookup, Outbound, Provider, ProviderError, Receipt};

pub struct WebhookProvider {
    name: String,
    url: String,
    /// `url`, parsed once: parsing it at each send was 3% of the sending
    /// loop's CPU against a fast gateway (BENCHMARKS.md, point 18).
    target: Option<reqwest::Url>,
    secret: String,
    idempotent: bool,
    status_url: Option<String>,
    client: reqwest::Client,
}

impl WebhookProvider {
    /// `kind = "webhook"`: `url`, `secret` (HMAC-SHA256 key), `idempotent`.
    pub fn from_config(keys: &mut Keys<'_>) -> Option<WebhookProvider> {
        let c = keys.config;
        let url = keys.need(c.url.as_deref(), "url");
        let secret = keys.need_secret(c.secret.as_ref(), "secret");
        if let Some(u) = c.url.as_deref().filter(|u| !u.is_empty()) {
            let parsed = reqwest::Url::parse(u);
            if !parsed.is_ok_and(|u| matches!(u.scheme(), "http" | "https")) {
                keys.problem("url", format!("`{u}` is not an http(s) URL"));
            }
        }
        if let Some(s) = c.status_url.as_deref() {
            if !(s.starts_with("http://") || s.starts_with("https://")) {
                keys.problem("status_url", format!("`{s}` is not an http(s) URL"));
            }
        }
        let mut p = WebhookProvider::new(keys.name(), url, secret, c.idempotent);
        p.status_url = c.status_url.clone();
        Some(p)
    }
}

impl WebhookProvider {
    pub fn new(name: &str, url: String, secret: String, idempotent: bool) -> Self {
        WebhookProvider {
            name: name.to_owned(),
            target: reqwest::Url::parse(&url).ok(),
            url,
            secret,
            idempotent,
            status_url: None,
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
        let request = match &self.target {
            Some(url) => self.client.post(url.clone()),
            None => self.client.post(&self.url),
        };
        let resp = request
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

    fn can_look_up(&self) -> bool {
        self.status_url.is_some()
    }

    /// `GET {status_url}?message_id=…&attempt_id=…`, signed like a send
    /// over the query string: 200 `{"status":"accepted","id":…}` → found;
    /// 404 or `{"status":"not_found"}` → the gateway never got it (its
    /// record is complete); anything else → no answer.
    async fn lookup(&self, q: &super::LookupQuery) -> Lookup {
        let Some(url) = &self.status_url else {
            return Lookup::Unanswered;
        };
        let query = format!("message_id={}&attempt_id={}", q.message_id, q.attempt_id);
        let ts = chrono::Utc::now().timestamp();
        let resp = self
            .client
            .get(format!("{url}?{query}"))
            .header(
                "x-duebell-signature",
                crate::signing::webhook_signature(&self.secret, ts, query.as_bytes()),
            )
            .send()
            .await;
        let Ok(resp) = resp else {
            return Lookup::Unanswered;
        };
        let status = resp.status().as_u16();
        let json: serde_json::Value = resp.json().await.unwrap_or_default();
        match (status, json["status"].as_str()) {
            (200, Some("accepted")) => Lookup::Found(Receipt {
                provider_ref: json["id"]
                    .as_str()
                    .map_or_else(|| format!("{}:{}", self.name, q.message_id), str::to_owned),
            }),
            (404, _) | (200, Some("not_found")) => Lookup::NotSent,
            _ => Lookup::Unanswered,
        }
    }

    fn replay_safe(&self) -> bool {
        self.idempotent
    }
}
