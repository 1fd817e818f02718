//! What a reviewer must show when it fails a unit that changed files. A weak reviewer fails good work
//! for invented reasons (the 1.5B field test: "returned 2 instead of 2", while the real fault, `mul`
//! written into the test file, went unnamed), and the worker's next attempt "fixes" the invented
//! problem. Each issue of such a fail therefore carries `file` and `quote`, one line copied from that
//! file in the worktree or from the diff (removed lines, deleted files), and the runtime confirms the
//! quote is there. Confirmed quotes go to the worker with their issue; an issue whose quote is not
//! found is marked as such, so the worker weighs it.

use std::path::PathBuf;

use orchestrator_protocol::ReviewIssue;
use serde_json::{json, Value};

use crate::checked::{quoted_in, read_inside, too_short, MIN_QUOTE_CHARS};
use crate::prompts::cut;

/// At most this many issues of a failing review are checked and recorded.
pub(crate) const MAX_ISSUES: usize = 8;
/// How much of a quote is shown to the worker or in a message.
const QUOTE_SHOWN_CHARS: usize = 200;

/// The `issues` property of `submit_review` for a unit that changed files: `file` and `quote` are
/// required, so an endpoint that holds the model to the schema makes it write them.
pub(crate) fn issues_property() -> Value {
    json!({
        "type": "array",
        "maxItems": MAX_ISSUES,
        "items": {
            "type": "object",
            "properties": {
                "title": {"type": "string"},
                "description": {"type": "string"},
                "file": {"type": "string", "description": "the file the issue is about"},
                "quote": {"type": "string", "description": "one line copied exactly from that file (or \
                          from the diff): the line the issue is about, or where the missing thing belongs"}
            },
            "required": ["title", "description", "file", "quote"],
            "additionalProperties": false
        }
    })
}

/// Each issue's `quote` in the raw arguments, in order (`None`: not given, or not text).
pub(crate) fn quotes_of(arguments: &Value) -> Vec<Option<String>> {
    let Some(issues) = arguments.get("issues").and_then(Value::as_array) else {
        return Vec::new();
    };
    issues
        .iter()
        .take(MAX_ISSUES)
        .map(|issue| issue.get("quote").and_then(Value::as_str).map(str::to_string))
        .collect()
}

/// Where the quotes of a unit's failing review are looked for: its worktree and its diff.
pub(crate) struct Grounds {
    pub root: PathBuf,
    pub diff: String,
}

/// One issue's quote as confirmed (the quote), or why it is not.
pub(crate) type Grounding = Result<String, String>;

impl Grounds {
    /// Confirms the quote of each of the first [`MAX_ISSUES`] issues.
    pub(crate) fn check(&self, issues: &[ReviewIssue], quotes: &[Option<String>]) -> Vec<Grounding> {
        issues
            .iter()
            .take(MAX_ISSUES)
            .enumerate()
            .map(|(i, issue)| self.confirm(issue, quotes.get(i).and_then(Option::as_deref)))
            .collect()
    }

    fn confirm(&self, issue: &ReviewIssue, quote: Option<&str>) -> Grounding {
        if let Some(defined) = missing_but_defined(issue, &self.root) {
            return Err(defined);
        }
        let file = issue
            .file
            .as_deref()
            .map(str::trim)
            .filter(|f| !f.is_empty())
            .ok_or("no `file` was given")?;
        let quote = quote
            .map(str::trim)
            .filter(|q| !q.is_empty())
            .ok_or("no `quote` was given")?;
        // A line copied from the diff may keep its `+` or `-`.
        let bare = quote.strip_prefix(['+', '-']).unwrap_or(quote).trim();
        if too_short(bare) {
            return Err(format!(
                "the quote is too short to show anything ({MIN_QUOTE_CHARS} characters at least)"
            ));
        }
        let texts: Vec<String> = [read_inside(&self.root, file), diff_text_of(&self.diff, file)]
            .into_iter()
            .flatten()
            .collect();
        if texts.is_empty() {
            return Err(format!("`{file}` is not a file of the worktree or of the diff"));
        }
        if texts.iter().any(|t| quoted_in(t, quote) || quoted_in(t, bare)) {
            Ok(quote.to_string())
        } else {
            Err(format!("the quote is not in `{file}`: \"{}\"", cut(quote, 120)))
        }
    }
}

/// An issue that says a function is missing (or not defined) where the worktree defines it: why it
/// is not confirmed. The field's 1.5B reviewer failed a unit with "The function mul(a, b) is
/// missing" while the diff it judged added `def mul(a, b):`, and again with "The test in test_calc.py
/// is not running because the `mul` function is not defined in `calc.py`". A name given as what a
/// missing test is for ("the test for mul(a, b) is missing") is not such a claim.
fn missing_but_defined(issue: &ReviewIssue, root: &std::path::Path) -> Option<String> {
    static NAMED: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"`([A-Za-z_][A-Za-z0-9_]{1,60})`|\b([A-Za-z_][A-Za-z0-9_]{1,60})\(")
            .unwrap_or_else(|e| panic!("bad name pattern: {e}"))
    });
    const ABSENT: [&str; 7] = [
        "missing",
        "not defined",
        "undefined",
        "not implemented",
        "does not exist",
        "doesn't exist",
        "is absent",
    ];
    let text = format!("{} {}", issue.title, issue.description);
    let lower = text.to_lowercase();
    if !ABSENT.iter().any(|a| lower.contains(a)) {
        return None;
    }
    // "The test for mul(a, b) is missing" names `mul` for a test that is missing: such names, and
    // tests' own names, are not claims that the function is missing.
    let about_its_test = |name: &str| {
        let name = name.to_lowercase();
        [
            "test for ",
            "tests for ",
            "test of ",
            "tests of ",
            "test for the ",
            "test for `",
        ]
        .iter()
        .any(|lead| lower.contains(&format!("{lead}{name}")))
    };
    let mut names: Vec<String> = Vec::new();
    for captures in NAMED.captures_iter(&text) {
        let Some(name) = captures.get(1).or_else(|| captures.get(2)) else {
            continue;
        };
        let name = name.as_str();
        let test_name = name.to_lowercase().starts_with("test");
        if !test_name && !about_its_test(name) && !names.iter().any(|n| n == name) && names.len() < 3 {
            names.push(name.to_string());
        }
    }
    let (name, places) = crate::hints::definitions(&names, root).into_iter().next()?;
    Some(format!(
        "it says `{name}` is missing, but the worktree defines it: {}. If it is wrong, quote its line \
         and say what is wrong with it",
        places.join("; ")
    ))
}

/// The text a unified diff shows of `file` (removed, added and context lines, markers taken off),
/// if the diff touches it.
fn diff_text_of(diff: &str, file: &str) -> Option<String> {
    let file = file.trim().trim_start_matches("./");
    let mut found: Option<String> = None;
    let mut current: Option<String> = None;
    let mut in_hunk = false;
    let close = |current: &mut Option<String>, found: &mut Option<String>| {
        if let Some(text) = current.take() {
            found.get_or_insert_with(String::new).push_str(&text);
        }
    };
    for line in diff.lines() {
        if line.starts_with("diff --git ") {
            close(&mut current, &mut found);
            in_hunk = false;
            continue;
        }
        if !in_hunk {
            let path = line
                .strip_prefix("--- a/")
                .or_else(|| line.strip_prefix("+++ b/"));
            if path == Some(file) && current.is_none() {
                current = Some(String::new());
            }
            in_hunk = line.starts_with("@@");
            continue;
        }
        if let Some(text) = current.as_mut() {
            if let Some(content) = line.strip_prefix(['+', '-', ' ']) {
                text.push_str(content);
                text.push('\n');
            }
        }
    }
    close(&mut current, &mut found);
    found
}

/// What the reviewer is told when some quotes were not confirmed: each such issue and why.
pub(crate) fn send_back(issues: &[ReviewIssue], groundings: &[Grounding]) -> String {
    let unconfirmed: Vec<String> = issues
        .iter()
        .zip(groundings)
        .enumerate()
        .filter_map(|(i, (issue, grounding))| {
            let why = grounding.as_ref().err()?;
            Some(format!(
                "issue {} \"{}\": {why}",
                i + 1,
                cut(issue.title.trim(), 100)
            ))
        })
        .collect();
    format!(
        "Not recorded: each issue of a failing review names its `file` and quotes in `quote` one line \
         copied exactly from it (the line the issue is about, or where the missing thing belongs), so \
         the worker knows what you mean. Not confirmed:\n- {}\nRead the file and copy the line; if on a \
         second look nothing is wrong, the verdict is pass. Call submit_review again.",
        unconfirmed.join("\n- ")
    )
}

/// The issues as recorded: the first [`MAX_ISSUES`], each confirmed quote shown under its issue, each
/// issue whose quote was not confirmed marked, so the worker weighs it.
pub(crate) fn annotated(issues: Vec<ReviewIssue>, groundings: &[Grounding]) -> Vec<ReviewIssue> {
    issues
        .into_iter()
        .zip(groundings)
        .map(|(mut issue, grounding)| {
            issue.description = match grounding {
                Ok(quote) => format!(
                    "{}\n  The line meant: \"{}\"",
                    issue.description.trim_end(),
                    cut(quote, QUOTE_SHOWN_CHARS)
                ),
                Err(why) => format!(
                    "(not confirmed by the runtime: {why}) {}",
                    issue.description.trim()
                ),
            };
            issue
        })
        .collect()
}

/// The summary of a review whose issues were cut to [`MAX_ISSUES`], saying so.
pub(crate) fn summary_after_cut(summary: &str, issues: usize) -> String {
    match issues.saturating_sub(MAX_ISSUES) {
        0 => summary.to_string(),
        left => format!(
            "{}\n({left} more issue(s) left out: a review lists at most {MAX_ISSUES}.)",
            summary.trim_end()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issue(file: Option<&str>) -> ReviewIssue {
        ReviewIssue {
            title: "t".into(),
            description: "d".into(),
            file: file.map(str::to_string),
        }
    }

    /// A worktree with `calc.py`, a secret beside it, and a diff that deleted `old.py`.
    fn grounds() -> (tempfile::TempDir, Grounds) {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("wt");
        std::fs::create_dir_all(&root).expect("mkdir");
        std::fs::write(root.join("calc.py"), "def add(a, b):\n\treturn a * b\n").expect("write");
        std::fs::write(dir.path().join("secret.txt"), "a secret line here\n").expect("write");
        let diff = "diff --git a/calc.py b/calc.py\n--- a/calc.py\n+++ b/calc.py\n@@ -1,2 +1,2 @@\n \
                    def add(a, b):\n-\treturn a + b\n+\treturn a * b\n\
                    diff --git a/old.py b/old.py\ndeleted file mode 100644\n--- a/old.py\n+++ /dev/null\n\
                    @@ -1 +0,0 @@\n-def old_helper():\n";
        let grounds = Grounds {
            root,
            diff: diff.into(),
        };
        (dir, grounds)
    }

    fn check(grounds: &Grounds, file: Option<&str>, quote: Option<&str>) -> Grounding {
        let quotes = [quote.map(str::to_string)];
        grounds.check(&[issue(file)], &quotes).remove(0)
    }

    #[test]
    fn a_quote_is_confirmed_in_the_worktree_or_the_diff() {
        let (_dir, grounds) = grounds();
        let confirmed = [
            ("calc.py", "def add(a, b):"),
            ("./calc.py", "  return   a * b "),
            // Removed lines and deleted files are in the diff, markers and all.
            ("calc.py", "-\treturn a + b"),
            ("calc.py", "return a + b"),
            ("old.py", "def old_helper():"),
            ("calc.py", "+\treturn a * b"),
        ];
        for (file, quote) in confirmed {
            assert!(
                check(&grounds, Some(file), Some(quote)).is_ok(),
                "{file}: {quote}"
            );
        }
    }

    #[test]
    fn a_quote_that_proves_nothing_or_reaches_outside_is_not_confirmed() {
        let (dir, grounds) = grounds();
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink("/etc/passwd", grounds.root.join("passwd")).expect("link");
            std::os::unix::fs::symlink(dir.path().join("secret.txt"), grounds.root.join("s")).expect("link");
        }
        let secret = dir.path().join("secret.txt");
        let secret = secret.to_string_lossy();
        let cases = [
            (
                Some("calc.py"),
                Some("return 0 instead"),
                "the quote is not in `calc.py`",
            ),
            (Some("calc.py"), Some("a * b"), "too short"),
            (Some("calc.py"), Some("+ }"), "too short"),
            (Some("calc.py"), None, "no `quote` was given"),
            (Some("calc.py"), Some("   "), "no `quote` was given"),
            (None, Some("def add(a, b):"), "no `file` was given"),
            (
                Some("none.py"),
                Some("def add(a, b):"),
                "not a file of the worktree or of the diff",
            ),
            (Some("../secret.txt"), Some("a secret line here"), "not a file"),
            (Some(&*secret), Some("a secret line here"), "not a file"),
            (Some("/etc/passwd"), Some("root:x:0:0:root"), "not a file"),
            (Some("passwd"), Some("root:x:0:0:root"), "not a file"),
            (Some("s"), Some("a secret line here"), "not a file"),
            // A path a diff line names is still only that file's text.
            (
                Some("old.py"),
                Some("return a * b"),
                "the quote is not in `old.py`",
            ),
        ];
        for (file, quote, expected) in cases {
            let why = check(&grounds, file, quote).expect_err("not confirmed");
            assert!(why.contains(expected), "{file:?} {quote:?}: {why}");
        }
    }

    #[test]
    fn quotes_are_read_in_order_and_junk_is_none() {
        let args = json!({"issues": [{"quote": "def add(a, b):"}, {"quote": 3}, {}, {"quote": ["x"]}]});
        assert_eq!(
            quotes_of(&args),
            vec![Some("def add(a, b):".into()), None, None, None]
        );
        assert!(quotes_of(&json!({"issues": "many"})).is_empty());
        let flood: Vec<Value> = (0..100).map(|_| json!({"quote": "q"})).collect();
        assert_eq!(quotes_of(&json!({ "issues": flood })).len(), MAX_ISSUES);
    }

    #[test]
    fn the_diff_text_of_a_file_is_its_own() {
        let (_dir, grounds) = grounds();
        let calc = diff_text_of(&grounds.diff, "calc.py").expect("in the diff");
        assert_eq!(calc, "def add(a, b):\n\treturn a + b\n\treturn a * b\n");
        assert_eq!(
            diff_text_of(&grounds.diff, "old.py").as_deref(),
            Some("def old_helper():\n")
        );
        assert!(diff_text_of(&grounds.diff, "none.py").is_none());
        assert!(diff_text_of("(diff unavailable: boom)", "calc.py").is_none());
    }

    #[test]
    fn an_issue_calling_a_defined_function_missing_is_not_confirmed() {
        let (_dir, grounds) = grounds();
        let said = |title: &str, description: &str| {
            let issue = ReviewIssue {
                title: title.into(),
                description: description.into(),
                file: Some("calc.py".into()),
            };
            grounds
                .check(&[issue], &[Some("def add(a, b):".to_string())])
                .remove(0)
        };
        let why = said("File: calc.py", "The function add(a, b) is missing.").unwrap_err();
        assert!(
            why.contains("`add`") && why.contains("calc.py:1 `def add(a, b):`"),
            "{why}"
        );
        assert!(said("`add` is not defined", "d").is_err());
        // A missing function the worktree lacks, a test said to be missing, another complaint: as before.
        assert!(said("The function mul(a, b) is missing.", "d").is_ok());
        assert!(said("The test for add(a, b) is missing.", "d").is_ok());
        assert!(said("Tests missing", "no test for `add` in test_calc.py").is_ok());
        // The field's second wording: about a test, but claiming the function is not defined.
        let why = said(
            "The test in test_calc.py is not running",
            "because the `add` function is not defined in `calc.py`",
        )
        .unwrap_err();
        assert!(why.contains("`add`"), "{why}");
        assert!(said("add(a, b) multiplies", "it should add").is_ok());
    }
}
