//! The house in layers, enforced: every `crate::` path in `src/` points
//! down the layer list (ARCHITECTURE.md), and no source file grows past the
//! size a reader can hold. A new module must be given its floor here before
//! this test passes.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Top to bottom. A module may import only modules on a lower floor (and
/// itself); two modules on one floor never import each other.
const LAYERS: &[(&str, &[&str])] = &[
    ("front end", &["main", "cli"]),
    ("assembly", &["app", "simulate"]),
    ("console", &["console"]),
    ("audit export", &["audit"]),
    ("engine", &["engine"]),
    ("config", &["config"]),
    ("api", &["api"]),
    ("core", &["planner", "dispatch", "offers", "bounces"]),
    (
        "intake and rules of contact",
        &["sources", "handoff", "eligibility"],
    ),
    (
        "store, providers, templates",
        &["store", "providers", "templates"],
    ),
    ("compliance, policy", &["compliance", "policy"]),
    (
        "leaves",
        &[
            "reason",
            "signing",
            "metrics",
            "clock",
            "error",
            "logging",
            "notify",
            "shared_rate",
            "inflight",
        ],
    ),
    ("domain", &["domain"]),
];

/// Lines a source file may have.
const MAX_LINES: usize = 600;

fn floor(module: &str) -> Option<usize> {
    LAYERS.iter().position(|(_, ms)| ms.contains(&module))
}

/// The top-level module a file under `src/` belongs to.
fn module_of(rel: &Path) -> String {
    let first = rel.components().next().expect("a path under src");
    first
        .as_os_str()
        .to_string_lossy()
        .trim_end_matches(".rs")
        .to_owned()
}

/// How many `super::` hops reach the crate root from this file.
fn depth_to_root(rel: &Path) -> usize {
    let parts = rel.components().count();
    let is_mod = rel.file_name().is_some_and(|f| f == "mod.rs");
    // src/x.rs and src/x/mod.rs: one hop; src/x/y.rs: two; and so on.
    if is_mod {
        parts - 1
    } else {
        parts
    }
}

/// Every top-level module a file's code names (comments skipped).
fn imports(source: &str, rel: &Path) -> BTreeSet<String> {
    let code: String = source
        .lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let mut found = BTreeSet::new();
    let root_prefix = "super::".repeat(depth_to_root(rel));
    let mut prefixes = vec!["crate::".to_owned()];
    if !root_prefix.is_empty() {
        prefixes.push(root_prefix);
    }
    for prefix in &prefixes {
        let mut rest = code.as_str();
        while let Some(i) = rest.find(prefix.as_str()) {
            // `super::super::x` also contains `super::x`: only whole runs.
            let before = &rest[..i];
            rest = &rest[i + prefix.len()..];
            if prefix.starts_with("super") && before.ends_with("super::") {
                continue;
            }
            if prefix.starts_with("super") && rest.starts_with("super::") {
                continue;
            }
            if let Some(group) = rest.strip_prefix('{') {
                found.extend(group_heads(group));
            } else {
                let head: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !head.is_empty() {
                    found.insert(head);
                }
            }
        }
    }
    found
}

/// The first segment of each path in `a, b::c, d::{e, f}}` up to the
/// closing brace of the group.
fn group_heads(group: &str) -> Vec<String> {
    let mut heads = Vec::new();
    let mut depth = 0;
    let mut current = String::new();
    let mut at_start = true;
    for c in group.chars() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => at_start = true,
            c if at_start && (c.is_alphanumeric() || c == '_') => current.push(c),
            _ if at_start && !current.is_empty() => {
                heads.push(std::mem::take(&mut current));
                at_start = false;
            }
            _ => {}
        }
    }
    if !current.is_empty() {
        heads.push(current);
    }
    heads
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every forbidden import in one file, as sentences.
fn violations(rel: &Path, source: &str) -> Vec<String> {
    let module = module_of(rel);
    let Some(own) = floor(&module) else {
        return vec![format!(
            "{}: module `{module}` has no floor in tests/it/layers.rs LAYERS; give it one",
            rel.display()
        )];
    };
    let mut out = Vec::new();
    for target in imports(source, rel) {
        if target == module || target == "self" || target == "super" {
            continue;
        }
        match floor(&target) {
            Some(f) if f > own => {}
            Some(f) => out.push(format!(
                "src/{}: `{module}` ({}) imports `{target}` ({}), which is not below it",
                rel.display(),
                LAYERS[own].0,
                LAYERS[f].0
            )),
            // Not a module (a macro or an item at the crate root).
            None => {}
        }
    }
    out
}

fn src_files() -> Vec<(PathBuf, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            (p.strip_prefix(&src).unwrap().to_owned(), text)
        })
        .collect()
}

#[test]
fn every_import_points_down_the_layers() {
    let mut problems = Vec::new();
    for (rel, text) in src_files() {
        if rel == Path::new("lib.rs") {
            continue;
        }
        problems.extend(violations(&rel, &text));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn no_source_file_is_longer_than_a_reader_can_hold() {
    let long: Vec<String> = src_files()
        .into_iter()
        .filter(|(_, text)| text.lines().count() > MAX_LINES)
        .map(|(rel, text)| format!("src/{} has {} lines", rel.display(), text.lines().count()))
        .collect();
    assert!(long.is_empty(), "split by concern:\n{}", long.join("\n"));
}

#[test]
fn every_module_in_lib_has_a_floor() {
    let lib =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs")).unwrap();
    for line in lib.lines() {
        if let Some(name) = line
            .strip_prefix("pub mod ")
            .and_then(|l| l.strip_suffix(';'))
        {
            assert!(floor(name).is_some(), "`{name}` has no floor in LAYERS");
        }
    }
}

#[test]
fn a_planted_upward_import_is_caught() {
    // The checker itself must see through each way of writing a path.
    let planted = [
        ("planner.rs", "use crate::dispatch::context_for;\n"),
        ("dispatch.rs", "use crate::{store::Store, api::Pauses};\n"),
        (
            "store/common.rs",
            "let x = crate::config::Config::default();\n",
        ),
        ("metrics.rs", "fn f(s: &super::store::Store) {}\n"),
        (
            "providers/webhook.rs",
            "super::super::handoff::signature(k, t, b);\n",
        ),
        (
            "templates/mod.rs",
            "use crate::{\n    domain::Channel,\n    cli::x,\n};\n",
        ),
    ];
    for (file, text) in planted {
        let found = violations(Path::new(file), text);
        assert_eq!(found.len(), 1, "{file}: {found:?}");
    }
    // Downward imports, comments and the module's own paths pass.
    for (file, text) in [
        (
            "planner.rs",
            "use crate::store::Store;\nuse crate::{domain::Channel, reason::Reason};\n",
        ),
        ("dispatch.rs", "// see crate::api::routes for the handler\n"),
        (
            "store/sqlite.rs",
            "use super::common;\nuse crate::store::StoreConfig;\n",
        ),
        ("config/mod.rs", "use crate::api::ApiConfig;\n"),
    ] {
        assert_eq!(
            violations(Path::new(file), text),
            Vec::<String>::new(),
            "{file}"
        );
    }
}
