//! The change `--dry-run` prints: the lines that differ between two texts, with a little context.
//! Our edits touch one or two places in a config file, so one hunk from the first to the last
//! differing line says it without a diff library.

const CONTEXT: usize = 2;

pub fn changed_lines(before: &str, after: &str) -> String {
    let old: Vec<&str> = before.lines().collect();
    let new: Vec<&str> = after.lines().collect();
    let prefix = old.iter().zip(&new).take_while(|(a, b)| a == b).count();
    let suffix = old[prefix..]
        .iter()
        .rev()
        .zip(new[prefix..].iter().rev())
        .take_while(|(a, b)| a == b)
        .count();
    let mut out = String::new();
    let start = prefix.saturating_sub(CONTEXT);
    for line in &old[start..prefix] {
        out.push_str(&format!("  {line}\n"));
    }
    for line in &old[prefix..old.len() - suffix] {
        out.push_str(&format!("- {line}\n"));
    }
    for line in &new[prefix..new.len() - suffix] {
        out.push_str(&format!("+ {line}\n"));
    }
    let end = (new.len() - suffix + CONTEXT).min(new.len());
    for line in &new[new.len() - suffix..end] {
        out.push_str(&format!("  {line}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shows_an_insertion_with_context() {
        let before = "a\nb\nc\nd\ne\n";
        let after = "a\nb\nc\nX\nd\ne\n";
        assert_eq!(changed_lines(before, after), "  b\n  c\n+ X\n  d\n  e\n");
    }

    #[test]
    fn shows_a_new_file_whole() {
        assert_eq!(changed_lines("", "{\n}\n"), "+ {\n+ }\n");
    }
}
