//! Where the names a failure says are missing are defined. "NameError: name 'mul' is not defined"
//! tells a small model that something is wrong, not what: in the field the 1.5B had written `def
//! mul` in calc.py and a test calling it, and never imported it, for three attempts. The runtime
//! finds the definitions in the worktree and says where they are (or that there are none), so the
//! fix is one step away for any model. And which failing tests passed before the unit's change: a
//! model that turned `add`'s body into `a * b` to "add mul" reads `test_add` failing as its own new
//! test's trouble unless told it broke a test that passed.

use std::path::Path;
use std::sync::LazyLock;

use regex::Regex;

/// What the common runtimes and compilers say of a name they cannot find, the name captured.
static MISSING: LazyLock<Vec<Regex>> = LazyLock::new(|| {
    [
        // Python.
        r"NameError: name '(\w+)' is not defined",
        r"ImportError: cannot import name '(\w+)'",
        // JavaScript and TypeScript.
        r"ReferenceError: (\w+) is not defined",
        r"Cannot find name '(\w+)'",
        // Rust.
        r"cannot find (?:function|value|type|struct|macro|trait) `(\w+)` in",
        // Go.
        r"undefined: (\w+)",
    ]
    .iter()
    .map(|p| Regex::new(p).unwrap_or_else(|e| panic!("bad missing-name pattern {p}: {e}")))
    .collect()
});

/// The most names looked up for one failure, and places shown for each.
const MAX_NAMES: usize = 3;
const MAX_PLACES: usize = 3;
/// Bounds on the search, so a huge worktree costs milliseconds, not minutes.
const MAX_FILES: usize = 2_000;
const MAX_FILE_BYTES: u64 = 512 * 1024;

/// The names `output` says are missing, in order, at most [`MAX_NAMES`].
pub(crate) fn missing_names(output: &str) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for line in output.lines() {
        for pattern in MISSING.iter() {
            if let Some(name) = pattern.captures(line).and_then(|c| c.get(1)) {
                let name = name.as_str().to_string();
                if !names.contains(&name) && names.len() < MAX_NAMES {
                    names.push(name);
                }
            }
        }
    }
    names
}

/// For each missing name of `output`, where the worktree at `root` defines it; `None` when the
/// output names none.
pub(crate) fn where_defined(output: &str, root: &Path) -> Option<String> {
    let names = missing_names(output);
    if names.is_empty() {
        return None;
    }
    let files = source_files(root);
    let mut text = String::from(
        "Where the names the failure says are missing are defined in your worktree (the file that failed \
         must import them, or call them where they are in scope):",
    );
    for name in &names {
        let places = definitions_of(name, root, &files);
        if places.is_empty() {
            text.push_str(&format!(
                "\n- `{name}`: defined nowhere in the worktree (write it, or, if it is a library's, import it)"
            ));
        } else {
            text.push_str(&format!("\n- `{name}`: {}", places.join("; ")));
        }
    }
    Some(text)
}

/// The functions `text` names by a call (`mul(a, b)` → `mul`) that no file of the worktree at
/// `root` defines, at most [`MAX_NAMES`]: what a unit asks for and a claim of "no change needed"
/// has not got. Python's and JavaScript's common built-ins are left out; a test file's definitions
/// count only for a test's own name (see [`names_a_test`]).
pub(crate) fn undefined_functions(text: &str, root: &Path) -> Vec<String> {
    static CALLED: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"\b([A-Za-z_][A-Za-z0-9_]{1,60})\(").unwrap_or_else(|e| panic!("bad call pattern: {e}"))
    });
    const BUILT_IN: [&str; 12] = [
        "print", "len", "range", "str", "int", "float", "list", "dict", "set", "console", "require", "main",
    ];
    let mut called: Vec<String> = Vec::new();
    for captures in CALLED.captures_iter(text) {
        let (Some(whole), Some(name)) = (captures.get(0), captures.get(1)) else {
            continue;
        };
        // "attempt(s)", "test(es)": a plural, not a call.
        let after = &text[whole.end()..];
        if after.starts_with("s)") || after.starts_with("es)") {
            continue;
        }
        let name = name.as_str().to_string();
        if !BUILT_IN.contains(&name.as_str()) && !called.contains(&name) && called.len() < MAX_NAMES {
            called.push(name);
        }
    }
    if called.is_empty() {
        return called;
    }
    let files = SearchedFiles::of(root);
    called
        .into_iter()
        .filter(|name| definitions_of(name, root, files.for_name(name)).is_empty())
        .collect()
}

/// The functions `unit` names by a call (in its own words, `plan::what_unit_asks`) that no file of
/// the tree at `root` defines; the tree is walked off the async threads.
pub(crate) async fn functions_unit_lacks(unit: &orchestrator_protocol::UnitSpec, root: &Path) -> Vec<String> {
    let asked = crate::plan::what_unit_asks(unit);
    let root = root.to_path_buf();
    tokio::task::spawn_blocking(move || undefined_functions(&asked, &root))
        .await
        .unwrap_or_default()
}

/// The worktree's source files, and those of them that are no test files.
struct SearchedFiles {
    all: Vec<std::path::PathBuf>,
    outside_tests: Vec<std::path::PathBuf>,
}

impl SearchedFiles {
    fn of(root: &Path) -> Self {
        let all = source_files(root);
        let outside_tests = all
            .iter()
            .filter(|file| {
                let rel = file.strip_prefix(root).unwrap_or(file);
                !crate::test_count::is_test_file(&rel.to_string_lossy())
            })
            .cloned()
            .collect();
        SearchedFiles { all, outside_tests }
    }

    /// Where a definition of `name` counts: a test file's only for a test's own name.
    fn for_name(&self, name: &str) -> &[std::path::PathBuf] {
        if names_a_test(name) {
            &self.all
        } else {
            &self.outside_tests
        }
    }
}

/// Whether a unit's text asks for a test to be added ("Add a test for `mul`", "…, and a test for
/// it", "Write unit tests for the parser"); running or fixing tests is not asking for one.
pub(crate) fn asks_for_a_test(text: &str) -> bool {
    static ASKS: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(
            r"(?i)\b(?:add|write|create|include|cover)\w*\s+(?:(?:a|an|one|some|new|unit|more)\s+){0,2}tests?\b|\band\s+(?:a|an)\s+(?:(?:new|unit)\s+)?tests?\b",
        )
        .unwrap_or_else(|e| panic!("bad test request pattern: {e}"))
    });
    ASKS.is_match(text)
}

/// Whether `name` is a test's own (`test_mul`, `TestMul`, `mul_test`, `CalcTest`): only such a
/// name counts as defined by a test file. Anything else a unit names belongs in the code under
/// test; the field's 1.5B defined `mul` at the top of test_calc.py, where only the test saw it.
fn names_a_test(name: &str) -> bool {
    name.starts_with("test")
        || name.starts_with("Test")
        || name.ends_with("_test")
        || name.ends_with("Test")
        || name.ends_with("Tests")
}

/// Where the worktree at `root` defines each of `names` (`path:line` and the line), for the names
/// it defines; one walk of the tree for all of them. As in [`undefined_functions`], a test file's
/// definitions count only for a test's own name.
pub(crate) fn definitions(names: &[String], root: &Path) -> Vec<(String, Vec<String>)> {
    if names.is_empty() {
        return Vec::new();
    }
    let files = SearchedFiles::of(root);
    names
        .iter()
        .map(|name| (name.clone(), definitions_of(name, root, files.for_name(name))))
        .filter(|(_, places)| !places.is_empty())
        .collect()
}

/// `path:line` and the line, for each line of `files` that defines `name`.
fn definitions_of(name: &str, root: &Path, files: &[std::path::PathBuf]) -> Vec<String> {
    let forms = [
        format!("def {name}("),
        format!("async def {name}("),
        format!("class {name}"),
        format!("fn {name}("),
        format!("fn {name}<"),
        format!("function {name}("),
        format!("func {name}("),
        format!("struct {name}"),
        format!("const {name} ="),
        format!("let {name} ="),
        format!("{name} = "),
    ];
    let mut places = Vec::new();
    for file in files {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for (i, line) in text.lines().enumerate() {
            let code = line.trim_start();
            let code = code.strip_prefix("pub ").unwrap_or(code);
            let code = code.strip_prefix("export ").unwrap_or(code);
            let defines = forms.iter().any(|form| {
                code.starts_with(form.as_str())
                    && (!form.ends_with(' ') || line.len() == code.len() || !line.starts_with(' '))
            });
            if defines {
                let rel = file.strip_prefix(root).unwrap_or(file).display();
                places.push(format!(
                    "{rel}:{} `{}`",
                    i + 1,
                    crate::prompts::cut(line.trim(), 120)
                ));
                if places.len() >= MAX_PLACES {
                    return places;
                }
            }
        }
    }
    places
}

/// The worktree's text files worth searching: not hidden, not build outputs or dependencies.
fn source_files(root: &Path) -> Vec<std::path::PathBuf> {
    const SKIP: [&str; 7] = [
        "target",
        "node_modules",
        "dist",
        "build",
        "__pycache__",
        "vendor",
        "venv",
    ];
    let mut found = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut entries: Vec<_> = entries.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || SKIP.contains(&name.as_str()) {
                continue;
            }
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file() && entry.metadata().is_ok_and(|m| m.len() <= MAX_FILE_BYTES) {
                found.push(entry.path());
                if found.len() >= MAX_FILES {
                    return found;
                }
            }
        }
    }
    found
}

/// The short name of a failed test as runners print it: `test_add (test_calc.T.test_add)` →
/// `test_add`, `tests/test_a.py::test_x` and `tests::x` → the last part.
pub(crate) fn short_test_name(failed: &str) -> &str {
    let first = failed.split_whitespace().next().unwrap_or(failed);
    let first = first.split('[').next().unwrap_or(first);
    let last = first.rsplit("::").next().unwrap_or(first);
    last.rsplit('.').next().unwrap_or(last)
}

/// A `git grep -E` pattern for a line that defines the test function `name` (Python's `def`, Rust's
/// `fn`, Go's `func`, JavaScript's `function`); `None` for a name that is not a plain identifier.
pub(crate) fn test_definition_pattern(name: &str) -> Option<String> {
    let plain = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    plain.then(|| format!("(def|fn|func|function)[[:space:]]+{name}[[:space:]]*[(<]"))
}

/// The failed tests of `evidence` that may have passed on the mission's base commit: those not
/// among the base's failures, each with its short name, at most [`MAX_BROKEN`] (the caller keeps
/// those whose name the base commit has).
pub(crate) fn newly_failed(evidence: &[orchestrator_protocol::Evidence]) -> Vec<(String, String)> {
    let failing = evidence
        .iter()
        .filter(|e| e.kind == "test" && !e.passed())
        .flat_map(|e| e.failed_tests.iter().filter(|t| !e.baseline_failures.contains(t)));
    with_short_names(failing)
}

/// Failed test names with their short names, without repeats, at most [`MAX_BROKEN`].
pub(crate) fn with_short_names<'a>(failing: impl Iterator<Item = &'a String>) -> Vec<(String, String)> {
    let mut found: Vec<(String, String)> = Vec::new();
    for failed in failing {
        let short = short_test_name(failed);
        if !short.is_empty() && !found.iter().any(|(f, _)| f == failed) {
            found.push((failed.clone(), short.to_string()));
        }
        if found.len() >= MAX_BROKEN {
            break;
        }
    }
    found
}

/// The most broken tests named.
const MAX_BROKEN: usize = 5;

/// What a worker is told of tests its change broke.
pub(crate) fn broken_tests_note(broken: &[String]) -> Option<String> {
    (!broken.is_empty()).then(|| {
        format!(
            "These tests passed on the mission's base commit, before your change, and fail now: your change \
             broke them: {}. They state what the existing code must do: do not edit them to expect \
             something else. Put back the code your task did not ask to change (add new code beside \
             it instead).",
            broken
                .iter()
                .map(|t| format!("`{}`", crate::prompts::cut(t, 120)))
                .collect::<Vec<_>>()
                .join(", ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_common_missing_name_messages_are_read() {
        let python = "Traceback (most recent call last):\n  File \"test_calc.py\", line 13, in test_mul\n    self.assertEqual(mul(2, 3), 6)\nNameError: name 'mul' is not defined\n";
        assert_eq!(missing_names(python), ["mul"]);
        assert_eq!(
            missing_names("ImportError: cannot import name 'sub' from 'calc' (calc.py)"),
            ["sub"]
        );
        assert_eq!(missing_names("ReferenceError: mul is not defined"), ["mul"]);
        assert_eq!(
            missing_names("error[E0425]: cannot find function `mul` in this scope"),
            ["mul"]
        );
        assert_eq!(missing_names("./calc_test.go:9:5: undefined: Mul"), ["Mul"]);
        assert!(missing_names("AssertionError: 5 != 6").is_empty());
    }

    #[test]
    fn a_missing_name_is_found_where_it_is_defined_or_said_to_be_nowhere() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        std::fs::write(
            root.join("calc.py"),
            "def add(a, b):\n    return a + b\n\n\ndef mul(a, b):\n    return a * b\n",
        )
        .expect("write");
        std::fs::create_dir_all(root.join("node_modules/x")).expect("mkdir");
        std::fs::write(root.join("node_modules/x/calc.py"), "def mul(a, b):\n    pass\n").expect("write");
        let output = "NameError: name 'mul' is not defined\nNameError: name 'div' is not defined\n";
        let said = where_defined(output, root).expect("names");
        assert!(said.contains("- `mul`: calc.py:5 `def mul(a, b):`"), "{said}");
        assert!(!said.contains("node_modules"), "{said}");
        assert!(said.contains("- `div`: defined nowhere"), "{said}");
        assert!(where_defined("AssertionError", root).is_none());
    }

    #[test]
    fn failed_tests_are_shortened_and_only_new_failures_are_suspects() {
        assert_eq!(
            short_test_name("test_add (test_calc.CalcTest.test_add)"),
            "test_add"
        );
        assert_eq!(short_test_name("tests/test_a.py::test_x"), "test_x");
        assert_eq!(short_test_name("tests::subs"), "subs");
        assert_eq!(short_test_name("TestAdd"), "TestAdd");
        assert_eq!(short_test_name("t.py::test_x[1-2]"), "test_x");
        assert!(test_definition_pattern("test_x").is_some());
        assert!(test_definition_pattern("a|b").is_none());
        let evidence = orchestrator_protocol::Evidence {
            kind: "test".into(),
            command: "t".into(),
            exit_code: Some(1),
            duration_ms: 1,
            tree: "t".into(),
            timed_out: false,
            output_tail: String::new(),
            failed_tests: vec!["test_add (t.T.test_add)".into(), "test_old (t.T.test_old)".into()],
            baseline_failures: vec!["test_old (t.T.test_old)".into()],
            ..Default::default()
        };
        assert_eq!(
            newly_failed(std::slice::from_ref(&evidence)),
            [("test_add (t.T.test_add)".to_string(), "test_add".to_string())]
        );
        let note = broken_tests_note(&["test_add (t.T.test_add)".into()]).expect("a note");
        assert!(
            note.contains("`test_add (t.T.test_add)`") && note.contains("broke"),
            "{note}"
        );
        assert!(broken_tests_note(&[]).is_none());
    }

    #[test]
    fn a_text_that_asks_for_a_test_is_told_from_one_that_runs_or_fixes_them() {
        for asks in [
            "Add a test for the `mul` function in test_calc.py",
            "Add a function mul(a, b) to calc.py that returns a * b, and a test for it in test_calc.py",
            "Write unit tests for the parser",
            "Add tests",
            "Create a new test covering empty input",
        ] {
            assert!(asks_for_a_test(asks), "{asks}");
        }
        for not in [
            "Run the tests for the parser",
            "Fix the failing test in test_calc.py",
            "Make the tests pass",
            "Add mul(a, b) to calc.py",
            "Update the test runner config",
        ] {
            assert!(!asks_for_a_test(not), "{not}");
        }
    }

    #[test]
    fn functions_a_text_asks_for_and_the_worktree_lacks_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("calc.py"), "def add(a, b):\n    return a + b\n").expect("write");
        let asks = "Add mul(a, b) beside add(a, b); print(mul(2, 3)) shows it.";
        assert_eq!(undefined_functions(asks, dir.path()), ["mul"]);
        assert!(undefined_functions("Nothing called here.", dir.path()).is_empty());
        assert!(
            undefined_functions("did not pass after 3 attempt(s) of 2 test(es)", dir.path()).is_empty(),
            "plurals"
        );
        // The field's 1.5B: `mul` at the top of the test file is not the code under test; the
        // test's own name is defined there.
        std::fs::write(
            dir.path().join("test_calc.py"),
            "def mul(a, b):\n    return a * b\ndef test_mul():\n    pass\n",
        )
        .expect("write");
        let asks = "Add mul(a, b) to calc.py and test_mul() to test_calc.py.";
        assert_eq!(undefined_functions(asks, dir.path()), ["mul"]);
    }
}
