//! Twilio Programmable Messaging: form POST with basic auth,
//! `StatusCallback` pointing at our receipt endpoint, errors classified from
//! Twilio's codes (21610 opted out: policy; 21211/21612/21614 bad number:
//! permanent; 429/20429 and 5xx: transient). Also the `X-Twilio-Signature`
//! check for the callbacks Twilio sends us.

use async_trait::async_trait;
use base64::Engine;
use hmac::{Hmac, Mac};

use super::http::{self, retry_after, transport_error};
use super::{Keys, Lookup, Outbound, Provider, ProviderError, Receipt};

pub struct TwilioProvider {
    name: String,
    base: String,
    account_sid: String,
    auth_token: String,
    from: Option<String>,
    messaging_service_sid: Option<String>,
    status_callback: String,
    client: reqwest::Client,
}

impl TwilioProvider {
    /// `kind = "twilio"`: `account_sid`, `auth_token`, `from` or
    /// `messaging_service_sid`, `url` (the API base; default
    /// https://api.twilio.com). Status callbacks go to `public_url`.
    pub fn from_config(keys: &mut Keys<'_>, public_url: &str) -> Option<TwilioProvider> {
        let c = keys.config;
        let sid = keys.need(c.account_sid.as_deref(), "account_sid");
        let token = keys.need_secret(c.auth_token.as_ref(), "auth_token");
        if c.from.is_none() && c.messaging_service_sid.is_none() {
            keys.problem(
                "from",
                "a twilio provider needs `from` or `messaging_service_sid`",
            );
        }
        let callback = format!(
            "{}/webhooks/twilio/{}/status",
            public_url.trim_end_matches('/'),
            c.name
        );
        Some(TwilioProvider::new(
            &c.name,
            c.url
                .clone()
                .unwrap_or_else(|| "https://api.twilio.com".into()),
            sid,
            token,
            c.from.clone(),
            c.messaging_service_sid.clone(),
            callback,
        ))
    }
}

impl TwilioProvider {
    pub fn new(
        name: &str,
        base: String,
        account_sid: String,
        auth_token: String,
        from: Option<String>,
        messaging_service_sid: Option<String>,
        status_callback: String,
    ) -> Self {
        TwilioProvider {
            name: name.to_owned(),
            base,
            account_sid,
            auth_token,
            from,
            messaging_service_sid,
            status_callback,
            client: reqwest::Client::new(),
        }
    }
}

/// Base64(HMAC-SHA1(token, url + each param name and value, sorted by name)).
pub fn signature(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    let mut data = url.to_owned();
    for (k, v) in sorted {
        data.push_str(k);
        data.push_str(v);
    }
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(auth_token.as_bytes())
        .expect("HMAC takes any key length");
    mac.update(data.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Checks `X-Twilio-Signature` in constant time, against the URL with and
/// without the scheme's default port (Twilio signs the URL as it saw it).
pub fn verify(auth_token: &str, url: &str, params: &[(String, String)], presented: &str) -> bool {
    use subtle::ConstantTimeEq;
    let mut candidates = vec![url.to_owned()];
    for (scheme, port) in [("https://", ":443"), ("http://", ":80")] {
        if let Some(rest) = url.strip_prefix(scheme) {
            let (host, path) = rest.split_once('/').map_or((rest, ""), |(h, p)| (h, p));
            if let Some(h) = host.strip_suffix(port) {
                candidates.push(format!("{scheme}{h}/{path}"));
            } else if !host.contains(':') {
                candidates.push(format!("{scheme}{host}{port}/{path}"));
            }
        }
    }
    candidates.iter().any(|u| {
        bool::from(
            signature(auth_token, u, params)
                .as_bytes()
                .ct_eq(presented.as_bytes()),
        )
    })
}

#[async_trait]
impl Provider for TwilioProvider {
    fn name(&self) -> &str {
        &self.name
    }

    async fn send(&self, m: &Outbound) -> Result<Receipt, ProviderError> {
        let url = format!(
            "{}/2010-04-01/Accounts/{}/Messages.json",
            self.base.trim_end_matches('/'),
            self.account_sid
        );
        let mut form = vec![
            ("To", m.to.clone()),
            ("Body", m.body.clone()),
            (
                "StatusCallback",
                format!("{}?m={}", self.status_callback, m.message_id),
            ),
        ];
        match (&self.messaging_service_sid, &self.from) {
            (Some(ms), _) => form.push(("MessagingServiceSid", ms.clone())),
            (None, Some(f)) => form.push(("From", f.clone())),
            (None, None) => {}
        }
        let resp = self
            .client
            .post(&url)
            .basic_auth(&self.account_sid, Some(&self.auth_token))
            .form(&form)
            .send()
            .await
            .map_err(|e| transport_error(&e))?;
        let status = resp.status().as_u16();
        let ra = retry_after(resp.headers());
        let json: serde_json::Value = resp.json().await.unwrap_or_default();
        if (200..300).contains(&status) {
            return match json["sid"].as_str() {
                Some(sid) => Ok(Receipt {
                    provider_ref: sid.to_owned(),
                }),
                None => Err(ProviderError::Transient {
                    code: "no sid in the answer".into(),
                    retry_after: None,
                    maybe_delivered: true,
                    throttle: false,
                }),
            };
        }
        let code = json["code"].as_i64().unwrap_or(0);
        Err(match (status, code) {
            (_, 21610) => ProviderError::Policy {
                code: "21610".into(),
            },
            (429, _) | (_, 20429) => ProviderError::Transient {
                code: format!("{status}/{code}"),
                retry_after: ra,
                maybe_delivered: false,
                throttle: true,
            },
            (500..=599, _) => ProviderError::Transient {
                code: format!("HTTP {status}"),
                retry_after: ra,
                maybe_delivered: false,
                throttle: false,
            },
            _ => ProviderError::Permanent {
                code: if code != 0 {
                    code.to_string()
                } else {
                    format!("HTTP {status}")
                },
            },
        })
    }

    fn can_look_up(&self) -> bool {
        true
    }

    /// The message list filtered by `To`, matched on our sender and the
    /// creation time (Twilio creates the resource when it accepts the POST,
    /// so none within the attempt's minutes, two minutes on, means it never
    /// arrived). The closest in time is taken.
    async fn lookup(&self, q: &super::LookupQuery) -> Lookup {
        let url = format!(
            "{}/2010-04-01/Accounts/{}/Messages.json",
            self.base.trim_end_matches('/'),
            self.account_sid
        );
        let resp = self
            .client
            .get(&url)
            .basic_auth(&self.account_sid, Some(&self.auth_token))
            .query(&[("To", q.to.as_str()), ("PageSize", "50")])
            .send()
            .await;
        let Ok(resp) = resp else {
            return Lookup::Unanswered;
        };
        if !resp.status().is_success() {
            return Lookup::Unanswered;
        }
        let Ok(json) = resp.json::<serde_json::Value>().await else {
            return Lookup::Unanswered;
        };
        let Some(list) = json["messages"].as_array() else {
            return Lookup::Unanswered;
        };
        let ours = |m: &serde_json::Value| match (&self.messaging_service_sid, &self.from) {
            (Some(ms), _) => m["messaging_service_sid"].as_str() == Some(ms.as_str()),
            (None, Some(f)) => m["from"].as_str() == Some(f.as_str()),
            (None, None) => true,
        };
        let from = q.since - chrono::Duration::minutes(1);
        let to = q.now.max(q.since) + chrono::Duration::minutes(1);
        let best = list
            .iter()
            .filter(|m| m["to"].as_str() == Some(q.to.as_str()) && ours(m))
            .filter_map(|m| {
                let at = chrono::DateTime::parse_from_rfc2822(m["date_created"].as_str()?)
                    .ok()?
                    .with_timezone(&chrono::Utc);
                (at >= from && at <= to).then(|| ((at - q.since).num_seconds().abs(), m))
            })
            .min_by_key(|(gap, _)| *gap);
        match best {
            Some((_, m)) => Lookup::Found(Receipt {
                provider_ref: m["sid"].as_str().unwrap_or_default().to_owned(),
            }),
            None if q.age() >= chrono::Duration::minutes(2) => Lookup::NotSent,
            None => Lookup::Unanswered,
        }
    }
}

/// A callback's form body, as (name, value) pairs in order (the signature
/// covers every pair).
pub fn form(body: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

/// One field of a callback's form.
pub fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The path of a provider's status callback; `?m=<our id>` lets a receipt
/// reconcile a send interrupted before Twilio's SID was stored. Twilio signs
/// the full URL it called, query included.
pub fn status_path(provider: &str, ours: Option<&str>) -> String {
    match ours {
        Some(m) => format!("/webhooks/twilio/{provider}/status?m={m}"),
        None => format!("/webhooks/twilio/{provider}/status"),
    }
}

/// A status callback read: `Err` names a missing field; `Ok(None)` is a
/// status that is not final (queued, sent, …), acknowledged and ignored.
pub fn read_status(
    provider: &str,
    params: &[(String, String)],
    ours: Option<&str>,
) -> Result<Option<http::Report>, &'static str> {
    let (Some(sid), Some(status)) = (param(params, "MessageSid"), param(params, "MessageStatus"))
    else {
        return Err("MessageSid");
    };
    let delivered = match status {
        "delivered" => true,
        "undelivered" | "failed" => false,
        _ => return Ok(None),
    };
    let detail = format!(
        "{provider} receipt: {status}{}",
        param(params, "ErrorCode")
            .map(|c| format!(" (error {c})"))
            .unwrap_or_default()
    );
    Ok(Some(http::Report {
        ours: ours.and_then(|m| m.parse::<i64>().ok()),
        reference: sid.to_owned(),
        delivered,
        detail,
    }))
}

/// An inbound SMS: (sender, text), if both are there.
pub fn read_inbound(params: &[(String, String)]) -> Option<(&str, &str)> {
    Some((param(params, "From")?, param(params, "Body")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> Vec<(String, String)> {
        [
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+14158675309"),
            ("Digits", "1234"),
            ("From", "+14158675309"),
            ("To", "+18005551212"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    #[test]
    fn signature_matches_twilios_known_answer() {
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        assert_eq!(
            signature("12345", url, &params()),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        );
        assert!(verify(
            "12345",
            url,
            &params(),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        ));
        assert!(verify(
            "12345",
            "https://mycompany.com:443/myapp.php?foo=1&bar=2",
            &params(),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        ));
        assert!(!verify(
            "12346",
            url,
            &params(),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        ));
    }
}
