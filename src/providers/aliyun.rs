//! Aliyun Dysmsapi SendSms (2017-05-25) with the v1 HMAC-SHA1 signature.
//! Only pre-approved templates go out: the message's template declares its
//! `TemplateCode` and parameters (`<name>.sms.toml`). `OutId` carries our
//! message id. `Code` is read whatever the HTTP status.

use async_trait::async_trait;
use base64::Engine;
use hmac::{Hmac, Mac};

use super::http::{self, transport_error};
use super::{Keys, Lookup, Outbound, Provider, ProviderError, Receipt};

/// RFC 3986 percent-encoding as Aliyun's v1 signature wants it: unreserved
/// characters kept, space as `%20`, `*` as `%2A`, `~` kept.
pub fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Signature = Base64(HMAC-SHA1(secret + "&", METHOD&%2F&encode(sorted k=v&…))).
pub fn signature(method: &str, secret: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> =
        params.iter().filter(|(k, _)| k != "Signature").collect();
    sorted.sort();
    let joined = sorted
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&");
    let to_sign = format!("{method}&%2F&{}", encode(&joined));
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(format!("{secret}&").as_bytes())
        .expect("any key length");
    mac.update(to_sign.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

pub struct AliyunProvider {
    name: String,
    base: String,
    key_id: String,
    secret: String,
    sign_name: String,
    region: String,
    client: reqwest::Client,
}

impl AliyunProvider {
    /// `kind = "aliyun"`: `access_key_id`, `access_key_secret`, `sign_name`,
    /// `region` (default cn-hangzhou), `url` (default the public endpoint).
    pub fn from_config(keys: &mut Keys<'_>) -> Option<AliyunProvider> {
        let c = keys.config;
        Some(AliyunProvider::new(
            &c.name,
            c.url
                .clone()
                .unwrap_or_else(|| "https://dysmsapi.aliyuncs.com".into()),
            keys.need(c.access_key_id.as_deref(), "access_key_id"),
            keys.need_secret(c.access_key_secret.as_ref(), "access_key_secret"),
            keys.need(c.sign_name.as_deref(), "sign_name"),
            c.region.clone().unwrap_or_else(|| "cn-hangzhou".into()),
        ))
    }
}

impl AliyunProvider {
    /// One signed RPC call (`GET /?…`, HMAC-SHA1 v1) with the common
    /// parameters added: the HTTP status and the JSON answer.
    async fn call_status(
        &self,
        params: &[(&str, String)],
        nonce_seed: &str,
    ) -> Result<(u16, serde_json::Value), ProviderError> {
        let now = chrono::Utc::now();
        let mut q: Vec<(String, String)> = [
            ("AccessKeyId", self.key_id.clone()),
            ("Format", "JSON".into()),
            ("RegionId", self.region.clone()),
            ("SignatureMethod", "HMAC-SHA1".into()),
            (
                "SignatureNonce",
                format!("{nonce_seed}-{}", now.timestamp_nanos_opt().unwrap_or(0)),
            ),
            ("SignatureVersion", "1.0".into()),
            ("Timestamp", now.format("%Y-%m-%dT%H:%M:%SZ").to_string()),
            ("Version", "2017-05-25".into()),
        ]
        .into_iter()
        .chain(params.iter().map(|(k, v)| (*k, v.clone())))
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let sig = signature("GET", &self.secret, &q);
        q.push(("Signature".into(), sig));
        let query = q
            .iter()
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let resp = self
            .client
            .get(format!("{}/?{query}", self.base.trim_end_matches('/')))
            .send()
            .await
            .map_err(|e| transport_error(&e))?;
        let status = resp.status().as_u16();
        Ok((status, resp.json().await.unwrap_or_default()))
    }

    async fn call(
        &self,
        params: &[(&str, String)],
        nonce_seed: &str,
    ) -> Result<serde_json::Value, ProviderError> {
        self.call_status(params, nonce_seed).await.map(|(_, j)| j)
    }
}

/// Mainland numbers go without +86; others in international form.
fn national(to: &str) -> String {
    to.strip_prefix("+86")
        .map_or_else(|| to.trim_start_matches('+').to_owned(), str::to_owned)
}

impl AliyunProvider {
    pub fn new(
        name: &str,
        base: String,
        key_id: String,
        secret: String,
        sign_name: String,
        region: String,
    ) -> Self {
        AliyunProvider {
            name: name.to_owned(),
            base,
            key_id,
            secret,
            sign_name,
            region,
            client: reqwest::Client::new(),
        }
    }
}

/// How Aliyun's `Code` values are handled.
pub fn classify(code: &str) -> Result<(), ProviderError> {
    match code {
        "OK" => Ok(()),
        // Per-number frequency limits: this message later, never through
        // another provider (the limit protects the borrower).
        "isv.BUSINESS_LIMIT_CONTROL" | "isv.DAY_LIMIT_CONTROL" | "isv.MONTH_LIMIT_CONTROL" => {
            Err(ProviderError::RecipientLimited {
                code: code.into(),
                retry_after: std::time::Duration::from_secs(3600),
            })
        }
        // The account cannot send at all: fail over.
        "isv.AMOUNT_NOT_ENOUGH" | "isv.OUT_OF_SERVICE" | "isp.SYSTEM_ERROR" => {
            Err(ProviderError::Transient {
                code: code.into(),
                retry_after: None,
                maybe_delivered: false,
                throttle: false,
            })
        }
        other => Err(ProviderError::Permanent { code: other.into() }),
    }
}

#[async_trait]
impl Provider for AliyunProvider {
    fn name(&self) -> &str {
        &self.name
    }

    async fn send(&self, m: &Outbound) -> Result<Receipt, ProviderError> {
        let Some((template_code, params)) = &m.provider_params.aliyun else {
            return Err(ProviderError::Unsupported {
                code: format!("template `{}` declares no aliyun TemplateCode", m.template),
            });
        };
        let params = [
            ("Action", "SendSms".to_owned()),
            ("OutId", m.message_id.to_string()),
            ("PhoneNumbers", national(&m.to)),
            ("SignName", self.sign_name.clone()),
            ("TemplateCode", template_code.clone()),
            (
                "TemplateParam",
                serde_json::to_string(params).unwrap_or_default(),
            ),
        ];
        let (status, json) = self
            .call_status(&params, &format!("{}-{}", m.message_id, m.attempt_id))
            .await?;
        match json["Code"].as_str() {
            Some(code) => classify(code).map(|()| Receipt {
                provider_ref: json["BizId"].as_str().unwrap_or_default().to_owned(),
            }),
            None => Err(http::without_code(status, "a Code")),
        }
    }

    fn can_look_up(&self) -> bool {
        true
    }

    /// `QuerySendDetails` by number and send date (China time; the day
    /// after too when the window crosses midnight), matching our `OutId`.
    /// Aliyun records a send when it accepts it, so no record two minutes
    /// after the attempt means it never arrived.
    async fn lookup(&self, q: &super::LookupQuery) -> Lookup {
        let phone = national(&q.to);
        let china = chrono::FixedOffset::east_opt(8 * 3600).expect("UTC+8");
        let mut days = vec![q.since.with_timezone(&china).date_naive()];
        let last = q.now.with_timezone(&china).date_naive();
        if last != days[0] {
            days.push(last);
        }
        for day in days {
            let params = [
                ("Action", "QuerySendDetails".to_owned()),
                ("PhoneNumber", phone.clone()),
                ("SendDate", day.format("%Y%m%d").to_string()),
                ("PageSize", "50".to_owned()),
                ("CurrentPage", "1".to_owned()),
            ];
            let Ok(json) = self
                .call(&params, &format!("lookup-{}", q.message_id))
                .await
            else {
                return Lookup::Unanswered;
            };
            if json["Code"].as_str() != Some("OK") {
                return Lookup::Unanswered;
            }
            let ours = q.message_id.to_string();
            let found = json["SmsSendDetailDTOs"]["SmsSendDetailDTO"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|d| d["OutId"].as_str() == Some(ours.as_str()));
            if let Some(d) = found {
                return Lookup::Found(Receipt {
                    provider_ref: d["BizId"].as_str().unwrap_or_default().to_owned(),
                });
            }
        }
        if q.age() >= chrono::Duration::minutes(2) {
            Lookup::NotSent
        } else {
            Lookup::Unanswered
        }
    }
}

/// One entry of Aliyun's SmsReport callback: `{biz_id, out_id, success,
/// err_code, …}`. `out_id` is our message id (sent as OutId).
pub fn read_report(r: &serde_json::Value) -> Option<http::Report> {
    Some(http::Report {
        ours: r["out_id"].as_str().and_then(|o| o.parse().ok()),
        reference: r["biz_id"].as_str().filter(|b| !b.is_empty())?.to_owned(),
        delivered: r["success"].as_bool().unwrap_or(false),
        detail: r["err_code"].as_str().unwrap_or("").to_owned(),
    })
}

/// The answer Aliyun expects to a report batch.
pub fn report_ack() -> serde_json::Value {
    serde_json::json!({"code": 0, "msg": "接收成功"})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_aliyuns_known_answer() {
        let params: Vec<(String, String)> = [
            ("AccessKeyId", "testId"),
            ("Action", "SendSms"),
            ("Format", "XML"),
            ("OutId", "123"),
            ("PhoneNumbers", "15300000001"),
            ("RegionId", "cn-hangzhou"),
            ("SignName", "阿里云短信测试专用"),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureNonce", "45e25e9b-0a6f-4070-8c85-2956eda1b466"),
            ("SignatureVersion", "1.0"),
            ("TemplateCode", "SMS_71390007"),
            ("TemplateParam", "{\"customer\":\"test\"}"),
            ("Timestamp", "2017-07-12T02:42:19Z"),
            ("Version", "2017-05-25"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(
            signature("GET", "testSecret", &params),
            "zJDF+Lrzhj/ThnlvIToysFRq6t4="
        );
        assert_eq!(encode("a b*c~"), "a%20b%2Ac~");
    }

    #[test]
    fn codes_are_classified() {
        assert!(classify("OK").is_ok());
        assert!(matches!(
            classify("isv.BUSINESS_LIMIT_CONTROL"),
            Err(ProviderError::RecipientLimited { .. })
        ));
        assert!(matches!(
            classify("isv.MOBILE_NUMBER_ILLEGAL"),
            Err(ProviderError::Permanent { .. })
        ));
        assert!(matches!(
            classify("isv.OUT_OF_SERVICE"),
            Err(ProviderError::Transient {
                maybe_delivered: false,
                ..
            })
        ));
    }
}
