//! `[[sources]]`: the files the daemon watches, owned here with their checks.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::domain::ConfigDuration;

use super::is_importable;

/// A data source the daemon imports from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    pub kind: SourceKind,
    /// The file to import, CSV or JSONL by extension.
    pub path: PathBuf,
    /// How often the file is checked for a change of content.
    #[serde(default = "default_poll_interval")]
    pub poll_interval: ConfigDuration,
}

/// Kinds of source. (The HTTP API is not a source here: it writes directly.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// A loan book or payments file that the daemon re-imports whenever its
    /// content changes (a lender's nightly export dropped in place).
    File,
}

fn default_poll_interval() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(30))
}

/// The problems with `[[sources]]`, each with its key.
pub fn validate_sources(sources: &[SourceConfig]) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, source) in sources.iter().enumerate() {
        let SourceConfig {
            path,
            poll_interval,
            ..
        } = source;
        if !seen.insert(path.clone()) {
            problems.push((
                format!("sources[{i}].path"),
                format!("`{}` is listed twice; list each file once", path.display()),
            ));
        }
        if !is_importable(path) {
            problems.push((
                format!("sources[{i}].path"),
                format!(
                    "`{}` has no .csv or .jsonl extension; duebell reads the format from it",
                    path.display()
                ),
            ));
        }
        if poll_interval.get() < Duration::from_millis(100) {
            problems.push((
                format!("sources[{i}].poll_interval"),
                "must be at least 100ms".to_owned(),
            ));
        }
    }
    problems
}
