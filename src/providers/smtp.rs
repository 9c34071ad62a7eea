//! The `smtp` provider (lettre, async). Plain and STARTTLS connections are
//! opened by us with `TCP_NODELAY` and pooled: lettre 0.11.23 never sets it,
//! and Nagle plus the server's delayed ACK holds a connection to ~22
//! messages/s (measured on this machine kind). Implicit TLS (port 465) uses
//! lettre's own pooled relay transport. The message is our own RFC 5322
//! text: multipart text + HTML, our Message-ID, and the RFC 8058
//! `List-Unsubscribe` headers. On our own connections each mail is one
//! transaction of `smtp_wire`, pipelined where the server offers it.

use std::sync::Mutex;

use async_trait::async_trait;
use lettre::address::Envelope;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{Address, AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use serde::Deserialize;

use super::smtp_wire::{self, Connection, Failed};
use super::{Keys, Lookup, Outbound, Provider, ProviderError, Receipt};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Security {
    /// Unencrypted (loopback relays and tests only).
    Plain,
    /// Connect plain, then upgrade; refuse to send if the server cannot.
    Starttls,
    /// Implicit TLS from the first byte (port 465).
    Tls,
}

pub struct SmtpProvider {
    name: String,
    host: String,
    port: u16,
    security: Security,
    credentials: Option<Credentials>,
    from_header: String,
    from: Address,
    /// `bounces@domain`: the envelope sender becomes `bounces+<token>@domain`.
    return_path: Option<String>,
    hello: ClientId,
    pool: Mutex<Vec<Connection>>,
    relay: Option<AsyncSmtpTransport<Tokio1Executor>>,
}

/// `Name <addr@host>` or `addr@host` → the address.
fn address_of(from: &str) -> Option<Address> {
    let addr = from
        .rsplit_once('<')
        .map_or(from, |(_, a)| a.trim_end_matches('>'))
        .trim();
    addr.parse().ok()
}

impl SmtpProvider {
    /// `kind = "smtp"`: `host`, `port` (by `security`: 465, 587 or 25),
    /// `security` (default starttls), `username`/`password`, `from`.
    pub fn from_config(keys: &mut Keys<'_>) -> Option<SmtpProvider> {
        let c = keys.config;
        let host = keys.need(c.host.as_deref(), "host");
        let from = keys.need(c.from.as_deref(), "from");
        let security = c.security.unwrap_or(Security::Starttls);
        let port = c.port.unwrap_or(match security {
            Security::Tls => 465,
            Security::Starttls => 587,
            Security::Plain => 25,
        });
        let password = c.password.as_ref().map(|s| s.expose().to_owned());
        if let Some(rp) = &c.return_path {
            if rp.parse::<Address>().is_err() || rp.contains('+') {
                keys.problem(
                    "return_path",
                    format!("`{rp}` is not a plain address; write e.g. \"bounces@mail.example.com\" (duebell adds +<token> per message)"),
                );
            }
        }
        if let Some(mb) = &c.bounce_mailbox {
            if c.return_path.is_none() {
                keys.problem(
                    "bounce_mailbox",
                    "needs `return_path`: without a per-message Return-Path no bounce can be matched to its message",
                );
            }
            for (key, problem) in mb.problems() {
                keys.problem(&format!("bounce_mailbox.{key}"), problem);
            }
        }
        match SmtpProvider::new(
            &c.name,
            host,
            port,
            security,
            c.username.clone(),
            password,
            from,
        ) {
            Ok(mut s) => {
                s.return_path.clone_from(&c.return_path);
                Some(s)
            }
            Err(e) => {
                keys.problem("from", e);
                None
            }
        }
    }
}

impl SmtpProvider {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: &str,
        host: String,
        port: u16,
        security: Security,
        username: Option<String>,
        password: Option<String>,
        from: String,
    ) -> Result<Self, String> {
        let from_addr = address_of(&from).ok_or_else(|| format!("`{from}` is not a sender address; write e.g. \"Example Finance <reminders@example.com>\""))?;
        let credentials = username.map(|u| Credentials::new(u, password.unwrap_or_default()));
        let relay = match security {
            Security::Tls => {
                let mut b = AsyncSmtpTransport::<Tokio1Executor>::relay(&host)
                    .map_err(|e| e.to_string())?
                    .port(port);
                if let Some(c) = &credentials {
                    b = b.credentials(c.clone());
                }
                Some(b.build())
            }
            _ => None,
        };
        Ok(SmtpProvider {
            name: name.to_owned(),
            host,
            port,
            security,
            credentials,
            from_header: from,
            from: from_addr,
            return_path: None,
            hello: ClientId::default(),
            pool: Mutex::new(Vec::new()),
            relay,
        })
    }

    async fn connect(&self) -> Result<Connection, ProviderError> {
        let not_sent = |code: String| ProviderError::Transient {
            code,
            retry_after: None,
            maybe_delivered: false,
            throttle: false,
        };
        let stream = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| not_sent(format!("connect: {e}")))?;
        stream
            .set_nodelay(true)
            .map_err(|e| not_sent(format!("nodelay: {e}")))?;
        let mut conn = AsyncSmtpConnection::connect_with_transport(Box::new(stream), &self.hello)
            .await
            .map_err(|e| not_sent(format!("greeting: {e}")))?;
        if self.security == Security::Starttls {
            let tls =
                TlsParameters::new(self.host.clone()).map_err(|e| not_sent(format!("tls: {e}")))?;
            conn.starttls(tls, &self.hello)
                .await
                .map_err(|e| not_sent(format!("starttls: {e}")))?;
        }
        let pipelining = smtp_wire::offers_pipelining(&mut conn, &self.hello)
            .await
            .map_err(|e| classify(&e, false))?;
        if let Some(c) = &self.credentials {
            conn.auth(&[Mechanism::Plain, Mechanism::Login], c)
                .await
                .map_err(|e| classify(&e, false))?;
        }
        Ok(Connection { conn, pipelining })
    }

    fn take(&self) -> Option<Connection> {
        self.pool.lock().unwrap_or_else(|e| e.into_inner()).pop()
    }

    fn give_back(&self, conn: Connection) {
        let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        if pool.len() < 16 {
            pool.push(conn);
        }
    }
}

/// A server reply classifies itself (4xx transient, 5xx permanent); a
/// broken connection after DATA began may have delivered.
fn classify(e: &lettre::transport::smtp::Error, after_data: bool) -> ProviderError {
    let code = e.status().map_or_else(|| e.to_string(), |c| c.to_string());
    if e.is_permanent() && hard_bounce(&e.to_string()) {
        // The server's whole reply is the reason the address is suppressed.
        ProviderError::Bounced {
            code: e.to_string(),
        }
    } else if e.is_permanent() {
        ProviderError::Permanent { code }
    } else if e.is_transient() {
        ProviderError::Transient {
            code,
            retry_after: None,
            maybe_delivered: false,
            throttle: false,
        }
    } else {
        ProviderError::Transient {
            code: e.to_string(),
            retry_after: None,
            maybe_delivered: after_data,
            throttle: false,
        }
    }
}

/// Whether a permanent SMTP reply says the address itself cannot receive:
/// an RFC 3463 enhanced status 5.1.x (bad mailbox or domain), 5.2.x
/// (mailbox disabled, full beyond limits) or 5.7.1 (delivery not
/// authorized). Other 5xx (a policy on our content, a syntax error) fail
/// only the message.
pub fn hard_bounce(reply: &str) -> bool {
    reply
        .split(|c: char| c.is_whitespace() || c == ':' || c == ',' || c == '(' || c == ')')
        .filter_map(|w| {
            let mut parts = w.trim_end_matches('.').split('.');
            let (class, subject, detail) = (parts.next()?, parts.next()?, parts.next()?);
            (parts.next().is_none()
                && class == "5"
                && !subject.is_empty()
                && subject.len() <= 3
                && subject.chars().all(|c| c.is_ascii_digit())
                && !detail.is_empty()
                && detail.len() <= 3
                && detail.chars().all(|c| c.is_ascii_digit()))
            .then_some((subject.to_owned(), detail.to_owned()))
        })
        .any(|(s, d)| s == "1" || s == "2" || (s == "7" && d == "1"))
}

#[async_trait]
impl Provider for SmtpProvider {
    fn name(&self) -> &str {
        &self.name
    }

    async fn send(&self, m: &Outbound) -> Result<Receipt, ProviderError> {
        let to: Address = m.to.parse().map_err(|_| ProviderError::Permanent {
            code: "bad recipient address".into(),
        })?;
        let sender = match (&self.return_path, &m.bounce_token) {
            (Some(rp), Some(token)) => super::bounce::verp_address(rp, token)
                .and_then(|a| a.parse::<Address>().ok())
                .unwrap_or_else(|| self.from.clone()),
            _ => self.from.clone(),
        };
        let envelope =
            Envelope::new(Some(sender), vec![to]).map_err(|e| ProviderError::Permanent {
                code: e.to_string(),
            })?;
        let bytes = super::file::eml(m, &self.from_header);
        let message_id = format!("{}.{}@duebell", m.message_id, m.attempt_id);
        if let Some(relay) = &self.relay {
            return relay
                .send_raw(&envelope, bytes.as_bytes())
                .await
                .map(|_| Receipt {
                    provider_ref: message_id,
                })
                .map_err(|e| classify(&e, true));
        }
        let mut conn = match self.take() {
            Some(c) if !c.conn.has_broken() => c,
            _ => self.connect().await?,
        };
        match smtp_wire::send(&mut conn, &envelope, &bytes).await {
            Ok(_) => {
                self.give_back(conn);
                Ok(Receipt {
                    provider_ref: message_id,
                })
            }
            Err(Failed::Before(e)) => Err(classify(&e, false)),
            Err(Failed::After(e)) => Err(classify(&e, true)),
            Err(Failed::Refused(e)) => {
                self.give_back(conn);
                Err(classify(&e, false))
            }
            Err(Failed::Unsupported(code)) => {
                self.give_back(conn);
                Err(ProviderError::Permanent { code })
            }
        }
    }

    async fn lookup(&self, _q: &super::LookupQuery) -> Lookup {
        Lookup::Unanswered
    }
}
