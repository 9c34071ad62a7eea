//! `duebell generate DIR`: what a package installs besides the binary, made
//! from the sources of truth so it cannot drift: `duebell.1` from the CLI
//! definition (every command and option), `duebell.toml.5` from the shipped,
//! commented `config/duebell.toml`, shell completions for bash, zsh and
//! fish, and `duebell.toml` itself with the paths of the Debian layout.

use std::path::Path;

use clap::CommandFactory;

use super::Cli;
use crate::error::ExitStatus;

/// The shipped config, as the binary was built with it.
pub const SHIPPED_CONFIG: &str = include_str!("../../config/duebell.toml");

/// Where a package puts things.
pub struct Layout {
    pub store_url: &'static str,
    pub templates: &'static str,
    pub calendars: &'static str,
    pub outbox: &'static str,
}

pub const DEBIAN: Layout = Layout {
    store_url: "sqlite:///var/lib/duebell/duebell.db",
    templates: "/etc/duebell/templates",
    calendars: "/etc/duebell/holidays",
    outbox: "/var/lib/duebell/outbox",
};

pub(super) fn generate(dir: &Path) -> ExitStatus {
    match write_all(dir) {
        Ok(files) => {
            for f in files {
                println!("{}", dir.join(f).display());
            }
            ExitStatus::Ok
        }
        Err(e) => {
            eprintln!("duebell: cannot write to {}: {e}", dir.display());
            ExitStatus::Failed
        }
    }
}

fn write_all(dir: &Path) -> std::io::Result<Vec<&'static str>> {
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    let mut man = Vec::new();
    clap_mangen::Man::new(with_all_subcommands(Cli::command())).render(&mut man)?;
    append_subcommands(&mut man, &Cli::command())?;
    std::fs::write(dir.join("duebell.1"), man)?;
    written.push("duebell.1");
    std::fs::write(dir.join("duebell.toml.5"), config_man(SHIPPED_CONFIG))?;
    written.push("duebell.toml.5");
    for (shell, file) in [
        (clap_complete::Shell::Bash, "duebell.bash"),
        (clap_complete::Shell::Zsh, "_duebell"),
        (clap_complete::Shell::Fish, "duebell.fish"),
    ] {
        let mut out = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), "duebell", &mut out);
        std::fs::write(dir.join(file), out)?;
        written.push(file);
    }
    let packaged = packaged_config(SHIPPED_CONFIG, &DEBIAN)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    std::fs::write(dir.join("duebell.toml"), packaged)?;
    written.push("duebell.toml");
    Ok(written)
}

fn with_all_subcommands(cmd: clap::Command) -> clap::Command {
    cmd.after_long_help("Every command's options are listed under COMMAND DETAILS.")
}

/// A `COMMAND DETAILS` section: each subcommand (and theirs) with its
/// options, so the one page documents every command and option.
fn append_subcommands(out: &mut Vec<u8>, cmd: &clap::Command) -> std::io::Result<()> {
    use std::io::Write;
    writeln!(out, ".SH \"COMMAND DETAILS\"")?;
    fn walk(out: &mut Vec<u8>, prefix: &str, cmd: &clap::Command) -> std::io::Result<()> {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            let name = format!("{prefix} {}", sub.get_name());
            writeln!(out, ".SS \"{}\"", roff_text(name.trim()))?;
            if let Some(about) = sub.get_long_about().or(sub.get_about()) {
                writeln!(out, "{}", roff_text(&about.to_string()))?;
            }
            for arg in sub.get_arguments().filter(|a| !a.is_hide_set()) {
                if arg.get_id() == "help" || arg.get_id() == "version" {
                    continue;
                }
                let long = arg.get_long().map(|l| l.replace('-', "\\-"));
                let spelled = match (long, arg.get_short()) {
                    (Some(l), Some(s)) => format!("\\-{s}, \\-\\-{l}"),
                    (Some(l), None) => format!("\\-\\-{l}"),
                    (None, Some(s)) => format!("\\-{s}"),
                    (None, None) => arg.get_id().as_str().to_uppercase(),
                };
                writeln!(out, ".TP\n\\fB{spelled}\\fR")?;
                let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
                writeln!(out, "{}", roff_text(&help))?;
            }
            walk(out, &name, sub)?;
        }
        Ok(())
    }
    walk(out, "duebell", cmd)
}

/// Text safe inside a roff paragraph: backslashes doubled, and no line may
/// start with a control character.
fn roff_text(s: &str) -> String {
    s.lines()
        .map(|l| {
            let l = l.replace('\\', "\\e").replace('-', "\\-");
            if l.starts_with('.') || l.starts_with('\'') {
                format!("\\&{l}")
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `duebell.toml(5)` from the commented config: the opening comment is the
/// description; each `[section]` a section; each key with the comment above
/// it and the default it shows.
pub fn config_man(config: &str) -> String {
    let mut out = String::new();
    let version = env!("CARGO_PKG_VERSION");
    out.push_str(&format!(
        ".TH DUEBELL.TOML 5 \"\" \"duebell {version}\" \"File Formats\"\n\
         .SH NAME\nduebell.toml \\- configuration of the duebell payment reminder daemon\n\
         .SH SYNOPSIS\n/etc/duebell/duebell.toml\n.SH DESCRIPTION\n"
    ));
    let mut comment: Vec<String> = Vec::new();
    let mut in_header = true;
    let mut section = String::new();
    for line in config.lines() {
        let t = line.trim();
        if let Some(c) = t.strip_prefix('#') {
            let c = c.strip_prefix(' ').unwrap_or(c);
            if c.chars().all(|ch| ch == '-') && !c.is_empty() {
                continue;
            }
            comment.push(c.to_owned());
            continue;
        }
        if t.is_empty() {
            if in_header && !comment.is_empty() {
                out.push_str(&paragraphs(&comment));
                comment.clear();
                in_header = false;
            }
            continue;
        }
        in_header = false;
        if t.starts_with('[') {
            let name = t.trim_matches(|c| c == '[' || c == ']');
            if name != section {
                out.push_str(&format!(".SH \"[{}]\"\n", roff_text(name)));
                section = name.to_owned();
            }
            if !comment.is_empty() {
                out.push_str(&paragraphs(&comment));
                comment.clear();
            }
            continue;
        }
        if let Some((key, value)) = t.split_once('=') {
            out.push_str(&format!(
                ".TP\n\\fB{}\\fR = {}\n",
                roff_text(key.trim()),
                roff_text(value.trim())
            ));
            if !comment.is_empty() {
                out.push_str(&roff_text(&comment.join("\n")));
                out.push('\n');
                comment.clear();
            }
        }
    }
    out.push_str(".SH \"SEE ALSO\"\n\\fBduebell\\fR(1)\n");
    out
}

fn paragraphs(lines: &[String]) -> String {
    let mut out = String::from(".PP\n");
    for l in lines {
        if l.is_empty() {
            out.push_str(".PP\n");
        } else if l.starts_with("  ") {
            out.push_str(&format!(".nf\n{}\n.fi\n", roff_text(l.trim())));
        } else {
            out.push_str(&roff_text(l));
            out.push('\n');
        }
    }
    out
}

/// The shipped config with the package's paths, comments and layout kept:
/// the store, templates, calendars and outbox move to their Debian places,
/// and the sample import sources (which are not installed) go.
pub fn packaged_config(config: &str, layout: &Layout) -> Result<String, String> {
    let mut doc: toml_edit::DocumentMut = config.parse().map_err(|e| format!("{e}"))?;
    let mut set = |table: &str, key: &str, value: &str| -> Result<(), String> {
        let t = doc
            .get_mut(table)
            .and_then(|t| t.as_table_like_mut())
            .ok_or_else(|| format!("no [{table}] in config/duebell.toml"))?;
        let item = t
            .get_mut(key)
            .ok_or_else(|| format!("no {table}.{key} in config/duebell.toml"))?;
        let decor = item.as_value().map(|v| v.decor().clone());
        let mut v = toml_edit::Value::from(value);
        if let Some(d) = decor {
            *v.decor_mut() = d;
        }
        *item = toml_edit::Item::Value(v);
        Ok(())
    };
    set("store", "url", layout.store_url)?;
    set("templates", "dir", layout.templates)?;
    set("quiet_hours", "calendars_dir", layout.calendars)?;
    let providers = doc
        .get_mut("providers")
        .and_then(|p| p.as_array_of_tables_mut())
        .ok_or("no [[providers]] in config/duebell.toml")?;
    let outbox = providers
        .iter_mut()
        .find(|p| p.get("kind").and_then(|k| k.as_str()) == Some("file"))
        .ok_or("no file provider in config/duebell.toml")?;
    outbox["dir"] = toml_edit::value(layout.outbox);
    doc.remove("sources");
    let mut text = doc.to_string();
    text.insert_str(
        0,
        "# Installed by the duebell package. `duebell check` says what to set next.\n",
    );
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_packaged_config_moves_every_path_and_keeps_the_comments() {
        let text = packaged_config(SHIPPED_CONFIG, &DEBIAN).unwrap();
        for path in [
            "sqlite:///var/lib/duebell/duebell.db",
            "/etc/duebell/templates",
            "/etc/duebell/holidays",
            "/var/lib/duebell/outbox",
        ] {
            assert!(text.contains(&format!("\"{path}\"")), "{path}");
        }
        assert!(!text.contains("examples/loans.csv"));
        assert!(text.contains("# Where borrowers, loans, payments and messages are kept."));
    }

    #[test]
    fn the_config_page_lists_every_section_and_key() {
        let page = config_man(SHIPPED_CONFIG);
        for needle in [
            "\"[store]\"",
            "\\fBurl\\fR",
            "\"[daemon]\"",
            "\\fBclaim_lease\\fR",
        ] {
            assert!(page.contains(needle), "{needle}");
        }
        assert!(!page.lines().any(|l| l.starts_with('\'')));
    }
}
