//! Error policy.
//!
//! - Module boundaries return `thiserror` enums whose messages say what is
//!   wrong and what to do (`StoreError`, `ImportError`, `ConfigProblems`).
//! - Wiring code (`app`, `cli`) uses `anyhow` with `.context("while …")`.
//! - Bad input is never a panic: it is a `RowError` (`PATH:LINE: field:
//!   reason`, row skipped) or a `ConfigProblem` (`FILE:LINE:COL: key:
//!   message`, whole config refused).
//! - Personal data never appears in an error message unmasked.
//! - Process exit codes are `ExitStatus` below, so scripts and systemd can
//!   tell a data problem from a configuration problem from a crash.

/// Exit codes of the `duebell` binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// Everything asked was done.
    Ok = 0,
    /// The command ran but something was refused or failed (rejected import
    /// rows, an unreadable file, a runtime error).
    Failed = 1,
    /// The configuration (or command line) is invalid; nothing was done.
    BadConfig = 2,
}

impl From<ExitStatus> for std::process::ExitCode {
    fn from(s: ExitStatus) -> Self {
        std::process::ExitCode::from(s as u8)
    }
}
