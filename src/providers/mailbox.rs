//! Bounce mailboxes: the slice of IMAP4rev1 (RFC 3501, with MOVE from RFC
//! 6851 when offered) and POP3 (RFC 1939, STLS from RFC 2595) that reading
//! a dedicated mailbox needs: log in (plain, STARTTLS/STLS or implicit
//! TLS), list, fetch whole messages, then delete or move the ones that were
//! handled. Nothing here knows what a bounce is (`bounce.rs` does).
//!
//! A message is removed only after its caller says it was handled, so a
//! crash between reading and recording leaves it to be read again (the
//! store drops a report it has seen, by digest).

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufStream};
use tokio::net::TcpStream;
use tokio_rustls::rustls;

use crate::domain::{ConfigDuration, Secret};

/// `bounce_mailbox = { … }` on an `smtp` provider.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MailboxConfig {
    pub protocol: MailProtocol,
    pub host: String,
    /// Default by protocol and security: IMAP 993 (tls) or 143; POP3 995
    /// (tls) or 110.
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default = "default_security")]
    pub security: MailSecurity,
    pub username: String,
    /// Or `password_file`, like every secret.
    pub password: Secret,
    /// IMAP: the folder bounces arrive in.
    #[serde(default = "default_folder")]
    pub folder: String,
    /// IMAP: move handled mail to this folder (created if missing) instead
    /// of deleting it.
    #[serde(default)]
    pub move_to: Option<String>,
    /// How often the daemon reads the mailbox.
    #[serde(default = "default_every")]
    pub every: ConfigDuration,
    /// Extra CA certificates to trust (a private CA), PEM; usually given as
    /// `ca_file = "PATH"`. The system's roots are always trusted.
    #[serde(default)]
    pub ca: Option<String>,
}

fn default_security() -> MailSecurity {
    MailSecurity::Tls
}

fn default_folder() -> String {
    "INBOX".into()
}

fn default_every() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(60))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MailProtocol {
    Imap,
    Pop3,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MailSecurity {
    /// Unencrypted (loopback and tests only).
    Plain,
    /// Connect plain, then upgrade (IMAP STARTTLS, POP3 STLS); refuse to
    /// log in if the server cannot.
    Starttls,
    /// Implicit TLS from the first byte.
    Tls,
}

impl MailboxConfig {
    /// Problems with the settings, as (key under the table, message).
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if self.host.trim().is_empty() {
            out.push(("host", "is empty; name the mail server".to_owned()));
        }
        if self.username.trim().is_empty() {
            out.push(("username", "is empty".to_owned()));
        }
        if self.password.expose().contains(['\r', '\n']) {
            out.push((
                "password",
                "contains a line break (a password file should hold the password alone; a trailing newline is fine)".to_owned(),
            ));
        }
        if self.protocol == MailProtocol::Pop3 && self.move_to.is_some() {
            out.push((
                "move_to",
                "POP3 has no folders; handled mail is deleted (use protocol = \"imap\" to move it)"
                    .to_owned(),
            ));
        }
        if self.every.get() < Duration::from_secs(1) {
            out.push(("every", "must be at least 1s".to_owned()));
        }
        if let Some(ca) = &self.ca {
            if let Err(e) = load_roots(Some(ca)) {
                out.push(("ca", e));
            }
        }
        out
    }

    fn port(&self) -> u16 {
        self.port.unwrap_or(match (self.protocol, self.security) {
            (MailProtocol::Imap, MailSecurity::Tls) => 993,
            (MailProtocol::Imap, _) => 143,
            (MailProtocol::Pop3, MailSecurity::Tls) => 995,
            (MailProtocol::Pop3, _) => 110,
        })
    }

    /// `imap://bounces@mail.example.com:993/INBOX`, for logs and errors.
    pub fn describe(&self) -> String {
        let scheme = match (self.protocol, self.security) {
            (MailProtocol::Imap, MailSecurity::Tls) => "imaps",
            (MailProtocol::Imap, _) => "imap",
            (MailProtocol::Pop3, MailSecurity::Tls) => "pop3s",
            (MailProtocol::Pop3, _) => "pop3",
        };
        let folder = match self.protocol {
            MailProtocol::Imap => format!("/{}", self.folder),
            MailProtocol::Pop3 => String::new(),
        };
        format!(
            "{scheme}://{}@{}:{}{folder}",
            self.username,
            self.host,
            self.port()
        )
    }
}

/// One message as the server holds it: its id in this session (IMAP UID,
/// POP3 message number) and its bytes.
pub struct Mail {
    pub id: String,
    pub raw: Vec<u8>,
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// The longest line or message accepted (a bounce carrying a large
/// original is still well under it).
const MAX_LINE: usize = 64 * 1024;
const MAX_MESSAGE: usize = 50 * 1024 * 1024;
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// The IMAP keyword on mail left for a person.
const LEFT: &str = "$DuebellLeft";

/// A logged-in session.
pub struct Session {
    io: BufStream<Box<dyn Stream>>,
    protocol: MailProtocol,
    move_to: Option<String>,
    can_move: bool,
    tag: u32,
    what: String,
}

/// Connects and logs in; for IMAP, selects the folder (and creates the
/// `move_to` folder if it is missing).
pub async fn open(cfg: &MailboxConfig) -> Result<Session, String> {
    let what = cfg.describe();
    let tcp = tokio::time::timeout(
        IO_TIMEOUT,
        TcpStream::connect((cfg.host.as_str(), cfg.port())),
    )
    .await
    .map_err(|_| format!("{what}: connect timed out"))?
    .map_err(|e| format!("{what}: connect: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let stream: Box<dyn Stream> = match cfg.security {
        MailSecurity::Tls => Box::new(tls(cfg, tcp).await?),
        _ => Box::new(tcp),
    };
    let mut s = Session {
        io: BufStream::new(stream),
        protocol: cfg.protocol,
        move_to: cfg.move_to.clone(),
        can_move: false,
        tag: 0,
        what,
    };
    match cfg.protocol {
        MailProtocol::Imap => s.imap_login(cfg).await?,
        MailProtocol::Pop3 => s.pop3_login(cfg).await?,
    }
    Ok(s)
}

fn load_roots(ca: Option<&String>) -> Result<rustls::RootCertStore, String> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if let Some(pem) = ca {
        let certs = rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("not PEM certificates: {e}"))?;
        if certs.is_empty() {
            return Err("holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into());
        }
        for c in certs {
            roots
                .add(c)
                .map_err(|e| format!("a certificate is unusable: {e}"))?;
        }
    }
    Ok(roots)
}

async fn tls<S: AsyncRead + AsyncWrite + Unpin>(
    cfg: &MailboxConfig,
    plain: S,
) -> Result<tokio_rustls::client::TlsStream<S>, String> {
    let what = cfg.describe();
    let roots = load_roots(cfg.ca.as_ref()).map_err(|e| format!("{what}: {e}"))?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("{what}: tls: {e}"))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(cfg.host.clone())
        .map_err(|e| format!("{what}: `{}` is not a server name: {e}", cfg.host))?;
    tokio::time::timeout(
        IO_TIMEOUT,
        tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, plain),
    )
    .await
    .map_err(|_| format!("{what}: TLS handshake timed out"))?
    .map_err(|e| format!("{what}: TLS handshake: {e}"))
}

/// IMAP quoted string (RFC 3501 §4.3); line breaks are refused by config.
fn quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

impl Session {
    async fn write_line(&mut self, line: &str) -> Result<(), String> {
        let r = async {
            self.io.write_all(line.as_bytes()).await?;
            self.io.write_all(b"\r\n").await?;
            self.io.flush().await
        };
        tokio::time::timeout(IO_TIMEOUT, r)
            .await
            .map_err(|_| format!("{}: write timed out", self.what))?
            .map_err(|e| format!("{}: write: {e}", self.what))
    }

    async fn read_line(&mut self) -> Result<Vec<u8>, String> {
        let mut line = Vec::new();
        let mut limited = (&mut self.io).take(MAX_LINE as u64);
        let n = tokio::time::timeout(IO_TIMEOUT, limited.read_until(b'\n', &mut line))
            .await
            .map_err(|_| format!("{}: the server did not answer in time", self.what))?
            .map_err(|e| format!("{}: read: {e}", self.what))?;
        if n == 0 {
            return Err(format!("{}: the server closed the connection", self.what));
        }
        if !line.ends_with(b"\n") {
            return Err(format!(
                "{}: a line longer than {MAX_LINE} bytes",
                self.what
            ));
        }
        Ok(line)
    }

    async fn read_exact(&mut self, n: usize) -> Result<Vec<u8>, String> {
        if n > MAX_MESSAGE {
            return Err(format!(
                "{}: a message of {n} bytes is over the {MAX_MESSAGE}-byte limit",
                self.what
            ));
        }
        let mut buf = vec![0; n];
        tokio::time::timeout(IO_TIMEOUT, self.io.read_exact(&mut buf))
            .await
            .map_err(|_| format!("{}: the server did not answer in time", self.what))?
            .map_err(|e| format!("{}: read: {e}", self.what))?;
        Ok(buf)
    }

    /// Upgrades the connection after the server agreed to STARTTLS/STLS.
    async fn upgrade(&mut self, cfg: &MailboxConfig) -> Result<(), String> {
        let placeholder: Box<dyn Stream> = Box::new(tokio::io::duplex(1).0);
        let plain = std::mem::replace(&mut self.io, BufStream::new(placeholder)).into_inner();
        self.io = BufStream::new(Box::new(tls(cfg, plain).await?));
        Ok(())
    }

    /// Lists up to `max` messages and fetches each whole.
    pub async fn fetch(&mut self, max: usize) -> Result<Vec<Mail>, String> {
        match self.protocol {
            MailProtocol::Imap => self.imap_fetch(max).await,
            MailProtocol::Pop3 => self.pop3_fetch(max).await,
        }
    }

    /// Removes (or, IMAP with `move_to`, moves) the messages handled.
    pub async fn finish(&mut self, ids: &[String]) -> Result<(), String> {
        if ids.is_empty() {
            return Ok(());
        }
        match self.protocol {
            MailProtocol::Imap => self.imap_finish(ids).await,
            MailProtocol::Pop3 => {
                for id in ids {
                    self.pop3_ok(&format!("DELE {id}")).await?;
                }
                Ok(())
            }
        }
    }

    /// Leaves mail that is not for duebell to a person: IMAP flags it with
    /// the keyword `$DuebellLeft` and never fetches it again; POP3, which
    /// keeps no flags, deletes it like the rest (README: Bounces).
    pub async fn keep(&mut self, ids: &[String]) -> Result<(), String> {
        if ids.is_empty() {
            return Ok(());
        }
        match self.protocol {
            MailProtocol::Imap => self
                .imap(&format!(
                    "UID STORE {} +FLAGS.SILENT ({LEFT})",
                    ids.join(",")
                ))
                .await
                .map(drop),
            MailProtocol::Pop3 => self.finish(ids).await,
        }
    }

    /// Logs out; POP3 deletions take effect only now.
    pub async fn close(mut self) -> Result<(), String> {
        match self.protocol {
            MailProtocol::Imap => self.imap("LOGOUT").await.map(drop),
            MailProtocol::Pop3 => self.pop3_ok("QUIT").await.map(drop),
        }
    }

    // ---- IMAP ----

    /// Sends a tagged command; returns the untagged lines (with literals
    /// inlined) once the server answers OK.
    async fn imap(&mut self, command: &str) -> Result<Vec<ImapLine>, String> {
        self.tag += 1;
        let tag = format!("d{}", self.tag);
        self.write_line(&format!("{tag} {command}")).await?;
        let verb = command.split(' ').take(2).collect::<Vec<_>>().join(" ");
        let mut out = Vec::new();
        loop {
            let mut line = ImapLine::default();
            loop {
                let raw = self.read_line().await?;
                let text = String::from_utf8_lossy(&raw).trim_end().to_owned();
                match literal_size(&text) {
                    Some(n) => {
                        line.text.push_str(&text);
                        let data = self.read_exact(n).await?;
                        line.literals.push(data);
                    }
                    None => {
                        line.text.push_str(&text);
                        break;
                    }
                }
            }
            if let Some(rest) = line.text.strip_prefix(&format!("{tag} ")) {
                return if rest.starts_with("OK") {
                    Ok(out)
                } else {
                    let verb = if verb.starts_with("LOGIN") {
                        "LOGIN"
                    } else {
                        &verb
                    };
                    Err(format!("{}: {verb}: {rest}", self.what))
                };
            }
            if line.text.starts_with("* BYE") && !command.starts_with("LOGOUT") {
                return Err(format!("{}: {}", self.what, line.text));
            }
            out.push(line);
        }
    }

    async fn imap_login(&mut self, cfg: &MailboxConfig) -> Result<(), String> {
        let greeting = String::from_utf8_lossy(&self.read_line().await?).into_owned();
        if !greeting.starts_with("* OK") && !greeting.starts_with("* PREAUTH") {
            return Err(format!("{}: greeting: {}", self.what, greeting.trim_end()));
        }
        if cfg.security == MailSecurity::Starttls {
            self.imap("STARTTLS").await?;
            self.upgrade(cfg).await?;
        }
        if !greeting.starts_with("* PREAUTH") {
            self.imap(&format!(
                "LOGIN {} {}",
                quoted(&cfg.username),
                quoted(cfg.password.expose().trim_end())
            ))
            .await?;
        }
        let caps = self.imap("CAPABILITY").await?;
        self.can_move = caps
            .iter()
            .any(|l| l.text.split(' ').any(|w| w.eq_ignore_ascii_case("MOVE")));
        if let Some(folder) = self.move_to.clone() {
            // Exists already: the server says NO, which is fine.
            let _ = self.imap(&format!("CREATE {}", quoted(&folder))).await;
        }
        self.imap(&format!("SELECT {}", quoted(&cfg.folder)))
            .await?;
        Ok(())
    }

    async fn imap_fetch(&mut self, max: usize) -> Result<Vec<Mail>, String> {
        let found = self
            .imap(&format!("UID SEARCH NOT DELETED NOT KEYWORD {LEFT}"))
            .await?;
        let uids: Vec<u64> = found
            .iter()
            .filter_map(|l| l.text.strip_prefix("* SEARCH"))
            .flat_map(|rest| rest.split_whitespace().filter_map(|w| w.parse().ok()))
            .take(max)
            .collect();
        let mut out = Vec::new();
        for uid in uids {
            let lines = self.imap(&format!("UID FETCH {uid} (BODY.PEEK[])")).await?;
            // `* n FETCH (UID u BODY[] {len}` + the literal.
            if let Some(raw) = lines
                .into_iter()
                .find(|l| l.text.contains("FETCH") && !l.literals.is_empty())
                .and_then(|mut l| l.literals.pop())
            {
                out.push(Mail {
                    id: uid.to_string(),
                    raw,
                });
            }
        }
        Ok(out)
    }

    async fn imap_finish(&mut self, ids: &[String]) -> Result<(), String> {
        let set = ids.join(",");
        if let Some(folder) = self.move_to.clone() {
            if self.can_move {
                self.imap(&format!("UID MOVE {set} {}", quoted(&folder)))
                    .await?;
                return Ok(());
            }
            self.imap(&format!("UID COPY {set} {}", quoted(&folder)))
                .await?;
        }
        self.imap(&format!("UID STORE {set} +FLAGS.SILENT (\\Deleted)"))
            .await?;
        self.imap("EXPUNGE").await?;
        Ok(())
    }

    // ---- POP3 ----

    async fn pop3_ok(&mut self, command: &str) -> Result<String, String> {
        self.write_line(command).await?;
        let line = String::from_utf8_lossy(&self.read_line().await?)
            .trim_end()
            .to_owned();
        if line.starts_with("+OK") {
            Ok(line)
        } else {
            let verb = command.split(' ').next().unwrap_or(command);
            Err(format!("{}: {verb}: {line}", self.what))
        }
    }

    /// A multi-line answer, dot-unstuffed (RFC 1939 §3).
    async fn pop3_lines(&mut self, command: &str) -> Result<Vec<u8>, String> {
        self.pop3_ok(command).await?;
        let mut out = Vec::new();
        loop {
            let line = self.read_line().await?;
            if line == b".\r\n" || line == b".\n" {
                return Ok(out);
            }
            if out.len() + line.len() > MAX_MESSAGE {
                return Err(format!("{}: a message over {MAX_MESSAGE} bytes", self.what));
            }
            out.extend_from_slice(line.strip_prefix(b".").unwrap_or(&line));
        }
    }

    async fn pop3_login(&mut self, cfg: &MailboxConfig) -> Result<(), String> {
        let greeting = String::from_utf8_lossy(&self.read_line().await?).into_owned();
        if !greeting.starts_with("+OK") {
            return Err(format!("{}: greeting: {}", self.what, greeting.trim_end()));
        }
        if cfg.security == MailSecurity::Starttls {
            self.pop3_ok("STLS").await?;
            self.upgrade(cfg).await?;
        }
        self.pop3_ok(&format!("USER {}", cfg.username)).await?;
        self.write_line(&format!("PASS {}", cfg.password.expose().trim_end()))
            .await?;
        let line = String::from_utf8_lossy(&self.read_line().await?)
            .trim_end()
            .to_owned();
        if !line.starts_with("+OK") {
            return Err(format!("{}: PASS: {line}", self.what));
        }
        Ok(())
    }

    async fn pop3_fetch(&mut self, max: usize) -> Result<Vec<Mail>, String> {
        let list = self.pop3_lines("LIST").await?;
        let numbers: Vec<u64> = String::from_utf8_lossy(&list)
            .lines()
            .filter_map(|l| l.split_whitespace().next()?.parse().ok())
            .take(max)
            .collect();
        let mut out = Vec::new();
        for n in numbers {
            let raw = self.pop3_lines(&format!("RETR {n}")).await?;
            out.push(Mail {
                id: n.to_string(),
                raw,
            });
        }
        Ok(out)
    }
}

#[derive(Default)]
struct ImapLine {
    text: String,
    literals: Vec<Vec<u8>>,
}

/// `… {123}` or `… {123+}` at the end of a line: a literal of 123 bytes
/// follows.
fn literal_size(line: &str) -> Option<usize> {
    let inner = line.strip_suffix('}')?;
    let open = inner.rfind('{')?;
    inner[open + 1..].trim_end_matches('+').parse().ok()
}

#[cfg(test)]
#[path = "mailbox_tests.rs"]
mod tests;
