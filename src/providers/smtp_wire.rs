//! One mail transaction on a connection from the `smtp` provider's pool,
//! pipelined (RFC 2920) when the server offers PIPELINING.
//!
//! lettre 0.11's `AsyncSmtpConnection::send` waits for each reply before
//! the next command and writes the message apart from its end: five writes
//! and four round trips a message, and its dot-stuffing copies the message
//! a byte at a time. Here, with PIPELINING, MAIL, RCPT and DATA go in one
//! write and their replies are read in order; then the message, stuffed and
//! with its end, in one more: two writes and two round trips. Without
//! PIPELINING the commands go one at a time, as lettre sends them. The
//! commands are lettre's own (`Mail`, `Rcpt`, `Data`), with the same
//! SMTPUTF8 and 8BITMIME parameters lettre adds.

use lettre::address::Envelope;
use lettre::transport::smtp::client::AsyncSmtpConnection;
use lettre::transport::smtp::commands::{Data, Ehlo, Mail, Rcpt, Rset};
use lettre::transport::smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter};
use lettre::transport::smtp::response::Response;
use lettre::transport::smtp::Error;

/// A pooled connection and whether its server takes pipelined commands.
pub(super) struct Connection {
    pub conn: AsyncSmtpConnection,
    pub pipelining: bool,
}

/// How a transaction failed.
pub(super) enum Failed {
    /// Before the message was written: it cannot have been delivered.
    Before(Error),
    /// While the message was written, or in the reply to it.
    After(Error),
    /// The server refused the transaction with a reply and is ready for
    /// the next one (after RSET where it was refused before the message's
    /// end): the connection goes back to the pool.
    Refused(Error),
    /// Not tried: the server lacks an extension the message needs. The
    /// connection is untouched.
    Unsupported(String),
}

/// Whether the server offers PIPELINING, asked with a second EHLO: lettre
/// keeps only the extensions it knows, and PIPELINING is not one. A later
/// EHLO is allowed at any time and resets only the transaction, which is
/// empty here (RFC 5321 4.1.4). A server that refuses it is taken not to
/// pipeline; the first EHLO's session stands.
pub(super) async fn offers_pipelining(
    conn: &mut AsyncSmtpConnection,
    hello: &ClientId,
) -> Result<bool, Error> {
    let reply = match conn.command(Ehlo::new(hello.clone())).await {
        Ok(reply) => reply,
        Err(e) if e.status().is_some() => return Ok(false),
        Err(e) => return Err(e),
    };
    // The first line names the server; each further line is a keyword and
    // its parameters.
    let offered = reply.message().skip(1).any(|line| {
        line.split_whitespace()
            .next()
            .is_some_and(|k| k.eq_ignore_ascii_case("PIPELINING"))
    });
    Ok(offered)
}

/// `message` as the DATA section carries it: each line that begins with
/// `.` gets another (RFC 5321 4.5.2; a line begins at the start and after
/// each CRLF, as lettre's codec reads it), then the end of data,
/// `CRLF.CRLF`, as lettre writes it after the message.
pub(super) fn data_section(message: &str) -> String {
    let mut out = String::with_capacity(message.len() + 16);
    let mut rest = message;
    if rest.starts_with('.') {
        out.push('.');
    }
    while let Some(i) = rest.find("\r\n.") {
        out.push_str(&rest[..i + 2]);
        out.push('.');
        rest = &rest[i + 2..];
    }
    out.push_str(rest);
    out.push_str("\r\n.\r\n");
    out
}

/// The MAIL command for `envelope` and `message`, with the parameters the
/// message needs, or why the server cannot take it.
fn mail_command(
    conn: &AsyncSmtpConnection,
    envelope: &Envelope,
    message: &str,
) -> Result<Mail, String> {
    let info = conn.server_info();
    let mut parameters = Vec::new();
    let non_ascii_address = envelope
        .from()
        .into_iter()
        .chain(envelope.to())
        .any(|a| !AsRef::<str>::as_ref(a).is_ascii());
    if non_ascii_address {
        if !info.supports_feature(Extension::SmtpUtfEight) {
            return Err(
                "an envelope address is not ASCII and the server does not offer SMTPUTF8"
                    .to_owned(),
            );
        }
        parameters.push(MailParameter::SmtpUtfEight);
    }
    if !message.is_ascii() {
        if !info.supports_feature(Extension::EightBitMime) {
            return Err(
                "the message is not ASCII and the server does not offer 8BITMIME".to_owned(),
            );
        }
        parameters.push(MailParameter::Body(MailBodyParameter::EightBitMime));
    }
    Ok(Mail::new(envelope.from().cloned(), parameters))
}

/// Sends `message` to `envelope`'s recipients on `c`. Each write is lettre's
/// `command`, which writes any text as it is and reads one reply. A refusal
/// (a reply) leaves the connection ready for the next transaction:
/// `Refused`, after an RSET where the refusal came before the message's end
/// (RFC 5321 4.1.1.5), so a hard bounce does not cost a new connection and
/// its TLS handshake and AUTH. On any other failure (no reply, a 421, an
/// RSET refused) the connection is closed (after QUIT where the server is
/// between commands) and must not be pooled again.
pub(super) async fn send(
    c: &mut Connection,
    envelope: &Envelope,
    message: &str,
) -> Result<Response, Failed> {
    let mail = mail_command(&c.conn, envelope, message).map_err(Failed::Unsupported)?;
    let mut commands = vec![mail.to_string()];
    commands.extend(
        envelope
            .to()
            .iter()
            .map(|a| Rcpt::new(a.clone(), vec![]).to_string()),
    );
    commands.push(Data.to_string());
    if c.pipelining {
        envelope_pipelined(&mut c.conn, &commands).await?;
    } else {
        for command in &commands {
            if let Err(e) = c.conn.command(command).await {
                return Err(reset(&mut c.conn, e).await);
            }
        }
    }
    match c.conn.command(data_section(message)).await {
        Ok(reply) => Ok(reply),
        // The reply to the message's end ends the transaction, refused or not.
        Err(e) if reusable(&e) => Err(Failed::Refused(e)),
        Err(e) => {
            c.conn.abort().await;
            Err(Failed::After(e))
        }
    }
}

/// Whether the server is still there after `e`: a reply, other than 421
/// (the server closing the connection).
fn reusable(e: &Error) -> bool {
    e.status().is_some_and(|code| code.to_string() != "421")
}

/// After the envelope failed with `e`: an RSET ends the transaction, and
/// the connection is kept (`Refused`) when the server takes it; otherwise
/// it is closed.
async fn reset(conn: &mut AsyncSmtpConnection, e: Error) -> Failed {
    if reusable(&e) && conn.command(Rset).await.is_ok() {
        return Failed::Refused(e);
    }
    conn.abort().await;
    Failed::Before(e)
}

/// The envelope's commands in one write, their replies read in order. The
/// first refusal is the transaction's, and an RSET then keeps the
/// connection (`reset`) when DATA was refused too, as it is when no
/// recipient was accepted. A reply that is not one (a broken connection, a
/// garbled line) ends the reading, since the replies after it cannot be
/// matched to their commands, and closes the connection with lettre's
/// `abort` (QUIT, then close). So does a server that took DATA after a
/// refusal: it reads that QUIT as a line of a message and discards the
/// message when the connection closes unterminated.
async fn envelope_pipelined(
    conn: &mut AsyncSmtpConnection,
    commands: &[String],
) -> Result<(), Failed> {
    let group = commands.concat();
    let mut refused = None;
    // Whether the server took DATA (the last command) and reads a message.
    let mut in_data = false;
    for i in 0..commands.len() {
        let reply = match i {
            0 => conn.command(&group).await,
            _ => conn.read_response().await,
        };
        match reply {
            Ok(_) => in_data = i + 1 == commands.len(),
            Err(e) if e.status().is_some() => {
                refused.get_or_insert(e);
            }
            Err(e) => {
                conn.abort().await;
                return Err(Failed::Before(refused.unwrap_or(e)));
            }
        }
    }
    match refused {
        None => Ok(()),
        Some(e) if in_data => {
            conn.abort().await;
            Err(Failed::Before(e))
        }
        Some(e) => Err(reset(conn, e).await),
    }
}

#[cfg(test)]
mod tests {
    use super::data_section;
    use proptest::prelude::*;

    /// lettre 0.11's `ClientCodec::encode` and the end lettre writes after
    /// it, as the reference.
    fn lettre_codec(message: &str) -> String {
        #[derive(Clone, Copy)]
        enum S {
            Middle,
            Starting,
            Start,
        }
        let mut status = S::Start;
        let mut out = Vec::new();
        for &b in message.as_bytes() {
            out.push(b);
            match (b, status) {
                (b'\r', _) => status = S::Starting,
                (b'\n', S::Starting) => status = S::Start,
                (_, S::Starting) => status = S::Middle,
                (b'.', S::Start) => {
                    status = S::Middle;
                    out.push(b'.');
                }
                (_, S::Start) => status = S::Middle,
                _ => {}
            }
        }
        out.extend_from_slice(b"\r\n.\r\n");
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn lines_that_begin_with_a_dot_get_another() {
        assert_eq!(data_section("a\r\n.b\r\n"), "a\r\n..b\r\n\r\n.\r\n");
        assert_eq!(data_section(".\r\n."), "..\r\n..\r\n.\r\n");
        // Only CRLF begins a line, as lettre reads it.
        assert_eq!(data_section("a\n.b\r.c"), "a\n.b\r.c\r\n.\r\n");
        assert_eq!(data_section(""), "\r\n.\r\n");
    }

    proptest! {
        #[test]
        fn the_data_section_is_what_lettre_writes(message in "[.\r\na\u{4e2d}]{0,40}") {
            prop_assert_eq!(data_section(&message), lettre_codec(&message));
        }
    }
}
