//! What to set next, on one screen: `duebell` with no command, and `duebell
//! check` on a config that is valid but still the one the package (or the
//! repository) shipped. Advice, never an error: the shipped config runs,
//! sending every reminder to the local outbox folder.

use std::path::Path;

use crate::config::Config;
use crate::providers::ProviderKind;

/// The lender name the shipped config carries.
const EXAMPLE_LENDER: &str = "Example Finance";

/// Each thing still to set, as one line saying what and where.
pub fn advice(config: &Config, path: &Path) -> Vec<String> {
    let file = path.display();
    let mut next = Vec::new();
    if config.lender.name == EXAMPLE_LENDER {
        next.push(format!(
            "set lender.name (and support_phone, payment_link) in {file}: messages still say \"{EXAMPLE_LENDER}\""
        ));
    }
    if config
        .providers
        .iter()
        .all(|p| p.kind == ProviderKind::File)
    {
        let dir = config
            .providers
            .iter()
            .find_map(|p| p.dir.as_ref())
            .map(|d| d.display().to_string())
            .unwrap_or_default();
        next.push(format!(
            "add an SMS provider (twilio, aliyun, tencent or webhook) and an email provider (smtp) \
             under [[providers]] and name them in [routing]: until then every reminder is only \
             written to the outbox folder {dir}"
        ));
    }
    if config.api.tokens.is_empty() {
        next.push(
            "set api.tokens_file to a file (mode 0640) with one long random token per line \
             (`openssl rand -hex 32`): until then the /v1 API answers 401 to everyone"
                .to_owned(),
        );
    }
    if config.sources.is_empty() {
        next.push(
            "load the loan book: `duebell import FILE.csv`, PUT /v1/loans/{id}, or list a \
             watched file under [[sources]]"
                .to_owned(),
        );
    }
    if let Some(db) = config.store.sqlite_path() {
        if !db.exists() {
            next.push(format!(
                "the store {} does not exist yet: `duebell migrate` (or the first `duebell run`) creates it",
                db.display()
            ));
        }
    }
    next
}

/// Prints the advice under a heading; nothing when there is none.
pub fn print(config: &Config, path: &Path) {
    let next = advice(config, path);
    if next.is_empty() {
        return;
    }
    println!("\nNext steps:");
    for (i, line) in next.iter().enumerate() {
        println!("  {}. {line}", i + 1);
    }
}
