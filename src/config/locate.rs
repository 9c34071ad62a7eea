//! Maps a dotted key path back to where it is written in the config file, so
//! errors can say `FILE:LINE:COL`. Uses toml_edit's spans on the same text
//! serde read.

use toml_edit::{ImDocument, Item, Value};

/// One step of a key path: a table key or an array index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

pub fn display_path(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// Byte offset where `path` is written: the key when it is a table key, the
/// element when it is an array index; the nearest written ancestor when the
/// path itself is not in the file.
pub fn offset_of(doc: &ImDocument<String>, path: &[Seg]) -> Option<usize> {
    locate(doc, path).map(|(offset, _)| offset)
}

/// Like `offset_of`, but only when the whole path is written in the file.
pub fn exact_offset_of(doc: &ImDocument<String>, path: &[Seg]) -> Option<usize> {
    locate(doc, path).and_then(|(offset, exact)| exact.then_some(offset))
}

/// Byte offset of the value written at `path` (after `key = `), when the
/// whole path is in the file and ends at a value: errors about a value point
/// at it rather than at its key.
pub fn value_offset_of(doc: &ImDocument<String>, path: &[Seg]) -> Option<usize> {
    fn in_table(t: &dyn toml_edit::TableLike, path: &[Seg]) -> Option<usize> {
        let (Seg::Key(k), rest) = path.split_first()? else {
            return None;
        };
        in_item(t.get(k)?, rest)
    }
    fn in_item(item: &Item, path: &[Seg]) -> Option<usize> {
        match (item, path.split_first()) {
            (Item::Value(v), _) => in_value(v, path),
            (Item::Table(t), Some(_)) => in_table(t, path),
            (Item::ArrayOfTables(a), Some((Seg::Index(n), rest))) => in_table(a.get(*n)?, rest),
            _ => None,
        }
    }
    fn in_value(v: &Value, path: &[Seg]) -> Option<usize> {
        match (v, path.split_first()) {
            (_, None) => v.span().map(|s| s.start),
            (Value::Array(a), Some((Seg::Index(n), rest))) => in_value(a.get(*n)?, rest),
            (Value::InlineTable(t), Some((Seg::Key(k), rest))) => in_value(t.get(k)?, rest),
            _ => None,
        }
    }
    in_table(doc.as_table(), path)
}

/// The offset of the deepest written part of `path`, and whether that is
/// all of it.
fn locate(doc: &ImDocument<String>, path: &[Seg]) -> Option<(usize, bool)> {
    let found = locate_prefix(doc, path);
    let exact = found.map(|(_, depth)| depth == path.len()).unwrap_or(false);
    found.map(|(offset, _)| (offset, exact))
}

/// Walks `path`, returning the offset of the deepest part found and how many
/// segments deep that is.
fn locate_prefix(doc: &ImDocument<String>, path: &[Seg]) -> Option<(usize, usize)> {
    let mut best: Option<(usize, usize)> = None;
    let mut item: &Item = doc.as_item();
    for (i, seg) in path.iter().enumerate() {
        match seg {
            Seg::Key(k) => {
                let Some((key, next)) = item.as_table_like().and_then(|t| t.get_key_value(k))
                else {
                    return best;
                };
                best = key.span().map(|s| (s.start, i + 1)).or(best);
                item = next;
            }
            Seg::Index(n) => {
                let rest = &path[i + 1..];
                return match item {
                    Item::ArrayOfTables(aot) => {
                        let Some(t) = aot.get(*n) else { return best };
                        let here = t.span().map(|s| (s.start, i + 1)).or(best);
                        offset_in_table(t, rest, here)
                    }
                    Item::Value(Value::Array(arr)) => {
                        let Some(v) = arr.get(*n) else { return best };
                        let here = v.span().map(|s| (s.start, i + 1)).or(best);
                        match v {
                            Value::InlineTable(t) => offset_in_table(t, rest, here),
                            _ => here,
                        }
                    }
                    _ => best,
                };
            }
        }
    }
    best
}

fn offset_in_table(
    t: &dyn toml_edit::TableLike,
    rest: &[Seg],
    best: Option<(usize, usize)>,
) -> Option<(usize, usize)> {
    let Some((Seg::Key(k), tail)) = rest.split_first() else {
        return best;
    };
    let Some((key, item)) = t.get_key_value(k) else {
        return best;
    };
    let depth = best.map_or(0, |(_, d)| d) + 1;
    let here = key.span().map(|s| (s.start, depth)).or(best);
    if tail.is_empty() {
        return here;
    }
    match item.as_table_like() {
        Some(inner) => offset_in_table(inner, tail, here),
        None => here,
    }
}

/// 1-based line and column of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}
