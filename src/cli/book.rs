//! `check`, `templates check`, `render`, `plan`: the book and its templates.

use super::*;

/// Every problem `duebell check` reports in the templates (the same checks
/// start-up and every reload run: `engine::load_templates`).
pub fn check_templates(config: &crate::config::Config) -> Vec<TemplateProblem> {
    crate::engine::load_templates(config)
        .err()
        .unwrap_or_default()
}

/// Warnings `check` prints on a valid config: overlapping windows, holiday
/// calendars that need their yearly update.
pub(super) fn print_warnings(config: &crate::config::Config) {
    for (key, message) in config.quiet_hours.overlapping_windows() {
        eprintln!("warning: {key}: {message}");
    }
    if let Ok(gate) = crate::compliance::Gate::build(&config.quiet_hours, &config.caps) {
        for c in gate.stale_calendars(SystemClock.now().date_naive()) {
            eprintln!(
                "warning: holiday calendar `{}` is valid through {}; add the new year's dates to {}",
                c.name,
                c.valid_through,
                config.quiet_hours.calendars_dir.join(format!("{}.toml", c.name)).display()
            );
        }
    }
}

pub(super) async fn render(
    config: &crate::config::Config,
    template: &str,
    locale: Option<&str>,
    channel: Channel,
    borrower: Option<&str>,
    sample: Option<&str>,
) -> ExitStatus {
    let set = match TemplateSet::load(&config.templates) {
        Ok(s) => s,
        Err(problems) => {
            for p in problems {
                eprintln!("{p}");
            }
            return ExitStatus::BadConfig;
        }
    };
    if !set.has(template, channel) {
        eprintln!(
            "duebell: no {channel} template `{template}` in {}",
            config.templates.dir.display()
        );
        return ExitStatus::Failed;
    }
    let source = crate::engine::context_source(config);
    let ctx = match borrower {
        Some(id) => match crate::engine::borrower_context(config, id, channel, locale).await {
            Ok(ctx) => ctx,
            Err(e) => {
                eprintln!("duebell: {e}");
                return ExitStatus::Failed;
            }
        },
        None => {
            let samples = match Samples::load(&config.templates.dir) {
                Ok(s) => s,
                Err(p) => {
                    eprintln!("{p}");
                    return ExitStatus::BadConfig;
                }
            };
            let chosen = match sample {
                Some(name) => samples.get(name),
                None => samples.sample.first(),
            };
            let Some(chosen) = chosen else {
                let names: Vec<&str> = samples.sample.iter().map(|s| s.name.as_str()).collect();
                eprintln!(
                    "duebell: no sample `{}`; samples are: {}",
                    sample.unwrap_or(""),
                    names.join(", ")
                );
                return ExitStatus::Failed;
            };
            let locale = locale.unwrap_or(&config.templates.default_locale);
            source.from_sample(chosen, locale, channel)
        }
    };
    match set.render(template, &ctx, &config.templates.sms_signature) {
        Ok(r) => {
            print!("{}", crate::templates::preview(&r));
            ExitStatus::Ok
        }
        Err(p) => {
            eprintln!("{p}");
            ExitStatus::Failed
        }
    }
}

pub(super) async fn plan(
    config: &crate::config::Config,
    at: Option<&str>,
    borrower: Option<&str>,
    format: PlanFormat,
) -> ExitStatus {
    let now = match at.map(crate::domain::parse_instant).transpose() {
        Ok(t) => t.unwrap_or_else(|| SystemClock.now()),
        Err(e) => {
            eprintln!("duebell: --at: {e}");
            return ExitStatus::BadConfig;
        }
    };
    let store = match open_store(&config.store).await {
        Ok(s) => s,
        Err(status) => return status,
    };
    let engine = match crate::engine::Engine::build(config, store.clone(), None) {
        Ok(e) => e,
        Err(problems) => {
            for p in problems {
                eprintln!("{p}");
            }
            return ExitStatus::BadConfig;
        }
    };
    let lines =
        match crate::planner::preview(store.as_ref(), &engine.planner(), now, borrower).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("duebell: {e}");
                return ExitStatus::Failed;
            }
        };
    store.close().await;
    if borrower.is_some() && lines.is_empty() {
        eprintln!(
            "duebell: no borrower `{}` with active loans",
            borrower.unwrap_or_default()
        );
        return ExitStatus::Failed;
    }
    match format {
        PlanFormat::Json => {
            for l in &lines {
                out!("{}", serde_json::to_string(l).unwrap_or_default());
            }
        }
        PlanFormat::Table => {
            out!(
                "{:<12} {:<10} {:<9} {:<6} {:<16} {:<21} reason",
                "loan",
                "borrower",
                "step",
                "chan",
                "decision",
                "not_before"
            );
            for l in &lines {
                out!(
                    "{:<12} {:<10} {:<9} {:<6} {:<16} {:<21} {}",
                    l.loan_id,
                    l.borrower_id,
                    l.step.as_deref().unwrap_or("-"),
                    l.channel.map_or("-", |c| c.as_str()),
                    l.decision.as_str(),
                    l.not_before.map_or("-".to_owned(), |t| t
                        .format("%Y-%m-%dT%H:%M:%SZ")
                        .to_string()),
                    match &l.offer {
                        Some(o) => format!("{}; offer: {o}", l.reason),
                        None => l.reason.to_string(),
                    }
                );
            }
        }
    }
    ExitStatus::Ok
}
