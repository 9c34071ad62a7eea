use super::*;

/// A fixture from tests/fixtures/bounces with its placeholders filled.
fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/tests/fixtures/bounces/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .replace("{TOKEN}", "m42-0123456789abcdef")
        .replace("{ADDRESS}", "ann@example.net")
        .replace("{ID}", "42")
        .replace("{NONCE}", "1")
        .into_bytes()
}

#[test]
fn a_delivery_status_report_for_an_unknown_user_is_hard() {
    let r = read(&fixture("dsn-user-unknown.eml"), "bounces");
    assert_eq!(r.class, Some(BounceClass::Hard));
    assert_eq!(r.format, "dsn");
    assert_eq!(r.status, "5.1.1");
    assert!(
        r.reason.contains("failed: ann@example.net: 550 5.1.1"),
        "{}",
        r.reason
    );
    assert!(
        r.reason.contains("User unknown"),
        "folded diagnostic joined: {}",
        r.reason
    );
    assert_eq!(r.tokens, vec!["m42-0123456789abcdef".to_owned()]);
}

#[test]
fn a_delay_report_is_soft() {
    let r = read(&fixture("dsn-delayed.eml"), "bounces");
    assert_eq!(r.class, Some(BounceClass::Soft));
    assert_eq!(r.status, "4.2.2");
    assert!(r.reason.starts_with("delayed"), "{}", r.reason);
}

#[test]
fn qmail_and_exim_bounces_are_read_from_their_text() {
    let q = read(&fixture("qmail.eml"), "bounces");
    assert_eq!(
        (q.class, q.format, q.status.as_str()),
        (Some(BounceClass::Hard), "text", "5.1.1")
    );
    assert!(q.reason.contains("no mailbox here"), "{}", q.reason);
    let e = read(&fixture("exim-quota.eml"), "bounces");
    assert_eq!(e.class, Some(BounceClass::Soft));
    assert!(e.reason.contains("quota exceeded"), "{}", e.reason);
    assert_eq!(e.tokens, vec!["m42-0123456789abcdef".to_owned()]);
}

#[test]
fn an_arf_abuse_report_is_a_complaint() {
    let r = read(&fixture("arf-complaint.eml"), "bounces");
    assert_eq!(r.class, Some(BounceClass::Complaint));
    assert_eq!((r.format, r.status.as_str()), ("arf", "abuse"));
    assert!(r.reason.contains("ann@example.net"), "{}", r.reason);
}

#[test]
fn an_auto_reply_is_not_a_bounce() {
    let r = read(&fixture("out-of-office.eml"), "bounces");
    assert_eq!(r.class, None);
    assert_eq!(r.tokens.len(), 1);
}

#[test]
fn tokens_are_found_whatever_the_case_and_only_before_an_at() {
    let raw = b"To: BOUNCES+M7-ABCDEF@x.example\r\nX: bounces+nope and bounces+m8-00@y\r\n\r\n";
    assert_eq!(tokens_in(raw, "bounces"), vec!["m7-abcdef", "m8-00"]);
    assert!(tokens_in(raw, "other").is_empty());
}

#[test]
fn a_token_in_a_base64_original_is_found() {
    use base64::Engine;
    let inner = base64::engine::general_purpose::STANDARD
        .encode("Return-Path: <bounces+m9-aa@mail.example.com>\r\n\r\nhi\r\n");
    let raw = format!(
        "From: MAILER-DAEMON@x\r\nSubject: Undeliverable\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n550 5.1.1 user unknown\r\n--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n{inner}\r\n--b--\r\n"
    );
    let r = read(raw.as_bytes(), "bounces");
    assert_eq!(r.class, Some(BounceClass::Hard));
    assert_eq!(r.tokens, vec!["m9-aa".to_owned()]);
}

#[test]
fn enhanced_codes_are_picked_out_of_text() {
    assert_eq!(
        status_codes("550 5.1.1 <a@b>: no (#5.2.2); v2.3.19; 4.4.7."),
        vec!["5.1.1", "5.2.2", "4.4.7"]
    );
    assert!(address_failure("5.7.1") && address_failure("5.2.2"));
    assert!(!address_failure("5.7.0") && !address_failure("4.1.1") && !address_failure("5.3.4"));
}

#[test]
fn verp_addresses_keep_the_domain() {
    assert_eq!(
        verp_address("bounces@mail.example.com", "m1-ab").as_deref(),
        Some("bounces+m1-ab@mail.example.com")
    );
    assert_eq!(verp_address("nodomain", "m1-ab"), None);
}
