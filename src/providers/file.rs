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
    let boundary = format!("duebell-{}-{}", m.message_id, m.attempt_id);
    let subject = m.subject.clone().unwrap_or_default();
    let encoded_subject = if subject.is_ascii() {
        subject
    } else {
        format!("=?UTF-8?B?{}?=", base64(subject.as_bytes()))
    };
    let mut out = String::new();
    out.push_str(&format!(
        "Message-ID: <{}.{}@duebell>\r\n",
        m.message_id, m.attempt_id
    ));
    out.push_str(&format!(
        "From: {from}\r\nTo: {}\r\nSubject: {encoded_subject}\r\n",
        m.to
    ));
    if let Some(u) = &m.unsubscribe_url {
        out.push_str(&format!(
            "List-Unsubscribe: <{u}>\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
        ));
    }
    out.push_str(&format!(
        "MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=\"{boundary}\"\r\n\r\n"
    ));
    out.push_str(&format!("--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n", wrap(&base64(m.body.as_bytes()))));
    if let Some(html) = &m.html {
        out.push_str(&format!("--{boundary}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n", wrap(&base64(html.as_bytes()))));
    }
    out.push_str(&format!("--{boundary}--\r\n"));
    out
}

fn wrap(s: &str) -> String {
    s.as_bytes()
        .chunks(76)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join("\r\n")
}

fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
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
    out
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
}
