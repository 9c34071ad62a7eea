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

use serde::Deserialize;

use crate::domain::{Locale, TimeZone};

pub use load::{load, load_from_str, load_with, ConfigProblem, ConfigProblems};

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
    pub compliance: crate::compliance::packs::ComplianceConfig,
    pub templates: crate::templates::TemplatesConfig,
    pub tone: crate::templates::ToneConfig,
    pub lender: crate::templates::context::LenderConfig,
    pub opt_out: crate::templates::context::OptOutConfig,
    #[serde(default = "crate::providers::default_providers")]
    pub providers: Vec<crate::providers::ProviderConfig>,
    pub routing: crate::providers::RoutingConfig,
    pub handoff: crate::handoff::HandoffConfig,
    /// `[offers]`: where taken offers are posted (a signed webhook like
    /// `[handoff]`; empty url: the hand-off's url and secret).
    pub offers: crate::handoff::HandoffConfig,
    /// `[bounces]`: when soft bounces read from bounce mailboxes suppress
    /// an address.
    pub bounces: crate::bounces::BouncesConfig,
    pub api: crate::api::ApiConfig,
    /// `[console]`: the staff console at `/console/`.
    pub console: crate::api::access::ConsoleConfig,
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
            console: Default::default(),
            compliance: Default::default(),
            templates: Default::default(),
            tone: Default::default(),
            lender: Default::default(),
            opt_out: Default::default(),
            providers: crate::providers::default_providers(),
            routing: Default::default(),
            handoff: Default::default(),
            offers: Default::default(),
            bounces: Default::default(),
            api: Default::default(),
            daemon: Default::default(),
        }
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

pub use crate::domain::ConfigDuration;
pub use crate::logging::LogConfig;
pub use crate::sources::{SourceConfig, SourceKind};
pub use crate::store::{StoreConfig, Synchronous};

impl Config {
    /// Cross-field rules serde cannot express. Each problem names its key.
    fn validate(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        problems.extend(self.store.validate());
        problems.extend(self.log.validate());
        problems.extend(self.policy.validate());
        problems.extend(self.api.validate());
        problems.extend(self.tone.validate());
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
        problems.extend(self.handoff.validate("handoff"));
        problems.extend(self.offers.validate("offers"));
        problems.extend(self.bounces.validate());
        problems.extend(crate::sources::validate_sources(&self.sources));
        if let Err(packs) = self.compliance.active() {
            problems.extend(packs);
        }
        problems
    }

    /// Every way the quiet hours, caps, ladder and required elements are
    /// looser than a compliance pack in force (errors unless
    /// `check --pack-advisory`).
    pub fn looser_than_packs(&self) -> Vec<(String, String)> {
        use crate::compliance::packs::{looser_settings, LadderStep};
        let Ok(packs) = self.compliance.active() else {
            return Vec::new();
        };
        let ladder: Vec<LadderStep> = self
            .policy
            .steps
            .iter()
            .map(|s| LadderStep {
                offset_days: s.offset_days,
                contacts: s.channels.len() as u32,
            })
            .collect();
        looser_settings(
            &packs,
            &self.quiet_hours,
            &self.caps,
            &ladder,
            &self.templates.required,
        )
    }
}

/// A loaded configuration and the file it came from.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    pub config: Config,
    pub path: PathBuf,
    /// Compliance-pack findings downgraded to warnings (`check
    /// --pack-advisory`); empty otherwise, as such findings are errors.
    pub pack_warnings: Vec<ConfigProblem>,
}

/// How findings of `Config::looser_than_packs` count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackMode {
    /// Errors: the config is refused (the daemon does not start).
    Enforce,
    /// Warnings, kept in `LoadedConfig::pack_warnings`.
    Advisory,
}

/// Picks the config path: `--config`, else `DUEBELL_CONFIG`, else the default.
pub fn resolve_path(flag: Option<&Path>, env: Option<&str>) -> PathBuf {
    match (flag, env) {
        (Some(p), _) => p.to_owned(),
        (None, Some(e)) if !e.is_empty() => PathBuf::from(e),
        _ => PathBuf::from(DEFAULT_CONFIG_PATH),
    }
}
