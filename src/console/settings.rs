//! `/v1/settings`: quiet hours, caps and the reminder ladder, edited in the
//! config file. A change replaces whole sections (`quiet_hours.rules`,
//! `caps.rules`, `policy.steps`) in the file's TOML, keeping every other
//! line and comment; the result must load exactly as `duebell check` loads
//! it, and the file must still be the one the editor read (`base`). The
//! impact route runs the planner over the current book under the current
//! and the proposed settings and counts what would change.

use std::collections::HashMap;
use std::path::PathBuf;

use axum::extract::State;
use axum::routing::{get, post, put};
use axum::{Extension, Json};
use serde::Deserialize;
use toml_edit::DocumentMut;

use super::{conflict, digest, ConsoleState};
use crate::api::access::{Need, Principal};
use crate::api::routes::Route;
use crate::api::ApiError;
use crate::config::Config;
use crate::planner::Decision;

/// The sections the console edits, as (JSON key, TOML path).
const SECTIONS: &[(&str, [&str; 2])] = &[
    ("quiet_hours", ["quiet_hours", "rules"]),
    ("caps", ["caps", "rules"]),
    ("steps", ["policy", "steps"]),
];

pub(super) fn routes() -> Vec<Route<ConsoleState>> {
    vec![
        (
            "get",
            "/v1/settings",
            "Quiet-hours rules, caps and the reminder ladder as the config file has them, with its base",
            Need::Read,
            get(show),
        ),
        (
            "put",
            "/v1/settings",
            "Replace quiet-hours rules, caps or steps in the config file (validated as `duebell check` does) and reload",
            Need::Edit,
            put(save),
        ),
        (
            "post",
            "/v1/settings/impact",
            "What a proposed change would do to today's decisions over the current book",
            Need::Edit,
            post(impact),
        ),
    ]
}

fn file_of(s: &ConsoleState) -> Result<PathBuf, ApiError> {
    s.config_file.clone().ok_or_else(|| {
        ApiError::bad(
            "settings",
            "this daemon was not started from a config file; settings are read-only here",
        )
    })
}

fn read(path: &std::path::Path) -> Result<String, ApiError> {
    std::fs::read_to_string(path)
        .map_err(|e| ApiError::internal(format!("cannot read {}: {e}", path.display())))
}

async fn show(State(s): State<ConsoleState>) -> Result<Json<serde_json::Value>, ApiError> {
    let path = file_of(&s)?;
    let text = read(&path)?;
    let table: toml::Table = toml::from_str(&text)
        .map_err(|e| ApiError::internal(format!("{}: {e}", path.display())))?;
    let mut out = serde_json::json!({ "base": digest(&text), "file": path });
    for (key, [a, b]) in SECTIONS {
        let v = table
            .get(*a)
            .and_then(|t| t.get(*b))
            .cloned()
            .unwrap_or(toml::Value::Array(vec![]));
        out[*key] = serde_json::to_value(v).map_err(ApiError::internal)?;
    }
    Ok(Json(out))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Change {
    /// The `base` of the file the editor read (for `PUT`).
    #[serde(default)]
    base: Option<String>,
    #[serde(default)]
    quiet_hours: Option<Vec<serde_json::Value>>,
    #[serde(default)]
    caps: Option<Vec<serde_json::Value>>,
    #[serde(default)]
    steps: Option<Vec<serde_json::Value>>,
    #[serde(default)]
    note: Option<String>,
}

impl Change {
    fn sections(&self) -> Vec<(&'static str, [&'static str; 2], &Vec<serde_json::Value>)> {
        SECTIONS
            .iter()
            .filter_map(|(k, p)| {
                let v = match *k {
                    "quiet_hours" => self.quiet_hours.as_ref(),
                    "caps" => self.caps.as_ref(),
                    _ => self.steps.as_ref(),
                }?;
                Some((*k, *p, v))
            })
            .collect()
    }
}

/// JSON without nulls (TOML has none: a null field means "the default").
fn strip_nulls(v: &serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(m) => m
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| (k.clone(), strip_nulls(v)))
            .collect(),
        serde_json::Value::Array(a) => a.iter().map(strip_nulls).collect(),
        other => other.clone(),
    }
}

/// The config text with each changed section replaced, everything else
/// (comments, order, other keys) as it was.
fn edited(text: &str, change: &Change) -> Result<String, ApiError> {
    let mut doc: DocumentMut = text
        .parse()
        .map_err(|e| ApiError::internal(format!("the config file does not parse: {e}")))?;
    for (key, [a, b], rows) in change.sections() {
        for (i, r) in rows.iter().enumerate() {
            if !r.is_object() {
                return Err(ApiError::bad(
                    &format!("{key}[{i}]"),
                    "each entry is an object",
                ));
            }
        }
        let rows = strip_nulls(&serde_json::Value::Array(rows.clone()));
        let mut inner = serde_json::Map::new();
        inner.insert(b.to_owned(), rows);
        let mut outer = serde_json::Map::new();
        outer.insert(a.to_owned(), serde_json::Value::Object(inner));
        let fresh = serde_json::Value::Object(outer);
        let fresh: toml::Value = toml::Value::try_from(fresh)
            .map_err(|e| ApiError::bad(key, format!("cannot be written as TOML: {e}")))?;
        let fresh_text = toml::to_string(&fresh)
            .map_err(|e| ApiError::bad(key, format!("cannot be written as TOML: {e}")))?;
        let fresh_doc: DocumentMut = fresh_text.parse().map_err(ApiError::internal)?;
        let Some(new_rows) = fresh_doc
            .get(a)
            .and_then(|t| t.get(b))
            .and_then(|i| i.as_array_of_tables())
            .cloned()
        else {
            // An empty list: an empty inline array.
            let parent = doc[a].or_insert(toml_edit::table());
            parent[b] = toml_edit::value(toml_edit::Array::new());
            continue;
        };
        let parent = doc[a].or_insert(toml_edit::table());
        match parent.get_mut(b).and_then(|i| i.as_array_of_tables_mut()) {
            Some(old) => merge_rows(old, new_rows),
            None => {
                let mut new_rows = new_rows;
                for t in new_rows.iter_mut() {
                    tidy(t);
                }
                parent[b] = toml_edit::Item::ArrayOfTables(new_rows);
            }
        }
    }
    Ok(doc.to_string())
}

/// A new entry as people write them: its name first, nested tables inline.
fn tidy(t: &mut toml_edit::Table) {
    let keys: Vec<String> = t.iter().map(|(k, _)| k.to_owned()).collect();
    for k in keys {
        if let Some(toml_edit::Item::Table(inner)) = t.get(&k).cloned() {
            // Re-inserted, so the key loses the decor it had in a header.
            t.remove(&k);
            t.insert(&k, toml_edit::value(inner.into_inline_table()));
        }
    }
    let rank = |k: &toml_edit::Key| match k.get() {
        "name" | "id" => 0,
        _ => 1,
    };
    t.sort_values_by(|k1, _, k2, _| rank(k1).cmp(&rank(k2)).then(k1.get().cmp(k2.get())));
}

/// Edits the entries in place: an entry's unchanged keys keep their text
/// and the comments around them, a changed value keeps its key's comments,
/// keys no longer sent go, and entries are added or dropped at the end.
fn merge_rows(old: &mut toml_edit::ArrayOfTables, new: toml_edit::ArrayOfTables) {
    let position = old.iter().filter_map(toml_edit::Table::position).max();
    let count = new.len();
    for (i, mut fresh) in new.into_iter().enumerate() {
        tidy(&mut fresh);
        let Some(t) = old.get_mut(i) else {
            if let Some(p) = position {
                fresh.set_position(p);
            }
            fresh.decor_mut().set_prefix("\n");
            old.push(fresh);
            continue;
        };
        let gone: Vec<String> = t
            .iter()
            .map(|(k, _)| k.to_owned())
            .filter(|k| !fresh.contains_key(k))
            .collect();
        for k in gone {
            t.remove(&k);
        }
        for (k, item) in fresh.iter() {
            let Some(value) = item.as_value() else {
                continue;
            };
            match t.get_mut(k).and_then(toml_edit::Item::as_value_mut) {
                Some(v) if same(v, value) => {}
                Some(v) => {
                    let decor = v.decor().clone();
                    *v = value.clone();
                    *v.decor_mut() = decor;
                }
                None => {
                    t[k] = toml_edit::Item::Value(value.clone());
                }
            }
        }
    }
    while old.len() > count {
        old.remove(old.len() - 1);
    }
}

/// Whether two TOML values mean the same (key order in inline tables and
/// spacing aside).
fn same(a: &toml_edit::Value, b: &toml_edit::Value) -> bool {
    let parse = |v: &toml_edit::Value| toml::from_str::<toml::Table>(&format!("v = {v}")).ok();
    match (parse(a), parse(b)) {
        (Some(x), Some(y)) => x == y,
        _ => false,
    }
}

/// Loads the edited text exactly as the daemon would; every problem with
/// its key.
fn load(text: &str, path: &std::path::Path) -> Result<Config, ApiError> {
    crate::config::load_from_str(text, path, std::env::vars())
        .map(|l| l.config)
        .map_err(|p| {
            let problems: Vec<serde_json::Value> = p
                .0
                .iter()
                .map(|p| serde_json::json!({ "key": p.key, "origin": p.origin, "message": p.message }))
                .collect();
            ApiError::refused(
                format!("not saved: {} problem(s); nothing was changed", problems.len()),
                "problems",
                serde_json::Value::Array(problems),
            )
        })
}

async fn save(
    State(s): State<ConsoleState>,
    Extension(who): Extension<Principal>,
    Json(change): Json<Change>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let path = file_of(&s)?;
    let base = change
        .base
        .clone()
        .ok_or_else(|| ApiError::bad("base", "send the `base` that GET /v1/settings gave"))?;
    if change.sections().is_empty() {
        return Err(ApiError::bad(
            "body",
            "nothing to change: send quiet_hours, caps or steps",
        ));
    }
    let _one_at_a_time = s.writing.lock().await;
    let text = read(&path)?;
    if digest(&text) != base {
        return Err(conflict(&format!("the config file {}", path.display())));
    }
    let new_text = edited(&text, &change)?;
    let config = load(&new_text, &path)?;
    // A template the new ladder names must exist, as at start-up.
    if let Err(p) = crate::engine::load_templates(&config) {
        let problems: Vec<serde_json::Value> = p
            .iter()
            .map(|p| serde_json::json!({ "key": "policy.steps", "origin": p.file, "message": p.message }))
            .collect();
        return Err(ApiError::refused(
            format!(
                "not saved: {} problem(s) with the templates under these settings",
                problems.len()
            ),
            "problems",
            serde_json::Value::Array(problems),
        ));
    }
    // And the engine builds from it, exactly as the reload will: nothing
    // is written that the daemon would then refuse.
    crate::engine::Engine::build(&config, s.api.store.clone(), None).map_err(|p| {
        ApiError::refused(
            format!("not saved: {} problem(s); nothing was changed", p.len()),
            "problems",
            p.iter()
                .map(|m| serde_json::json!({ "key": "", "origin": "", "message": m }))
                .collect(),
        )
    })?;
    super::write_atomically(&path, &new_text)
        .map_err(|e| ApiError::internal(format!("cannot write {}: {e}", path.display())))?;
    let mut ids = Vec::new();
    let old: toml::Table = toml::from_str(&text).unwrap_or_default();
    let new: toml::Table = toml::from_str(&new_text).unwrap_or_default();
    for (key, [a, b], _) in change.sections() {
        let section = |t: &toml::Table| {
            t.get(a)
                .and_then(|x| x.get(b))
                .map(|v| serde_json::to_string_pretty(v).unwrap_or_default())
        };
        let summary = change
            .note
            .clone()
            .filter(|n| !n.trim().is_empty())
            .unwrap_or_else(|| format!("{a}.{b} changed"));
        ids.push(
            s.record(&who, "settings", key, section(&old), section(&new), summary)
                .await?,
        );
    }
    tracing::info!(by = %who.name, file = %path.display(), "settings changed from the console");
    s.reload.notify_one();
    Ok(Json(
        serde_json::json!({ "changes": ids, "base": digest(&new_text) }),
    ))
}

async fn impact(
    State(s): State<ConsoleState>,
    Json(change): Json<Change>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let path = file_of(&s)?;
    let text = read(&path)?;
    let proposed = load(&edited(&text, &change)?, &path)?;
    let current = s.config();
    let now = s.now();
    let store = s.api.store.clone();
    let decide = |config: &Config| -> Result<crate::engine::Engine, ApiError> {
        crate::engine::Engine::build(config, store.clone(), None).map_err(|p| {
            ApiError::refused("the proposed settings do not build", "problems", p.into())
        })
    };
    let (before_engine, after_engine) = (decide(&current)?, decide(&proposed)?);
    let before =
        crate::planner::preview(store.as_ref(), &before_engine.planner(), now, None).await?;
    let after = crate::planner::preview(store.as_ref(), &after_engine.planner(), now, None).await?;
    let key = |l: &crate::planner::PlanLine| {
        (
            l.loan_id.clone(),
            l.step.clone(),
            l.channel.map(|c| c.to_string()),
        )
    };
    let was: HashMap<_, Decision> = before.iter().map(|l| (key(l), l.decision)).collect();
    let mut counts: HashMap<&str, u64> = HashMap::new();
    for l in &after {
        let old = was.get(&key(l)).copied();
        let moved = match (old, l.decision) {
            (Some(Decision::Due), Decision::Deferred) => "deferred",
            (Some(Decision::Deferred), Decision::Due) => "released",
            (
                Some(Decision::Due | Decision::Deferred),
                Decision::Suppressed | Decision::Expired,
            ) => "suppressed",
            (
                Some(Decision::Suppressed | Decision::Expired),
                Decision::Due | Decision::Deferred,
            ) => "allowed",
            (None, Decision::Due | Decision::Deferred) => "newly_planned",
            _ => continue,
        };
        *counts.entry(moved).or_default() += 1;
    }
    let tally = |lines: &[crate::planner::PlanLine]| {
        let mut t: HashMap<&str, u64> = HashMap::new();
        for l in lines {
            *t.entry(l.decision.as_str()).or_default() += 1;
        }
        t
    };
    Ok(Json(serde_json::json!({
        "at": now,
        "current": tally(&before),
        "proposed": tally(&after),
        "would": {
            "defer": counts.get("deferred").copied().unwrap_or(0),
            "release": counts.get("released").copied().unwrap_or(0),
            "suppress": counts.get("suppressed").copied().unwrap_or(0),
            "allow": counts.get("allowed").copied().unwrap_or(0),
            "newly_plan": counts.get("newly_planned").copied().unwrap_or(0),
        },
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_edit_replaces_the_section_and_keeps_every_comment_and_other_key() {
        let text = "# top comment\n[store]\nurl = \"x\"\n\n# the rules, explained\n[[quiet_hours.rules]]\nname = \"default\"\nevery_day = [\"08:00-21:00\"]\n\n# caps below\n[[caps.rules]]\nname = \"c\"\nmax = 1\n";
        let change = Change {
            base: None,
            quiet_hours: Some(vec![
                serde_json::json!({"name": "weekend", "sat": ["10:00-18:00"], "channels": null}),
                serde_json::json!({"name": "default", "every_day": ["09:00-20:00"]}),
            ]),
            caps: None,
            steps: None,
            note: None,
        };
        let out = edited(text, &change).unwrap();
        assert!(
            out.starts_with("# top comment\n[store]\nurl = \"x\"\n"),
            "{out}"
        );
        assert!(
            out.contains("# the rules, explained\n[[quiet_hours.rules]]\nname = \"weekend\""),
            "{out}"
        );
        assert!(out.contains("every_day = [\"09:00-20:00\"]"), "{out}");
        assert!(!out.contains("08:00-21:00"), "{out}");
        // The caps stay after the rules, with their comment.
        let rules = out.find("name = \"default\"").unwrap();
        let caps = out.find("# caps below\n[[caps.rules]]").unwrap();
        assert!(rules < caps, "{out}");
    }

    #[test]
    fn an_unchanged_entry_keeps_its_inline_tables_and_the_comments_inside_it() {
        let text = "[policy]\nmode = \"x\"\n\n[[policy.steps]]\nid = \"a\"\n# why the offer\noffer = { kind = \"fee_waiver\", amount = \"30.00\" }\n\n[[policy.steps]]\nid = \"b\"\noffset_days = 1\n";
        let change = Change {
            base: None,
            quiet_hours: None,
            caps: None,
            steps: Some(vec![
                serde_json::json!({"id": "a", "offer": {"kind": "fee_waiver", "amount": "30.00"}}),
                serde_json::json!({"id": "b", "offset_days": 2}),
                serde_json::json!({"id": "c", "offer": {"kind": "discount", "percent": "10"}}),
            ]),
            note: None,
        };
        let out = edited(text, &change).unwrap();
        assert!(out.contains("id = \"a\"\n# why the offer\noffer = { kind = \"fee_waiver\", amount = \"30.00\" }"), "{out}");
        assert!(out.contains("id = \"b\"\noffset_days = 2"), "{out}");
        assert!(out.contains("id = \"c\"\noffer = { "), "{out}");
        assert!(!out.contains("[policy.steps.offer]"), "{out}");
        let parsed: toml::Table = toml::from_str(&out).unwrap();
        assert_eq!(parsed["policy"]["steps"].as_array().unwrap().len(), 3);
    }
}
