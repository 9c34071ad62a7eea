//! Shared helpers: paths, running the binary, writing synthetic loan books.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_duebell"))
}

/// A `duebell` command run from the repository root with a clean
/// environment (no stray `DUEBELL_*` from the developer's shell).
pub fn duebell(args: &[&str]) -> Command {
    let mut cmd = Command::new(bin());
    cmd.current_dir(repo_root()).args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("DUEBELL_") || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    cmd
}

pub fn run(mut cmd: impl std::borrow::BorrowMut<Command>) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.borrow_mut().output().expect("duebell runs");
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

/// Writes a config using a store in `dir` and returns its path.
pub fn write_config(dir: &Path, extra: &str) -> PathBuf {
    let path = dir.join("duebell.toml");
    let text = format!(
        "[store]\nurl = \"sqlite://{}\"\n\n{extra}",
        dir.join("state/duebell.db").display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

pub const LOAN_HEADER: &str =
    "loan_id,borrower_id,name,phone,email,locale,timezone,due_date,amount_due,currency";

/// One valid loan-book line for row `i` (two loans per borrower).
pub fn loan_line(i: usize) -> String {
    let b = i / 2;
    format!(
        "L{i},B{b},Name {b},+86138{b:08},u{b}@example.com,zh-CN,Asia/Shanghai,2026-12-{:02},{}.50,CNY",
        1 + i % 28,
        1000 + i % 500
    )
}

/// Writes a loan book of `rows` data rows; rows listed in `bad` get a bad
/// field of the given kind instead. Returns the file line of each data row.
pub fn write_book(path: &Path, rows: usize, bad: &[(usize, &str)]) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    writeln!(f, "{LOAN_HEADER}").unwrap();
    for i in 0..rows {
        let line = match bad.iter().find(|(r, _)| *r == i) {
            Some((_, "phone")) => loan_line(i).replace(&format!("+86138{:08}", i / 2), "+86 12345"),
            Some((_, "timezone")) => loan_line(i).replace("Asia/Shanghai", "Asia/Atlantis"),
            Some((_, "amount_due")) => loan_line(i).replace(".50,CNY", ".50.1,CNY"),
            Some((_, other)) => panic!("no bad kind {other}"),
            None => loan_line(i),
        };
        writeln!(f, "{line}").unwrap();
    }
    f.flush().unwrap();
}

/// Opens the store a test config points at, read-only in spirit.
pub async fn open_store(dir: &Path) -> std::sync::Arc<dyn duebell::store::Store> {
    let cfg = duebell::config::StoreConfig {
        url: format!("sqlite://{}", dir.join("state/duebell.db").display()),
        ..Default::default()
    };
    duebell::store::open(&cfg).await.unwrap()
}
