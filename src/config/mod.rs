//! Configuration: what this duebell process *is* (its store, its sources, its
//! defaults). Loaded in one pass: the TOML file, then `DUEBELL_…` environment
//! overrides, then `…_file` indirections (systemd credentials), then serde
//! with unknown keys refused, then cross-field validation. Every problem found
//! is reported with where it came from (`FILE:LINE:COL` or the environment
//! variable) and the dotted key, and the load fails as a whole: a config is
//! never half applied.

mod load;
mod locate;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::domain::{Locale, TimeZone};

pub use load::{load, load_from_str, ConfigProblem, ConfigProblems};

/// Where the config file is looked for when neither `--config` nor
/// `DUEBELL_CONFIG` names one.
pub const DEFAULT_CONFIG_PATH: &str = "config/duebell.toml";

/// The whole configuration. Every section has defaults, so a file only needs
/// what differs; the shipped `config/duebell.toml` spells every key out.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub store: StoreConfig,
    pub defaults: Defaults,
    pub log: LogConfig,
    pub sources: Vec<SourceConfig>,
    pub policy: crate::policy::PolicyConfig,
    pub quiet_hours: crate::compliance::QuietHoursConfig,
    pub caps: crate::compliance::CapsConfig,
    pub templates: crate::templates::TemplatesConfig,
    pub lender: crate::templates::context::LenderConfig,
    pub opt_out: crate::templates::context::OptOutConfig,
    #[serde(default = "crate::providers::default_providers")]
    pub providers: Vec<crate::providers::ProviderConfig>,
    pub routing: crate::providers::RoutingConfig,
    pub handoff: crate::handoff::HandoffConfig,
    pub api: crate::api::ApiConfig,
    pub daemon: DaemonConfig,
}

/// `[daemon]`: how the process stops.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonConfig {
    /// On SIGTERM/SIGINT, how long a send already handed to a provider may
    /// take to finish. A send still in flight after it stays `sending` and is
    /// reconciled (never resent blindly) at the next start.
    pub stop_deadline: ConfigDuration,
    /// This instance's name in leases and claims (default: host name,
    /// process id and a random suffix, unique per process).
    pub instance: Option<String>,
    /// How long the planner role is held without renewal. When the holder
    /// dies or stalls longer, another instance takes over planning.
    pub planner_lease: ConfigDuration,
    /// How long a claimed message stays with its instance without renewal
    /// (renewed every third of it while the instance lives). A message left
    /// `sending` past it is reconciled by any instance.
    pub claim_lease: ConfigDuration,
    /// Longest sleep between looks for due work. With PostgreSQL, `LISTEN`
    /// wakes an idle instance at once when another plans; this is the
    /// fallback when that connection is down.
    pub poll_interval: ConfigDuration,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            stop_deadline: ConfigDuration(Duration::from_secs(20)),
            instance: None,
            planner_lease: ConfigDuration(Duration::from_secs(15)),
            claim_lease: ConfigDuration(Duration::from_secs(30)),
            poll_interval: ConfigDuration(Duration::from_secs(5)),
        }
    }
}

impl DaemonConfig {
    /// This process's instance name.
    pub fn instance_name(&self) -> String {
        if let Some(name) = &self.instance {
            return name.clone();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "host".to_owned());
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        format!("{host}-{}-{:05x}", std::process::id(), nanos & 0xfffff)
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            store: StoreConfig::default(),
            defaults: Defaults::default(),
            log: LogConfig::default(),
            sources: Vec::new(),
            policy: Default::default(),
            quiet_hours: Default::default(),
            caps: Default::default(),
            templates: Default::default(),
            lender: Default::default(),
            opt_out: Default::default(),
            providers: crate::providers::default_providers(),
            routing: Default::default(),
            handoff: Default::default(),
            api: Default::default(),
            daemon: Default::default(),
        }
    }
}

/// The store: an embedded SQLite file by default.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `sqlite://PATH` (relative paths are from the working directory), or
    /// `postgres://USER@HOST:PORT/DATABASE` when several instances share
    /// the work.
    pub url: String,
    /// How long a writer waits for a lock held by another connection.
    pub busy_timeout: ConfigDuration,
    /// Connections in the pool.
    pub max_connections: u32,
    /// SQLite durability: `full` (every commit survives a power cut; the
    /// default), `normal` or `off` (throwaway stores only).
    pub synchronous: Synchronous,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Synchronous {
    Full,
    Normal,
    Off,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            url: "sqlite://var/duebell.db".to_owned(),
            busy_timeout: ConfigDuration(Duration::from_secs(5)),
            max_connections: 4,
            synchronous: Synchronous::Full,
        }
    }
}

impl StoreConfig {
    /// The SQLite file this config names, or `None` for another backend.
    pub fn sqlite_path(&self) -> Option<PathBuf> {
        let rest = self
            .url
            .strip_prefix("sqlite://")
            .or_else(|| self.url.strip_prefix("sqlite:"))?;
        let rest = rest.split('?').next().unwrap_or(rest);
        Some(PathBuf::from(rest))
    }

    /// Whether this names a PostgreSQL database.
    pub fn is_postgres(&self) -> bool {
        self.url.starts_with("postgres://") || self.url.starts_with("postgresql://")
    }
}

/// Values used when a borrower's own data does not say.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Defaults {
    /// Time zone for borrowers with none given.
    pub timezone: TimeZone,
    /// Locale for borrowers with none given.
    pub locale: Locale,
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            timezone: TimeZone(chrono_tz::Asia::Shanghai),
            locale: Locale::parse("zh-CN").expect("literal locale"),
        }
    }
}

/// Log verbosity. The output format is a property of the run (`--log-format`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A tracing filter: `info`, `duebell=debug,sqlx=warn`, …
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            filter: "info".to_owned(),
        }
    }
}

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

/// A duration written as text: `500ms`, `30s`, `5m`, `1h 30m`, `7d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigDuration(pub Duration);

impl ConfigDuration {
    pub fn get(self) -> Duration {
        self.0
    }
}

impl<'de> Deserialize<'de> for ConfigDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(s.trim())
            .map(ConfigDuration)
            .map_err(|_| {
                serde::de::Error::custom(format!(
                    "`{s}` is not a duration; write e.g. 500ms, 30s, 5m, 1h 30m or 7d"
                ))
            })
    }
}

macro_rules! deserialize_via_parse {
    ($($t:ty),*) => {$(
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                <$t>::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    )*};
}
deserialize_via_parse!(TimeZone, Locale);

impl Config {
    /// Cross-field rules serde cannot express. Each problem names its key.
    fn validate(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        if self.store.is_postgres() {
            if let Err(e) = self.store.url.parse::<sqlx::postgres::PgConnectOptions>() {
                problems.push((
                    "store.url".to_owned(),
                    format!("not a PostgreSQL URL ({e}); write postgres://USER@HOST:5432/DATABASE"),
                ));
            }
        } else if self.store.sqlite_path().is_none() {
            problems.push((
                "store.url".to_owned(),
                format!(
                    "`{}` is not a store URL; use sqlite://var/duebell.db or postgres://USER@HOST:5432/DATABASE",
                    self.store.url
                ),
            ));
        } else if self
            .store
            .sqlite_path()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            problems.push((
                "store.url".to_owned(),
                "names no file; use sqlite://var/duebell.db".to_owned(),
            ));
        }
        if self.store.max_connections == 0 {
            problems.push((
                "store.max_connections".to_owned(),
                "must be at least 1".to_owned(),
            ));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.filter) {
            problems.push((
                "log.filter".to_owned(),
                format!("is not a log filter ({e}); write e.g. info or duebell=debug,sqlx=warn"),
            ));
        }
        problems.extend(self.policy.validate());
        problems.extend(self.api.validate());
        if let Err(e) = crate::domain::Locale::parse(&self.templates.default_locale) {
            problems.push(("templates.default_locale".to_owned(), e.0));
        }
        for (i, m) in self.templates.required.iter().enumerate() {
            if !crate::templates::MARKERS.contains(&m.as_str()) {
                problems.push((
                    format!("templates.required[{i}]"),
                    format!(
                        "`{m}` is not a marker; use {}",
                        crate::templates::MARKERS.join(", ")
                    ),
                ));
            }
        }
        if self.templates.sms_max_segments == 0 {
            problems.push((
                "templates.sms_max_segments".to_owned(),
                "must be at least 1".to_owned(),
            ));
        }
        if let Err(gate) = crate::compliance::Gate::build(&self.quiet_hours, &self.caps) {
            problems.extend(gate);
        }
        if let Err(router) = crate::providers::Router::build(
            &self.providers,
            &self.routing,
            &self.api.public_url,
            Default::default(),
            None,
        ) {
            problems.extend(router);
        }
        if !self.handoff.url.is_empty() {
            if !(self.handoff.url.starts_with("http://")
                || self.handoff.url.starts_with("https://"))
            {
                problems.push((
                    "handoff.url".to_owned(),
                    format!("`{}` is not an http(s) URL", self.handoff.url),
                ));
            }
            if self.handoff.secret.len() < 16 {
                problems.push((
                    "handoff.secret".to_owned(),
                    "must be at least 16 characters: receivers verify the signature with it"
                        .to_owned(),
                ));
            }
        }
        let mut seen = std::collections::HashSet::new();
        for (i, source) in self.sources.iter().enumerate() {
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
            if !crate::sources::is_importable(path) {
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
}

/// A loaded configuration and the file it came from.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    pub config: Config,
    pub path: PathBuf,
}

/// Picks the config path: `--config`, else `DUEBELL_CONFIG`, else the default.
pub fn resolve_path(flag: Option<&Path>, env: Option<&str>) -> PathBuf {
    match (flag, env) {
        (Some(p), _) => p.to_owned(),
        (None, Some(e)) if !e.is_empty() => PathBuf::from(e),
        _ => PathBuf::from(DEFAULT_CONFIG_PATH),
    }
}
