//! The loading pass: file text → TOML table → environment overrides →
//! `…_file` indirections → typed `Config` → validation, collecting every
//! problem with its origin instead of stopping at the first.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use toml::{Table, Value};
use toml_edit::ImDocument;

use super::locate::{display_path, exact_offset_of, line_col, offset_of, value_offset_of, Seg};
use super::{Config, LoadedConfig, PackMode};

/// Environment variables with this prefix override config keys:
/// `DUEBELL_STORE__URL` sets `store.url`, `DUEBELL_SOURCES__0__PATH` sets
/// `sources[0].path`. `__` separates levels because keys contain `_`.
pub const ENV_PREFIX: &str = "DUEBELL_";
/// Environment variables with the prefix that are not overrides.
const ENV_RESERVED: &[&str] = &["DUEBELL_CONFIG"];

/// One problem in a configuration, with where it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// `FILE:LINE:COL` or `env NAME`.
    pub origin: String,
    /// The dotted key, e.g. `sources[0].poll_interval`.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.origin, self.key, self.message)
    }
}

/// Every problem found; a config with any is refused whole.
#[derive(Debug, Clone)]
pub struct ConfigProblems(pub Vec<ConfigProblem>);

impl fmt::Display for ConfigProblems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigProblems {}

/// Loads `path` with the given environment (pass `std::env::vars()`; tests
/// pass their own).
pub fn load(
    path: &Path,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<LoadedConfig, ConfigProblems> {
    load_with(path, env, PackMode::Enforce)
}

/// As `load`, with compliance-pack findings counted per `packs`.
pub fn load_with(
    path: &Path,
    env: impl IntoIterator<Item = (String, String)>,
    packs: PackMode,
) -> Result<LoadedConfig, ConfigProblems> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigProblems(vec![ConfigProblem {
            origin: path.display().to_string(),
            key: "(file)".to_owned(),
            message: format!(
                "cannot read the config file: {e}; pass --config FILE or set DUEBELL_CONFIG"
            ),
        }])
    })?;
    load_from_str_with(&text, path, env, packs)
}

/// Loads config text as if read from `path` (used for messages and for
/// resolving nothing else: relative paths stay relative to the working
/// directory, as systemd's `WorkingDirectory=` sets it).
pub fn load_from_str(
    text: &str,
    path: &Path,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<LoadedConfig, ConfigProblems> {
    load_from_str_with(text, path, env, PackMode::Enforce)
}

fn load_from_str_with(
    text: &str,
    path: &Path,
    env: impl IntoIterator<Item = (String, String)>,
    packs: PackMode,
) -> Result<LoadedConfig, ConfigProblems> {
    let file = path.display().to_string();
    let at = |offset: Option<usize>| {
        let (l, c) = line_col(text, offset.unwrap_or(0));
        format!("{file}:{l}:{c}")
    };

    let doc = ImDocument::parse(text.to_owned()).map_err(|e| {
        ConfigProblems(vec![ConfigProblem {
            origin: at(e.span().map(|s| s.start)),
            key: "(syntax)".to_owned(),
            message: e.message().trim().to_owned(),
        }])
    })?;
    let mut table: Table = toml::from_str(text).map_err(|e| {
        ConfigProblems(vec![ConfigProblem {
            origin: at(e.span().map(|s| s.start)),
            key: "(syntax)".to_owned(),
            message: e.message().trim().to_owned(),
        }])
    })?;

    let mut problems = Vec::new();
    // Keys set from the environment, by dotted path, with the variable name.
    let mut from_env: HashMap<String, String> = HashMap::new();
    let mut env: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX) && !ENV_RESERVED.contains(&k.as_str()))
        .collect();
    env.sort();
    for (name, value) in env {
        let segs = env_path(&name);
        if segs.is_empty() {
            continue;
        }
        let key = display_path(&segs);
        match set_path(&mut table, &segs, &value) {
            Ok(()) => {
                from_env.insert(key, name);
            }
            Err(message) => problems.push(ConfigProblem {
                origin: format!("env {name}"),
                key,
                message,
            }),
        }
    }

    // Where a problem was written: its value when `at_value` and the value
    // is in the file, else its key (or the nearest written ancestor), or the
    // environment variable that set it.
    let origin = |segs: &[Seg], at_value: bool| -> String {
        for n in (1..=segs.len()).rev() {
            let key = display_path(&segs[..n]);
            if let Some(var) = from_env.get(&key) {
                return format!("env {var}");
            }
            let file_key = match &segs[n - 1] {
                Seg::Key(k) => {
                    let mut s = segs[..n - 1].to_vec();
                    s.push(Seg::Key(format!("{k}_file")));
                    display_path(&s)
                }
                Seg::Index(_) => continue,
            };
            if let Some(var) = from_env.get(&file_key) {
                return format!("env {var}");
            }
        }
        let value = at_value.then(|| value_offset_of(&doc, segs)).flatten();
        at(value
            .or_else(|| exact_offset_of(&doc, segs))
            .or_else(|| exact_offset_of(&doc, &with_file_suffix(segs)))
            .or_else(|| offset_of(&doc, segs)))
    };
    let origin_of = |segs: &[Seg]| origin(segs, false);

    // Keys whose `…_file` could not be read: the file key is dropped (so it
    // is not also an unknown key) and the key it stands for is not judged.
    let mut unresolved: std::collections::HashSet<String> = Default::default();
    resolve_file_keys(&mut table, &mut Vec::new(), &mut |segs, message| {
        if let Some(Seg::Key(k)) = segs.last() {
            if let Some(base) = k.strip_suffix("_file") {
                let mut b = segs[..segs.len() - 1].to_vec();
                b.push(Seg::Key(base.to_owned()));
                unresolved.insert(display_path(&b));
            }
        }
        problems.push(ConfigProblem {
            origin: origin_of(segs),
            key: display_path(segs),
            message,
        })
    });

    // Deserialize, and on each error drop the offending key and try again, so
    // one run reports every bad key rather than the first. A key we dropped
    // that turns out to be required ends the loop (its error is already out).
    let mut removed: Vec<Vec<Seg>> = Vec::new();
    let mut config = None;
    for _ in 0..64 {
        let value = Value::Table(table.clone());
        match serde_path_to_error::deserialize::<_, Config>(value) {
            Ok(c) => {
                config = Some(c);
                break;
            }
            Err(err) => {
                let mut segs = to_segs(err.path());
                let inner = err.into_inner();
                let mut message = inner.message().trim().to_owned();
                let mut at_value = true;
                // A required field whose bad value was reported and dropped
                // is missing now: that is the same problem, said once.
                if let Some(field) = message
                    .strip_prefix("missing field `")
                    .and_then(|m| m.split('`').next())
                {
                    let mut dropped = segs.clone();
                    dropped.push(Seg::Key(field.to_owned()));
                    if removed.contains(&dropped) {
                        break;
                    }
                    at_value = false;
                }
                if let Some(field) = unknown_field(&message) {
                    at_value = false;
                    if segs.last() != Some(&Seg::Key(field.clone())) {
                        segs.push(Seg::Key(field.clone()));
                    }
                    message =
                        message.replacen(&format!("unknown field `{field}`"), "unknown key", 1);
                    message.push_str("; remove it or check its spelling");
                }
                if removed.iter().any(|r| segs.starts_with(r)) || !remove_path(&mut table, &segs) {
                    if !removed.iter().any(|r| segs.starts_with(r)) {
                        problems.push(ConfigProblem {
                            origin: origin(&segs, at_value),
                            key: display_path(&segs),
                            message,
                        });
                    }
                    break;
                }
                problems.push(ConfigProblem {
                    origin: origin(&segs, at_value),
                    key: display_path(&segs),
                    message,
                });
                removed.push(segs);
            }
        }
    }

    let mut pack_warnings = Vec::new();
    if let Some(config) = &config {
        let valid = config.validate();
        let looser = if valid.is_empty() {
            config.looser_than_packs()
        } else {
            Vec::new()
        };
        for (key, message) in looser {
            let segs = parse_display_path(&key);
            let problem = ConfigProblem {
                origin: origin(&segs, true),
                key,
                message,
            };
            match packs {
                PackMode::Enforce => problems.push(problem),
                PackMode::Advisory => pack_warnings.push(problem),
            }
        }
        for (key, message) in valid {
            if unresolved.contains(&key) {
                // Its `…_file` could not be read: said already.
                continue;
            }
            let segs = parse_display_path(&key);
            problems.push(ConfigProblem {
                origin: origin(&segs, true),
                key,
                message,
            });
        }
    }
    match config {
        Some(config) if problems.is_empty() => Ok(LoadedConfig {
            config,
            path: path.to_owned(),
            pack_warnings,
        }),
        _ => {
            if problems.is_empty() {
                problems.push(ConfigProblem {
                    origin: at(None),
                    key: "(config)".to_owned(),
                    message: "could not be read for an unknown reason".to_owned(),
                });
            }
            Err(ConfigProblems(problems))
        }
    }
}

fn with_file_suffix(segs: &[Seg]) -> Vec<Seg> {
    let mut s = segs.to_vec();
    if let Some(Seg::Key(k)) = s.last_mut() {
        k.push_str("_file");
    }
    s
}

fn env_path(name: &str) -> Vec<Seg> {
    name[ENV_PREFIX.len()..]
        .split("__")
        .filter(|p| !p.is_empty())
        .map(|p| match p.parse::<usize>() {
            Ok(i) => Seg::Index(i),
            Err(_) => Seg::Key(p.to_ascii_lowercase()),
        })
        .collect()
}

fn parse_display_path(key: &str) -> Vec<Seg> {
    let mut segs = Vec::new();
    for part in key.split('.') {
        let mut rest = part;
        if let Some(open) = rest.find('[') {
            segs.push(Seg::Key(rest[..open].to_owned()));
            rest = &rest[open..];
            while let Some(stripped) = rest.strip_prefix('[') {
                let close = stripped.find(']').unwrap_or(stripped.len());
                if let Ok(i) = stripped[..close].parse() {
                    segs.push(Seg::Index(i));
                }
                rest = stripped.get(close + 1..).unwrap_or("");
            }
        } else {
            segs.push(Seg::Key(rest.to_owned()));
        }
    }
    segs
}

fn to_segs(path: &serde_path_to_error::Path) -> Vec<Seg> {
    path.iter()
        .filter_map(|s| match s {
            serde_path_to_error::Segment::Map { key } => Some(Seg::Key(key.clone())),
            serde_path_to_error::Segment::Seq { index } => Some(Seg::Index(*index)),
            _ => None,
        })
        .collect()
}

fn unknown_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    Some(rest[..rest.find('`')?].to_owned())
}

/// Parses an environment value into the type the key already has (so
/// `DUEBELL_STORE__MAX_CONNECTIONS=8` is an integer and a string key stays a
/// string even when it looks like a number); a new key takes TOML syntax when
/// it parses as TOML and is a string otherwise.
fn env_value(raw: &str, existing: Option<&Value>) -> Result<Value, String> {
    let as_toml = || -> Option<Value> {
        let t: Table = toml::from_str(&format!("v = {raw}")).ok()?;
        t.get("v").cloned()
    };
    match existing {
        Some(Value::String(_)) | None if as_toml().is_none() => Ok(Value::String(raw.to_owned())),
        Some(Value::String(_)) => Ok(Value::String(raw.to_owned())),
        Some(Value::Integer(_)) => raw
            .trim()
            .parse()
            .map(Value::Integer)
            .map_err(|_| format!("`{raw}` is not an integer")),
        Some(Value::Boolean(_)) => match raw.trim() {
            "true" => Ok(Value::Boolean(true)),
            "false" => Ok(Value::Boolean(false)),
            _ => Err(format!("`{raw}` is not true or false")),
        },
        Some(Value::Float(_)) => raw
            .trim()
            .parse()
            .map(Value::Float)
            .map_err(|_| format!("`{raw}` is not a number")),
        _ => as_toml().ok_or_else(|| format!("`{raw}` is not a TOML value")),
    }
}

fn set_path(table: &mut Table, segs: &[Seg], raw: &str) -> Result<(), String> {
    let (last, parents) = segs.split_last().ok_or("empty key")?;
    let mut cur = table;
    for (i, seg) in parents.iter().enumerate() {
        let next_is_index = matches!(segs.get(i + 1), Some(Seg::Index(_)));
        cur = match seg {
            Seg::Key(k) => {
                let entry = cur.entry(k.clone()).or_insert_with(|| {
                    if next_is_index {
                        Value::Array(Vec::new())
                    } else {
                        Value::Table(Table::new())
                    }
                });
                if next_is_index {
                    // The index is consumed on the next iteration.
                    match entry {
                        Value::Array(_) => {
                            let Some(Seg::Index(idx)) = segs.get(i + 1) else {
                                unreachable!()
                            };
                            let Value::Array(arr) = entry else {
                                unreachable!()
                            };
                            while arr.len() <= *idx {
                                arr.push(Value::Table(Table::new()));
                            }
                            match &mut arr[*idx] {
                                Value::Table(t) => t,
                                _ => return Err(format!("`{k}[{idx}]` is not a table")),
                            }
                        }
                        _ => return Err(format!("`{k}` is not an array")),
                    }
                } else {
                    match entry {
                        Value::Table(t) => t,
                        _ => return Err(format!("`{k}` is not a table")),
                    }
                }
            }
            Seg::Index(_) => continue,
        };
    }
    let Seg::Key(k) = last else {
        return Err("a key path cannot end in an index".to_owned());
    };
    let value = env_value(raw, cur.get(k))?;
    cur.insert(k.clone(), value);
    Ok(())
}

fn remove_path(table: &mut Table, segs: &[Seg]) -> bool {
    let Some((last, parents)) = segs.split_last() else {
        return false;
    };
    let mut cur: &mut Value = match parents.first() {
        Some(Seg::Key(k)) => match table.get_mut(k) {
            Some(v) => v,
            None => return false,
        },
        Some(Seg::Index(_)) => return false,
        None => {
            return match last {
                Seg::Key(k) => table.remove(k).is_some(),
                Seg::Index(_) => false,
            }
        }
    };
    for seg in &parents[1..] {
        cur = match (seg, cur) {
            (Seg::Key(k), Value::Table(t)) => match t.get_mut(k) {
                Some(v) => v,
                None => return false,
            },
            (Seg::Index(i), Value::Array(a)) => match a.get_mut(*i) {
                Some(v) => v,
                None => return false,
            },
            _ => return false,
        };
    }
    match (last, cur) {
        (Seg::Key(k), Value::Table(t)) => t.remove(k).is_some(),
        // Removing an array element would shift the indices of later
        // problems; blank it to an empty table instead only if it is one.
        _ => false,
    }
}

/// Replaces every `name_file = "PATH"` with `name = <contents of PATH>`
/// (trailing newline trimmed). `$VAR` and `${VAR}` in the path are expanded,
/// so `token_file = "${CREDENTIALS_DIRECTORY}/api-token"` reads a systemd
/// credential.
fn resolve_file_keys(
    table: &mut Table,
    path: &mut Vec<Seg>,
    report: &mut dyn FnMut(&[Seg], String),
) {
    let keys: Vec<String> = table.keys().cloned().collect();
    for key in keys {
        path.push(Seg::Key(key.clone()));
        match table.get_mut(&key) {
            Some(Value::Table(t)) => resolve_file_keys(t, path, report),
            Some(Value::Array(items)) => {
                for (i, item) in items.iter_mut().enumerate() {
                    if let Value::Table(t) = item {
                        path.push(Seg::Index(i));
                        resolve_file_keys(t, path, report);
                        path.pop();
                    }
                }
            }
            _ => {}
        }
        if let Some(base) = key.strip_suffix("_file") {
            if table.contains_key(base) {
                report(path, format!("both `{base}` and `{key}` are set; keep one"));
            } else if let Some(Value::String(file)) = table.get(&key) {
                match expand_env(file).and_then(|p| {
                    std::fs::read_to_string(&p).map_err(|e| format!("cannot read `{p}`: {e}"))
                }) {
                    Ok(contents) => {
                        let contents = contents.trim_end_matches(['\n', '\r']).to_owned();
                        table.remove(&key);
                        table.insert(base.to_owned(), Value::String(contents));
                    }
                    Err(e) => {
                        report(path, e);
                        table.remove(&key);
                    }
                }
            } else {
                report(path, "must be a file path (a string)".to_owned());
            }
        }
        path.pop();
    }
}

fn expand_env(s: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = s;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        let (name, tail) = if let Some(braced) = after.strip_prefix('{') {
            let end = braced
                .find('}')
                .ok_or_else(|| format!("unclosed `${{` in `{s}`"))?;
            (&braced[..end], &braced[end + 1..])
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        let value = std::env::var(name)
            .map_err(|_| format!("`${name}` in `{s}` is not set in the environment"))?;
        out.push_str(&value);
        rest = tail;
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
#[path = "load_tests.rs"]
mod tests;
