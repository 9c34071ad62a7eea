//! The engine: policy, compliance gate, templates and providers assembled
//! from config into a planner and a dispatcher. `duebell run`, `plan` and
//! `simulate` all drive this one engine, so a simulation predicts the daemon.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::compliance::Gate;
use crate::config::Config;
use crate::dispatch::{Dispatcher, Outcome};
use crate::domain::Channel;
use crate::planner::{self, Planner, TickReport};
use crate::providers::Router;
use crate::store::{Store, StoreError};
use crate::templates::context::ContextSource;
use crate::templates::{Samples, TemplateProblem, TemplateSet};

/// Shared pieces the daemon hands the engine (defaults for tools).
#[derive(Clone)]
pub struct Parts {
    pub unsubscribe: Arc<crate::signing::Signer>,
    pub pauses: Arc<crate::dispatch::Pauses>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// This process's name in claims and leases.
    pub instance: Arc<str>,
}

impl Default for Parts {
    fn default() -> Self {
        Parts {
            // Tools that never serve the unsubscribe endpoint (plan,
            // simulate) sign with a throwaway key.
            unsubscribe: Arc::new(crate::signing::Signer::new(b"not-served".to_vec())),
            pauses: Arc::default(),
            metrics: Arc::default(),
            instance: Arc::from(crate::config::DaemonConfig::default().instance_name()),
        }
    }
}

/// The planner's and the dispatcher's rules, built once from config and
/// shared by both.
#[derive(Clone)]
pub struct Engine {
    pub gate: Arc<Gate>,
    pub policy: Arc<crate::policy::PolicyConfig>,
    pub dispatcher: Dispatcher,
}

impl Engine {
    /// Assembles the engine. `router` replaces the configured providers
    /// (simulate uses a recorder). Errors are full problem lines.
    pub fn build(
        config: &Config,
        store: Arc<dyn Store>,
        router: Option<Router>,
    ) -> Result<Engine, Vec<String>> {
        Engine::build_with(config, store, router, Parts::default())
    }

    /// As `build`, sharing the daemon's signing key, pauses and metrics.
    pub fn build_with(
        config: &Config,
        store: Arc<dyn Store>,
        router: Option<Router>,
        parts: Parts,
    ) -> Result<Engine, Vec<String>> {
        let keyed = |p: Vec<(String, String)>| {
            p.into_iter()
                .map(|(k, m)| format!("{k}: {m}"))
                .collect::<Vec<_>>()
        };
        let packs = config.compliance.active().map_err(keyed)?;
        let gate = Gate::build(&config.quiet_hours, &config.caps)
            .map_err(keyed)?
            .with_packs(packs);
        let templates = load_templates(config)
            .map_err(|p| p.iter().map(ToString::to_string).collect::<Vec<_>>())?;
        let router = match router {
            Some(r) => r,
            None => Router::build(
                &config.providers,
                &config.routing,
                &config.api.public_url,
                parts.metrics.clone(),
                store.shared_rate(),
            )
            .map_err(|p| {
                p.into_iter()
                    .map(|(k, m)| format!("{k}: {m}"))
                    .collect::<Vec<_>>()
            })?,
        };
        let gate = Arc::new(gate);
        let policy = Arc::new(config.policy.clone());
        Ok(Engine {
            gate: gate.clone(),
            policy: policy.clone(),
            dispatcher: Dispatcher {
                store,
                gate,
                policy,
                templates: Arc::new(templates),
                router,
                context: Arc::new(context_source(config)),
                default_tz: config.defaults.timezone.0,
                default_locale: config.defaults.locale.as_str().to_owned(),
                sms_signature: config.templates.sms_signature.clone(),
                tone: Arc::new(config.tone.clone()),
                unsubscribe_base: config.api.public_url.clone(),
                unsubscribe: parts.unsubscribe,
                pauses: parts.pauses,
                metrics: parts.metrics,
                instance: parts.instance,
                claim_lease: config.daemon.claim_lease.get(),
                width: dispatch_width(config),
                in_hand: Arc::default(),
            },
        })
    }

    pub fn planner(&self) -> Planner<'_> {
        Planner {
            policy: &self.policy,
            gate: &self.gate,
            default_tz: self.dispatcher.default_tz,
        }
    }

    /// A full planning pass (see `planner::Pass`).
    pub async fn plan(&self, now: DateTime<Utc>) -> Result<TickReport, StoreError> {
        self.plan_pass(now, planner::Pass::Full, None).await
    }

    /// A planning pass of either kind; with `fence`, as the holder of the
    /// planner lease.
    pub async fn plan_pass(
        &self,
        now: DateTime<Utc>,
        pass: planner::Pass,
        fence: Option<&crate::store::Fence>,
    ) -> Result<TickReport, StoreError> {
        let report =
            planner::tick(&self.dispatcher.store, &self.planner(), now, fence, pass).await?;
        let store = self.dispatcher.store.as_ref();
        // The pass is recorded: a failed refresh only leaves the
        // statistics to autovacuum, so it is reported, not returned.
        if report.recorded >= crate::store::BULK_ROWS {
            if let Err(e) = store
                .refresh_statistics(crate::store::BulkChange::Plan)
                .await
            {
                tracing::warn!(error = %e, "could not refresh the store's statistics after planning");
            }
        }
        Ok(report)
    }

    /// Re-plans one borrower (external id) after a change that touched
    /// only them (see `planner::replan_borrower`).
    pub async fn replan_borrower(
        &self,
        now: DateTime<Utc>,
        borrower: &str,
    ) -> Result<TickReport, StoreError> {
        planner::replan_borrower(
            self.dispatcher.store.as_ref(),
            &self.planner(),
            now,
            borrower,
        )
        .await
    }

    pub async fn dispatch(&self, now: DateTime<Utc>) -> Result<Vec<Outcome>, StoreError> {
        self.dispatcher.drain(now).await
    }

    /// Swaps in a new template set (hot reload).
    pub fn with_templates(&self, templates: TemplateSet) -> Engine {
        let mut e = self.clone();
        e.dispatcher.templates = Arc::new(templates);
        e
    }
}

/// Loads the templates and runs every check on them: syntax, the templates
/// the policy names, every template rendered against every sample (within
/// the fuel and size bounds), required markers, SMS length, variables no
/// message has in any branch, and the rules on the sources. `duebell check`,
/// start-up, SIGHUP and the file-watch reload all call this, so a set one
/// refuses is refused by all.
pub fn load_templates(config: &Config) -> Result<TemplateSet, Vec<TemplateProblem>> {
    let set = TemplateSet::load(&config.templates)?;
    let samples = Samples::load(&config.templates.dir).map_err(|p| vec![p])?;
    let steps = crate::templates::context::StepUses {
        used: config
            .policy
            .steps
            .iter()
            .flat_map(|s| {
                s.channels
                    .iter()
                    .map(move |c| (s.template.clone(), *c, s.id.clone()))
            })
            .collect(),
        toned: config
            .policy
            .steps
            .iter()
            .filter(|s| config.tone.applies(&s.stage))
            .map(|s| s.template.clone())
            .collect(),
        offered: config
            .policy
            .steps
            .iter()
            .filter_map(|s| Some((s.template.clone(), s.offer.clone()?)))
            .collect(),
    };
    let mut problems = crate::templates::context::check(
        &set,
        &samples,
        &config.templates,
        &context_source(config),
        &steps,
        &config.tone,
    );
    problems.extend(crate::templates::context::lint_sources(&config.templates));
    problems.extend(routable(config, &set, &steps.used));
    if problems.is_empty() {
        Ok(set)
    } else {
        Err(problems)
    }
}

/// Providers that send only pre-approved templates (Aliyun, Tencent) carry
/// an SMS only if its template declares their template code; at send time
/// such a message moves on to the next provider in `routing.sms`. A used
/// template (in some locale) that no provider of the route can carry could
/// never be sent: refused.
fn routable(
    config: &Config,
    set: &TemplateSet,
    used: &[(String, Channel, String)],
) -> Vec<TemplateProblem> {
    use crate::providers::ProviderKind;
    let route: Vec<(&str, ProviderKind)> = config
        .routing
        .sms
        .iter()
        .filter_map(|n| config.providers.iter().find(|p| &p.name == n))
        .map(|p| (p.name.as_str(), p.kind))
        .collect();
    let mut problems = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (template, channel, step) in used {
        if *channel != Channel::Sms || !seen.insert(template) {
            continue;
        }
        for (locale, pt) in set.provider_templates(template) {
            let carries = |kind: ProviderKind| match kind {
                ProviderKind::Aliyun => pt.aliyun.is_some(),
                ProviderKind::Tencent => pt.tencent.is_some(),
                _ => true,
            };
            if route.is_empty() || route.iter().any(|(_, k)| carries(*k)) {
                continue;
            }
            let names: Vec<String> = route
                .iter()
                .map(|(n, k)| format!("{n} ({})", format!("{k:?}").to_lowercase()))
                .collect();
            problems.push(TemplateProblem {
                file: config
                    .templates
                    .dir
                    .join(format!("{locale}/{template}.sms.toml"))
                    .display()
                    .to_string(),
                line: None,
                message: format!(
                    "declares no template code for any provider in routing.sms ({}), which send only approved templates: step `{step}` could never be sent; add [aliyun]/[tencent] here, or route SMS through another provider too",
                    names.join(", ")
                ),
            });
        }
    }
    problems
}

/// What templates say about the lender and the opt-out, from config.
pub fn context_source(config: &Config) -> ContextSource {
    ContextSource {
        lender: config.lender.clone(),
        opt_out: config.opt_out.clone(),
    }
}

/// A template context for a borrower's active loans (`duebell render --borrower`).
pub async fn borrower_context(
    config: &crate::config::Config,
    id: &str,
    channel: Channel,
    locale: Option<&str>,
) -> anyhow::Result<crate::templates::MessageContext> {
    let store = crate::store::open(&config.store).await?;
    let ctx = borrower_context_in(config, store.as_ref(), id, channel, locale, Utc::now()).await;
    store.close().await;
    ctx
}

/// `borrower_context` from an open store, at `now`.
pub async fn borrower_context_in(
    config: &crate::config::Config,
    store: &dyn crate::store::Store,
    id: &str,
    channel: Channel,
    locale: Option<&str>,
    now: chrono::DateTime<Utc>,
) -> anyhow::Result<crate::templates::MessageContext> {
    let b = store
        .plan_borrower(id, now)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no borrower `{id}` in the store"))?;
    if b.loans.is_empty() {
        anyhow::bail!("borrower `{id}` has no active loans");
    }
    let zones = crate::eligibility::borrower_zones(&b, config.defaults.timezone.0);
    let today = now.with_timezone(&zones.primary).date_naive();
    let loan_ids: Vec<i64> = b.loans.iter().map(|l| l.pk).collect();
    let locale = locale
        .map(str::to_owned)
        .or(b.locale.clone())
        .unwrap_or_else(|| config.defaults.locale.as_str().to_owned());
    let days = (today - b.loans[0].due_date).num_days();
    let pos = config.policy.position(days);
    let (step, stage) = pos
        .current
        .map(|(s, _)| (s.id.clone(), s.stage.clone()))
        .unwrap_or_default();
    Ok(crate::dispatch::context_for(
        &context_source(config),
        &b,
        &b.loans,
        &loan_ids,
        channel,
        &locale,
        &step,
        &stage,
        today,
    ))
}

/// Sends in flight at once: the `concurrency` of every provider a channel
/// routes to, summed, between 1 and `MAX_WIDTH`.
fn dispatch_width(config: &Config) -> usize {
    const MAX_WIDTH: usize = 256;
    let routed: std::collections::HashSet<&str> = config
        .routing
        .sms
        .iter()
        .chain(&config.routing.email)
        .map(String::as_str)
        .collect();
    config
        .providers
        .iter()
        .filter(|p| routed.contains(p.name.as_str()))
        .map(|p| p.concurrency.max(1) as usize)
        .sum::<usize>()
        .clamp(1, MAX_WIDTH)
}
