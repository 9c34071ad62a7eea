//! Signing, in one place: one-click unsubscribe tokens (RFC 8058), the
//! `X-Duebell-Signature` on hand-off events and webhook sends, and fresh
//! random keys. A leaf: it knows no other module.
//!
//! Unsubscribe tokens: the link alone must identify and authorise the
//! opt-out, so it carries the message id and an HMAC of it under a key only
//! this deployment knows. Unforgeable, and revealing nothing about the
//! borrower.

use hmac::{Hmac, Mac};
use sha2::Sha256;

pub struct Signer {
    key: Vec<u8>,
}

impl Signer {
    pub fn new(key: Vec<u8>) -> Self {
        Signer { key }
    }

    fn mac(&self, message_id: i64) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(b"unsubscribe:");
        mac.update(message_id.to_string().as_bytes());
        hex::encode(&mac.finalize().into_bytes()[..16])
    }

    /// `m<id>.<32 hex>`.
    pub fn token(&self, message_id: i64) -> String {
        format!("m{message_id}.{}", self.mac(message_id))
    }

    /// The secret path segment of a provider's unsigned callbacks (Aliyun
    /// and Tencent receipts carry no signature): derived from the
    /// deployment key, so it is stable across restarts, differs per
    /// provider, and cannot be guessed from the provider's name.
    pub fn callback_token(&self, provider: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(b"callback:");
        mac.update(provider.as_bytes());
        hex::encode(&mac.finalize().into_bytes()[..16])
    }

    /// Whether `presented` is provider's callback token (constant time).
    pub fn verify_callback(&self, provider: &str, presented: &str) -> bool {
        use subtle::ConstantTimeEq;
        bool::from(
            self.callback_token(provider)
                .as_bytes()
                .ct_eq(presented.as_bytes()),
        )
    }

    fn verp_mac(&self, message_id: i64) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(b"verp:");
        mac.update(message_id.to_string().as_bytes());
        hex::encode(&mac.finalize().into_bytes()[..8])
    }

    /// The per-message token of an email's Return-Path (`m<id>-<16 hex>`,
    /// lower case so a server that folds the local part keeps it): a bounce
    /// mailed back to it names the message, and only this deployment can
    /// make one, so a forged bounce cannot suppress an address.
    pub fn verp_token(&self, message_id: i64) -> String {
        format!("m{message_id}-{}", self.verp_mac(message_id))
    }

    /// The message id a Return-Path token names, if its signature holds.
    pub fn verify_verp(&self, token: &str) -> Option<i64> {
        let (id, sig) = token.strip_prefix('m')?.split_once('-')?;
        let id: i64 = id.parse().ok()?;
        use subtle::ConstantTimeEq;
        bool::from(
            self.verp_mac(id)
                .as_bytes()
                .ct_eq(sig.to_ascii_lowercase().as_bytes()),
        )
        .then_some(id)
    }

    /// The message id a token names, if its signature holds.
    pub fn verify(&self, token: &str) -> Option<i64> {
        let (id, sig) = token.strip_prefix('m')?.split_once('.')?;
        let id: i64 = id.parse().ok()?;
        let expected = self.mac(id);
        use subtle::ConstantTimeEq;
        bool::from(expected.as_bytes().ct_eq(sig.as_bytes())).then_some(id)
    }
}

/// `X-Duebell-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "t.body">`.
pub fn webhook_signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!(
        "t={timestamp},v1={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

/// 32 bytes from the operating system's random source, for keys generated
/// once per deployment (the unsubscribe key).
pub fn random_key() -> std::io::Result<[u8; 32]> {
    use std::io::Read;
    let mut fresh = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut fresh)?;
    Ok(fresh)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_and_forgeries_do_not() {
        let s = Signer::new(b"k".repeat(32));
        let t = s.token(42);
        assert_eq!(s.verify(&t), Some(42));
        assert_eq!(s.verify(&t.replace("m42", "m43")), None);
        assert_eq!(Signer::new(b"x".repeat(32)).verify(&t), None);
        assert_eq!(s.verify("m42"), None);
        assert_eq!(s.verify("garbage"), None);
    }

    #[test]
    fn verp_tokens_verify_whatever_the_case_and_forgeries_do_not() {
        let s = Signer::new(b"k".repeat(32));
        let t = s.verp_token(42);
        assert!(t.starts_with("m42-") && t.len() == "m42-".len() + 16, "{t}");
        assert_eq!(s.verify_verp(&t), Some(42));
        assert_eq!(
            s.verify_verp(&t.to_ascii_uppercase().replacen('M', "m", 1)),
            Some(42)
        );
        assert_eq!(s.verify_verp(&t.replace("m42", "m43")), None);
        assert_eq!(Signer::new(b"x".repeat(32)).verify_verp(&t), None);
        // Not interchangeable with the unsubscribe token.
        assert_eq!(s.verify_verp(&s.token(42)), None);
        assert_eq!(s.verify_verp("m42-"), None);
    }

    #[test]
    fn webhook_signature_is_hmac_sha256_over_timestamp_and_body() {
        // Computed independently: printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac key
        let s = webhook_signature("key", 1_700_000_000, br#"{"a":1}"#);
        assert!(s.starts_with("t=1700000000,v1="));
        assert_eq!(s.len(), "t=1700000000,v1=".len() + 64);
    }

    #[test]
    fn random_keys_differ() {
        assert_ne!(random_key().unwrap(), random_key().unwrap());
    }
}
