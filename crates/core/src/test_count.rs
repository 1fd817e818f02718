//! How many tests a test command ran, read from what the common runners print at the end. A
//! passing test command that ran no test proves nothing, and a unit asked to add a test that runs
//! as many tests as before has not added one: the count, shown beside the exit code, lets a reviewer
//! see both (in the field, a 1.5B "test for mul" was a second copy of `mul` in the test file, and
//! the command passed with the same two tests).

use std::path::Path;
use std::sync::LazyLock;

use regex::Regex;

/// One runner's summary line and how to count from it.
struct Summary {
    pattern: Regex,
    count: fn(&regex::Captures<'_>) -> u64,
}

fn number(captures: &regex::Captures<'_>, name: &str) -> u64 {
    captures
        .name(name)
        .and_then(|m| m.as_str().parse().ok())
        .unwrap_or(0)
}

static SUMMARIES: LazyLock<Vec<Summary>> = LazyLock::new(|| {
    let summary = |pattern: &str, count: fn(&regex::Captures<'_>) -> u64| Summary {
        // The patterns are constants of this file; a typo fails every test of this module.
        pattern: Regex::new(pattern).unwrap_or_else(|e| panic!("bad summary pattern {pattern}: {e}")),
        count,
    };
    vec![
        // Python's unittest: `Ran 2 tests in 0.001s`; 3.12 prints `NO TESTS RAN` for none.
        summary(r"^Ran (?P<n>\d+) tests? in ", |c| number(c, "n")),
        summary(r"^NO TESTS RAN", |_| 0),
        // Rust's libtest, once per test binary: `test result: ok. 3 passed; 0 failed; 1 ignored; ...`
        summary(
            r"^test result: \w+\. (?P<passed>\d+) passed; (?P<failed>\d+) failed",
            |c| number(c, "passed") + number(c, "failed"),
        ),
        // pytest: `==== 3 passed, 1 skipped in 0.12s ====`, `no tests ran in 0.01s`.
        summary(
            r"^=*\s*(?:(?P<failed>\d+) failed, )?(?P<passed>\d+) passed\b.* in [\d.]+s",
            |c| number(c, "passed") + number(c, "failed"),
        ),
        summary(r"^=*\s*no tests ran in ", |_| 0),
        // Jest: `Tests:       1 failed, 4 passed, 5 total`.
        summary(r"^Tests:\s+.*?(?P<n>\d+) total", |c| number(c, "n")),
        // Vitest: ` Tests  4 passed (4)`.
        summary(r"^\s*Tests\s+.*\((?P<n>\d+)\)\s*$", |c| number(c, "n")),
        // Mocha: `  4 passing (12ms)`.
        summary(r"^\s*(?P<n>\d+) passing \(", |c| number(c, "n")),
    ]
});

/// The number of tests the output says ran, summed over the summary lines it has (libtest prints
/// one per test binary); `None` when no line is recognised.
pub(crate) fn tests_ran(output: &str) -> Option<u64> {
    let mut total = None;
    for line in output.lines() {
        for summary in SUMMARIES.iter() {
            if let Some(captures) = summary.pattern.captures(line) {
                *total.get_or_insert(0) += (summary.count)(&captures);
                break;
            }
        }
    }
    total
}

/// A test definition on one line of code, its name captured as `name`: Python's `def test_x(`
/// (unittest and pytest collect those names), Go's `func TestX(`, and JavaScript's `it('…'` /
/// `test('…'`. Rust's `#[test]` is left out: a workspace's test command is often one crate's, so a
/// test added to another crate would be counted as not run.
static TEST_DEFINITIONS: LazyLock<Vec<Regex>> = LazyLock::new(|| {
    [
        r"^\s*(?:async\s+)?def\s+(?P<name>test\w*)\s*\(",
        r"^func\s+(?P<name>Test\w*)\s*\(",
        r#"^\s*(?:it|test)(?:\.only)?\s*\(\s*['"`](?P<name>[^'"`]{1,80})"#,
    ]
    .iter()
    .map(|p| Regex::new(p).unwrap_or_else(|e| panic!("bad test definition pattern {p}: {e}")))
    .collect()
});

fn test_definition(code: &str) -> Option<String> {
    TEST_DEFINITIONS
        .iter()
        .find_map(|p| p.captures(code)?.name("name").map(|m| m.as_str().to_string()))
}

/// Test definitions a unified diff adds, less those it removes: how many more there are, and the
/// added ones as `name (file)`. They count in files that existed before it (a file whose tests ran
/// before is one the command runs) and, with the worktree's `root`, in a new test file beside a test
/// file it already had: a runner that collects the old one would collect the new one, and one that
/// does not (`python3 test_calc.py`; the field's 1.5B put `test_mul` in a new `test_mul.py`) proves
/// nothing with it. Other new files are left out: a test command may leave a folder out on purpose.
pub(crate) fn added_test_definitions(diff: &str, root: Option<&Path>) -> (u64, Vec<String>) {
    let new_files = new_files(diff);
    let counted_new: Vec<&str> = match root {
        Some(root) => new_files
            .iter()
            .filter(|path| is_test_file(path) && beside_an_old_test(root, path, &new_files))
            .map(String::as_str)
            .collect(),
        None => Vec::new(),
    };
    let mut file: Option<String> = None;
    let mut existed = false;
    let (mut added, mut removed) = (0u64, 0u64);
    let mut names = Vec::new();
    for line in diff.lines() {
        if let Some(old) = line.strip_prefix("--- ") {
            existed = old != "/dev/null";
            continue;
        }
        if let Some(new) = line.strip_prefix("+++ ") {
            let path = new.strip_prefix("b/").unwrap_or(new);
            existed = existed || counted_new.contains(&path);
            file = Some(path.to_string());
            continue;
        }
        if line.starts_with("diff --git ") {
            (file, existed) = (None, false);
            continue;
        }
        if !existed || file.is_none() {
            continue;
        }
        if let Some(code) = line.strip_prefix('+') {
            if let Some(name) = test_definition(code) {
                added += 1;
                if names.len() < 8 {
                    names.push(format!("{name} ({})", file.as_deref().unwrap_or_default()));
                }
            }
        } else if let Some(code) = line.strip_prefix('-') {
            removed += u64::from(test_definition(code).is_some());
        }
    }
    (added.saturating_sub(removed), names)
}

/// How many test definitions a unified diff adds, in any file, new or not: whether a change added
/// a test at all, wherever it put it.
pub(crate) fn test_definitions_added_anywhere(diff: &str) -> usize {
    diff.lines()
        .filter(|line| !line.starts_with("+++"))
        .filter_map(|line| line.strip_prefix('+'))
        .filter(|code| test_definition(code).is_some())
        .count()
}

/// The paths a unified diff creates.
fn new_files(diff: &str) -> Vec<String> {
    let mut created = Vec::new();
    let mut from_nothing = false;
    for line in diff.lines() {
        if let Some(old) = line.strip_prefix("--- ") {
            from_nothing = old == "/dev/null";
        } else if let Some(new) = line.strip_prefix("+++ ") {
            if from_nothing && new != "/dev/null" {
                created.push(new.strip_prefix("b/").unwrap_or(new).to_string());
            }
            from_nothing = false;
        }
    }
    created
}

/// Whether the folder of `path` (relative to `root`) holds a test file that is not one of
/// `new_files`.
fn beside_an_old_test(root: &Path, path: &str, new_files: &[String]) -> bool {
    let folder = path.rsplit_once('/').map_or("", |(folder, _)| folder);
    let Ok(entries) = std::fs::read_dir(root.join(folder)) else {
        return false;
    };
    entries.filter_map(Result::ok).any(|entry| {
        let name = entry.file_name().to_string_lossy().into_owned();
        let sibling = if folder.is_empty() {
            name
        } else {
            format!("{folder}/{name}")
        };
        entry.file_type().is_ok_and(|t| t.is_file())
            && is_test_file(&sibling)
            && !new_files.contains(&sibling)
    })
}

/// Whether `path` is a test file by the common conventions: `test_x.py`, `x_test.go`, `x.test.ts`,
/// `x.spec.js`, or anything under a `tests`, `test`, `__tests__` or `spec` folder.
pub(crate) fn is_test_file(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    let stem = name.split('.').next().unwrap_or(name);
    stem.starts_with("test_")
        || stem.ends_with("_test")
        || name.contains(".test.")
        || name.contains(".spec.")
        || path
            .split('/')
            .rev()
            .skip(1)
            .any(|dir| matches!(dir, "tests" | "test" | "__tests__" | "spec"))
}

/// Whether a line of code is an assertion in the common test styles.
fn is_assertion(code: &str) -> bool {
    const STARTS: [&str; 5] = ["assert", "self.assert", "expect(", "t.Error", "t.Fatal"];
    STARTS.iter().any(|s| code.starts_with(s))
}

/// Assertions a unified diff removes from test files that existed before it without adding the
/// same line back (a changed expectation shows as its old line removed): `file: `line``, at most
/// a few. A worker that makes the tests pass by changing what an existing test expects (the field's
/// 1.5B turned `add` into a product and `assertEqual(add(2, 3), 5)` into `…, 6)`) is caught here.
pub(crate) fn changed_assertions(diff: &str) -> Vec<String> {
    const MAX_LISTED: usize = 5;
    let mut changed = Vec::new();
    let mut file: Option<String> = None;
    let mut existed = false;
    let mut removed: Vec<String> = Vec::new();
    let mut added: std::collections::HashSet<String> = std::collections::HashSet::new();
    let mut flush =
        |file: &Option<String>, removed: &mut Vec<String>, added: &mut std::collections::HashSet<String>| {
            if let Some(file) = file {
                for line in removed.drain(..) {
                    if !added.contains(&line) && changed.len() < MAX_LISTED {
                        changed.push(format!("{file}: `{line}`"));
                    }
                }
            }
            removed.clear();
            added.clear();
        };
    for line in diff.lines() {
        if line.starts_with("diff --git ") {
            flush(&file, &mut removed, &mut added);
            (file, existed) = (None, false);
            continue;
        }
        if let Some(old) = line.strip_prefix("--- ") {
            existed = old != "/dev/null";
            continue;
        }
        if let Some(new) = line.strip_prefix("+++ ") {
            let path = new.strip_prefix("b/").unwrap_or(new).to_string();
            file = (existed && is_test_file(&path)).then_some(path);
            continue;
        }
        if file.is_none() {
            continue;
        }
        if let Some(code) = line.strip_prefix('-') {
            let code = code.trim();
            if is_assertion(code) {
                removed.push(code.to_string());
            }
        } else if let Some(code) = line.strip_prefix('+') {
            added.insert(code.trim().to_string());
        }
    }
    flush(&file, &mut removed, &mut added);
    changed
}

/// What the common runners print for each failed test, the name captured as `name`.
static FAILURES: LazyLock<Vec<Regex>> = LazyLock::new(|| {
    [
        // libtest: `test tests::adds ... FAILED`, and the list under `failures:` at the end.
        r"^test (?P<name>\S+) \.\.\. FAILED\s*$",
        r"^    (?P<name>[A-Za-z_][\w:]*)\s*$",
        // pytest: `FAILED tests/test_a.py::test_x - AssertionError`.
        r"^FAILED (?P<name>\S+)",
        // unittest: `FAIL: test_x (pkg.TestCase.test_x)`, `ERROR: test_y (pkg.T)`.
        r"^(?:FAIL|ERROR): (?P<name>\S+ \([^)]*\))",
        // go test: `--- FAIL: TestX (0.00s)`.
        r"^\s*--- FAIL: (?P<name>\S+)",
    ]
    .iter()
    .map(|p| Regex::new(p).unwrap_or_else(|e| panic!("bad failure pattern {p}: {e}")))
    .collect()
});

/// Most failed-test names kept from one output: a flood of lines is not a flood of memory.
const MAX_FAILED_NAMES: usize = 200;

/// The failed tests named in a command's output, read line by line as it runs (so names early in a long
/// output count too, though only its tail is kept), with what it takes to know the list is whole.
#[derive(Debug, Default, Clone)]
pub(crate) struct FailureScan {
    names: std::collections::BTreeSet<String>,
    /// Inside libtest's `failures:` list, where names are indented lines.
    in_failures: bool,
    /// More names than [`MAX_FAILED_NAMES`] came: the list is not whole.
    capped: bool,
    /// Failures libtest's `test result:` lines count, summed over test binaries.
    counted: Option<u64>,
}

static LIBTEST_RESULT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^test result: \w+\. \d+ passed; (?P<failed>\d+) failed")
        .unwrap_or_else(|e| panic!("bad libtest pattern: {e}"))
});

impl FailureScan {
    pub(crate) fn line(&mut self, line: &str) {
        if line == "failures:" {
            self.in_failures = true;
            return;
        }
        if self.in_failures && !line.is_empty() && !line.starts_with("    ") {
            self.in_failures = false;
        }
        if let Some(c) = LIBTEST_RESULT.captures(line) {
            *self.counted.get_or_insert(0) += number(&c, "failed");
            return;
        }
        for (i, pattern) in FAILURES.iter().enumerate() {
            // The indented list pattern applies only inside a `failures:` block.
            if i == 1 && !self.in_failures {
                continue;
            }
            if let Some(name) = pattern.captures(line).and_then(|c| c.name("name")) {
                if self.names.len() < MAX_FAILED_NAMES {
                    self.names.insert(name.as_str().to_string());
                } else if !self.names.contains(name.as_str()) {
                    self.capped = true;
                }
                return;
            }
        }
    }

    /// The names, sorted and without repeats.
    pub(crate) fn names(&self) -> Vec<String> {
        self.names.iter().cloned().collect()
    }

    /// Whether the names can be the whole list of what failed: none was dropped past the cap, and
    /// libtest's own count (where it printed one) agrees. Only then may failures be excused as
    /// pre-existing: a flood of names must not hide a new failure.
    pub(crate) fn complete(&self) -> bool {
        !self.capped && self.counted.is_none_or(|n| n == self.names.len() as u64)
    }
}

/// The tests a test command's output names as failed, sorted and without repeats.
pub(crate) fn failed_tests(output: &str) -> Vec<String> {
    scan(output).names()
}

pub(crate) fn scan(output: &str) -> FailureScan {
    let mut scan = FailureScan::default();
    output.lines().for_each(|l| scan.line(l));
    scan
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_and_removed_assertions_of_existing_test_files_are_found() {
        let diff = "diff --git a/test_calc.py b/test_calc.py\n--- a/test_calc.py\n+++ b/test_calc.py\n@@ -5,7 +5,7 @@\n     def test_add(self):\n-        self.assertEqual(add(2, 3), 5)\n+        self.assertEqual(add(2, 3), 6)\n\ndiff --git a/calc.py b/calc.py\n--- a/calc.py\n+++ b/calc.py\n@@ -1 +1 @@\n-    assert x\n+    pass\n";
        assert_eq!(
            changed_assertions(diff),
            ["test_calc.py: `self.assertEqual(add(2, 3), 5)`"]
        );
        // Moved (removed and added back), added, or in a new file: not changed.
        let moved = "diff --git a/tests/a.rs b/tests/a.rs\n--- a/tests/a.rs\n+++ b/tests/a.rs\n@@ -1,3 +1,4 @@\n-    assert_eq!(f(), 1);\n+fn other() {}\n+    assert_eq!(f(), 1);\n+    assert_eq!(g(), 2);\n";
        assert!(changed_assertions(moved).is_empty());
        let new =
            "diff --git a/test_b.py b/test_b.py\n--- /dev/null\n+++ b/test_b.py\n@@ -0,0 +1 @@\n+assert 1\n";
        assert!(changed_assertions(new).is_empty());
        assert!(is_test_file("pkg/calc_test.go") && is_test_file("src/__tests__/a.js"));
        assert!(is_test_file("web/app.spec.ts") && is_test_file("tests/it.rs"));
        assert!(!is_test_file("src/contest.py") && !is_test_file("calc.py"));
    }

    #[test]
    fn the_common_runners_failures_are_named() {
        let cargo = "running 2 tests\ntest tests::adds ... ok\ntest tests::subs ... FAILED\n\nfailures:\n\n---- tests::subs stdout ----\npanicked\n\nfailures:\n    tests::subs\n    tests::muls\n\ntest result: FAILED. 1 passed; 2 failed\n";
        assert_eq!(failed_tests(cargo), vec!["tests::muls", "tests::subs"]);
        assert_eq!(
            failed_tests("FAILED tests/test_a.py::test_x - AssertionError\n"),
            vec!["tests/test_a.py::test_x"]
        );
        assert_eq!(
            failed_tests("FAIL: test_mul (test_calc.T.test_mul)\n"),
            vec!["test_mul (test_calc.T.test_mul)"]
        );
        assert_eq!(failed_tests("--- FAIL: TestAdd (0.00s)\n"), vec!["TestAdd"]);
        assert!(failed_tests("error[E0425]: cannot find value\n    some_code\n").is_empty());
    }

    #[test]
    fn names_are_complete_only_when_nothing_was_capped_or_miscounted() {
        let one = "test tests::old ... FAILED\ntest result: FAILED. 3 passed; 1 failed; 0 ignored\n";
        assert!(scan(one).complete());
        let two = "test tests::old ... FAILED\ntest result: FAILED. 3 passed; 2 failed; 0 ignored\n";
        assert!(!scan(two).complete(), "a failure without a name");
        let many: String = (0..=MAX_FAILED_NAMES)
            .map(|i| format!("--- FAIL: T{i}\n"))
            .collect();
        assert!(!scan(&many).complete());
        assert!(
            scan("--- FAIL: TestOld (0.00s)\n").complete(),
            "no count to check"
        );
    }

    #[test]
    fn a_flood_of_failures_is_bounded() {
        let flood: String = (0..10_000).map(|i| format!("--- FAIL: T{i}\n")).collect();
        assert_eq!(failed_tests(&flood).len(), MAX_FAILED_NAMES);
    }

    #[test]
    fn the_common_runners_summaries_are_counted() {
        let unittest = "..\n----------------------------------------------------------------------\nRan 2 tests in 0.000s\n\nOK\n";
        assert_eq!(tests_ran(unittest), Some(2));
        assert_eq!(tests_ran("Ran 1 test in 0.001s\n"), Some(1));
        assert_eq!(tests_ran("\nNO TESTS RAN\n"), Some(0));
        let cargo = "running 3 tests\ntest result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s\n\nrunning 0 tests\ntest result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out\n";
        assert_eq!(tests_ran(cargo), Some(3), "summed over binaries");
        assert_eq!(
            tests_ran("============ 3 passed, 1 skipped in 0.12s ============\n"),
            Some(3)
        );
        assert_eq!(tests_ran("1 failed, 2 passed in 0.3s\n"), Some(3));
        assert_eq!(
            tests_ran("=========== no tests ran in 0.01s ===========\n"),
            Some(0)
        );
        assert_eq!(tests_ran("Tests:       1 failed, 4 passed, 5 total\n"), Some(5));
        assert_eq!(tests_ran(" Tests  4 passed (4)\n"), Some(4));
        assert_eq!(tests_ran("  4 passing (12ms)\n"), Some(4));
    }

    #[test]
    fn test_definitions_added_to_existing_files_are_counted() {
        // The field's case: a free function with arguments in a unittest file.
        let field = "diff --git a/test_calc.py b/test_calc.py\nindex 1..2 100644\n--- a/test_calc.py\n+++ b/test_calc.py\n@@ -1,4 +1,6 @@\n import unittest\n+def test_mul(a, b):\n+    assert mul(a, b) == a * b\n \n from calc import add, sub\n";
        assert_eq!(
            added_test_definitions(field, None),
            (1, vec!["test_mul (test_calc.py)".to_string()])
        );
        // A renamed test is none more; a new file is left out; other languages' forms count.
        let renamed = "--- a/t.py\n+++ b/t.py\n-    def test_old(self):\n+    def test_new(self):\n";
        assert_eq!(added_test_definitions(renamed, None).0, 0);
        let new_file =
            "diff --git a/t2.py b/t2.py\nnew file mode 100644\n--- /dev/null\n+++ b/t2.py\n+def test_x():\n";
        assert_eq!(added_test_definitions(new_file, None).0, 0);
        let others = "--- a/x_test.go\n+++ b/x_test.go\n+func TestMul(t *testing.T) {\n--- a/a.test.js\n+++ b/a.test.js\n+  it('multiplies', () => {\n+  test(\"adds\", () => {\n--- a/lib.rs\n+++ b/lib.rs\n+    #[test]\n";
        let (n, names) = added_test_definitions(others, None);
        assert_eq!(n, 3, "{names:?}");
        assert_eq!(names[1], "multiplies (a.test.js)");
        // Not definitions: calls and lookalikes.
        let calls = "--- a/t.py\n+++ b/t.py\n+    self.test_helper()\n+testing = 1\n+def tester():\n";
        assert_eq!(
            added_test_definitions(calls, None).0,
            1,
            "`def tester(` is collected by unittest"
        );
    }

    #[test]
    fn tests_added_anywhere_are_counted() {
        let diff = "--- /dev/null\n+++ b/tests/test_new.py\n+def test_x():\n+    pass\n--- a/calc.py\n+++ b/calc.py\n+    def mul(self, a, b):\n";
        assert_eq!(test_definitions_added_anywhere(diff), 1);
        assert_eq!(test_definitions_added_anywhere("-def test_gone():\n"), 0);
    }

    #[test]
    fn a_new_test_file_counts_beside_an_old_one_only() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("test_calc.py"), "def test_add(): pass\n").expect("write");
        std::fs::write(dir.path().join("test_mul.py"), "def test_mul(): pass\n").expect("write");
        std::fs::create_dir(dir.path().join("tools")).expect("mkdir");
        std::fs::write(dir.path().join("tools/test_new.py"), "def test_x(): pass\n").expect("write");
        let beside = "diff --git a/test_mul.py b/test_mul.py\nnew file mode 100644\n--- /dev/null\n+++ b/test_mul.py\n@@ -0,0 +1 @@\n+def test_mul():\n";
        assert_eq!(
            added_test_definitions(beside, Some(dir.path())),
            (1, vec!["test_mul (test_mul.py)".to_string()])
        );
        assert_eq!(added_test_definitions(beside, None).0, 0, "no tree, no count");
        // A folder of new tests only: the command may leave it out on purpose.
        let alone = "diff --git a/tools/test_new.py b/tools/test_new.py\nnew file mode 100644\n--- /dev/null\n+++ b/tools/test_new.py\n@@ -0,0 +1 @@\n+def test_x():\n";
        assert_eq!(added_test_definitions(alone, Some(dir.path())).0, 0);
        // A new source file beside the tests is no test file.
        std::fs::write(dir.path().join("mul.py"), "def test_mul(a, b): pass\n").expect("write");
        let source = "diff --git a/mul.py b/mul.py\nnew file mode 100644\n--- /dev/null\n+++ b/mul.py\n@@ -0,0 +1 @@\n+def test_mul(a, b):\n";
        assert_eq!(added_test_definitions(source, Some(dir.path())).0, 0);
    }

    #[test]
    fn output_without_a_summary_has_no_count() {
        assert_eq!(tests_ran(""), None);
        assert_eq!(tests_ran("ok  \texample.com/pkg\t0.01s\n"), None);
        assert_eq!(tests_ran("all good\nRan out of time? no\n"), None);
    }
}
