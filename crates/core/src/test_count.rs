//! How many tests a test command ran, read from what the common runners print at the end. A
//! passing test command that ran no test proves nothing, and a unit asked to add a test that runs
//! as many tests as before has not added one: the count, shown beside the exit code, lets a reviewer
//! see both (in the field, a 1.5B "test for mul" was a second copy of `mul` in the test file, and
//! the command passed with the same two tests).

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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn output_without_a_summary_has_no_count() {
        assert_eq!(tests_ran(""), None);
        assert_eq!(tests_ran("ok  \texample.com/pkg\t0.01s\n"), None);
        assert_eq!(tests_ran("all good\nRan out of time? no\n"), None);
    }
}
