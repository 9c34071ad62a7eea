//! One source for defaults: the shipped `config/duebell.toml` says "what is
//! left out takes the default shown here", so each key it sets must load to
//! the same config as leaving the key out. Keys that are this deployment's
//! example values rather than defaults (the lender's name, the sample
//! sources) carry `# example, not the default` on the line above them.

use std::path::Path;

use toml_edit::{DocumentMut, Item, Table};

const MARKER: &str = "example, not the default";

fn shipped() -> (String, std::path::PathBuf) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/duebell.toml");
    (std::fs::read_to_string(&path).unwrap(), path)
}

/// The loaded config, printed: every field, secrets redacted.
fn loaded(text: &str, path: &Path) -> String {
    match duebell::config::load_from_str(text, path, Vec::new()) {
        Ok(l) => format!("{:#?}", l.config),
        Err(e) => panic!("{e}"),
    }
}

fn marked(item_decor: Option<&toml_edit::Decor>) -> bool {
    item_decor
        .and_then(|d| d.prefix())
        .and_then(|p| p.as_str())
        .is_some_and(|p| p.contains(MARKER))
}

/// Dotted paths of every key the file sets (a table's keys one by one; an
/// array of tables as a whole), skipping those marked as examples.
fn keys(table: &Table, prefix: &str, out: &mut Vec<Vec<String>>) {
    for (k, item) in table.iter() {
        let path: Vec<String> = prefix
            .split('.')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .chain([k.to_owned()])
            .collect();
        let decor = table.key(k).map(|key| key.leaf_decor());
        match item {
            Item::Table(t) => {
                if marked(Some(t.decor())) {
                    continue;
                }
                keys(t, &path.join("."), out);
            }
            Item::ArrayOfTables(a) => {
                if a.iter().next().is_some_and(|t| marked(Some(t.decor()))) {
                    continue;
                }
                out.push(path);
            }
            _ => {
                if !marked(decor) {
                    out.push(path);
                }
            }
        }
    }
}

fn without(doc: &DocumentMut, path: &[String]) -> String {
    let mut doc = doc.clone();
    let mut table = doc.as_table_mut();
    for seg in &path[..path.len() - 1] {
        table = table[seg.as_str()].as_table_mut().unwrap();
    }
    table.remove(path.last().unwrap());
    doc.to_string()
}

#[test]
fn every_value_the_shipped_config_shows_is_the_codes_default() {
    let (text, path) = shipped();
    let doc: DocumentMut = text.parse().unwrap();
    let full = loaded(&text, &path);
    let mut all = Vec::new();
    keys(doc.as_table(), "", &mut all);
    assert!(all.len() > 30, "the walk found only {all:?}");
    let drift: Vec<String> = all
        .iter()
        .filter(|p| loaded(&without(&doc, p), &path) != full)
        .map(|p| p.join("."))
        .collect();
    assert!(
        drift.is_empty(),
        "config/duebell.toml shows a value the code does not default to (change one of \
         them, or mark the key `# {MARKER}`): {drift:?}"
    );
}
