//! Message templates that collections staff edit: minijinja in strict mode
//! (an undefined variable is an error, never a blank), laid out as
//!
//! - SMS: `templates/<locale>/<name>.sms.j2`
//! - email: `templates/<locale>/<name>/{subject.txt.j2, body.txt.j2, body.html.j2}`
//! - shared layouts and partials: any other `*.j2` (by convention `_*.j2` or
//!   under `templates/_shared/`), used with `{% extends %}` / `{% include %}`
//! - provider templates: `templates/<locale>/<name>.sms.toml` (see `ProviderTemplates`)
//! - sample contexts for `check` and `render`: `templates/samples.toml`
//!
//! A `TemplateSet` is loaded whole and immutable; reloading builds a new set
//! and swaps it in only if it loads, so a broken edit never replaces the last
//! good set.

pub mod context;
pub mod filters;
mod provider;
pub mod sms;
pub mod tone;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use minijinja::{Environment, UndefinedBehavior};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::domain::Channel;
use sms::SmsCount;

/// Instructions one render may execute. The shipped templates take a few
/// hundred; a runaway loop stops here within milliseconds instead of pinning
/// a core, in `check`, in previews, on reload and at send time alike.
pub const RENDER_FUEL: u64 = 200_000;

/// Bytes one rendered part (an SMS, a subject, a text or HTML body) may
/// have. Mail servers refuse far less than this; a template that renders
/// more is a bug, refused like any other.
pub const MAX_RENDERED_BYTES: usize = 256 * 1024;

/// `[templates]` config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TemplatesConfig {
    /// The templates folder.
    pub dir: PathBuf,
    /// Locale used when neither the borrower's locale nor its language has
    /// the template.
    pub default_locale: String,
    /// Most SMS parts a rendered text may take (checked by `duebell check`).
    pub sms_max_segments: usize,
    /// The 【signature】 mainland-China platforms prepend; counted in SMS
    /// length when set.
    pub sms_signature: String,
    /// What every rendered SMS and email must contain: `lender_name`,
    /// `opt_out`, `support_phone`, `payment_link`.
    pub required: Vec<String>,
    /// How often the folder is checked for edits (SIGHUP reloads at once).
    pub reload_interval: crate::domain::ConfigDuration,
}

impl Default for TemplatesConfig {
    fn default() -> Self {
        TemplatesConfig {
            dir: PathBuf::from("templates"),
            default_locale: "en".to_owned(),
            sms_max_segments: 3,
            sms_signature: String::new(),
            required: vec!["lender_name".to_owned(), "opt_out".to_owned()],
            reload_interval: crate::domain::ConfigDuration(std::time::Duration::from_secs(5)),
        }
    }
}

pub const MARKERS: &[&str] = &["lender_name", "opt_out", "support_phone", "payment_link"];

/// A problem in a template file: `FILE:LINE: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateProblem {
    pub file: String,
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for TemplateProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "{}:{}: {}", self.file, l, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

/// The variables a template sees.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MessageContext {
    pub locale: String,
    pub channel: Channel,
    pub borrower: BorrowerContext,
    /// Every loan this message is about (several when consolidated).
    pub loans: Vec<LoanContext>,
    /// The first (most overdue) loan, for single-loan wording.
    pub loan: LoanContext,
    pub lender: LenderContext,
    pub step: String,
    pub stage: String,
    /// The opt-out instruction for this channel and locale.
    pub opt_out: String,
    /// Email only: the one-click unsubscribe link (empty for SMS).
    pub unsubscribe_url: String,
    /// The repayment offer this message makes, if its step carries one
    /// that is still open (`{% if offer %}`).
    pub offer: Option<OfferContext>,
}

/// `offer.*`: the terms as the borrower reads them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OfferContext {
    /// `fee_waiver`, `discount` or `payment_plan`.
    pub kind: String,
    /// The fee waived or the discount (decimal text; `| money(offer.currency)`);
    /// empty for a payment plan.
    pub amount: String,
    /// The discount's percentage, when given as one; else empty.
    pub percent: String,
    /// The least payment that takes the offer (decimal text).
    pub min_payment: String,
    pub currency: String,
    /// The deadline in the borrower's local time, formatted for the locale
    /// (`12月6日 10:00`, `Dec 6, 10:00`).
    pub expires_at: String,
    /// The deadline as an RFC 3339 UTC instant.
    pub expires_at_utc: String,
}

impl OfferContext {
    pub fn new(terms: &crate::domain::OfferTerms, tz: chrono_tz::Tz, locale: &str) -> Self {
        let local = terms.expires_at.with_timezone(&tz);
        let day = filters::format_short_date(local.date_naive(), locale);
        OfferContext {
            kind: terms.kind.as_str().to_owned(),
            amount: terms.amount.map(|a| a.to_string()).unwrap_or_default(),
            percent: terms.percent.map(|p| p.to_string()).unwrap_or_default(),
            min_payment: terms.min_payment.to_string(),
            currency: terms.currency.clone(),
            expires_at: format!("{day} {}", local.format("%H:%M")),
            expires_at_utc: terms.expires_at.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BorrowerContext {
    pub name: String,
    /// `+86138****5678`: never the full number in a message body.
    pub phone_masked: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoanContext {
    pub id: String,
    /// ISO date; format with `| date`.
    pub due_date: String,
    /// Exact decimal text; format with `| money(loan.currency)`.
    pub amount_due: String,
    pub currency: String,
    /// Negative before the due date.
    pub days_past_due: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LenderContext {
    pub name: String,
    pub support_phone: String,
    pub payment_link: String,
    pub help_link: String,
}

/// What a template produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "channel", rename_all = "snake_case")]
pub enum Content {
    Sms {
        body: String,
        count: SmsCount,
        china_count: Option<SmsCount>,
    },
    Email {
        subject: String,
        text: String,
        html: String,
    },
}

impl Content {
    pub fn segments(&self) -> Option<usize> {
        match self {
            Content::Sms {
                count, china_count, ..
            } => Some(china_count.map_or(count.segments, |c| c.segments.max(count.segments))),
            Content::Email { .. } => None,
        }
    }
    pub fn body(&self) -> &str {
        match self {
            Content::Sms { body, .. } => body,
            Content::Email { text, .. } => text,
        }
    }
    pub fn subject(&self) -> Option<&str> {
        match self {
            Content::Sms { .. } => None,
            Content::Email { subject, .. } => Some(subject),
        }
    }
}

/// A rendered message with what produced it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rendered {
    pub template: String,
    pub locale: String,
    /// Content hash of the template's files and the set's partials.
    pub version: String,
    pub content: Content,
    /// Parameters for providers that send pre-approved templates.
    pub provider: ProviderParams,
}

pub use crate::domain::ProviderParams;
pub use provider::{AliyunTemplate, ProviderTemplates, TencentTemplate};
pub use tone::ToneConfig;

#[derive(Debug, Clone)]
struct Entry {
    /// Template names in the environment (one for SMS, three for email).
    files: Vec<String>,
    version: String,
    provider: ProviderTemplates,
}

/// A loaded, immutable set of templates.
pub struct TemplateSet {
    env: Environment<'static>,
    /// (locale, name, channel) → entry.
    entries: HashMap<(String, String, Channel), Entry>,
    /// Hash of every file: changes on any edit.
    pub version: String,
    default_locale: String,
}

impl fmt::Debug for TemplateSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TemplateSet")
            .field("version", &self.version)
            .field("templates", &self.entries.len())
            .finish()
    }
}

/// Hex SHA-256 over files in name order: the set's (or a template's) version.
fn hash_files<'a>(files: impl Iterator<Item = (&'a String, &'a String)>) -> String {
    let mut h = Sha256::new();
    for (name, text) in files {
        h.update(name.as_bytes());
        h.update([0]);
        h.update(text.as_bytes());
        h.update([0]);
    }
    hex::encode(&h.finalize()[..8])
}

/// Reads every file under `dir` (relative names with `/`).
pub fn read_tree(dir: &Path) -> Result<BTreeMap<String, String>, TemplateProblem> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).map_err(|e| TemplateProblem {
            file: d.display().to_string(),
            line: None,
            message: format!("cannot read the templates folder: {e}"),
        })?;
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(rel) = path.strip_prefix(dir) {
                let name = rel.to_string_lossy().replace('\\', "/");
                let text = std::fs::read_to_string(&path).map_err(|e| TemplateProblem {
                    file: path.display().to_string(),
                    line: None,
                    message: format!("cannot read: {e} (templates must be UTF-8)"),
                })?;
                out.insert(name, text);
            }
        }
    }
    Ok(out)
}

/// The content hash of the templates folder, to notice edits cheaply.
pub fn folder_version(dir: &Path) -> Option<String> {
    read_tree(dir).ok().map(|files| hash_files(files.iter()))
}

impl TemplateSet {
    /// Loads and compiles every template under `cfg.dir`. Syntax errors are
    /// reported per file and line; the set is refused if there are any.
    pub fn load(cfg: &TemplatesConfig) -> Result<TemplateSet, Vec<TemplateProblem>> {
        let dir = &cfg.dir;
        let files = read_tree(dir).map_err(|p| vec![p])?;
        let shown = |name: &str| dir.join(name).display().to_string();
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_fuel(Some(RENDER_FUEL));
        env.add_filter("money", filters::money);
        env.add_filter("date", filters::date);
        env.add_filter("days", filters::days);
        let mut problems = Vec::new();
        for (name, text) in &files {
            if name.ends_with(".j2") {
                if let Err(e) = env.add_template_owned(name.clone(), text.clone()) {
                    problems.push(TemplateProblem {
                        file: shown(name),
                        line: e.line(),
                        message: error_message(&e),
                    });
                }
            }
        }
        let partials: Vec<(&String, &String)> = files
            .iter()
            .filter(|(n, _)| n.ends_with(".j2") && (n.contains("/_") || n.starts_with('_')))
            .collect();
        let version_of = |own: &[&String]| {
            let mut parts: Vec<(&String, &String)> =
                own.iter().filter_map(|n| files.get_key_value(*n)).collect();
            parts.extend(partials.iter().copied());
            hash_files(parts.into_iter())
        };
        let mut entries = HashMap::new();
        for name in files.keys() {
            let parts: Vec<&str> = name.split('/').collect();
            match parts.as_slice() {
                [locale, file] if file.ends_with(".sms.j2") && !file.starts_with('_') => {
                    let tname = file.trim_end_matches(".sms.j2").to_owned();
                    let sidecar = format!("{locale}/{tname}.sms.toml");
                    let provider = match files.get(&sidecar) {
                        Some(text) => match toml::from_str::<ProviderTemplates>(text) {
                            Ok(p) => p,
                            Err(e) => {
                                let line =
                                    e.span().map(|s| text[..s.start].matches('\n').count() + 1);
                                problems.push(TemplateProblem {
                                    file: shown(&sidecar),
                                    line,
                                    message: e.message().trim().to_owned(),
                                });
                                ProviderTemplates::default()
                            }
                        },
                        None => ProviderTemplates::default(),
                    };
                    let own = [name, &sidecar];
                    entries.insert(
                        (locale.to_string(), tname, Channel::Sms),
                        Entry {
                            files: vec![name.clone()],
                            version: version_of(&own),
                            provider,
                        },
                    );
                }
                [locale, tname, "subject.txt.j2"] => {
                    let body_txt = format!("{locale}/{tname}/body.txt.j2");
                    let body_html = format!("{locale}/{tname}/body.html.j2");
                    for needed in [&body_txt, &body_html] {
                        if !files.contains_key(needed) {
                            problems.push(TemplateProblem {
                                file: shown(needed),
                                line: None,
                                message: "is missing: an email template needs subject.txt.j2, body.txt.j2 and body.html.j2".to_owned(),
                            });
                        }
                    }
                    let own = [name, &body_txt, &body_html];
                    entries.insert(
                        (locale.to_string(), tname.to_string(), Channel::Email),
                        Entry {
                            files: vec![name.clone(), body_txt.clone(), body_html.clone()],
                            version: version_of(&own),
                            provider: ProviderTemplates::default(),
                        },
                    );
                }
                _ => {}
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(TemplateSet {
            env,
            entries,
            version: hash_files(files.iter()),
            default_locale: cfg.default_locale.clone(),
        })
    }

    /// The locale whose template will be used: exact, then language, then
    /// the default.
    pub fn resolve_locale(&self, name: &str, channel: Channel, locale: &str) -> Option<String> {
        let has = |l: &str| {
            self.entries
                .contains_key(&(l.to_owned(), name.to_owned(), channel))
        };
        let language = locale.split('-').next().unwrap_or(locale);
        [locale, language, self.default_locale.as_str()]
            .into_iter()
            .find(|l| has(l))
            .map(str::to_owned)
    }

    /// Every (name, channel, locale) in the set, sorted.
    pub fn list(&self) -> Vec<(String, Channel, String)> {
        let mut v: Vec<_> = self
            .entries
            .keys()
            .map(|(l, n, c)| (n.clone(), *c, l.clone()))
            .collect();
        v.sort();
        v
    }

    /// Every variable each template file names that the context may not
    /// have, in every branch (not only those the samples reach): the names
    /// minijinja finds undeclared, less those `known` says exist.
    pub fn unknown_variables(&self, known: &dyn Fn(&str) -> bool) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (name, t) in self.env.templates() {
            let mut names: Vec<String> = t
                .undeclared_variables(true)
                .into_iter()
                .filter(|v| {
                    self.env
                        .globals()
                        .all(|(g, _)| g != v.split('.').next().unwrap_or(v))
                })
                .filter(|v| !known(v))
                .collect();
            names.sort();
            out.extend(names.into_iter().map(|v| (name.to_owned(), v)));
        }
        out.sort();
        out
    }

    /// The provider templates of SMS template `name`, by locale.
    pub fn provider_templates(&self, name: &str) -> Vec<(&str, &ProviderTemplates)> {
        let mut out: Vec<(&str, &ProviderTemplates)> = self
            .entries
            .iter()
            .filter(|((_, n, c), _)| n == name && *c == Channel::Sms)
            .map(|((l, _, _), e)| (l.as_str(), &e.provider))
            .collect();
        out.sort_by_key(|(l, _)| *l);
        out
    }

    /// The version a message rendered from this template records.
    pub fn version_of(&self, locale: &str, name: &str, channel: Channel) -> Option<&str> {
        self.entries
            .get(&(locale.to_owned(), name.to_owned(), channel))
            .map(|e| e.version.as_str())
    }

    pub fn has(&self, name: &str, channel: Channel) -> bool {
        self.entries
            .keys()
            .any(|(_, n, c)| n == name && *c == channel)
    }

    /// Renders `name` for `ctx.channel` in the best locale for `ctx.locale`.
    pub fn render(
        &self,
        name: &str,
        ctx: &MessageContext,
        sms_signature: &str,
    ) -> Result<Rendered, TemplateProblem> {
        let channel = ctx.channel;
        let locale = self
            .resolve_locale(name, channel, &ctx.locale)
            .ok_or_else(|| TemplateProblem {
                file: format!("{name} ({channel})"),
                line: None,
                message: format!(
                    "no template for locale {} or the default {}",
                    ctx.locale, self.default_locale
                ),
            })?;
        let entry = &self.entries[&(locale.clone(), name.to_owned(), channel)];
        let mut ctx = ctx.clone();
        ctx.locale = locale.clone();
        let render = |file: &str| -> Result<String, TemplateProblem> {
            let t = self.env.get_template(file).map_err(|e| problem(file, &e))?;
            let mut out = Capped(Vec::new());
            match t.render_captured_to(&ctx, &mut out) {
                Ok(_) => Ok(String::from_utf8_lossy(&out.0).into_owned()),
                Err(e) if e.kind() == minijinja::ErrorKind::WriteFailure => Err(TemplateProblem {
                    file: file.to_owned(),
                    line: None,
                    message: format!(
                        "renders more than {} KiB; a message part may not be that long",
                        MAX_RENDERED_BYTES / 1024
                    ),
                }),
                Err(e) => Err(problem(file, &e)),
            }
        };
        let content = match channel {
            Channel::Sms => {
                let body = render(&entry.files[0])?.trim().to_owned();
                let count = sms::count(&body);
                // Mainland-China billing applies to mainland numbers only.
                let china =
                    !sms_signature.is_empty() && ctx.borrower.phone_masked.starts_with("+86");
                let china_count = china.then(|| sms::count_china(sms_signature, &body));
                Content::Sms {
                    body,
                    count,
                    china_count,
                }
            }
            Channel::Email => Content::Email {
                subject: render(&entry.files[0])?.trim().replace(['\r', '\n'], " "),
                text: render(&entry.files[1])?.trim().to_owned() + "\n",
                html: render(&entry.files[2])?,
            },
        };
        let provider = self.provider_params(&entry.provider, &ctx, &entry.files[0])?;
        Ok(Rendered {
            template: name.to_owned(),
            locale,
            version: entry.version.clone(),
            content,
            provider,
        })
    }
}

/// A writer that refuses to grow past `MAX_RENDERED_BYTES`.
struct Capped(Vec<u8>);

impl std::io::Write for Capped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.0.len() + buf.len() > MAX_RENDERED_BYTES {
            return Err(std::io::Error::other("rendered output too long"));
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn error_message(e: &minijinja::Error) -> String {
    if e.kind() == minijinja::ErrorKind::OutOfFuel {
        return format!(
            "stops after {RENDER_FUEL} steps: a loop runs too long (templates may not compute, only lay out)"
        );
    }
    match e.detail() {
        Some(d) => format!("{}: {d}", e.kind()),
        None => e.kind().to_string(),
    }
}

fn problem(file: &str, e: &minijinja::Error) -> TemplateProblem {
    // Errors raised inside an included or extended template name that file.
    let file = e.name().unwrap_or(file).to_owned();
    TemplateProblem {
        file,
        line: e.line(),
        message: error_message(e),
    }
}

/// `templates/samples.toml`: named sample contexts.
mod samples;
pub use samples::{preview, Sample, SampleBorrower, Samples};
