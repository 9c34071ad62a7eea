//! Reading mail that comes back: RFC 3464 delivery-status reports, the
//! common non-standard bounces (qmail, Exim, Exchange, Chinese hosts'
//! 退信), and RFC 5965 complaint (ARF) reports. `read` says what a report
//! means and which Return-Path tokens it carries; whether a token is ours
//! is the signer's call (`bounces.rs`).

use mail_parser::{MessageParser, MimeHeaders, PartType};

/// What a report says about the address it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BounceClass {
    /// The address cannot receive (5.1.x, 5.2.x, 5.7.1, or words to that
    /// effect): suppress it now.
    Hard,
    /// A temporary failure, a delay, or a permanent failure of this message
    /// rather than the address: counted, and suppresses after too many.
    Soft,
    /// The recipient reported the message as spam: opt the address out.
    Complaint,
}

impl BounceClass {
    pub fn as_str(self) -> &'static str {
        match self {
            BounceClass::Hard => "hard",
            BounceClass::Soft => "soft",
            BounceClass::Complaint => "complaint",
        }
    }
}

/// One piece of returned mail, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// None: not a bounce or complaint (an auto-reply, a person's answer).
    pub class: Option<BounceClass>,
    /// `dsn`, `arf` or `text`.
    pub format: &'static str,
    /// The enhanced status (`5.1.1`), or the feedback type for ARF.
    pub status: String,
    /// The server's words (Diagnostic-Code, or the line that decided).
    pub reason: String,
    /// Return-Path tokens found anywhere in the mail (`m12-…`).
    pub tokens: Vec<String>,
}

/// Reads one raw message. `local_part` is the Return-Path's local part
/// (`bounces` for `bounces@mail.example.com`): tokens are what follows
/// `bounces+` up to the `@`.
pub fn read(raw: &[u8], local_part: &str) -> Report {
    let tokens = tokens_in(raw, local_part);
    let Some(msg) = MessageParser::default().parse(raw) else {
        return Report {
            class: None,
            format: "text",
            status: String::new(),
            reason: "not a mail message".into(),
            tokens,
        };
    };
    let mut tokens = tokens;
    // A token inside an encoded part (a base64 original) is found decoded.
    for part in &msg.parts {
        if !matches!(part.body, PartType::Multipart(_)) {
            for t in tokens_in(part.contents(), local_part) {
                if !tokens.contains(&t) {
                    tokens.push(t);
                }
            }
        }
    }
    let report_type = msg
        .content_type()
        .filter(|ct| {
            ct.ctype().eq_ignore_ascii_case("multipart")
                && ct
                    .subtype()
                    .is_some_and(|s| s.eq_ignore_ascii_case("report"))
        })
        .and_then(|ct| ct.attribute("report-type"))
        .map(str::to_ascii_lowercase);
    let part_of = |subtype: &str| {
        msg.parts.iter().find(|p| {
            p.content_type().is_some_and(|ct| {
                ct.ctype().eq_ignore_ascii_case("message")
                    && ct
                        .subtype()
                        .is_some_and(|s| s.eq_ignore_ascii_case(subtype))
            })
        })
    };
    match report_type.as_deref() {
        Some("feedback-report") => {
            let fields = part_of("feedback-report")
                .map(|p| blocks(&String::from_utf8_lossy(p.contents())))
                .unwrap_or_default();
            let kind = field(fields.first(), "feedback-type")
                .unwrap_or("abuse")
                .to_ascii_lowercase();
            let complaint = matches!(kind.as_str(), "abuse" | "fraud" | "other");
            let who = field(fields.first(), "original-rcpt-to").unwrap_or("");
            Report {
                class: complaint.then_some(BounceClass::Complaint),
                format: "arf",
                reason: format!("complaint ({kind}) {who}").trim_end().to_owned(),
                status: kind,
                tokens,
            }
        }
        Some("delivery-status") => {
            let fields = part_of("delivery-status")
                .map(|p| blocks(&String::from_utf8_lossy(p.contents())))
                .unwrap_or_default();
            dsn(&fields, tokens)
        }
        _ => text_bounce(&msg, tokens),
    }
}

/// The worst per-recipient outcome of a delivery-status report.
fn dsn(fields: &[Vec<(String, String)>], tokens: Vec<String>) -> Report {
    let mut best: Option<(u8, Report)> = None;
    // Block 0 is per message; the rest per recipient.
    for block in fields.iter().skip(1) {
        let action = field(Some(block), "action")
            .unwrap_or("")
            .to_ascii_lowercase();
        let status = field(Some(block), "status")
            .and_then(|s| s.split_whitespace().next())
            .unwrap_or("")
            .to_owned();
        let diagnostic = field(Some(block), "diagnostic-code")
            .map(|d| d.split_once(';').map_or(d, |(_, t)| t).trim().to_owned())
            .unwrap_or_default();
        let recipient = field(Some(block), "final-recipient")
            .or_else(|| field(Some(block), "original-recipient"))
            .map(|r| r.split_once(';').map_or(r, |(_, a)| a).trim().to_owned())
            .unwrap_or_default();
        let class = match action.as_str() {
            "failed" if status.starts_with('5') => Some(
                if address_failure(&status) || (status == "5.0.0" && hard_words(&diagnostic)) {
                    BounceClass::Hard
                } else {
                    BounceClass::Soft
                },
            ),
            "failed" | "delayed" => Some(BounceClass::Soft),
            _ => None,
        };
        let rank = match class {
            Some(BounceClass::Hard) => 3,
            Some(_) => 2,
            None => 1,
        };
        if best.as_ref().is_none_or(|(r, _)| rank > *r) {
            let reason = [action.as_str(), recipient.as_str(), diagnostic.as_str()]
                .iter()
                .filter(|s| !s.is_empty())
                .copied()
                .collect::<Vec<_>>()
                .join(": ");
            best = Some((
                rank,
                Report {
                    class,
                    format: "dsn",
                    status,
                    reason,
                    tokens: tokens.clone(),
                },
            ));
        }
    }
    best.map(|(_, r)| r).unwrap_or(Report {
        class: None,
        format: "dsn",
        status: String::new(),
        reason: "a delivery-status report naming no recipient".into(),
        tokens,
    })
}

/// A bounce without a machine-readable report: recognised by who sent it
/// or its subject, classified by the enhanced status codes and the words
/// in its text.
fn text_bounce(msg: &mail_parser::Message<'_>, tokens: Vec<String>) -> Report {
    let subject = msg.subject().unwrap_or("").to_lowercase();
    let from = msg
        .from()
        .and_then(|a| a.first())
        .and_then(|a| a.address())
        .unwrap_or("")
        .to_lowercase();
    let text: String = msg
        .text_bodies()
        .filter_map(|p| p.text_contents())
        .collect::<Vec<_>>()
        .join("\n");
    let lower = text.to_lowercase();
    let looks_like_bounce = from.starts_with("mailer-daemon")
        || from.starts_with("postmaster")
        || from.starts_with("mail-daemon")
        || BOUNCE_SUBJECTS.iter().any(|s| subject.contains(s));
    let none = |reason: &str| Report {
        class: None,
        format: "text",
        status: String::new(),
        reason: reason.to_owned(),
        tokens: tokens.clone(),
    };
    if !looks_like_bounce {
        return none("neither from a mailer daemon nor titled as a bounce");
    }
    let codes = status_codes(&text);
    // The line that decided, for the record.
    let line_with = |needle: &str| {
        lower
            .lines()
            .position(|l| l.contains(needle))
            .and_then(|i| text.lines().nth(i))
            .map(|l| l.trim().chars().take(300).collect::<String>())
            .unwrap_or_default()
    };
    let (class, status, reason) = if let Some(c) = codes.iter().find(|c| address_failure(c)) {
        (BounceClass::Hard, c.clone(), line_with(c))
    } else if let Some(w) = HARD_WORDS.iter().find(|w| lower.contains(*w)) {
        let status = codes
            .iter()
            .find(|c| c.starts_with('5'))
            .cloned()
            .unwrap_or_else(|| "5.1.1".into());
        (BounceClass::Hard, status, line_with(w))
    } else if let Some(c) = codes
        .iter()
        .find(|c| c.starts_with('4') || c.starts_with('5'))
    {
        (BounceClass::Soft, c.clone(), line_with(c))
    } else if let Some(w) = SOFT_WORDS.iter().find(|w| lower.contains(*w)) {
        (BounceClass::Soft, "4.0.0".into(), line_with(w))
    } else {
        return none("a bounce whose cause could not be read");
    };
    Report {
        class: Some(class),
        format: "text",
        status,
        reason,
        tokens,
    }
}

const BOUNCE_SUBJECTS: &[&str] = &[
    "undeliver",
    "delivery status notification",
    "delivery failure",
    "delivery has failed",
    "failure notice",
    "returned mail",
    "mail delivery failed",
    "could not be delivered",
    "delivery notification",
    "退信",
    "投递失败",
];

/// Words that say the address itself is gone.
const HARD_WORDS: &[&str] = &[
    "user unknown",
    "unknown user",
    "no such user",
    "no such mailbox",
    "no mailbox here",
    "mailbox unavailable",
    "mailbox not found",
    "address rejected",
    "does not exist",
    "invalid recipient",
    "recipient not found",
    "account has been disabled",
    "用户不存在",
    "收件人不存在",
];

fn hard_words(text: &str) -> bool {
    let lower = text.to_lowercase();
    HARD_WORDS.iter().any(|w| lower.contains(w))
}

/// Words of a temporary failure.
const SOFT_WORDS: &[&str] = &[
    "mailbox full",
    "over quota",
    "quota exceeded",
    "temporar",
    "delayed",
    "will retry",
    "still trying",
    "try again later",
    "邮箱已满",
];

/// Whether an enhanced status says the address cannot receive: 5.1.x,
/// 5.2.x, 5.7.1 (as `smtp::hard_bounce` decides for a reply at send time).
fn address_failure(status: &str) -> bool {
    let mut p = status.split('.');
    matches!(
        (p.next(), p.next(), p.next()),
        (Some("5"), Some("1" | "2"), Some(_)) | (Some("5"), Some("7"), Some("1"))
    )
}

/// Every RFC 3463 enhanced status code (`4.2.2`, `5.1.1`, `#5.1.1`) in a
/// text, in order.
fn status_codes(text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .map(|w| w.trim_matches('.'))
        .filter(|w| {
            let p: Vec<&str> = w.split('.').collect();
            p.len() == 3
                && (p[0] == "4" || p[0] == "5")
                && (1..=3).contains(&p[1].len())
                && (1..=3).contains(&p[2].len())
        })
        .map(str::to_owned)
        .collect()
}

/// `Name: value` fields in blank-line separated blocks, folded lines
/// joined, names lower-cased (RFC 3464 §2.1, RFC 5965 §3.1).
fn blocks(text: &str) -> Vec<Vec<(String, String)>> {
    let mut out: Vec<Vec<(String, String)>> = vec![Vec::new()];
    for line in text.lines() {
        if line.trim().is_empty() {
            if out.last().is_some_and(|b| !b.is_empty()) {
                out.push(Vec::new());
            }
            continue;
        }
        let block = out.last_mut().expect("one block at least");
        if line.starts_with([' ', '\t']) {
            if let Some((_, v)) = block.last_mut() {
                v.push(' ');
                v.push_str(line.trim());
            }
        } else if let Some((k, v)) = line.split_once(':') {
            block.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    out.retain(|b| !b.is_empty());
    out
}

fn field<'a>(block: Option<&'a Vec<(String, String)>>, name: &str) -> Option<&'a str> {
    block?
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// `<local>+<token>@` anywhere in the bytes, case-insensitively.
fn tokens_in(raw: &[u8], local_part: &str) -> Vec<String> {
    let needle = format!("{}+", local_part.to_ascii_lowercase());
    let hay = String::from_utf8_lossy(raw).to_ascii_lowercase();
    let mut out = Vec::new();
    let mut rest = hay.as_str();
    while let Some(i) = rest.find(&needle) {
        rest = &rest[i + needle.len()..];
        let token: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect();
        if !token.is_empty() && rest[token.len()..].starts_with('@') && !out.contains(&token) {
            out.push(token);
        }
    }
    out
}

/// `bounces@mail.example.com` + token → `bounces+<token>@mail.example.com`.
pub fn verp_address(return_path: &str, token: &str) -> Option<String> {
    let (local, domain) = return_path.rsplit_once('@')?;
    Some(format!("{local}+{token}@{domain}"))
}

#[cfg(test)]
#[path = "bounce_tests.rs"]
mod tests;
