//! Building the context a template sees, from config (lender identity,
//! opt-out lines) plus a borrower's loans, or from a named sample; and the
//! template check that `duebell check` and `duebell templates check` run.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{
    BorrowerContext, LenderContext, LoanContext, MessageContext, Sample, Samples, TemplateProblem,
    TemplateSet, TemplatesConfig,
};
use crate::domain::Channel;

/// `[lender]`: who the messages come from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LenderConfig {
    pub name: String,
    pub support_phone: String,
    pub payment_link: String,
    /// Where borrowers learn about hardship plans, disputes and talking to a person.
    pub help_link: String,
    /// Per-language overrides, e.g. `[lender.localized.zh] name = "…"`.
    pub localized: BTreeMap<String, LenderOverride>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LenderOverride {
    pub name: Option<String>,
    pub support_phone: Option<String>,
    pub payment_link: Option<String>,
    pub help_link: Option<String>,
}

impl Default for LenderConfig {
    fn default() -> Self {
        LenderConfig {
            name: "Example Finance".to_owned(),
            support_phone: "+86 400 800 0000".to_owned(),
            payment_link: "https://pay.example.com/loans".to_owned(),
            help_link: "https://help.example.com/repayment-help".to_owned(),
            localized: BTreeMap::new(),
        }
    }
}

/// `[opt_out]`: the opt-out instruction per channel and language; every SMS
/// and email must carry it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptOutConfig {
    pub sms: BTreeMap<String, String>,
    pub email: BTreeMap<String, String>,
    /// Inbound SMS bodies that opt a number out (whole body, case- and
    /// width-insensitive).
    pub stop_words: Vec<String>,
    /// Inbound SMS bodies that opt a number back in.
    pub start_words: Vec<String>,
}

impl Default for OptOutConfig {
    fn default() -> Self {
        let map = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        OptOutConfig {
            sms: map(&[("zh", "回复TD退订"), ("en", "Reply STOP to opt out.")]),
            email: map(&[
                ("zh", "如不希望再收到此类邮件，请点击下方的退订链接。"),
                (
                    "en",
                    "To stop these emails, use the unsubscribe link below.",
                ),
            ]),
            stop_words: crate::compliance::default_stop_words(),
            start_words: crate::compliance::default_start_words(),
        }
    }
}

fn by_locale<'a>(map: &'a BTreeMap<String, String>, locale: &str) -> Option<&'a String> {
    let language = locale.split('-').next().unwrap_or(locale);
    map.get(locale)
        .or_else(|| map.get(language))
        .or_else(|| map.get("en"))
}

impl LenderConfig {
    pub fn for_locale(&self, locale: &str) -> LenderContext {
        let language = locale.split('-').next().unwrap_or(locale);
        let o = self
            .localized
            .get(locale)
            .or_else(|| self.localized.get(language))
            .cloned()
            .unwrap_or_default();
        LenderContext {
            name: o.name.unwrap_or_else(|| self.name.clone()),
            support_phone: o
                .support_phone
                .unwrap_or_else(|| self.support_phone.clone()),
            payment_link: o.payment_link.unwrap_or_else(|| self.payment_link.clone()),
            help_link: o.help_link.unwrap_or_else(|| self.help_link.clone()),
        }
    }
}

impl OptOutConfig {
    pub fn line(&self, channel: Channel, locale: &str) -> String {
        let map = match channel {
            Channel::Sms => &self.sms,
            Channel::Email => &self.email,
        };
        by_locale(map, locale).cloned().unwrap_or_default()
    }
}

/// Everything needed to build contexts.
#[derive(Debug, Clone, Default)]
pub struct ContextSource {
    pub lender: LenderConfig,
    pub opt_out: OptOutConfig,
}

impl ContextSource {
    #[allow(clippy::too_many_arguments)]
    pub fn build(
        &self,
        locale: &str,
        channel: Channel,
        borrower: BorrowerContext,
        loans: Vec<LoanContext>,
        step: &str,
        stage: &str,
        unsubscribe_url: String,
    ) -> MessageContext {
        let loan = loans.first().cloned().unwrap_or(LoanContext {
            id: String::new(),
            due_date: String::new(),
            amount_due: "0".to_owned(),
            currency: "CNY".to_owned(),
            days_past_due: 0,
        });
        MessageContext {
            locale: locale.to_owned(),
            channel,
            borrower,
            loans,
            loan,
            lender: self.lender.for_locale(locale),
            step: step.to_owned(),
            stage: stage.to_owned(),
            opt_out: self.opt_out.line(channel, locale),
            unsubscribe_url: if channel == Channel::Email {
                unsubscribe_url
            } else {
                String::new()
            },
            offer: None,
        }
    }

    pub fn from_sample(&self, sample: &Sample, locale: &str, channel: Channel) -> MessageContext {
        let phone = crate::domain::PhoneNumber::parse(&sample.borrower.phone)
            .map(|p| p.to_string())
            .unwrap_or_else(|_| "***".to_owned());
        self.build(
            locale,
            channel,
            BorrowerContext {
                name: sample.borrower.name.clone(),
                phone_masked: phone,
            },
            sample.loans.clone(),
            &sample.step,
            &sample.stage,
            "https://duebell.example.com/u/SAMPLE-TOKEN".to_owned(),
        )
    }
}

/// Renders every template in every locale against every sample and checks
/// required content and SMS length. `used` lists (template, channel) pairs
/// the policy needs; each must exist in the default locale.
/// What the policy asks of the templates.
#[derive(Debug, Clone, Default)]
pub struct StepUses {
    /// (template, channel, step id) for every step and channel.
    pub used: Vec<(String, Channel, String)>,
    /// Templates of steps whose stage `[tone]` checks.
    pub toned: Vec<String>,
    /// Templates of steps that make an offer, with the offer.
    pub offered: Vec<(String, crate::domain::OfferConfig)>,
}

pub fn check(
    set: &TemplateSet,
    samples: &Samples,
    cfg: &TemplatesConfig,
    source: &ContextSource,
    steps: &StepUses,
    tone: &super::ToneConfig,
) -> Vec<TemplateProblem> {
    let (used, toned, offered) = (&steps.used, &steps.toned, &steps.offered);
    let mut problems = Vec::new();
    for (template, channel, step) in used {
        if set
            .resolve_locale(template, *channel, &cfg.default_locale)
            .is_none()
        {
            let file = match channel {
                Channel::Sms => format!(
                    "{}/{}/{template}.sms.j2",
                    cfg.dir.display(),
                    cfg.default_locale
                ),
                Channel::Email => format!(
                    "{}/{}/{template}/subject.txt.j2",
                    cfg.dir.display(),
                    cfg.default_locale
                ),
            };
            problems.push(TemplateProblem {
                file,
                line: None,
                message: format!(
                    "is missing: policy step `{step}` sends template `{template}` by {channel}"
                ),
            });
        }
    }
    if let Some(sample) = samples.sample.first() {
        let shapes: Vec<serde_json::Value> = [Channel::Sms, Channel::Email]
            .into_iter()
            .map(|ch| {
                let mut ctx = source.from_sample(sample, &cfg.default_locale, ch);
                if let Some((_, offer)) = offered.first() {
                    ctx.offer = Some(sample_offer(offer, &ctx, &cfg.default_locale));
                }
                serde_json::to_value(ctx).unwrap_or_default()
            })
            .collect();
        let known = |path: &str| shapes.iter().any(|v| has_path(v, path));
        for (file, var) in set.unknown_variables(&known) {
            problems.push(TemplateProblem {
                file: cfg.dir.join(&file).display().to_string(),
                line: None,
                message: format!(
                    "uses `{var}`, which no message has (check the spelling; the variables are listed in the README's template reference)"
                ),
            });
        }
    }
    for (name, channel, locale) in set.list() {
        for sample in &samples.sample {
            let plain = source.from_sample(sample, &locale, channel);
            let mut variants = vec![(plain.clone(), sample.name.clone())];
            // A step's offer is rendered too, so its wording is checked.
            if let Some((_, offer)) = offered.iter().find(|(t, _)| *t == name) {
                let mut with = plain;
                with.offer = Some(sample_offer(offer, &with, &locale));
                variants.push((with, format!("{} with its offer", sample.name)));
            }
            for (ctx, label) in variants {
                let rendered = match set.render(&name, &ctx, &cfg.sms_signature) {
                    Ok(r) => r,
                    Err(mut p) => {
                        p.file = cfg.dir.join(&p.file).display().to_string();
                        p.message = format!("{} (sample `{}`)", p.message, label);
                        problems.push(p);
                        continue;
                    }
                };
                let file = match channel {
                    Channel::Sms => cfg.dir.join(format!("{locale}/{name}.sms.j2")),
                    Channel::Email => cfg.dir.join(format!("{locale}/{name}/")),
                }
                .display()
                .to_string();
                let texts: Vec<&str> = match &rendered.content {
                    super::Content::Sms { body, .. } => vec![body],
                    super::Content::Email { text, html, .. } => vec![text, html],
                };
                if toned.contains(&name) {
                    let mut all = texts.clone();
                    if let super::Content::Email { subject, .. } = &rendered.content {
                        all.push(subject);
                    }
                    if let Some(phrase) = tone.find(&locale, &all) {
                        let (file, line) = locate_phrase(&cfg.dir, &locale, &name, channel, phrase)
                            .unwrap_or((file.clone(), None));
                        problems.push(TemplateProblem {
                            file,
                            line,
                            message: format!(
                                "renders the forbidden phrase `{phrase}` (sample `{}`); a firm or formal step never threatens, shames or mentions family, employer or contacts ([tone] forbidden)",
                                label
                            ),
                        });
                    }
                }
                for marker in &cfg.required {
                    let needle = match marker.as_str() {
                        "lender_name" => ctx.lender.name.clone(),
                        "opt_out" => ctx.opt_out.clone(),
                        "support_phone" => ctx.lender.support_phone.clone(),
                        "payment_link" => ctx.lender.payment_link.clone(),
                        _ => continue,
                    };
                    if needle.is_empty() {
                        continue;
                    }
                    if texts
                        .iter()
                        .any(|t| !t.contains(&needle) && !t.contains(&html_escape(&needle)))
                    {
                        problems.push(TemplateProblem {
                            file: file.clone(),
                            line: None,
                            message: format!(
                                "does not include the required {marker} (`{needle}`) (sample `{}`)",
                                label
                            ),
                        });
                    }
                }
                if let Some(segments) = rendered.content.segments() {
                    if segments > cfg.sms_max_segments {
                        problems.push(TemplateProblem {
                            file: file.clone(),
                            line: None,
                            message: format!(
                                "renders to {segments} SMS parts with sample `{}`; the limit is {} (templates.sms_max_segments)",
                                label, cfg.sms_max_segments
                            ),
                        });
                    }
                }
            }
        }
    }
    problems.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
    problems.dedup();
    problems
}

/// A step's offer as a sample borrower would read it, made at a fixed
/// instant (2026-12-04 10:00 Shanghai) so checks repeat.
fn sample_offer(
    offer: &crate::domain::OfferConfig,
    ctx: &super::MessageContext,
    locale: &str,
) -> super::OfferContext {
    let due = ctx.loan.amount_due.parse().unwrap_or_default();
    let made = chrono::DateTime::parse_from_rfc3339("2026-12-04T02:00:00Z")
        .map(|t| t.with_timezone(&chrono::Utc))
        .unwrap_or_default();
    let terms = offer.for_loan(due, &ctx.loan.currency, made);
    super::OfferContext::new(&terms, chrono_tz::Asia::Shanghai, locale)
}

/// The template file and line where a forbidden phrase is written, when it
/// is written literally (it may also come from a variable).
fn locate_phrase(
    dir: &std::path::Path,
    locale: &str,
    name: &str,
    channel: Channel,
    phrase: &str,
) -> Option<(String, Option<usize>)> {
    let files: Vec<std::path::PathBuf> = match channel {
        Channel::Sms => vec![dir.join(format!("{locale}/{name}.sms.j2"))],
        Channel::Email => ["subject.txt.j2", "body.txt.j2", "body.html.j2"]
            .iter()
            .map(|f| dir.join(format!("{locale}/{name}/{f}")))
            .collect(),
    };
    let needle = phrase.to_lowercase();
    files.into_iter().find_map(|f| {
        let text = std::fs::read_to_string(&f).ok()?;
        let line = text
            .lines()
            .position(|l| l.to_lowercase().contains(&needle))?;
        Some((f.display().to_string(), Some(line + 1)))
    })
}

/// Whether a dotted variable path exists in a context's shape. Past a
/// value that is not a map (a list, a string) anything goes: the rest is an
/// index, an attribute or a method minijinja checks at render time.
fn has_path(value: &serde_json::Value, path: &str) -> bool {
    let mut v = value;
    for seg in path.split('.') {
        match v {
            serde_json::Value::Object(m) => match m.get(seg) {
                Some(next) => v = next,
                None => return false,
            },
            _ => return true,
        }
    }
    true
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#x27;")
}

/// Rules on the template sources themselves: SMS templates must not carry
/// the 【signature】, which the platform adds.
pub fn lint_sources(cfg: &TemplatesConfig) -> Vec<TemplateProblem> {
    let mut problems = Vec::new();
    let Ok(locales) = std::fs::read_dir(&cfg.dir) else {
        return problems;
    };
    for locale in locales.flatten() {
        let Ok(files) = std::fs::read_dir(locale.path()) else {
            continue;
        };
        for f in files.flatten() {
            let path = f.path();
            if !path.to_string_lossy().ends_with(".sms.j2") {
                continue;
            }
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            for (i, line) in text.lines().enumerate() {
                if line.contains('【') || line.contains('】') {
                    problems.push(TemplateProblem {
                        file: path.display().to_string(),
                        line: Some(i + 1),
                        message: "contains 【】: the SMS platform adds the signature itself (set templates.sms_signature to count it)".to_owned(),
                    });
                }
            }
        }
    }
    problems
}
