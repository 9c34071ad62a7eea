//! What the HTTP adapters share: reading `Retry-After`, classifying a
//! transport error, answering a response that carries no result code, and
//! the shape of a delivery report read from a provider's callback.

use super::ProviderError;

/// `Retry-After` in seconds.
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<std::time::Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(std::time::Duration::from_secs)
}

/// Classifies a transport error: refused before sending is safe to retry
/// elsewhere; anything after the request may have gone out is not.
pub fn transport_error(e: &reqwest::Error) -> ProviderError {
    ProviderError::Transient {
        code: if e.is_timeout() {
            "timeout".into()
        } else {
            "connection failed".into()
        },
        retry_after: None,
        maybe_delivered: !e.is_connect(),
        throttle: false,
    }
}

/// A response with no result code in it: a 5xx is the provider's trouble
/// (retry), anything else a request it will never accept.
pub fn without_code(status: u16, missing: &str) -> ProviderError {
    if status >= 500 {
        ProviderError::Transient {
            code: format!("HTTP {status}"),
            retry_after: None,
            maybe_delivered: false,
            throttle: false,
        }
    } else {
        ProviderError::Permanent {
            code: format!("HTTP {status} without {missing}"),
        }
    }
}

/// One delivery report from a provider's callback. A report applies only
/// to the message it names: by the provider's own reference for the send,
/// and by our message id too when the provider echoes it (both must agree).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Our message id, when the provider echoes it (Aliyun OutId, the
    /// `?m=` of Twilio's status callback).
    pub ours: Option<i64>,
    /// The provider's reference for the send (BizId, SerialNo, sid).
    pub reference: String,
    pub delivered: bool,
    /// What the provider said, for the message's history.
    pub detail: String,
}
