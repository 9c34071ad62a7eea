//! A line diff for a template's history: the longest common subsequence of
//! lines, shown as kept (` `), removed (`-`) and added (`+`) lines.
//! Templates are short; past `LIMIT` lines the diff is the whole old text
//! removed and the new one added.

const LIMIT: usize = 2_000;

/// `[(" " | "-" | "+", line)]` turning `old` into `new`.
pub(super) fn lines(old: &str, new: &str) -> Vec<(char, String)> {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    if a.len() > LIMIT || b.len() > LIMIT {
        return a
            .iter()
            .map(|l| ('-', (*l).to_owned()))
            .chain(b.iter().map(|l| ('+', (*l).to_owned())))
            .collect();
    }
    // lcs[i][j]: the longest common subsequence of a[i..] and b[j..].
    let mut lcs = vec![vec![0u32; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while i < a.len() && j < b.len() {
        if a[i] == b[j] {
            out.push((' ', a[i].to_owned()));
            i += 1;
            j += 1;
        } else if lcs[i + 1][j] >= lcs[i][j + 1] {
            out.push(('-', a[i].to_owned()));
            i += 1;
        } else {
            out.push(('+', b[j].to_owned()));
            j += 1;
        }
    }
    out.extend(a[i..].iter().map(|l| ('-', (*l).to_owned())));
    out.extend(b[j..].iter().map(|l| ('+', (*l).to_owned())));
    out
}

#[cfg(test)]
mod tests {
    use super::lines;

    #[test]
    fn a_changed_line_is_removed_then_added_and_the_rest_kept() {
        let d = lines("a\nb\nc\n", "a\nB\nc\nd\n");
        let shown: Vec<String> = d.iter().map(|(k, l)| format!("{k}{l}")).collect();
        assert_eq!(shown, [" a", "-b", "+B", " c", "+d"]);
    }

    #[test]
    fn a_new_file_is_all_added() {
        assert_eq!(lines("", "x\ny"), [('+', "x".into()), ('+', "y".into())]);
    }
}
