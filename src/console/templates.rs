//! `/v1/templates`: browse, preview a draft with the real renderer and
//! every check `duebell templates check` makes, publish (a new version in
//! the change log, the files written atomically, the daemon reloaded),
//! list versions with diffs, roll back.
//!
//! A template is addressed as `{locale}/{name}/{channel}`; its files are
//! `{locale}/{name}.sms.j2` (and the `.sms.toml` sidecar, when there is
//! one) or `{locale}/{name}/subject.txt.j2`, `body.txt.j2`, `body.html.j2`.

use std::collections::BTreeMap;
use std::path::Path;

use axum::extract::{Path as UrlPath, State};
use axum::routing::{get, post, put};
use axum::{Extension, Json};
use serde::Deserialize;

use super::{conflict, digest, ConsoleState};
use crate::api::access::{Need, Principal};
use crate::api::routes::Route;
use crate::api::ApiError;
use crate::config::Config;
use crate::domain::Channel;
use crate::templates::{Samples, TemplateProblem, TemplateSet};

pub(super) fn routes() -> Vec<Route<ConsoleState>> {
    vec![
        (
            "get",
            "/v1/templates",
            "Every template by locale and channel, with its version",
            Need::Read,
            get(list),
        ),
        (
            "get",
            "/v1/templates/{locale}/{name}/{channel}",
            "A template's files, their base (for a later publish) and versions",
            Need::Read,
            get(show),
        ),
        (
            "post",
            "/v1/templates/{locale}/{name}/{channel}/preview",
            "Render a draft against a sample or a borrower (masked), with every check's problems",
            Need::Read,
            post(preview),
        ),
        (
            "put",
            "/v1/templates/{locale}/{name}/{channel}",
            "Publish a new version (refused if any check fails, or the files changed since `base`)",
            Need::Edit,
            put(publish),
        ),
        (
            "post",
            "/v1/templates/{locale}/{name}/{channel}/rollback",
            "Publish an earlier version again",
            Need::Edit,
            post(rollback),
        ),
    ]
}

/// The files of one template, relative to the templates folder, in order.
fn files_of(
    locale: &str,
    name: &str,
    channel: Channel,
    on_disk: &BTreeMap<String, String>,
) -> Vec<String> {
    match channel {
        Channel::Sms => {
            let mut v = vec![format!("{locale}/{name}.sms.j2")];
            let sidecar = format!("{locale}/{name}.sms.toml");
            if on_disk.contains_key(&sidecar) {
                v.push(sidecar);
            }
            v
        }
        Channel::Email => ["subject.txt.j2", "body.txt.j2", "body.html.j2"]
            .iter()
            .map(|f| format!("{locale}/{name}/{f}"))
            .collect(),
    }
}

fn parse_channel(s: &str) -> Result<Channel, ApiError> {
    match s {
        "sms" => Ok(Channel::Sms),
        "email" => Ok(Channel::Email),
        _ => Err(ApiError::bad("channel", "is `sms` or `email`")),
    }
}

fn check_segment(field: &str, s: &str) -> Result<(), ApiError> {
    let ok = !s.is_empty()
        && !s.starts_with('_')
        && !s.starts_with('.')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad(
            field,
            format!("`{s}` is not a template {field}"),
        ))
    }
}

/// A template as addressed in a URL, checked against the folder.
struct Addr {
    locale: String,
    name: String,
    channel: Channel,
    subject: String,
}

impl Addr {
    fn parse(locale: String, name: String, channel: &str) -> Result<Addr, ApiError> {
        check_segment("locale", &locale)?;
        check_segment("name", &name)?;
        let channel = parse_channel(channel)?;
        let subject = format!("{locale}/{name}/{channel}");
        Ok(Addr {
            locale,
            name,
            channel,
            subject,
        })
    }

    /// Its files as they are on disk now (absent ones empty), and their base.
    fn current(&self, dir: &Path) -> Result<(BTreeMap<String, String>, String), ApiError> {
        let tree =
            crate::templates::read_tree(dir).map_err(|p| ApiError::internal(p.to_string()))?;
        let files: BTreeMap<String, String> =
            files_of(&self.locale, &self.name, self.channel, &tree)
                .into_iter()
                .map(|f| {
                    let text = tree.get(&f).cloned().unwrap_or_default();
                    (f, text)
                })
                .collect();
        if files.values().all(String::is_empty) {
            return Err(ApiError::not_found(format!(
                "no {} template `{}` in locale {}",
                self.channel, self.name, self.locale
            )));
        }
        let base = base_of(&files);
        Ok((files, base))
    }
}

fn base_of(files: &BTreeMap<String, String>) -> String {
    digest(&serde_json::to_string(files).unwrap_or_default())
}

async fn list(State(s): State<ConsoleState>) -> Result<Json<serde_json::Value>, ApiError> {
    let config = s.config();
    let set = TemplateSet::load(&config.templates).ok();
    let tree = crate::templates::read_tree(&config.templates.dir)
        .map_err(|p| ApiError::internal(p.to_string()))?;
    let mut out = Vec::new();
    for file in tree.keys() {
        let parts: Vec<&str> = file.split('/').collect();
        let (locale, name, channel) = match parts.as_slice() {
            [l, f] if f.ends_with(".sms.j2") && !f.starts_with('_') => {
                (*l, f.trim_end_matches(".sms.j2"), Channel::Sms)
            }
            [l, n, "subject.txt.j2"] => (*l, *n, Channel::Email),
            _ => continue,
        };
        let version = set
            .as_ref()
            .and_then(|s| s.version_of(locale, name, channel))
            .map(str::to_owned);
        out.push(serde_json::json!({
            "locale": locale, "name": name, "channel": channel, "version": version,
        }));
    }
    Ok(Json(
        serde_json::json!({ "templates": out, "dir": config.templates.dir }),
    ))
}

async fn show(
    State(s): State<ConsoleState>,
    Extension(who): Extension<Principal>,
    UrlPath((locale, name, channel)): UrlPath<(String, String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let a = Addr::parse(locale, name, &channel)?;
    let config = s.config();
    let (files, base) = a.current(&config.templates.dir)?;
    seed(&s, &who, &a, &files, &config).await?;
    let versions = versions(&s, &a).await?;
    let samples = Samples::load(&config.templates.dir)
        .map(|x| x.sample.iter().map(|s| s.name.clone()).collect::<Vec<_>>())
        .unwrap_or_default();
    Ok(Json(serde_json::json!({
        "locale": a.locale, "name": a.name, "channel": a.channel,
        "files": files, "base": base, "versions": versions, "samples": samples,
    })))
}

/// The template's versions, newest first, each with its diff from the
/// one before.
async fn versions(s: &ConsoleState, a: &Addr) -> Result<Vec<serde_json::Value>, ApiError> {
    let changes = s.api.store.db().changes_of("template", &a.subject).await?;
    let empty = BTreeMap::new();
    let mut out = Vec::new();
    for (i, c) in changes.iter().enumerate() {
        let after = stored_files(c.after.as_deref());
        let before = changes.get(i + 1).map(|p| stored_files(p.after.as_deref()));
        let before = before.as_ref().unwrap_or(&empty);
        let mut diff = Vec::new();
        for (f, text) in &after {
            let old = before.get(f).map_or("", String::as_str);
            if old != text {
                diff.push(serde_json::json!({ "file": f, "lines": super::diff::lines(old, text) }));
            }
        }
        out.push(serde_json::json!({
            "id": c.id, "at": c.at, "actor": c.actor, "summary": c.summary,
            "template_version": stored_version(c.after.as_deref()),
            "diff": diff,
        }));
    }
    Ok(out)
}

fn stored(after: Option<&str>) -> serde_json::Value {
    after
        .and_then(|a| serde_json::from_str(a).ok())
        .unwrap_or_default()
}

fn stored_files(after: Option<&str>) -> BTreeMap<String, String> {
    serde_json::from_value(stored(after)["files"].clone()).unwrap_or_default()
}

fn stored_version(after: Option<&str>) -> Option<String> {
    stored(after)["version"].as_str().map(str::to_owned)
}

/// Records the files on disk as a version when the log does not end with
/// them: the first time the console sees a template, or after an edit made
/// on disk, so history never loses a version and a publish never hides one.
async fn seed(
    s: &ConsoleState,
    who: &Principal,
    a: &Addr,
    files: &BTreeMap<String, String>,
    config: &Config,
) -> Result<(), ApiError> {
    let db = s.api.store.db();
    let last = db.changes_of("template", &a.subject).await?;
    let known = last.first().map(|c| stored_files(c.after.as_deref()));
    if known.as_ref() == Some(files) {
        return Ok(());
    }
    let version = TemplateSet::load(&config.templates).ok().and_then(|set| {
        set.version_of(&a.locale, &a.name, a.channel)
            .map(str::to_owned)
    });
    let summary = if known.is_none() {
        "the files as first seen by the console"
    } else {
        "edited on disk, outside the console"
    };
    let files_actor = crate::api::access::Principal {
        name: format!("files (seen by {})", who.name),
        ..who.clone()
    };
    s.record(
        &files_actor,
        "template",
        &a.subject,
        known.map(|k| serde_json::json!({ "files": k }).to_string()),
        Some(serde_json::json!({ "files": files, "version": version }).to_string()),
        summary.to_owned(),
    )
    .await?;
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Draft {
    /// File name (relative to the templates folder) → text.
    files: BTreeMap<String, String>,
    #[serde(default)]
    sample: Option<String>,
    #[serde(default)]
    borrower: Option<String>,
}

/// The templates folder with `files` laid over it, in a scratch folder,
/// loaded with every check of `duebell templates check`.
struct Checked {
    problems: Vec<TemplateProblem>,
    set: Option<TemplateSet>,
    scratch: tempfile::TempDir,
    config: Config,
}

fn check_draft(
    config: &Config,
    a: &Addr,
    files: &BTreeMap<String, String>,
) -> Result<Checked, ApiError> {
    let tree = crate::templates::read_tree(&config.templates.dir)
        .map_err(|p| ApiError::internal(p.to_string()))?;
    let allowed = files_of(&a.locale, &a.name, a.channel, &tree);
    let sidecar = format!("{}/{}.sms.toml", a.locale, a.name);
    for f in files.keys() {
        let sidecar_of_sms = a.channel == Channel::Sms && *f == sidecar;
        if !(allowed.contains(f) || sidecar_of_sms) {
            return Err(ApiError::bad(
                "files",
                format!(
                    "`{f}` is not a file of this template; its files are {}",
                    allowed.join(", ")
                ),
            ));
        }
    }
    let scratch = tempfile::tempdir().map_err(ApiError::internal)?;
    for (name, text) in tree.iter().chain(files.iter()) {
        let path = scratch.path().join(name);
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d).map_err(ApiError::internal)?;
        }
        std::fs::write(&path, text).map_err(ApiError::internal)?;
    }
    let mut draft = config.clone();
    draft.templates.dir = scratch.path().to_owned();
    let prefix = format!("{}/", scratch.path().display());
    let (problems, set) = match crate::engine::load_templates(&draft) {
        Ok(set) => (Vec::new(), Some(set)),
        Err(mut p) => {
            for x in &mut p {
                x.file = x.file.replace(&prefix, "");
            }
            (p, TemplateSet::load(&draft.templates).ok())
        }
    };
    Ok(Checked {
        problems,
        set,
        scratch,
        config: draft,
    })
}

fn problems_json(p: &[TemplateProblem]) -> serde_json::Value {
    p.iter()
        .map(|p| serde_json::json!({ "file": p.file, "line": p.line, "message": p.message }))
        .collect()
}

async fn preview(
    State(s): State<ConsoleState>,
    UrlPath((locale, name, channel)): UrlPath<(String, String, String)>,
    Json(d): Json<Draft>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let a = Addr::parse(locale, name, &channel)?;
    let config = s.config();
    let checked = check_draft(&config, &a, &d.files)?;
    let mut rendered = serde_json::Value::Null;
    let mut render_error = None;
    if let Some(set) = &checked.set {
        let ctx = match &d.borrower {
            Some(id) => {
                let mut ctx = crate::engine::borrower_context_in(
                    &checked.config,
                    s.api.store.as_ref(),
                    id,
                    a.channel,
                    Some(&a.locale),
                    s.now(),
                )
                .await
                .map_err(|e| ApiError::bad("borrower", e.to_string()))?;
                ctx.borrower.name = mask_name(&ctx.borrower.name);
                ctx
            }
            None => {
                let samples = Samples::load(checked.scratch.path())
                    .map_err(|p| ApiError::bad("sample", p.to_string()))?;
                let chosen = match &d.sample {
                    Some(n) => samples.get(n),
                    None => samples.sample.first(),
                }
                .ok_or_else(|| {
                    ApiError::bad("sample", "no such sample in templates/samples.toml")
                })?;
                crate::engine::context_source(&checked.config)
                    .from_sample(chosen, &a.locale, a.channel)
            }
        };
        match set.render(&a.name, &ctx, &config.templates.sms_signature) {
            Ok(r) => {
                rendered = serde_json::json!({
                    "content": r.content, "segments": r.content.segments(),
                    "locale": r.locale, "version": r.version,
                })
            }
            Err(p) => {
                render_error = Some(
                    p.to_string()
                        .replace(&format!("{}/", checked.scratch.path().display()), ""),
                )
            }
        }
    }
    Ok(Json(serde_json::json!({
        "problems": problems_json(&checked.problems),
        "rendered": rendered,
        "render_error": render_error,
    })))
}

/// `Wang Xiaoming` → `W*** X*******`; each word keeps its first letter.
fn mask_name(name: &str) -> String {
    name.split(' ')
        .map(|w| {
            let mut c = w.chars();
            match c.next() {
                Some(first) => std::iter::once(first).chain(c.map(|_| '*')).collect(),
                None => String::new(),
            }
        })
        .collect::<Vec<String>>()
        .join(" ")
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Publish {
    files: BTreeMap<String, String>,
    /// The `base` the editor was loaded with.
    base: String,
    #[serde(default)]
    note: Option<String>,
}

async fn publish(
    State(s): State<ConsoleState>,
    Extension(who): Extension<Principal>,
    UrlPath((locale, name, channel)): UrlPath<(String, String, String)>,
    Json(p): Json<Publish>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let a = Addr::parse(locale, name, &channel)?;
    let summary = p
        .note
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| "published".to_owned());
    apply(&s, &who, &a, p.files, &p.base, summary)
        .await
        .map(Json)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Rollback {
    /// The version (change id) to publish again.
    version: i64,
    base: String,
}

async fn rollback(
    State(s): State<ConsoleState>,
    Extension(who): Extension<Principal>,
    UrlPath((locale, name, channel)): UrlPath<(String, String, String)>,
    Json(r): Json<Rollback>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let a = Addr::parse(locale, name, &channel)?;
    let change = s
        .api
        .store
        .db()
        .change(r.version)
        .await?
        .filter(|c| c.kind == "template" && c.subject == a.subject)
        .ok_or_else(|| ApiError::not_found(format!("no version {} of {}", r.version, a.subject)))?;
    let files = stored_files(change.after.as_deref());
    apply(
        &s,
        &who,
        &a,
        files,
        &r.base,
        format!("rolled back to version {}", r.version),
    )
    .await
    .map(Json)
}

/// Publishes `files` if the template is still at `base` and the whole set
/// passes every check: the files written atomically, the change recorded,
/// the daemon asked to reload.
async fn apply(
    s: &ConsoleState,
    who: &Principal,
    a: &Addr,
    files: BTreeMap<String, String>,
    base: &str,
    summary: String,
) -> Result<serde_json::Value, ApiError> {
    let _one_at_a_time = s.writing.lock().await;
    let config = s.config();
    let dir = config.templates.dir.clone();
    let (current, current_base) = a.current(&dir)?;
    if current_base != base {
        return Err(conflict(&format!("the template {}", a.subject)));
    }
    let checked = check_draft(&config, a, &files)?;
    if !checked.problems.is_empty() {
        return Err(ApiError::refused(
            format!(
                "not published: {} problem(s); fix them and publish again",
                checked.problems.len()
            ),
            "problems",
            problems_json(&checked.problems),
        ));
    }
    let version = checked
        .set
        .as_ref()
        .and_then(|set| set.version_of(&a.locale, &a.name, a.channel))
        .map(str::to_owned);
    seed(s, who, a, &current, &config).await?;
    for (f, text) in &files {
        super::write_atomically(&dir.join(f), text).map_err(|e| {
            ApiError::internal(format!("cannot write {}: {e}", dir.join(f).display()))
        })?;
    }
    let id = s
        .record(
            who,
            "template",
            &a.subject,
            Some(serde_json::json!({ "files": current }).to_string()),
            Some(serde_json::json!({ "files": files, "version": version }).to_string()),
            summary,
        )
        .await?;
    tracing::info!(template = %a.subject, by = %who.name, version = ?version, "template published from the console");
    s.reload.notify_one();
    let mut after = current;
    after.extend(files);
    Ok(serde_json::json!({ "id": id, "template_version": version, "base": base_of(&after) }))
}
