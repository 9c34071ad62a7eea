//! `duebell users`: console accounts. A password is read from standard
//! input: at a terminal, asked twice without echo; otherwise the first
//! line (`printf '%s\n' "$PW" | duebell users add ...`).

use std::io::{BufRead, IsTerminal};

use clap::Subcommand;

use super::open_store;
use crate::api::access::{hash_password, Role};
use crate::clock::{Clock, SystemClock};
use crate::error::ExitStatus;
use crate::store::UserRecord;

/// Shortest password accepted.
const MIN_PASSWORD: usize = 12;

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Add an account; the password is read from standard input.
    Add {
        name: String,
        #[arg(long, value_enum)]
        role: Role,
    },
    /// List accounts (name, role, state).
    List,
    /// Disable an account and end its sessions.
    Disable { name: String },
    /// Enable a disabled account.
    Enable { name: String },
    /// Set a new password (read from standard input); ends its sessions.
    Passwd { name: String },
}

fn read_password() -> Result<String, String> {
    let pw = if std::io::stdin().is_terminal() {
        let a = rpassword::prompt_password("Password: ").map_err(|e| e.to_string())?;
        let b = rpassword::prompt_password("Again: ").map_err(|e| e.to_string())?;
        if a != b {
            return Err("the two passwords differ".into());
        }
        a
    } else {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    };
    if pw.chars().count() < MIN_PASSWORD {
        return Err(format!(
            "the password is shorter than {MIN_PASSWORD} characters; use a longer one (a passphrase is fine)"
        ));
    }
    Ok(pw)
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'))
}

pub(super) async fn users(config: &crate::config::Config, command: &UsersCommand) -> ExitStatus {
    let store = match open_store(&config.store).await {
        Ok(s) => s,
        Err(status) => return status,
    };
    let db = store.db();
    let now = SystemClock.now();
    let result: Result<String, String> = async {
        match command {
            UsersCommand::Add { name, role } => {
                if !valid_name(name) {
                    return Err(format!(
                        "`{name}` is not a valid name: letters, digits, . _ - @; at most 64"
                    ));
                }
                let pw = read_password()?;
                let hash = hash_password(&pw)?;
                let user = UserRecord {
                    name: name.clone(),
                    role: role.as_str().to_owned(),
                    password_hash: hash,
                    locale: None,
                    disabled: false,
                    created_at: now,
                };
                if db.add_user(now, &user).await.map_err(|e| e.to_string())? {
                    Ok(format!("added {name} ({})", role.as_str()))
                } else {
                    Err(format!(
                        "there is already an account `{name}`; use `duebell users passwd {name}`"
                    ))
                }
            }
            UsersCommand::List => {
                let mut out = format!("{:<24} {:<11} {:<9} created", "name", "role", "state");
                for u in db.users().await.map_err(|e| e.to_string())? {
                    let state = if u.disabled { "disabled" } else { "active" };
                    out.push_str(&format!(
                        "\n{:<24} {:<11} {:<9} {}",
                        u.name,
                        u.role,
                        state,
                        u.created_at.format("%Y-%m-%d %H:%M UTC")
                    ));
                }
                Ok(out)
            }
            UsersCommand::Disable { name } | UsersCommand::Enable { name } => {
                let disable = matches!(command, UsersCommand::Disable { .. });
                if db
                    .set_disabled(now, name, disable)
                    .await
                    .map_err(|e| e.to_string())?
                {
                    Ok(format!(
                        "{name} {}",
                        if disable {
                            "disabled; its sessions ended"
                        } else {
                            "enabled"
                        }
                    ))
                } else {
                    Err(format!(
                        "no account `{name}`; `duebell users list` lists them"
                    ))
                }
            }
            UsersCommand::Passwd { name } => {
                if db.user(name).await.map_err(|e| e.to_string())?.is_none() {
                    return Err(format!(
                        "no account `{name}`; `duebell users list` lists them"
                    ));
                }
                let hash = hash_password(&read_password()?)?;
                db.set_password(now, name, &hash)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(format!("password of {name} changed; its sessions ended"))
            }
        }
    }
    .await;
    store.close().await;
    match result {
        Ok(text) => {
            println!("{text}");
            ExitStatus::Ok
        }
        Err(e) => {
            eprintln!("duebell: {e}");
            ExitStatus::Failed
        }
    }
}
