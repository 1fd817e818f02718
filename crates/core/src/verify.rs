//! Verification the runtime runs itself: the build and test commands found in phase 0, run in a
//! worktree, recorded as evidence (command, exit code, duration, the tree hash that was tested).

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use futures::future::FutureExt;
use orchestrator_git::Worktree;
use orchestrator_protocol::Evidence;
use tokio::io::AsyncReadExt;
use tokio::process::Command;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::test_count::FailureScan;

const TAIL_CHARS: usize = 4000;
/// Bytes of a command's output kept while it runs: enough for [`TAIL_CHARS`] of any text.
const KEPT_OUTPUT_BYTES: usize = TAIL_CHARS * 4;

/// The commands to verify with, and how many verifications may run at once (builds are CPU-heavy,
/// so this is separate from the cap on model sessions).
pub struct Verifier {
    /// What fetches the project's dependencies (`npm ci`), run before the build where
    /// [`Verifier::install_needed`] says so. It judges nothing by itself, but a failed install
    /// fails the verification like a failed build.
    pub install: Option<String>,
    /// Whether the install may reach the network whatever the sandbox settings say: only the
    /// baseline's, which installs the committed lockfile of the base commit before any agent wrote.
    pub install_online: bool,
    pub build: Option<String>,
    /// Static analysis, run after the build and before the tests.
    pub lint: Option<String>,
    pub test: Option<String>,
    pub timeout: Duration,
    pub permits: Semaphore,
    /// Verification runs the agents' code, so it is confined like their own commands.
    pub sandbox: crate::config::SandboxSettings,
    /// The mission's baseline, awaited before the first command: its pre-existing test failures
    /// and the build outputs a worktree starts from. `None` for the baseline's own run.
    pub baseline: Option<crate::baseline::Ready>,
    /// `[verify] protect_tests`: a passing test command fails when the tree changes or removes an
    /// assertion of a test file that existed on the mission's base commit.
    pub protect_tests: bool,
}

/// A worktree being put back to the verified commit in the background; see
/// [`Verifier::verify_restoring_later`].
pub type Restore = crate::session::ToolsReady;

impl Verifier {
    /// Whether any command judges the work (without one, only reviews do: `--no-verify`).
    pub fn has_commands(&self) -> bool {
        self.build.is_some() || self.lint.is_some() || self.test.is_some()
    }

    /// The install command if this verification needs it: always for the baseline's own run (no
    /// `known`), and for a unit only when it could not start from the baseline's installed folders
    /// (none were installed or copied) or changed a file the install reads ([`INSTALL_INPUTS`]),
    /// so the copy no longer matches what it asks for.
    ///
    /// [`INSTALL_INPUTS`]: crate::prescan::INSTALL_INPUTS
    fn install_needed(&self, worktree: &Path, known: Option<&crate::baseline::Known>) -> Option<&String> {
        let command = self.install.as_ref()?;
        let Some(known) = known else {
            return Some(command);
        };
        let Some(installed) = &known.installed else {
            return Some(command);
        };
        let copied = known.warm.iter().all(|(rel, _)| worktree.join(rel).is_dir());
        let same_inputs = crate::prescan::INSTALL_INPUTS
            .iter()
            .all(|name| same_contents(&worktree.join(name), &installed.join(name)));
        (!copied || !same_inputs).then_some(command)
    }

    /// The commands in words, for the notice at the start of a mission.
    pub fn describe_commands(&self) -> String {
        let named: Vec<String> = [("build", &self.build), ("lint", &self.lint), ("test", &self.test)]
            .into_iter()
            .filter_map(|(kind, command)| Some(format!("{kind} `{}`", command.as_ref()?)))
            .collect();
        if named.is_empty() {
            "no build, lint or test command judges the work (--no-verify): reviews alone do".into()
        } else {
            let install = match &self.install {
                Some(install) => format!(
                    "; dependencies from `{install}` (once on the base commit; again only in a unit that \
                     changes a manifest or lockfile)"
                ),
                None => String::new(),
            };
            format!("the work is judged by: {}{install}", named.join(", "))
        }
    }

    /// Runs build then test in `worktree`; stops at the first failure. Empty when nothing is configured.
    /// Afterwards the worktree is as the tested commit left it (see below).
    pub async fn verify(
        &self,
        worktree: &Worktree,
        cancel: &CancellationToken,
    ) -> Result<Vec<Evidence>, String> {
        let (evidence, restore) = self.verify_restoring_later(worktree, cancel).await?;
        if let Some(restore) = restore {
            restore.await?;
        }
        Ok(evidence)
    }

    /// Like [`Verifier::verify`], but returns before the worktree is put back to the tested commit:
    /// that runs in the background, and the caller must await the `Restore` before anything reads
    /// the worktree's files or commits there. A stage 1 review starts its model call meanwhile.
    pub async fn verify_restoring_later(
        &self,
        worktree: &Worktree,
        cancel: &CancellationToken,
    ) -> Result<(Vec<Evidence>, Option<Restore>), String> {
        let judges: Vec<(&str, &String)> =
            [("build", &self.build), ("lint", &self.lint), ("test", &self.test)]
                .into_iter()
                .filter_map(|(kind, command)| Some((kind, command.as_ref()?)))
                .collect();
        if judges.is_empty() {
            return Ok((Vec::new(), None));
        }
        let (head, tree) = worktree.head_and_tree().await.map_err(|e| e.to_string())?;
        let known = match &self.baseline {
            Some(baseline) => tokio::select! {
                known = baseline.clone() => Some(known),
                _ = cancel.cancelled() => return Err("cancelled".into()),
            },
            None => None,
        };
        if let Some(known) = &known {
            crate::baseline::warm_up(worktree.path(), known).await;
        }
        let install = self.install_needed(worktree.path(), known.as_deref());
        let commands = install.map(|c| ("install", c)).into_iter().chain(judges);
        let env = isolated_env(worktree.path());
        let mut evidence = Vec::new();
        // One sandbox for the build and the test: they share the worktree and a temp folder.
        let sandbox = self.sandbox.sandbox(Some(worktree.path()));
        let online = (install.is_some() && self.install_online && !self.sandbox.network).then(|| {
            let settings = crate::config::SandboxSettings {
                network: true,
                ..self.sandbox.clone()
            };
            settings.sandbox(Some(worktree.path()))
        });
        for (kind, command) in commands {
            let sandbox = match (&online, kind) {
                (Some(online), "install") => online,
                _ => &sandbox,
            };
            // The permit bounds CPU-heavy builds; the git bookkeeping around them does not need one.
            let permit = self.permits.acquire().await.map_err(|e| e.to_string())?;
            let (record, complete) = match sandbox {
                Ok(sandbox) => {
                    let env = match kind {
                        "install" => install_env(&env, sandbox.temp_dir()),
                        _ => env.clone(),
                    };
                    let run = Run {
                        dir: worktree.path(),
                        tree: &tree,
                        timeout: self.timeout,
                        sandbox,
                        cancel,
                        env: &env,
                    };
                    run_command(kind, command, run).await
                }
                Err(e) => (unconfinable(kind, command, &tree, e), false),
            };
            drop(permit);
            let record = excuse_pre_existing(record, complete, known.as_deref());
            let record = notice_lost_tests(record, known.as_deref());
            let record = notice_unrun_tests(record, known.as_deref(), worktree).await;
            let record = match self.protect_tests {
                true => notice_changed_assertions(record, known.as_deref(), worktree).await,
                false => record,
            };
            let passed = record.passed();
            evidence.push(record);
            if !passed || cancel.is_cancelled() {
                break;
            }
        }
        // What was tested is the commit; whatever the build wrote outside .gitignore must not be swept
        // into the next commit (`git add -A`) or a merge. Ignored build output is kept for speed.
        let worktree = worktree.clone();
        let task = tokio::spawn(async move {
            worktree
                .reset_hard_if_changed(&head)
                .await
                .map(drop)
                .map_err(|e| format!("could not restore the worktree after verification: {e}"))
        });
        let restore = async move {
            task.await
                .unwrap_or_else(|e| Err(format!("the worktree restore task failed: {e}")))
        };
        Ok((evidence, Some(restore.boxed().shared())))
    }
}

/// Variables that keep a verification's builds in its own worktree: the user's `CARGO_TARGET_DIR`
/// (allow-listed for the agents' shells) would make every unit build into one folder, and a unit's
/// verdict could then be about another unit's outputs; its sandbox would refuse it anyway.
fn isolated_env(worktree: &Path) -> Vec<(&'static str, String)> {
    vec![("CARGO_TARGET_DIR", worktree.join("target").display().to_string())]
}

/// The install's package-manager caches in its sandbox's private temp folder: the user's own (under
/// a home folder the sandbox does not let it write) stays untouched, and no unit's install can leave
/// something in a cache another unit's install reads.
fn install_env(env: &[(&'static str, String)], temp: &Path) -> Vec<(&'static str, String)> {
    let at = |name: &str| temp.join(name).display().to_string();
    let mut env = env.to_vec();
    env.extend([
        ("npm_config_cache", at("npm-cache")),
        ("npm_config_store_dir", at("pnpm-store")),
        ("YARN_CACHE_FOLDER", at("yarn-cache")),
        ("npm_config_update_notifier", "false".into()),
        ("npm_config_audit", "false".into()),
        ("npm_config_fund", "false".into()),
    ]);
    env
}

/// A passing test command whose output no longer reports any test, where on the base commit it
/// reported some: the tests do not run any more (in the field, a 1.5B rewrote the test file to
/// `print(mul(2, 3))`, which exits 0), so it fails, saying how many ran before.
fn notice_lost_tests(mut record: Evidence, known: Option<&crate::baseline::Known>) -> Evidence {
    let before = known.and_then(|k| k.tests_ran).filter(|n| *n > 0);
    if record.kind != "test" || record.exit_code != Some(0) || record.timed_out {
        return record;
    }
    if let Some(before) = before {
        if matches!(crate::test_count::tests_ran(&record.output_tail), None | Some(0)) {
            record.tests_lost = Some(before);
        }
    }
    record
}

/// A passing test command that counts fewer tests more than the tree adds to files that existed on
/// the mission's base commit: the new tests are not collected (in the field, a 1.5B added `def
/// test_mul(a, b)` at the top of a unittest file, which runs only `TestCase` methods; the run said
/// `Ran 2 tests`, as before), so they check nothing and the command fails, naming them.
async fn notice_unrun_tests(
    mut record: Evidence,
    known: Option<&crate::baseline::Known>,
    worktree: &Worktree,
) -> Evidence {
    if record.kind != "test" || !record.passed() {
        return record;
    }
    let Some((before, base)) = known.and_then(|k| Some((k.tests_ran?, k.base.as_deref()?))) else {
        return record;
    };
    let Some(now) = crate::test_count::tests_ran(&record.output_tail) else {
        return record;
    };
    let diff = match worktree.diff_since(base).await {
        Ok(diff) => diff,
        Err(e) => {
            tracing::debug!("no diff to count new tests in: {e}");
            return record;
        }
    };
    let (added, names) = crate::test_count::added_test_definitions(&diff, Some(worktree.path()));
    if added > now.saturating_sub(before) {
        record.tests_not_run = Some(orchestrator_protocol::UnrunTests {
            added: names,
            ran_before: before,
            ran_now: now,
        });
    }
    record
}

/// A passing test command on a tree that changes what tests of the base commit assert
/// (`[verify] protect_tests`): the pass proves what the worker chose to check, so it fails, naming
/// the assertions.
async fn notice_changed_assertions(
    mut record: Evidence,
    known: Option<&crate::baseline::Known>,
    worktree: &Worktree,
) -> Evidence {
    if record.kind != "test" || !record.passed() {
        return record;
    }
    let Some(base) = known.and_then(|k| k.base.as_deref()) else {
        return record;
    };
    match worktree.diff_since(base).await {
        Ok(diff) => record.assertions_changed = crate::test_count::changed_assertions(&diff),
        Err(e) => tracing::debug!("no diff to look for changed assertions in: {e}"),
    }
    record
}

/// Which of a failing test command's named failures the baseline saw fail too; none when the list of
/// names may not be whole (`complete`), so a flood of old names cannot hide a new failure.
fn excuse_pre_existing(
    mut record: Evidence,
    complete: bool,
    known: Option<&crate::baseline::Known>,
) -> Evidence {
    if record.kind != "test" || record.exit_code == Some(0) || record.timed_out {
        return record;
    }
    if let (Some(known), true) = (known, complete) {
        record.baseline_failures = record
            .failed_tests
            .iter()
            .filter(|t| known.failures.contains(t))
            .cloned()
            .collect();
    }
    record
}

pub fn all_passed(evidence: &[Evidence]) -> bool {
    evidence.iter().all(Evidence::passed)
}

/// Evidence as text for a reviewer or a worker.
pub fn describe(evidence: &[Evidence]) -> String {
    if evidence.is_empty() {
        return "No build or test command is configured for this repository, so nothing was run.".into();
    }
    evidence
        .iter()
        .map(|e| {
            let status = match (e.exit_code, e.timed_out) {
                (_, true) => "timed out".to_string(),
                (Some(code), _) => format!("exit {code}"),
                (None, _) => "killed".to_string(),
            };
            format!(
                "{}: `{}` → {status} in {} ms (tree {}){}{}\n{}",
                e.kind,
                e.command,
                e.duration_ms,
                short(&e.tree),
                tests_counted(e),
                pre_existing(e),
                if e.passed() {
                    String::new()
                } else {
                    format!("{}Output (last part):\n{}\n", install_hint(e), e.output_tail)
                }
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Why a unit's install can fail where the baseline's passed: it runs only because the unit changed
/// what the install reads, and in the unit's sandbox, which reaches the network only if allowed.
fn install_hint(evidence: &Evidence) -> &'static str {
    if evidence.kind != "install" {
        return "";
    }
    "The install ran because this tree's dependency manifest or lockfile differs from the base commit's \
     (or no installed copy was at hand). A unit's install reaches the network only with [sandbox] network = \
     true; a frozen install (npm ci) also fails when package.json and the lockfile disagree.\n"
}

/// For a test command that failed only on tests that failed on the base commit too: that it counts
/// as passed, and which they were.
fn pre_existing(evidence: &Evidence) -> String {
    if evidence.baseline_failures.is_empty() || evidence.exit_code == Some(0) {
        return String::new();
    }
    if !evidence.only_baseline_failures() {
        let new: Vec<&str> = evidence
            .failed_tests
            .iter()
            .filter(|t| !evidence.baseline_failures.contains(t))
            .map(String::as_str)
            .collect();
        return format!(
            "; pre-existing failures (they failed before any unit): {}; new failures: {}",
            evidence.baseline_failures.join(", "),
            if new.is_empty() {
                "none named".into()
            } else {
                new.join(", ")
            }
        );
    }
    format!(
        "; counted as passed: every failed test is a pre-existing failure (it failed on the mission's \
         base commit before any unit): {}",
        evidence.baseline_failures.join(", ")
    )
}

/// For a passing test command whose output says how many tests ran: that number, and a plain
/// warning when it is none (a pass that tested nothing).
fn tests_counted(evidence: &Evidence) -> String {
    if let Some(before) = evidence.tests_lost {
        return format!("; FAILED: {}", lost_tests_text(before));
    }
    if let Some(unrun) = &evidence.tests_not_run {
        return format!(
            "; FAILED: it exited 0, but {}",
            unrun_tests_text(&unrun.added, unrun.ran_now, unrun.ran_before)
        );
    }
    if !evidence.assertions_changed.is_empty() {
        return format!(
            "; FAILED: it passed, but this tree changes what tests of the mission's base commit assert: \
             {}. Those tests state what the code must do, and this mission keeps them as they are \
             ([verify] protect_tests): put them back and change the code instead (new tests may be added)",
            evidence.assertions_changed.join(", ")
        );
    }
    if evidence.kind != "test" || !evidence.passed() {
        return String::new();
    }
    match crate::test_count::tests_ran(&evidence.output_tail) {
        Some(0) => "; it ran no test, so this pass checks nothing".into(),
        Some(1) => "; it ran 1 test".into(),
        Some(n) => format!("; it ran {n} tests"),
        None => String::new(),
    }
}

/// Why a passing test command proves nothing when its output reports no test and the base commit's
/// run reported `before`.
pub(crate) fn lost_tests_text(before: u64) -> String {
    format!(
        "it exited 0 but its output reports no test, where on the mission's base commit it ran \
         {before}: the tests no longer run (a test file replaced or broken, a runner skipped), so this \
         exit code proves nothing"
    )
}

/// Why tests added since the mission's base commit prove nothing when the run did not count them.
pub(crate) fn unrun_tests_text(added: &[String], now: u64, before: u64) -> String {
    format!(
        "the tests added since the mission's base commit ({}) are not run: it ran {now} tests, {before} on \
         the base commit. Make the test runner collect them (in Python's unittest, a method `def \
         test_…(self)` of a `unittest.TestCase` class; in pytest, a `def test_…()` taking no arguments it \
         does not supply) and import what they test; tests in a new file run only if the test command \
         runs that file, so put them in a test file it runs",
        added.join(", ")
    )
}

/// Whether two files hold the same bytes, or are both missing.
fn same_contents(a: &Path, b: &Path) -> bool {
    match (std::fs::read(a), std::fs::read(b)) {
        (Ok(a), Ok(b)) => a == b,
        (Err(a), Err(b)) => {
            a.kind() == std::io::ErrorKind::NotFound && b.kind() == std::io::ErrorKind::NotFound
        }
        _ => false,
    }
}

/// A commit or tree name cut to 12 characters, as the engine's messages show them.
pub(crate) fn short(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

/// Failing evidence for a command that could not be confined: it is not run unconfined.
fn unconfinable(kind: &str, command: &str, tree: &str, error: &str) -> Evidence {
    Evidence {
        kind: kind.to_string(),
        command: command.to_string(),
        exit_code: None,
        duration_ms: 0,
        tree: tree.to_string(),
        timed_out: false,
        output_tail: format!("not run: the command could not be confined ({error})"),
        ..Default::default()
    }
}

/// Where and how one verification command runs.
struct Run<'a> {
    dir: &'a Path,
    tree: &'a str,
    timeout: Duration,
    sandbox: &'a orchestrator_sandbox::Sandbox,
    cancel: &'a CancellationToken,
    env: &'a [(&'a str, String)],
}

/// The evidence, and whether its list of failed tests is whole (see [`FailureScan::complete`]).
async fn run_command(kind: &str, command: &str, run: Run<'_>) -> (Evidence, bool) {
    let Run {
        dir,
        tree,
        timeout,
        sandbox,
        cancel,
        env,
    } = run;
    let started = Instant::now();
    let mut evidence = Evidence {
        kind: kind.to_string(),
        command: command.to_string(),
        exit_code: None,
        duration_ms: 0,
        tree: tree.to_string(),
        timed_out: false,
        output_tail: String::new(),
        ..Default::default()
    };
    let ran = run_confined(Confined {
        command,
        dir,
        timeout,
        sandbox,
        cancel,
        env,
        stdin: None,
    })
    .await;
    match ran.end {
        End::Exited(code) => {
            evidence.exit_code = code;
            evidence.output_tail = ran.output_tail.clone();
        }
        End::NotStarted(e) => evidence.output_tail = format!("could not start the command: {e}"),
        End::TimedOut => {
            evidence.timed_out = true;
            evidence.output_tail = format!("killed after the {} s verification timeout", timeout.as_secs());
        }
        End::Cancelled => evidence.output_tail = "cancelled".into(),
    }
    evidence.duration_ms = started.elapsed().as_millis() as u64;
    if kind == "test" && !evidence.passed() {
        evidence.failed_tests = ran.failures.names();
    }
    (evidence, ran.failures.complete())
}

/// A command to run confined, with a time limit, bounded output and (optionally) input.
pub(crate) struct Confined<'a> {
    pub(crate) command: &'a str,
    pub(crate) dir: &'a Path,
    pub(crate) timeout: Duration,
    pub(crate) sandbox: &'a orchestrator_sandbox::Sandbox,
    pub(crate) cancel: &'a CancellationToken,
    /// Variables on top of the sandbox's allow-listed environment.
    pub(crate) env: &'a [(&'a str, String)],
    /// Written to its stdin (closed after); `None`: stdin is empty.
    pub(crate) stdin: Option<Vec<u8>>,
}

/// How a confined command ended.
pub(crate) enum End {
    /// It exited (`None`: by a signal).
    Exited(Option<i32>),
    TimedOut,
    Cancelled,
    NotStarted(std::io::Error),
}

/// What a confined command did: how it ended and the tail of what it printed (paths inside its
/// directory made relative), also when it was killed.
pub(crate) struct Ran {
    pub(crate) end: End,
    pub(crate) output_tail: String,
    /// The failed tests its whole output named, not only its tail.
    pub(crate) failures: FailureScan,
}

/// How long the output of a command that ended is still read: what it started is killed with it,
/// so its pipe closes at once unless something escaped the supervisor.
const OUTPUT_GRACE: Duration = Duration::from_secs(5);

/// Runs `bash -c` confined in `dir`: the whole process tree is killed at the timeout or a cancel,
/// and only the last [`KEPT_OUTPUT_BYTES`] of its output are kept while it runs.
pub(crate) async fn run_confined(run: Confined<'_>) -> Ran {
    let (mut child, lifeline) =
        match spawn_shell(run.command, run.dir, run.sandbox, run.env, run.stdin.is_some()) {
            Ok(spawned) => spawned,
            Err(e) => {
                return Ran {
                    end: End::NotStarted(e),
                    output_tail: String::new(),
                    failures: FailureScan::default(),
                }
            }
        };
    // Fed in the background: a command that never reads its stdin must not block this one.
    let feeder = match (child.stdin.take(), run.stdin) {
        (Some(mut pipe), Some(bytes)) => Some(tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let _ = pipe.write_all(&bytes).await;
        })),
        _ => None,
    };
    let reader = tokio::spawn(read_tail(child.stdout.take()));
    let end = tokio::select! {
        status = child.wait() => End::Exited(status.ok().and_then(|s| s.code())),
        _ = tokio::time::sleep(run.timeout) => End::TimedOut,
        _ = run.cancel.cancelled() => End::Cancelled,
    };
    if !matches!(end, End::Exited(_)) {
        // The supervisor kills the command and everything it started, then exits.
        lifeline.cut();
        let _ = child.wait().await;
    }
    if let Some(feeder) = feeder {
        feeder.abort();
    }
    let (output, dropped, failures) = match tokio::time::timeout(OUTPUT_GRACE, reader).await {
        Ok(Ok(read)) => read,
        _ => (Vec::new(), 0, FailureScan::default()),
    };
    Ran {
        end,
        output_tail: relative_to(run.dir, &tail(&String::from_utf8_lossy(&output), dropped)),
        failures,
    }
}

/// Longest line the failure scan reads; a longer one is cut there (no test name is that long).
const SCANNED_LINE_BYTES: usize = 4096;

/// Only the end of the output is kept: a command that prints gigabytes costs bounded memory.
/// Returns the kept bytes, how many were dropped before them, and the failed tests every line named.
async fn read_tail(mut stdout: Option<tokio::process::ChildStdout>) -> (Vec<u8>, u64, FailureScan) {
    let mut kept = std::collections::VecDeque::new();
    let mut dropped = 0u64;
    let mut scan = FailureScan::default();
    let mut line = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    if let Some(out) = stdout.as_mut() {
        while let Ok(n) = out.read(&mut chunk).await {
            if n == 0 {
                break;
            }
            scan_lines(&chunk[..n], &mut line, &mut scan);
            kept.extend(&chunk[..n]);
            let excess = kept.len().saturating_sub(KEPT_OUTPUT_BYTES);
            kept.drain(..excess);
            dropped += excess as u64;
        }
    }
    if !line.is_empty() {
        scan.line(&String::from_utf8_lossy(&line));
    }
    (Vec::from(kept), dropped, scan)
}

/// Feeds the complete lines of `bytes` to `scan`; `line` holds the unfinished one between chunks.
fn scan_lines(bytes: &[u8], line: &mut Vec<u8>, scan: &mut FailureScan) {
    for &byte in bytes {
        if byte == b'\n' {
            scan.line(String::from_utf8_lossy(line).trim_end_matches('\r'));
            line.clear();
        } else if line.len() < SCANNED_LINE_BYTES {
            line.push(byte);
        }
    }
}

/// The output with the worktree's own path taken out of the paths in it: a traceback's
/// `/home/u/app/.orchestrator/worktrees/m1/units/t1/calc.py` reads `calc.py`, the path the agents'
/// tools take. Models copy what they are shown, and the 1.5B, shown the long path, asked its tools
/// for `units/1-r2/test_calc.py` again and again.
fn relative_to(dir: &Path, output: &str) -> String {
    let mut text = output.to_string();
    let canonical = std::fs::canonicalize(dir).ok();
    for root in std::iter::once(dir).chain(canonical.as_deref()) {
        let prefix = format!("{}/", root.display());
        if prefix.len() > 1 {
            text = text.replace(&prefix, "");
        }
    }
    text
}

fn spawn_shell(
    command: &str,
    dir: &Path,
    sandbox: &orchestrator_sandbox::Sandbox,
    env: &[(&str, String)],
    with_stdin: bool,
) -> std::io::Result<(tokio::process::Child, orchestrator_sandbox::Lifeline)> {
    let mut cmd = Command::new("bash");
    // Merge stderr into stdout so the tail shows messages in the order they were written. Not
    // kill_on_drop: killing the supervisor would orphan the command's tree; the lifeline, dropped
    // with the call, kills it instead.
    cmd.arg("-c")
        .arg(format!("exec 2>&1\n{command}"))
        .current_dir(dir)
        .stdin(if with_stdin { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0);
    // The sandbox also gives the command its environment: an allow-list, so no credential reaches it,
    // and a supervisor that kills whatever the command leaves running.
    let lifeline = sandbox.apply(&mut cmd)?;
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    Ok((cmd.spawn()?, lifeline))
}

/// The last [`TAIL_CHARS`] of `text`, saying how much came before (`dropped_bytes` were already
/// discarded while the command ran).
fn tail(text: &str, dropped_bytes: u64) -> String {
    let count = text.chars().count();
    if count <= TAIL_CHARS && dropped_bytes == 0 {
        return text.to_string();
    }
    let skip = count.saturating_sub(TAIL_CHARS);
    let earlier = match (skip, dropped_bytes) {
        (_, 0) => format!("{skip} earlier characters"),
        (0, _) => format!("{dropped_bytes} earlier bytes"),
        _ => format!("{dropped_bytes} earlier bytes and {skip} characters"),
    };
    format!(
        "[… {earlier} cut]\n{}",
        text.chars().skip(skip).collect::<String>()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn evidence(kind: &str, exit_code: i32, output: &str) -> Evidence {
        Evidence {
            kind: kind.into(),
            command: "python3 test_calc.py".into(),
            exit_code: Some(exit_code),
            duration_ms: 5,
            tree: "a".repeat(40),
            timed_out: false,
            output_tail: output.into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_passing_test_command_is_described_with_the_tests_it_ran() {
        let ran = describe(&[evidence("test", 0, "Ran 2 tests in 0.001s\n\nOK\n")]);
        assert!(
            ran.contains("exit 0 in 5 ms (tree aaaaaaaaaaaa); it ran 2 tests"),
            "{ran}"
        );
        let none = describe(&[evidence("test", 0, "\nNO TESTS RAN\n")]);
        assert!(
            none.contains("it ran no test, so this pass checks nothing"),
            "{none}"
        );
        // Builds, failures and unknown runners are described as before.
        for plain in [
            evidence("build", 0, "Ran 2 tests in 0.1s"),
            evidence("test", 1, "Ran 2 tests in 0.1s"),
            evidence("test", 0, "fine"),
        ] {
            let text = describe(&[plain]);
            assert!(!text.contains("it ran"), "{text}");
        }
    }

    async fn run_command_at(
        kind: &str,
        command: &str,
        dir: &Path,
        tree: &str,
        timeout: Duration,
        sandbox: &orchestrator_sandbox::Sandbox,
        cancel: &CancellationToken,
    ) -> Evidence {
        let run = Run {
            dir,
            tree,
            timeout,
            sandbox,
            cancel,
            env: &[],
        };
        run_command(kind, command, run).await.0
    }

    fn confined(dir: &Path) -> orchestrator_sandbox::Sandbox {
        crate::config::SandboxSettings::default()
            .sandbox(Some(dir))
            .expect("Landlock is available on these machines")
    }

    #[tokio::test]
    async fn verification_is_confined_to_its_worktree() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let cancel = CancellationToken::new();
        let planted = outside.path().join("planted");
        let escape = run_command_at(
            "test",
            &format!("echo built > ok.txt && echo x > {}", planted.display()),
            dir.path(),
            "abc",
            Duration::from_secs(5),
            &confined(dir.path()),
            &cancel,
        )
        .await;
        assert!(!escape.passed(), "{escape:?}");
        assert!(
            escape.output_tail.contains("Permission denied"),
            "{}",
            escape.output_tail
        );
        assert!(
            dir.path().join("ok.txt").exists(),
            "the build's own output is written"
        );
        assert!(!planted.exists());
    }

    #[tokio::test]
    async fn records_exit_code_output_and_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let cancel = CancellationToken::new();
        let ok = run_command_at(
            "test",
            "echo out; echo err >&2; exit 3",
            dir.path(),
            "abc",
            Duration::from_secs(5),
            &confined(dir.path()),
            &cancel,
        )
        .await;
        assert_eq!(ok.exit_code, Some(3));
        assert!(
            ok.output_tail.contains("out") && ok.output_tail.contains("err"),
            "{}",
            ok.output_tail
        );
        assert!(!ok.passed());
        let slow = run_command_at(
            "test",
            "sleep 30",
            dir.path(),
            "abc",
            Duration::from_millis(200),
            &confined(dir.path()),
            &cancel,
        )
        .await;
        assert!(slow.timed_out && !slow.passed());
        assert!(slow.duration_ms < 10_000);
    }

    #[tokio::test]
    async fn the_tree_is_put_back_after_verification() {
        let (dir, repo) = crate::test_repo::committed_repo().await;
        let head = repo.head_commit().await.unwrap().unwrap();
        let worktree = repo
            .add_worktree_on_branch(&dir.path().join("wt"), "w", &head)
            .await
            .unwrap();
        let verifier = Verifier {
            install: None,
            install_online: false,
            build: Some("echo junk > junk.txt; echo changed > README".into()),
            lint: None,
            test: Some("test -f junk.txt".into()),
            timeout: Duration::from_secs(30),
            permits: Semaphore::new(1),
            sandbox: Default::default(),
            baseline: None,
            protect_tests: false,
        };
        let cancel = CancellationToken::new();
        let (evidence, restore) = verifier.verify_restoring_later(&worktree, &cancel).await.unwrap();
        assert!(all_passed(&evidence), "{evidence:?}");
        assert_eq!(evidence[0].tree, worktree.tree_hash().await.unwrap());
        restore.expect("a restore").await.unwrap();
        assert!(!worktree.path().join("junk.txt").exists());
        assert_eq!(
            std::fs::read_to_string(worktree.path().join("README")).unwrap(),
            "hi\n"
        );

        // verify() itself returns with the tree put back.
        let evidence = verifier.verify(&worktree, &cancel).await.unwrap();
        assert_eq!(evidence.len(), 2);
        assert!(!worktree.path().join("junk.txt").exists());
        // Nothing configured: nothing run, no git either.
        let idle = Verifier {
            install: Some("touch installed".into()),
            install_online: false,
            build: None,
            lint: None,
            test: None,
            timeout: Duration::from_secs(1),
            permits: Semaphore::new(1),
            sandbox: Default::default(),
            baseline: None,
            protect_tests: false,
        };
        let (evidence, restore) = idle.verify_restoring_later(&worktree, &cancel).await.unwrap();
        assert!(evidence.is_empty() && restore.is_none());
    }

    #[tokio::test]
    async fn a_verification_command_leaves_nothing_running() {
        let dir = tempfile::tempdir().unwrap();
        let cancel = CancellationToken::new();
        // The daemon holds the output pipe: without the supervisor this would wait for the timeout.
        let evidence = run_command_at(
            "test",
            "setsid sleep 300 & echo $! > daemon.pid; echo ok",
            dir.path(),
            "abc",
            Duration::from_secs(30),
            &confined(dir.path()),
            &cancel,
        )
        .await;
        assert!(evidence.passed() && !evidence.timed_out, "{evidence:?}");
        let pid = std::fs::read_to_string(dir.path().join("daemon.pid")).unwrap();
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim()));
        assert!(
            stat.is_err() || stat.is_ok_and(|s| s.contains(") Z")),
            "the daemon {pid} outlived its verification command"
        );
    }

    #[test]
    fn paths_in_the_output_are_relative_to_the_worktree() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("units").join("1");
        std::fs::create_dir_all(&root).expect("mkdir");
        let output = format!(
            "  File \"{0}/test_calc.py\", line 3\n  File \"{0}/pkg/calc.py\", line 2\n  File \"/usr/lib/python3/unittest.py\"\n",
            root.display()
        );
        assert_eq!(
            relative_to(&root, &output),
            "  File \"test_calc.py\", line 3\n  File \"pkg/calc.py\", line 2\n  File \"/usr/lib/python3/unittest.py\"\n"
        );
    }

    #[test]
    fn a_flood_of_output_keeps_only_the_end_and_says_how_much_went() {
        let cut = tail("last words", 12_345);
        assert!(cut.starts_with("[… 12345 earlier bytes cut]"), "{cut}");
        assert!(cut.ends_with("last words"));
    }

    #[tokio::test]
    async fn a_failure_named_long_before_the_tail_is_still_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cancel = CancellationToken::new();
        let (evidence, complete) = run_command(
            "test",
            "echo 'test tests::new ... FAILED'; seq 1 20000; exit 1",
            Run {
                dir: dir.path(),
                tree: "abc",
                timeout: Duration::from_secs(30),
                sandbox: &confined(dir.path()),
                cancel: &cancel,
                env: &[],
            },
        )
        .await;
        assert!(evidence.output_tail.starts_with("[… "), "the tail was cut");
        assert_eq!(evidence.failed_tests, vec!["tests::new"]);
        assert!(complete);
    }

    #[test]
    fn only_failures_the_baseline_had_are_excused() {
        let known = crate::baseline::Known {
            failures: vec!["tests::old".into()],
            ..Default::default()
        };
        // As run_command records them: the names its scan of the whole output found.
        let name_failures = |record: Evidence, known| {
            let scan = crate::test_count::scan(&record.output_tail);
            let named = Evidence {
                failed_tests: scan.names(),
                ..record
            };
            excuse_pre_existing(named, scan.complete(), known)
        };
        let failing = |output: &str| Evidence {
            kind: "test".into(),
            exit_code: Some(101),
            output_tail: output.into(),
            ..Default::default()
        };
        let old = name_failures(failing("test tests::old ... FAILED\n"), Some(&known));
        assert!(old.passed(), "{old:?}");
        assert!(describe(std::slice::from_ref(&old)).contains("pre-existing failure"));
        let both = name_failures(
            failing("test tests::old ... FAILED\ntest tests::new ... FAILED\n"),
            Some(&known),
        );
        assert!(!both.passed());
        assert!(describe(&[both]).contains("new failures: tests::new"));
        // A failure that names no test (it did not compile) is never excused, nor a timeout.
        assert!(!name_failures(failing("error[E0308]: mismatched types\n"), Some(&known)).passed());
        let mut slow = failing("test tests::old ... FAILED\n");
        slow.timed_out = true;
        assert!(!name_failures(slow, Some(&known)).passed());
        // A flood of pre-existing names that could hide a new failure past the cap excuses nothing.
        let flood: String = (0..300)
            .map(|_| "test tests::old ... FAILED\n")
            .chain(std::iter::once("test result: FAILED. 0 passed; 2 failed\n"))
            .collect();
        assert!(!name_failures(failing(&flood), Some(&known)).passed());
        // Without a baseline nothing is excused.
        assert!(!name_failures(failing("test tests::old ... FAILED\n"), None).passed());
    }

    #[test]
    fn a_pass_whose_tests_no_longer_run_fails() {
        let known = crate::baseline::Known {
            tests_ran: Some(2),
            ..Default::default()
        };
        let passing = |output: &str| Evidence {
            kind: "test".into(),
            exit_code: Some(0),
            output_tail: output.into(),
            ..Default::default()
        };
        // The field's case: the test file became `print(mul(2, 3))`.
        let printed = notice_lost_tests(passing("6\n"), Some(&known));
        assert_eq!(printed.tests_lost, Some(2));
        assert!(!printed.passed());
        let said = describe(std::slice::from_ref(&printed));
        assert!(
            said.contains("reports no test") && said.contains("ran 2"),
            "{said}"
        );
        let none_ran = notice_lost_tests(passing("Ran 0 tests in 0.000s\n\nNO TESTS RAN\n"), Some(&known));
        assert!(!none_ran.passed());
        // Tests that still run pass, fewer or more; without a baseline count nothing is judged.
        assert!(notice_lost_tests(passing("Ran 3 tests in 0.001s\n\nOK\n"), Some(&known)).passed());
        assert!(notice_lost_tests(passing("Ran 1 test in 0.001s\n\nOK\n"), Some(&known)).passed());
        assert!(notice_lost_tests(passing("6\n"), None).passed());
        let uncounted = crate::baseline::Known::default();
        assert!(notice_lost_tests(passing("6\n"), Some(&uncounted)).passed());
        // A build that prints nothing is not a test.
        let build = Evidence {
            kind: "build".into(),
            ..passing("")
        };
        assert!(notice_lost_tests(build, Some(&known)).passed());
    }

    #[test]
    fn long_output_keeps_the_end() {
        let text = "x".repeat(10_000) + "END";
        let cut = tail(&text, 0);
        assert!(cut.ends_with("END") && cut.starts_with("[… "));
    }
}
