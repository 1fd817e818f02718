//! The mission's baseline: the project's build, lint and test commands run once on the base commit,
//! in a worktree of their own, before any unit is verified. Tests that fail there are pre-existing
//! failures no unit is blamed for; the build outputs it leaves (Cargo's `target`, Node's
//! `node_modules`) are copied into each unit's worktree before its first verification, so units
//! build incrementally instead of cold.
//!
//! What is shared, and why it cannot leak: each unit gets its own copy, inside its own worktree
//! (the only place its sandbox lets it write), made from the baseline's folder, which no unit can
//! write. A copy is a reflink where the file system can (same blocks until either side writes),
//! else a full copy; never hard links, which Cargo and npm rewrite in place, so one unit's build
//! would rewrite another's outputs (and the baseline's).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::{BoxFuture, FutureExt, Shared};
use orchestrator_git::Repo;
use orchestrator_protocol::{Baseline, Event};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::config::{SandboxSettings, VerifyCache};
use crate::events::EventBus;
use crate::verify::Verifier;

/// What the units' verification takes from the baseline once it is over.
#[derive(Debug, Default)]
pub struct Known {
    /// Tests that failed on the base commit.
    pub failures: Vec<String>,
    /// Build-output folders to copy into a unit's worktree: (path inside a worktree, the baseline's copy).
    pub warm: Vec<(String, PathBuf)>,
    /// The baseline's worktree when its install passed and its folders are in `warm`: a unit whose
    /// dependency manifests and lockfiles match this tree's needs no install of its own.
    pub installed: Option<PathBuf>,
    /// How many tests the test command's output said it ran on the base commit, when it said.
    pub tests_ran: Option<u64>,
    /// The commit the baseline ran on (the mission's base), when known: what a unit's new tests are
    /// counted against.
    pub base: Option<String>,
}

/// How many tests the baseline's test command said it ran.
fn tests_ran(evidence: &[orchestrator_protocol::Evidence]) -> Option<u64> {
    evidence
        .iter()
        .find(|e| e.kind == "test")
        .and_then(|e| crate::test_count::tests_ran(&e.output_tail))
}

/// The baseline as the verifier awaits it: resolved once the baseline is over (or known from an
/// earlier run). Verification of a unit waits for it, so no unit starts its build before the copy
/// it would start from exists.
pub type Ready = Shared<BoxFuture<'static, Arc<Known>>>;

/// A baseline already resolved (no commands, or a test).
pub fn ready(known: Known) -> Ready {
    futures::future::ready(Arc::new(known)).boxed().shared()
}

/// What running the baseline needs.
pub struct Plan {
    pub repo: Repo,
    /// Where the baseline's worktree goes.
    pub dir: PathBuf,
    pub base: String,
    pub install: Option<String>,
    pub build: Option<String>,
    pub lint: Option<String>,
    pub test: Option<String>,
    pub timeout: Duration,
    pub sandbox: SandboxSettings,
    pub cache: VerifyCache,
    pub bus: EventBus,
    pub cancel: CancellationToken,
}

/// Starts the baseline in the background, or takes the one an earlier run recorded: its results
/// stand and its tests are not run again, but its worktree went with that run, so when it left
/// outputs to copy they are built once more (see [`rewarm`]).
pub fn start(plan: Plan, recorded: Option<&Baseline>) -> Ready {
    if let Some(recorded) = recorded {
        let failures = recorded.failed_tests.clone();
        let counted = tests_ran(&recorded.evidence);
        if recorded.warm.is_empty() || plan.cache == VerifyCache::Off || plan.build.is_none() {
            return ready(Known {
                failures,
                tests_ran: counted,
                base: Some(plan.base.clone()),
                ..Known::default()
            });
        }
        let base = plan.base.clone();
        let task = tokio::spawn(rewarm(plan, failures.clone()));
        return async move {
            let mut known = task.await.unwrap_or(Known {
                failures,
                ..Known::default()
            });
            known.tests_ran = counted;
            known.base = Some(base);
            Arc::new(known)
        }
        .boxed()
        .shared();
    }
    if plan.build.is_none() && plan.lint.is_none() && plan.test.is_none() {
        return ready(Known::default());
    }
    let task = tokio::spawn(run(plan));
    async move { Arc::new(task.await.unwrap_or_default()) }
        .boxed()
        .shared()
}

async fn run(plan: Plan) -> Known {
    // Recorded before it runs: a run killed meanwhile finds no result and runs it again.
    plan.bus.emit(Event::BaselineStarted {
        commit: plan.base.clone(),
    });
    let started = Instant::now();
    let worktree = match plan.repo.add_detached_worktree(&plan.dir, &plan.base).await {
        Ok(worktree) => worktree,
        Err(e) => {
            plan.bus.emit(Event::Notice {
                message: format!("the baseline could not run (its worktree: {e}); units build cold"),
            });
            return Known::default();
        }
    };
    let evidence = match verifier(&plan, Judged::Yes).verify(&worktree, &plan.cancel).await {
        Ok(evidence) => evidence,
        Err(e) => {
            plan.bus.emit(Event::Notice {
                message: format!("the baseline could not run ({e}); units build cold"),
            });
            return Known::default();
        }
    };
    if plan.cancel.is_cancelled() {
        return Known::default();
    }
    let failed_tests = evidence
        .iter()
        .filter(|e| e.kind == "test" && !e.passed())
        .flat_map(|e| e.failed_tests.clone())
        .collect::<Vec<_>>();
    let (warm, cold_reason) = warm_folders(&plan, worktree.path(), &evidence).await;
    let baseline_evidence = evidence.clone();
    let baseline = Baseline {
        passed: evidence.iter().all(|e| e.passed()),
        timed_out: evidence.iter().any(|e| e.timed_out),
        evidence,
        failed_tests: failed_tests.clone(),
        duration_ms: started.elapsed().as_millis() as u64,
        warm: warm.iter().map(|(rel, _)| rel.clone()).collect(),
        cold_reason,
    };
    plan.bus.emit(Event::BaselineVerified { baseline });
    let installed = evidence_installed(&baseline_evidence, &warm).then(|| worktree.path().to_path_buf());
    Known {
        failures: failed_tests,
        warm,
        installed,
        tests_ran: tests_ran(&baseline_evidence),
        base: Some(plan.base.clone()),
    }
}

/// Whether the baseline's lint and tests run too, or only what makes its outputs (a resume's rewarm).
enum Judged {
    Yes,
    No,
}

/// The baseline's commands: its install may reach the network (the committed lockfile, before any
/// agent wrote), and one command runs at a time.
fn verifier(plan: &Plan, judged: Judged) -> Verifier {
    let judge = |command: &Option<String>| match judged {
        Judged::Yes => command.clone(),
        Judged::No => None,
    };
    Verifier {
        install: plan.install.clone(),
        install_online: true,
        build: plan.build.clone(),
        lint: judge(&plan.lint),
        test: judge(&plan.test),
        timeout: plan.timeout,
        permits: Semaphore::new(1),
        sandbox: plan.sandbox.clone(),
        baseline: None,
        protect_tests: false,
    }
}

/// On a resume whose recorded baseline left outputs to copy: the install and the build run again
/// on the base commit (not lint or tests: the recorded failures stand), so the resumed units start
/// warm instead of each building cold. Nothing is recorded; a failure leaves them cold, as before.
async fn rewarm(plan: Plan, failures: Vec<String>) -> Known {
    let cold = |failures: Vec<String>| Known {
        failures,
        ..Known::default()
    };
    plan.bus.emit(Event::Notice {
        message: "the recorded baseline stands; its install and build run again on the base commit so the \
                  resumed units start warm"
            .into(),
    });
    let worktree = match plan.repo.add_detached_worktree(&plan.dir, &plan.base).await {
        Ok(worktree) => worktree,
        Err(e) => {
            tracing::warn!("the baseline's worktree could not be made again ({e}); units build cold");
            return cold(failures);
        }
    };
    let evidence = match verifier(&plan, Judged::No).verify(&worktree, &plan.cancel).await {
        Ok(evidence) if !plan.cancel.is_cancelled() => evidence,
        _ => return cold(failures),
    };
    let (warm, cold_reason) = warm_folders(&plan, worktree.path(), &evidence).await;
    if let Some(reason) = cold_reason {
        plan.bus.emit(Event::Notice {
            message: format!("the resumed units build cold: {reason}"),
        });
    }
    let installed = evidence_installed(&evidence, &warm).then(|| worktree.path().to_path_buf());
    Known {
        failures,
        warm,
        installed,
        tests_ran: None,
        base: None,
    }
}

/// The baseline's build-output folders units may start from, or why they build cold. Only a folder
/// git ignores: a copy of one it tracks would be swept into the unit's next commit.
async fn warm_folders(
    plan: &Plan,
    root: &Path,
    evidence: &[orchestrator_protocol::Evidence],
) -> (Vec<(String, PathBuf)>, Option<String>) {
    if plan.cache == VerifyCache::Off {
        return (Vec::new(), Some("[verify] cache = \"off\"".into()));
    }
    // A failed install or build leaves half-made folders: a copy of them would look built.
    for kind in ["install", "build"] {
        let ran = evidence.iter().find(|e| e.kind == kind);
        if ran.is_some_and(|b| b.timed_out) {
            return (Vec::new(), Some(format!("the baseline {kind} timed out")));
        }
        if ran.is_some_and(|b| !b.passed()) {
            return (Vec::new(), Some(format!("the baseline {kind} failed")));
        }
    }
    let mut warm = Vec::new();
    for rel in crate::prescan::cache_dirs(root) {
        let path = root.join(rel);
        if path.is_dir() && ignored_by_git(root, rel).await {
            warm.push((rel.to_string(), path));
        }
    }
    let reason = warm
        .is_empty()
        .then(|| "no git-ignored build-output folder (Cargo target, node_modules) to start from".into());
    (warm, reason)
}

/// Whether the baseline installed the dependencies and units can start from its folders.
fn evidence_installed(evidence: &[orchestrator_protocol::Evidence], warm: &[(String, PathBuf)]) -> bool {
    !warm.is_empty() && evidence.iter().any(|e| e.kind == "install" && e.passed())
}

async fn ignored_by_git(root: &Path, rel: &str) -> bool {
    tokio::process::Command::new("git")
        .args(["check-ignore", "-q", &format!("{rel}/")])
        .current_dir(root)
        .status()
        .await
        .is_ok_and(|s| s.success())
}

/// Copies the baseline's build-output folders into `worktree` where it has none yet (a folder a
/// previous verification there built is newer than the baseline's). Copied beside the worktree (never
/// inside, where a commit could sweep it up) and renamed in, so a run killed mid-copy leaves no half
/// folder that looks whole: a truncated file with a fresh time would look built. A copy that fails
/// leaves the unit to build cold, with a warning: it never fails the unit.
pub async fn warm_up(worktree: &Path, known: &Known) {
    for (rel, source) in &known.warm {
        let target = worktree.join(rel);
        if target.exists() {
            continue;
        }
        let mut name = worktree.as_os_str().to_owned();
        name.push(format!(".{rel}.copy"));
        let partial = PathBuf::from(name);
        let _ = tokio::fs::remove_dir_all(&partial).await;
        // coreutils' cp: reflinks where the file system supports them, else copies; keeps times,
        // which Cargo's and npm's freshness checks compare.
        let copied = tokio::process::Command::new("cp")
            .args(["-a", "--reflink=auto"])
            .arg(source)
            .arg(&partial)
            .status()
            .await;
        match copied {
            Ok(status) if status.success() => {
                if let Err(e) = tokio::fs::rename(&partial, &target).await {
                    tracing::warn!("cannot move the copy of {rel} into place: {e}");
                }
            }
            other => {
                tracing::warn!(
                    "cannot copy the baseline's {rel} into {}: {other:?}",
                    worktree.display()
                );
                let _ = tokio::fs::remove_dir_all(&partial).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_worktree_gets_its_own_copy_once_and_nothing_beside_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let source = dir.path().join("baseline").join("target");
        std::fs::create_dir_all(source.join("debug")).expect("mkdir");
        std::fs::write(source.join("debug").join("out"), "built").expect("write");
        let unit = dir.path().join("units").join("a");
        std::fs::create_dir_all(&unit).expect("mkdir");
        let known = Known {
            warm: vec![("target".into(), source.clone())],
            ..Known::default()
        };
        warm_up(&unit, &known).await;
        let copy = unit.join("target").join("debug").join("out");
        assert_eq!(std::fs::read_to_string(&copy).expect("copied"), "built");
        // A copy, not a link: the unit's build rewriting it leaves the baseline's alone.
        std::fs::write(&copy, "the unit's").expect("write");
        assert_eq!(
            std::fs::read_to_string(source.join("debug").join("out")).expect("read"),
            "built"
        );
        // A folder the worktree already has (built there since) is not replaced.
        warm_up(&unit, &known).await;
        assert_eq!(std::fs::read_to_string(&copy).expect("read"), "the unit's");
        let beside: Vec<_> = std::fs::read_dir(dir.path().join("units"))
            .expect("list")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(
            beside,
            vec![std::ffi::OsString::from("a")],
            "no partial copy left"
        );
    }
}
