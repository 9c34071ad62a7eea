//! The console: staff edit templates and contact settings, look up
//! borrowers and run operations in a browser at `/console/`. Every action
//! a page takes goes through a documented `/v1` route (`templates.rs`,
//! `settings.rs`, `ops.rs`) under the same role checks as API tokens
//! (`api::access`); `pages.rs` serves the HTML. Changes live in the files
//! (`config/duebell.toml`, `templates/`): the console writes them
//! atomically, refuses to overwrite a file that changed since the editor
//! loaded it, records every change with who, when, before and after, and
//! asks the daemon to reload.

mod diff;
mod i18n;
mod ops;
mod pages;
mod settings;
mod templates;

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use axum::Router;
use chrono::{DateTime, Utc};

use crate::api::access::Principal;
use crate::api::routes::{Route, RouteDoc};
use crate::api::{ApiError, ApiState};
use crate::config::Config;
use crate::store::ChangeRecord;

/// What the console's handlers share.
#[derive(Clone)]
pub struct ConsoleState {
    pub api: ApiState,
    /// The configuration in force (replaced on every reload).
    pub live: Arc<RwLock<Arc<Config>>>,
    /// The config file the daemon was started with; settings are edited
    /// in it. None: settings are read-only here.
    pub config_file: Option<PathBuf>,
    /// Asks the daemon to reload the config and templates now.
    pub reload: Arc<tokio::sync::Notify>,
    /// One edit of the files at a time.
    pub writing: Arc<tokio::sync::Mutex<()>>,
}

impl ConsoleState {
    pub fn config(&self) -> Arc<Config> {
        self.live.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn now(&self) -> DateTime<Utc> {
        self.api.clock.now()
    }

    /// Records a change in the log; its id.
    async fn record(
        &self,
        who: &Principal,
        kind: &str,
        subject: &str,
        before: Option<String>,
        after: Option<String>,
        summary: String,
    ) -> Result<i64, ApiError> {
        let c = ChangeRecord {
            id: 0,
            at: self.now(),
            actor: who.name.clone(),
            kind: kind.to_owned(),
            subject: subject.to_owned(),
            before,
            after,
            summary,
        };
        Ok(self.api.store.db().record_change(&c).await?)
    }
}

fn routes() -> Vec<Route<ConsoleState>> {
    let mut r = templates::routes();
    r.extend(settings::routes());
    r.extend(ops::routes());
    r.extend(pages::routes());
    r
}

/// (method, path) of every `/v1` route the console adds, for tests.
pub fn documented() -> Vec<(&'static str, &'static str)> {
    routes()
        .into_iter()
        .filter(|(_, p, ..)| p.starts_with("/v1"))
        .map(|(m, p, ..)| (m, p))
        .collect()
}

/// The API's router with the console's routes and pages added.
pub fn router(state: ConsoleState) -> Router {
    let api = state.api.clone();
    let (console, docs) = crate::api::routes::build(routes(), state);
    // The pages are not part of the JSON API's documentation.
    let docs: Vec<RouteDoc> = docs
        .into_iter()
        .filter(|d| d.path.starts_with("/v1"))
        .collect();
    crate::api::router_with(api, console, docs)
}

/// Writes `text` to `path` atomically: a temporary file beside it, synced,
/// then renamed over it.
fn write_atomically(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    if !dir.as_os_str().is_empty() {
        std::fs::create_dir_all(dir)?;
    }
    let mut tmp = tempfile::NamedTempFile::new_in(if dir.as_os_str().is_empty() {
        std::path::Path::new(".")
    } else {
        dir
    })?;
    tmp.write_all(text.as_bytes())?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Hex SHA-256 of text: the "base" an editor sends back with a change, so
/// a file edited meanwhile is never overwritten silently.
fn digest(text: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(&Sha256::digest(text.as_bytes())[..12])
}

/// A refusal because the file changed since the editor loaded it.
fn conflict(what: &str) -> ApiError {
    ApiError::conflict(format!(
        "{what} changed since you opened it (someone edited it in the console or on disk); reload to see the current text, then apply your change again"
    ))
}
