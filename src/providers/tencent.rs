//! Tencent Cloud SMS SendSms (2021-01-11) with TC3-HMAC-SHA256. Only
//! pre-approved templates go out (`TemplateId` + ordered parameters from
//! `<name>.sms.toml`). An HTTP 200 can carry a per-number failure: success
//! is `SendStatusSet[0].Code == "Ok"`. `SessionContext` carries our id.

use async_trait::async_trait;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use super::http::{self, transport_error};
use super::{Keys, Lookup, Outbound, Provider, ProviderError, Receipt};

fn hmac(key: &[u8], data: &str) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    mac.update(data.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// The TC3 signature over `content-type`, `host` and `x-tc-action`.
pub fn signature(
    secret_key: &str,
    service: &str,
    host: &str,
    action: &str,
    content_type: &str,
    timestamp: i64,
    body: &str,
) -> String {
    let date = chrono::DateTime::from_timestamp(timestamp, 0)
        .unwrap_or_default()
        .format("%Y-%m-%d")
        .to_string();
    let canonical = format!(
        "POST\n/\n\ncontent-type:{content_type}\nhost:{host}\nx-tc-action:{}\n\ncontent-type;host;x-tc-action\n{}",
        action.to_lowercase(),
        hex::encode(Sha256::digest(body.as_bytes()))
    );
    let to_sign = format!(
        "TC3-HMAC-SHA256\n{timestamp}\n{date}/{service}/tc3_request\n{}",
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    let k_date = hmac(format!("TC3{secret_key}").as_bytes(), &date);
    let k_service = hmac(&k_date, service);
    let k_signing = hmac(&k_service, "tc3_request");
    hex::encode(hmac(&k_signing, &to_sign))
}

/// How Tencent's per-number or whole-request codes are handled.
pub fn classify(code: &str) -> Result<(), ProviderError> {
    match code {
        "Ok" => Ok(()),
        c if c.starts_with("LimitExceeded.") => Err(ProviderError::RecipientLimited {
            code: c.into(),
            retry_after: std::time::Duration::from_secs(1800),
        }),
        "FailedOperation.PhoneNumberInBlacklist" => {
            Err(ProviderError::Policy { code: code.into() })
        }
        // Clock skew or bad keys: this provider cannot send; fail over.
        c if c.starts_with("AuthFailure.") || c.starts_with("InternalError") => {
            Err(ProviderError::Transient {
                code: c.into(),
                retry_after: None,
                maybe_delivered: false,
                throttle: false,
            })
        }
        other => Err(ProviderError::Permanent { code: other.into() }),
    }
}

pub struct TencentProvider {
    name: String,
    base: String,
    secret_id: String,
    secret_key: String,
    sdk_app_id: String,
    sign_name: String,
    region: String,
    client: reqwest::Client,
}

impl TencentProvider {
    /// `kind = "tencent"`: `access_key_id` (SecretId), `access_key_secret`
    /// (SecretKey), `sdk_app_id`, `sign_name`, `region` (default
    /// ap-guangzhou), `url` (default the public endpoint).
    pub fn from_config(keys: &mut Keys<'_>) -> Option<TencentProvider> {
        let c = keys.config;
        Some(TencentProvider::new(
            &c.name,
            c.url
                .clone()
                .unwrap_or_else(|| "https://sms.tencentcloudapi.com".into()),
            keys.need(c.access_key_id.as_deref(), "access_key_id"),
            keys.need_secret(c.access_key_secret.as_ref(), "access_key_secret"),
            keys.need(c.sdk_app_id.as_deref(), "sdk_app_id"),
            keys.need(c.sign_name.as_deref(), "sign_name"),
            c.region.clone().unwrap_or_else(|| "ap-guangzhou".into()),
        ))
    }
}

impl TencentProvider {
    pub fn new(
        name: &str,
        base: String,
        secret_id: String,
        secret_key: String,
        sdk_app_id: String,
        sign_name: String,
        region: String,
    ) -> Self {
        TencentProvider {
            name: name.to_owned(),
            base,
            secret_id,
            secret_key,
            sdk_app_id,
            sign_name,
            region,
            client: reqwest::Client::new(),
        }
    }
}

impl TencentProvider {
    /// One TC3-HMAC-SHA256 signed call of `action` with a JSON body: the
    /// HTTP status and the JSON answer.
    async fn call(
        &self,
        action: &str,
        body: String,
    ) -> Result<(u16, serde_json::Value), ProviderError> {
        let url = reqwest::Url::parse(&self.base).map_err(|e| ProviderError::Permanent {
            code: format!("bad url: {e}"),
        })?;
        let host = match url.port() {
            Some(p) => format!("{}:{p}", url.host_str().unwrap_or_default()),
            None => url.host_str().unwrap_or_default().to_owned(),
        };
        let ts = chrono::Utc::now().timestamp();
        let content_type = "application/json; charset=utf-8";
        let sig = signature(
            &self.secret_key,
            "sms",
            &host,
            action,
            content_type,
            ts,
            &body,
        );
        let date = chrono::DateTime::from_timestamp(ts, 0)
            .unwrap_or_default()
            .format("%Y-%m-%d");
        let auth = format!(
            "TC3-HMAC-SHA256 Credential={}/{date}/sms/tc3_request, SignedHeaders=content-type;host;x-tc-action, Signature={sig}",
            self.secret_id
        );
        let resp = self
            .client
            .post(url)
            .header("content-type", content_type)
            .header("host", &host)
            .header("x-tc-action", action)
            .header("x-tc-version", "2021-01-11")
            .header("x-tc-region", &self.region)
            .header("x-tc-timestamp", ts.to_string())
            .header("authorization", auth)
            .body(body)
            .send()
            .await
            .map_err(|e| transport_error(&e))?;
        let status = resp.status().as_u16();
        Ok((status, resp.json().await.unwrap_or_default()))
    }
}

#[async_trait]
impl Provider for TencentProvider {
    fn name(&self) -> &str {
        &self.name
    }

    async fn send(&self, m: &Outbound) -> Result<Receipt, ProviderError> {
        let Some((template_id, params)) = &m.provider_params.tencent else {
            return Err(ProviderError::Unsupported {
                code: format!("template `{}` declares no tencent TemplateId", m.template),
            });
        };
        let body = serde_json::json!({
            "PhoneNumberSet": [m.to],
            "SmsSdkAppId": self.sdk_app_id,
            "SignName": self.sign_name,
            "TemplateId": template_id,
            "TemplateParamSet": params,
            "SessionContext": m.message_id.to_string(),
        })
        .to_string();
        let (status, json) = self.call("SendSms", body).await?;
        let r = &json["Response"];
        if let Some(code) = r["Error"]["Code"].as_str() {
            return classify(code).map(|()| Receipt {
                provider_ref: String::new(),
            });
        }
        match r["SendStatusSet"].get(0) {
            Some(s) => classify(s["Code"].as_str().unwrap_or("")).map(|()| Receipt {
                provider_ref: s["SerialNo"].as_str().unwrap_or_default().to_owned(),
            }),
            None => Err(http::without_code(status, "SendStatusSet")),
        }
    }

    fn can_look_up(&self) -> bool {
        true
    }

    /// `PullSmsSendStatusByPhoneNumber` from a minute before the attempt,
    /// matching our `SessionContext`. Tencent lists a send only once the
    /// carrier has reported on it, so a record proves it arrived but its
    /// absence proves nothing: never `NotSent`.
    async fn lookup(&self, q: &super::LookupQuery) -> Lookup {
        let body = serde_json::json!({
            "BeginTime": (q.since - chrono::Duration::minutes(1)).timestamp(),
            "EndTime": q.now.timestamp().max(q.since.timestamp()),
            "Offset": 0,
            "Limit": 100,
            "PhoneNumber": q.to,
            "SmsSdkAppId": self.sdk_app_id,
        })
        .to_string();
        let Ok((_, json)) = self.call("PullSmsSendStatusByPhoneNumber", body).await else {
            return Lookup::Unanswered;
        };
        let ours = q.message_id.to_string();
        json["Response"]["PullSmsSendStatusSet"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["SessionContext"].as_str() == Some(ours.as_str()))
            .map_or(Lookup::Unanswered, |r| {
                Lookup::Found(Receipt {
                    provider_ref: r["SerialNo"].as_str().unwrap_or_default().to_owned(),
                })
            })
    }
}

/// One entry of Tencent's delivery callback: `{sid, report_status,
/// description, …}`.
pub fn read_report(r: &serde_json::Value) -> Option<http::Report> {
    let status = r["report_status"].as_str().unwrap_or("");
    Some(http::Report {
        ours: None,
        reference: r["sid"].as_str().filter(|s| !s.is_empty())?.to_owned(),
        delivered: status == "SUCCESS",
        detail: format!("{status} {}", r["description"].as_str().unwrap_or("")),
    })
}

/// The answer Tencent expects to a report batch.
pub fn report_ack() -> serde_json::Value {
    serde_json::json!({"result": 0, "errmsg": "OK"})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_tencents_known_answer() {
        let body = r#"{"Limit": 1, "Filters": [{"Values": ["\u672a\u547d\u540d"], "Name": "instance-name"}]}"#;
        let sig = signature(
            "Gu5t9xGARNpq86cd98joQYCN3*******",
            "cvm",
            "cvm.tencentcloudapi.com",
            "DescribeInstances",
            "application/json; charset=utf-8",
            1551113065,
            body,
        );
        assert_eq!(
            sig,
            "be4f67d323c78ab9acb7395e43c0dbcf822a9cfac32fea2449a7bc7726b770a3"
        );
    }

    #[test]
    fn codes_are_classified() {
        assert!(classify("Ok").is_ok());
        assert!(matches!(
            classify("LimitExceeded.PhoneNumberThirtySecondLimit"),
            Err(ProviderError::RecipientLimited { .. })
        ));
        assert!(matches!(
            classify("FailedOperation.PhoneNumberInBlacklist"),
            Err(ProviderError::Policy { .. })
        ));
        assert!(matches!(
            classify("InvalidParameterValue.IncorrectPhoneNumber"),
            Err(ProviderError::Permanent { .. })
        ));
    }
}
