use super::*;

#[test]
fn literals_are_recognised() {
    assert_eq!(literal_size("* 1 FETCH (UID 7 BODY[] {1234}"), Some(1234));
    assert_eq!(literal_size("a LOGIN {5+}"), Some(5));
    assert_eq!(literal_size("* OK [UIDNEXT 2] Predicted next UID"), None);
    assert_eq!(literal_size("* 1 FETCH (FLAGS ())"), None);
}

#[test]
fn quoting_escapes_backslashes_and_quotes() {
    assert_eq!(quoted(r#"pa"ss\word"#), r#""pa\"ss\\word""#);
}

#[test]
fn ports_follow_protocol_and_security() {
    let cfg = |protocol, security| MailboxConfig {
        protocol,
        host: "mail.example.com".into(),
        port: None,
        security,
        username: "bounces".into(),
        password: Secret::new("x"),
        folder: "INBOX".into(),
        move_to: None,
        every: default_every(),
        ca: None,
    };
    assert_eq!(cfg(MailProtocol::Imap, MailSecurity::Tls).port(), 993);
    assert_eq!(cfg(MailProtocol::Imap, MailSecurity::Starttls).port(), 143);
    assert_eq!(cfg(MailProtocol::Pop3, MailSecurity::Tls).port(), 995);
    assert_eq!(cfg(MailProtocol::Pop3, MailSecurity::Plain).port(), 110);
    assert_eq!(
        cfg(MailProtocol::Imap, MailSecurity::Tls).describe(),
        "imaps://bounces@mail.example.com:993/INBOX"
    );
    let mut pop = cfg(MailProtocol::Pop3, MailSecurity::Plain);
    pop.move_to = Some("Done".into());
    assert_eq!(pop.problems()[0].0, "move_to");
}
