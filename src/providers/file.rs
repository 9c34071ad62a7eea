//! The `file` provider: a local outbox folder. SMS are appended to
//! `sms.jsonl`, one JSON object per line; each email is written as
//! `<message id>-<attempt>.eml`. The shipped default, so duebell runs with no
//! account anywhere; also how an operator inspects exactly what would go out.

use std::io::Write;
use std::path::PathBuf;

use async_trait::async_trait;
use tokio::sync::Mutex;

use super::{Keys, Lookup, Outbound, Provider, ProviderError, Receipt};
use crate::domain::Channel;

pub struct FileProvider {
    name: String,
    dir: PathBuf,
    /// Serialises appends so JSONL lines never interleave.
    lock: Mutex<()>,
}

impl FileProvider {
    /// `kind = "file"`: `dir`, the outbox folder.
    pub fn from_config(keys: &mut Keys<'_>) -> Option<FileProvider> {
        match &keys.config.dir {
            Some(dir) => Some(FileProvider::new(keys.name(), dir.clone())),
            None => {
                keys.problem("dir", "a file provider needs `dir`, the outbox folder");
                None
            }
        }
    }
}

impl FileProvider {
    pub fn new(name: &str, dir: PathBuf) -> Self {
        FileProvider {
            name: name.to_owned(),
            dir,
            lock: Mutex::new(()),
        }
    }

    fn eml_path(&self, message_id: i64, attempt_id: &str) -> PathBuf {
        self.dir.join(format!("{message_id}-{attempt_id}.eml"))
    }
}

fn io_error(e: std::io::Error) -> ProviderError {
    ProviderError::Transient {
        code: format!("io: {e}"),
        retry_after: None,
        maybe_delivered: false,
        throttle: false,
    }
}

/// A complete RFC 5322 message with text and HTML parts and the RFC 8058
/// unsubscribe headers.
pub fn eml(m: &Outbound, from: &str) -> String {
    use std::fmt::Write;
    let (id, attempt) = (m.message_id, &m.attempt_id);
    let boundary = format!("duebell-{id}-{attempt}");
    let body_len = m.body.len() + m.html.as_ref().map_or(0, String::len);
    // The headers, and each part's body in base64 (4/3 and line breaks).
    let mut out = String::with_capacity(640 + body_len * 14 / 10);
    // Writing to a `String` cannot fail.
    let _ = write!(
        out,
        "Message-ID: <{id}.{attempt}@duebell>\r\nFrom: {from}\r\nTo: {}\r\nSubject: ",
        m.to
    );
    let subject = m.subject.as_deref().unwrap_or_default();
    if subject.is_ascii() {
        out.push_str(subject);
    } else {
        out.push_str("=?UTF-8?B?");
        base64_into(subject.as_bytes(), &mut out);
        out.push_str("?=");
    }
    out.push_str("\r\n");
    if let Some(u) = &m.unsubscribe_url {
        let _ = write!(
            out,
            "List-Unsubscribe: <{u}>\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
        );
    }
    let _ = write!(
        out,
        "MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=\"{boundary}\"\r\n\r\n"
    );
    let parts = [("plain", Some(&m.body)), ("html", m.html.as_ref())];
    for (kind, text) in parts {
        let Some(text) = text else { continue };
        let _ = write!(out, "--{boundary}\r\nContent-Type: text/{kind}; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n");
        // Lines of 76 characters: 57 bytes each.
        for (i, line) in text.as_bytes().chunks(57).enumerate() {
            if i > 0 {
                out.push_str("\r\n");
            }
            base64_into(line, &mut out);
        }
        out.push_str("\r\n");
    }
    let _ = write!(out, "--{boundary}--\r\n");
    out
}

#[cfg(test)]
fn base64(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    base64_into(data, &mut out);
    out
}

/// Appends `data` to `out` in base64.
fn base64_into(data: &[u8], out: &mut String) {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        out.push(T[(n >> 18) as usize & 63] as char);
        out.push(T[(n >> 12) as usize & 63] as char);
        out.push(if chunk.len() > 1 {
            T[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if chunk.len() > 2 {
            T[n as usize & 63] as char
        } else {
            '='
        });
    }
}

#[async_trait]
impl Provider for FileProvider {
    fn name(&self) -> &str {
        &self.name
    }

    async fn send(&self, m: &Outbound) -> Result<Receipt, ProviderError> {
        let _guard = self.lock.lock().await;
        std::fs::create_dir_all(&self.dir).map_err(io_error)?;
        match m.channel {
            Channel::Sms => {
                let line = serde_json::json!({
                    "message_id": m.message_id,
                    "attempt_id": m.attempt_id,
                    "to": m.to,
                    "body": m.body,
                    "segments": m.segments,
                    "template": m.template,
                    "template_version": m.template_version,
                    "step": m.step,
                    "borrower_id": m.borrower_id,
                    "loan_ids": m.loan_ids,
                });
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.dir.join("sms.jsonl"))
                    .map_err(io_error)?;
                writeln!(f, "{line}").map_err(io_error)?;
                f.sync_data().map_err(io_error)?;
            }
            Channel::Email => {
                let path = self.eml_path(m.message_id, &m.attempt_id);
                std::fs::write(&path, eml(m, "duebell@localhost")).map_err(io_error)?;
            }
        }
        Ok(Receipt {
            provider_ref: format!("{}:{}", self.name, m.attempt_id),
        })
    }

    /// The outbox is its own complete record: what is not in it was never
    /// written (unless the folder cannot be read, which proves nothing).
    fn can_look_up(&self) -> bool {
        true
    }

    async fn lookup(&self, q: &super::LookupQuery) -> Lookup {
        let (message_id, attempt_id) = (q.message_id, q.attempt_id.as_str());
        let found = || {
            Lookup::Found(Receipt {
                provider_ref: format!("{}:{attempt_id}", self.name),
            })
        };
        match self.eml_path(message_id, attempt_id).try_exists() {
            Ok(true) => return found(),
            Ok(false) => {}
            Err(_) => return Lookup::Unanswered,
        }
        match std::fs::read_to_string(self.dir.join("sms.jsonl")) {
            Ok(text)
                if text.lines().any(|l| {
                    serde_json::from_str::<serde_json::Value>(l).is_ok_and(|v| {
                        v["message_id"] == message_id && v["attempt_id"] == attempt_id
                    })
                }) =>
            {
                found()
            }
            Ok(_) => Lookup::NotSent,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Lookup::NotSent,
            Err(_) => Lookup::Unanswered,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_matches_rfc_4648_vectors() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(super::base64(i.as_bytes()), o);
        }
    }

    #[test]
    fn an_email_is_multipart_base64_in_lines_of_76() {
        let body = "Dear Kim, your payment of $10.00 is due today. ".repeat(3);
        let m = crate::providers::Outbound {
            message_id: 7,
            attempt_id: "a1".into(),
            channel: crate::domain::Channel::Email,
            to: "kim@example.com".into(),
            subject: Some("Paiement dû".into()),
            body: body.clone(),
            html: Some("<p>Hi</p>".into()),
            segments: None,
            template: "due_today".into(),
            template_version: "v".into(),
            step: "due".into(),
            borrower_id: "B1".into(),
            loan_ids: vec![],
            loan_steps: vec![],
            unsubscribe_url: Some("https://example.com/u/t".into()),
            provider_params: Default::default(),
            bounce_token: None,
        };
        let eml = super::eml(&m, "Example <r@example.com>");
        let plain = super::base64(body.as_bytes());
        let (first, rest) = plain.split_at(76);
        let (second, third) = rest.split_at(76);
        // What the earlier, line-by-line version wrote, byte for byte.
        let want = format!(
            "Message-ID: <7.a1@duebell>\r\nFrom: Example <r@example.com>\r\nTo: kim@example.com\r\n\
             Subject: =?UTF-8?B?UGFpZW1lbnQgZMO7?=\r\n\
             List-Unsubscribe: <https://example.com/u/t>\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n\
             MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=\"duebell-7-a1\"\r\n\r\n\
             --duebell-7-a1\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n\
             {first}\r\n{second}\r\n{third}\r\n\
             --duebell-7-a1\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n\
             PHA+SGk8L3A+\r\n--duebell-7-a1--\r\n"
        );
        assert_eq!(eml, want);
    }
}
