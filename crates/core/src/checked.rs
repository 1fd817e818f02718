//! What a reviewer must show before it passes a unit that changed nothing. A worker may answer that its
//! unit needs no change, and a weak reviewer passes that without a look (the 1.5B field test sealed
//! "add a function mul" with nothing done). A pass of an empty diff therefore carries `checked`: files
//! and a line quoted from each, and the runtime confirms every quote is really in that file. That proves
//! the reviewer read the code the claim is about, and puts what it relied on in the record.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{json, Value};

/// One thing a reviewer looked at: a file of the worktree and a line copied from it.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Checked {
    pub file: String,
    pub quote: String,
}

/// Quotes shorter than this prove nothing (`}` is in every file).
pub(crate) const MIN_QUOTE_CHARS: usize = 8;
/// At most this many are checked and recorded.
const MAX_CHECKED: usize = 8;

/// The `checked` property of `submit_review` when the diff is empty.
pub(crate) fn checked_property() -> Value {
    json!({
        "type": "array",
        "description": "Required to pass a unit that changed no file: each file you read that shows the unit \
                        is already done, with one line copied exactly from it.",
        "maxItems": MAX_CHECKED,
        "items": {
            "type": "object",
            "properties": {
                "file": {"type": "string"},
                "quote": {"type": "string"}
            },
            "required": ["file", "quote"],
            "additionalProperties": false
        }
    })
}

/// Takes `checked` out of a review's arguments (the review itself has no such field).
pub(crate) fn take_checked(arguments: &mut Value) -> Result<Vec<Checked>, String> {
    let Some(raw) = arguments.as_object_mut().and_then(|o| o.remove("checked")) else {
        return Ok(Vec::new());
    };
    serde_json::from_value::<Vec<Checked>>(raw)
        .map_err(|e| format!("`checked` must be a list of {{\"file\", \"quote\"}} objects ({e})"))
}

/// Confirms each quote is in its file under `root`; the problems otherwise, one per entry.
pub(crate) fn confirm(root: &Path, checked: &[Checked]) -> Result<(), Vec<String>> {
    if checked.is_empty() {
        return Err(vec!["`checked` is missing or empty".into()]);
    }
    let problems: Vec<String> = checked
        .iter()
        .take(MAX_CHECKED)
        .filter_map(|c| confirm_one(root, c).err())
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

fn confirm_one(root: &Path, checked: &Checked) -> Result<(), String> {
    let quote = checked.quote.trim();
    if too_short(quote) {
        return Err(format!(
            "the quote from `{}` is too short to show anything ({MIN_QUOTE_CHARS} characters at least)",
            checked.file
        ));
    }
    let text = read_inside(root, &checked.file)
        .ok_or_else(|| format!("`{}` is not a file of the worktree", checked.file))?;
    if quoted_in(&text, quote) {
        Ok(())
    } else {
        Err(format!(
            "`{}` does not contain the line you quoted: {}",
            checked.file,
            crate::prompts::cut(quote, 120)
        ))
    }
}

/// Whether `quote` proves nothing by its length (`}` is in every file); a run of whitespace counts once.
pub(crate) fn too_short(quote: &str) -> bool {
    squeeze(quote).chars().count() < MIN_QUOTE_CHARS
}

/// Whether `text` holds `quote`. Whitespace may differ in a copy (tabs, a trailing space); the words
/// may not.
pub(crate) fn quoted_in(text: &str, quote: &str) -> bool {
    let quote = squeeze(quote);
    !quote.is_empty() && squeeze(text).contains(&quote)
}

fn squeeze(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Bytes of a file read to confirm a quote: a worker may leave a huge file, and a quote is a line.
const MAX_READ_BYTES: u64 = 4 * 1024 * 1024;

/// The text of the file `rel` under `root` (its first [`MAX_READ_BYTES`]), if it is one.
pub(crate) fn read_inside(root: &Path, rel: &str) -> Option<String> {
    use std::io::Read as _;
    let file = std::fs::File::open(inside(root, rel)?).ok()?;
    let mut bytes = Vec::new();
    file.take(MAX_READ_BYTES).read_to_end(&mut bytes).ok()?;
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// `rel` as a file under `root`, never outside it (no `..` escape, no symlink out, no absolute path
/// elsewhere).
fn inside(root: &Path, rel: &str) -> Option<PathBuf> {
    let root = std::fs::canonicalize(root).ok()?;
    let rel = rel.trim().trim_start_matches("./");
    let path = std::fs::canonicalize(root.join(rel)).ok()?;
    (path.starts_with(&root) && path.is_file()).then_some(path)
}

/// The review's summary with what the reviewer checked, for the record.
pub(crate) fn summary_with(summary: &str, checked: &[Checked]) -> String {
    let list: Vec<String> = checked
        .iter()
        .take(MAX_CHECKED)
        .map(|c| {
            format!(
                "{}: \"{}\"",
                c.file.trim(),
                crate::prompts::cut(c.quote.trim(), 200)
            )
        })
        .collect();
    format!("{}\nChecked: {}", summary.trim_end(), list.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checked(file: &str, quote: &str) -> Checked {
        Checked {
            file: file.into(),
            quote: quote.into(),
        }
    }

    #[test]
    fn a_quote_must_be_in_its_file_inside_the_worktree() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("wt");
        std::fs::create_dir_all(root.join("src")).expect("mkdir");
        std::fs::write(root.join("src/calc.py"), "def mul(a, b):\n\treturn a * b\n").expect("write");
        std::fs::write(dir.path().join("secret.txt"), "a secret line here\n").expect("write");
        assert!(confirm(&root, &[checked("src/calc.py", "def mul(a, b):")]).is_ok());
        assert!(
            confirm(&root, &[checked("./src/calc.py", "  return   a * b ")]).is_ok(),
            "whitespace may differ"
        );
        let cases = [
            (checked("src/calc.py", "def div(a, b):"), "does not contain"),
            (checked("src/calc.py", "a * b"), "too short"),
            (
                checked("src/none.py", "def mul(a, b):"),
                "not a file of the worktree",
            ),
            (
                checked("../secret.txt", "a secret line here"),
                "not a file of the worktree",
            ),
            (checked("src", "def mul(a, b):"), "not a file of the worktree"),
        ];
        for (entry, expected) in cases {
            let problems = confirm(&root, std::slice::from_ref(&entry)).expect_err("refused");
            assert!(problems[0].contains(expected), "{entry:?}: {problems:?}");
        }
        assert!(confirm(&root, &[]).is_err(), "nothing shown");
    }

    #[test]
    fn checked_is_taken_out_of_the_arguments() {
        let mut args = json!({"verdict": "pass", "summary": "s", "checked": [{"file": "a", "quote": "b"}]});
        let taken = take_checked(&mut args).expect("parsed");
        assert_eq!(taken.len(), 1);
        assert!(args.get("checked").is_none());
        let mut bad = json!({"checked": "calc.py"});
        assert!(take_checked(&mut bad).is_err());
        assert!(take_checked(&mut json!({"verdict": "pass"}))
            .expect("none")
            .is_empty());
        assert_eq!(
            summary_with("Fine.", &[checked("calc.py", "def mul(a, b):")]),
            "Fine.\nChecked: calc.py: \"def mul(a, b):\""
        );
    }
}
