//! `--builds N`: what verification costs on a real project with dependencies from a registry, N units
//! each changing one module: a mission whose units build cold (`[verify] cache = "off"`), one whose
//! units start from a copy of the baseline's build outputs (`"auto"`), and the floor — one cold
//! install, build and test, then N incremental builds and tests, in one folder, one after another.
//!
//! Two projects (`--ecosystem`): a Rust crate ([`rust`]: Cargo's `target` is what a unit starts from)
//! and a TypeScript package ([`node`]: `node_modules`). What differs between them is in [`Project`];
//! the three runs and their figures are the same code.

pub mod node;
pub mod rust;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use orchestrator_fake_model::script::{PlanUnit, Script, ScriptedMission};
use orchestrator_fake_model::{FakeOptions, FakeServer};
use orchestrator_protocol::Event;
use orchestrator_store::Store;

use crate::child::{Usage, Watched};
use crate::mission::{orchestrator_command, wait_with_timeout, OBJECTIVE};
use crate::repo::BenchRepo;

const MISSION_TIMEOUT: Duration = Duration::from_secs(1800);

/// Which project the builds benchmark runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Ecosystem {
    /// A Rust crate using serde and serde_json.
    Rust,
    /// A TypeScript package built with tsc and tested with mocha.
    Node,
}

/// What one ecosystem's project brings to the benchmark.
pub trait Project {
    /// The project in a few words, for the report.
    fn describe(&self) -> String;
    /// Writes the project for `units` units into `dir` and reaches the registry once: the lockfile,
    /// and for Cargo the sources every later build reads offline.
    fn prepare(&self, dir: &Path, units: usize) -> Result<()>;
    /// Unit `i`'s file (path inside the project) and its content as version `v` (0: the base commit).
    fn module(&self, i: usize, v: usize) -> (String, String);
    /// What the floor runs once before its first build (`npm ci`); the mission's own install is
    /// the one the pre-scan finds, which should be the same command.
    fn install(&self) -> Option<&'static str>;
    fn build(&self) -> &'static str;
    fn test(&self) -> &'static str;
    /// Variables for the floor's commands: private package-manager caches under the scratch folder.
    fn floor_env(&self) -> Vec<(&'static str, PathBuf)>;
    /// Variables for the orchestrator of a mission.
    fn mission_env(&self) -> Vec<(&'static str, PathBuf)>;
    /// Whether a unit installing for itself needs the network (so the cold mission must allow it,
    /// as a user running with `cache = "off"` would have had to).
    fn units_install_online(&self) -> bool;
}

/// One way of running the N builds.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BuildRun {
    pub label: String,
    #[serde(serialize_with = "crate::mission::ser_ms")]
    pub wall: Duration,
    /// CPU of everything the run started (installs, builds, tests, git), user + system.
    #[serde(serialize_with = "crate::mission::ser_ms")]
    pub cpu: Duration,
    /// Each unit's verification (install if any + build + test) wall time, in unit order.
    pub unit_verify_ms: Vec<u64>,
    /// Units whose verification ran an install.
    pub unit_installs: usize,
    /// The missions' stage 2: build and test once more on the integrated branch (wall, ms), which
    /// the floor has no counterpart of; and whether it ran an install.
    pub integration_ms: Option<u64>,
    pub integration_installed: bool,
    /// The baseline's own run (the missions) or the first cold install + build + test (the floor).
    pub first_ms: Option<u64>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Builds {
    pub ecosystem: Ecosystem,
    pub project: String,
    pub units: usize,
    pub runs: Vec<BuildRun>,
}

/// Runs the floor, then the cold and the warm mission.
pub async fn run(
    orchestrator: &Path,
    ecosystem: Ecosystem,
    units: usize,
    progress: &dyn Fn(&str),
) -> Result<Builds> {
    let scratch = tempfile::Builder::new()
        .prefix("orchestrator-builds-")
        .tempdir()
        .context("cannot make a temporary folder")?;
    let project: Box<dyn Project> = match ecosystem {
        Ecosystem::Rust => Box::new(rust::Crate::new(scratch.path())),
        Ecosystem::Node => Box::new(node::Package::new(scratch.path())),
    };
    let template = scratch.path().join("template");
    progress("reaching the registry once: the lockfile and what it names");
    project.prepare(&template, units)?;
    let mut runs = Vec::new();
    progress("the floor: one cold build, then incremental ones");
    runs.push(floor(project.as_ref(), &template, units)?);
    for cache in ["off", "auto"] {
        progress(&format!(
            "a mission of {units} units with [verify] cache = \"{cache}\""
        ));
        runs.push(mission(orchestrator, project.as_ref(), &template, units, cache).await?);
    }
    Ok(Builds {
        ecosystem,
        project: project.describe(),
        units,
        runs,
    })
}

/// Runs `command` with `bash -c` in `dir`, as verification does, output discarded; fails on a
/// non-zero exit.
pub fn shell(dir: &Path, command: &str, env: &[(&'static str, PathBuf)]) -> Result<Usage> {
    let mut child = Command::new("bash");
    child
        .args(["-c", command])
        .current_dir(dir)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env_remove("CARGO_TARGET_DIR")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let usage = Watched::spawn(child)?.wait()?;
    if usage.exit_code != Some(0) {
        bail!("`{command}` failed in {}", dir.display());
    }
    Ok(usage)
}

/// Runs `commands` one after another in `dir`; wall and CPU of all of them.
fn run_all(dir: &Path, commands: &[&str], env: &[(&'static str, PathBuf)]) -> Result<(Duration, Duration)> {
    let mut wall = Duration::ZERO;
    let mut cpu = Duration::ZERO;
    for command in commands {
        let usage = shell(dir, command, env)?;
        wall += usage.wall;
        cpu += usage.own_cpu + usage.children_cpu;
    }
    Ok((wall, cpu))
}

fn floor(project: &dyn Project, template: &Path, units: usize) -> Result<BuildRun> {
    let dir = template.with_file_name("floor");
    copy_dir(template, &dir)?;
    let env = project.floor_env();
    let first: Vec<&str> = project
        .install()
        .into_iter()
        .chain([project.build(), project.test()])
        .collect();
    let (first_wall, mut cpu) = run_all(&dir, &first, &env)?;
    let mut wall = first_wall;
    let mut unit_verify_ms = Vec::new();
    for i in 1..=units {
        let (path, content) = project.module(i, 1);
        std::fs::write(dir.join(path), content)?;
        let (w, c) = run_all(&dir, &[project.build(), project.test()], &env)?;
        wall += w;
        cpu += c;
        unit_verify_ms.push(w.as_millis() as u64);
    }
    Ok(BuildRun {
        label: "floor: 1 cold + incremental, one folder".into(),
        wall,
        cpu,
        unit_verify_ms,
        unit_installs: 0,
        integration_ms: None,
        integration_installed: false,
        first_ms: Some(first_wall.as_millis() as u64),
    })
}

/// The mission's `orchestrator.toml`: the floor's build and test, the install left to the pre-scan.
fn config(project: &dyn Project, cache: &str) -> String {
    let mut config = format!(
        "[verify]\nbuild = \"{}\"\ntest = \"{}\"\ncache = \"{cache}\"\ntimeout_secs = 1800\n[limits]\nscouts = 1\n",
        project.build(),
        project.test()
    );
    if cache == "off" && project.units_install_online() {
        config.push_str("[sandbox]\nnetwork = true\n");
    }
    config
}

async fn mission(
    orchestrator: &Path,
    project: &dyn Project,
    template: &Path,
    units: usize,
    cache: &str,
) -> Result<BuildRun> {
    let repo = BenchRepo::new()?;
    copy_dir(template, &repo.path())?;
    std::fs::write(repo.path().join("orchestrator.toml"), config(project, cache))?;
    repo.git(&["add", "-A"])?;
    repo.git(&["commit", "-q", "-m", "the project"])?;
    let plan = (1..=units)
        .map(|i| {
            let (path, content) = project.module(i, 1);
            PlanUnit::file(&format!("u{i}"), &path, &content.replace('\n', "\\n"))
        })
        .collect();
    let script = Script {
        plan,
        ..Script::default()
    };
    let server = FakeServer::start(ScriptedMission::new(script), FakeOptions::default())
        .await
        .context("cannot start the fake model server")?;
    let mut command = orchestrator_command(orchestrator, &repo, &server)?;
    command
        .envs(project.mission_env())
        .args(["task", OBJECTIVE, "--max-parallel", &units.to_string()]);
    let usage = wait_with_timeout(Watched::spawn(command)?, MISSION_TIMEOUT).await?;
    server.shutdown().await;
    if usage.exit_code != Some(0) {
        let stderr = std::fs::read_to_string(repo.scratch().join("stderr.txt")).unwrap_or_default();
        bail!("the {cache} mission did not seal; its stderr:\n{stderr}");
    }
    let times = verification_times(&repo.store_path())?;
    Ok(BuildRun {
        label: format!("mission, cache = \"{cache}\""),
        wall: usage.wall,
        cpu: usage.own_cpu + usage.children_cpu,
        unit_verify_ms: times.per_unit,
        unit_installs: times.installs,
        integration_ms: times.integration,
        integration_installed: times.integration_installed,
        first_ms: times.baseline,
    })
}

/// What the mission's evidence says about its verifications.
struct Times {
    /// Each unit's verification wall time (all its evidence), in unit order.
    per_unit: Vec<u64>,
    /// Units that ran an install.
    installs: usize,
    /// The baseline's duration.
    baseline: Option<u64>,
    /// Stage 2's verification on the integrated branch, and whether it installed.
    integration: Option<u64>,
    integration_installed: bool,
}

fn verification_times(store: &Path) -> Result<Times> {
    let store = Store::open_existing(store).context("cannot open the mission store")?;
    let Some(mission) = store.latest_mission()? else {
        bail!("no mission in the store");
    };
    let mut per_unit = std::collections::BTreeMap::<String, u64>::new();
    let mut installed = std::collections::BTreeSet::<String>::new();
    let mut baseline = None;
    let mut integration = None;
    let mut integration_installed = false;
    for envelope in store.events_after(&mission.id, None)? {
        match envelope.event {
            Event::EvidenceRecorded {
                unit: Some(unit),
                evidence,
            } => {
                if evidence.kind == "install" {
                    installed.insert(unit.clone());
                }
                *per_unit.entry(unit).or_default() += evidence.duration_ms;
            }
            Event::EvidenceRecorded { unit: None, evidence } => {
                integration_installed |= evidence.kind == "install";
                *integration.get_or_insert(0) += evidence.duration_ms;
            }
            Event::BaselineVerified { baseline: b } => baseline = Some(b.duration_ms),
            _ => {}
        }
    }
    Ok(Times {
        per_unit: per_unit.into_values().collect(),
        installs: installed.len(),
        baseline,
        integration,
        integration_installed,
    })
}

pub fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    let status = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", from.display()))
        .arg(to)
        .status()?;
    if !status.success() {
        bail!("cannot copy {} to {}", from.display(), to.display());
    }
    Ok(())
}

/// The section for docs/benchmarks.md: the table the Rust and the Node runs share, then how many
/// units ran an install of their own (a warm unit that did would have paid for it in the table).
pub fn markdown(builds: &Builds) -> String {
    let mut out = format!(
        "{}\n\n| {} units | wall | CPU (all processes) | verification per unit, mean wall | first build (baseline / cold) |\n|---|---|---|---|---|\n",
        builds.project, builds.units
    );
    for run in &builds.runs {
        let mean = run.unit_verify_ms.iter().sum::<u64>() as f64 / run.unit_verify_ms.len().max(1) as f64;
        out.push_str(&format!(
            "| {} | {:.1} s | {:.1} s | {:.1} s | {} |\n",
            run.label,
            run.wall.as_secs_f64(),
            run.cpu.as_secs_f64(),
            mean / 1000.0,
            run.first_ms
                .map(|ms| format!("{:.1} s", ms as f64 / 1000.0))
                .unwrap_or_else(|| "—".into()),
        ));
    }
    out.push('\n');
    for run in builds.runs.iter().filter(|run| run.integration_ms.is_some()) {
        out.push_str(&format!(
            "- {}: {} of {} units ran an install; stage 2 (the integrated branch) verified in {:.1} s, {}\n",
            run.label,
            run.unit_installs,
            run.unit_verify_ms.len(),
            run.integration_ms.unwrap_or_default() as f64 / 1000.0,
            if run.integration_installed {
                "with an install"
            } else {
                "without an install"
            },
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn projects(scratch: &Path) -> [(Ecosystem, Box<dyn Project>); 2] {
        [
            (Ecosystem::Rust, Box::new(rust::Crate::new(scratch))),
            (Ecosystem::Node, Box::new(node::Package::new(scratch))),
        ]
    }

    #[test]
    fn only_the_cold_node_mission_opens_the_network_to_its_units() {
        let scratch = Path::new("/nonexistent");
        for (ecosystem, project) in projects(scratch) {
            let cold = config(project.as_ref(), "off");
            let warm = config(project.as_ref(), "auto");
            assert_eq!(
                cold.contains("[sandbox]\nnetwork = true"),
                ecosystem == Ecosystem::Node,
                "{cold}"
            );
            assert!(!warm.contains("network"), "{warm}");
            // The mission verifies with the floor's own commands; the install is the pre-scan's.
            assert!(warm.contains(&format!("build = \"{}\"", project.build())));
            assert!(warm.contains(&format!("test = \"{}\"", project.test())));
            assert!(!warm.contains("install"));
        }
    }

    #[test]
    fn each_unit_changes_its_own_module_and_nothing_a_plan_would_unescape() {
        for (_, project) in projects(Path::new("/nonexistent")) {
            let (path, base) = project.module(3, 0);
            let (same_path, changed) = project.module(3, 1);
            assert_eq!(path, same_path);
            assert_ne!(base, changed);
            assert_ne!(project.module(4, 1).0, path);
            // `\n` in a plan's FILE content is a newline: a backslash of its own would be rewritten.
            assert!(!changed.contains('\\'), "{changed}");
        }
    }

    #[test]
    fn a_command_that_fails_or_dies_fails_the_run_and_one_that_floods_does_not_block() {
        let dir = tempfile::tempdir().expect("tempdir");
        let failed = shell(dir.path(), "exit 3", &[]).expect_err("exit 3 fails");
        assert!(failed.to_string().contains("exit 3"), "{failed}");
        shell(dir.path(), "kill -9 $$", &[]).expect_err("a killed command fails");
        let usage = shell(dir.path(), "head -c 50000000 /dev/zero", &[]).expect("output is discarded");
        assert_eq!(usage.exit_code, Some(0));
    }

    #[test]
    fn the_report_says_which_runs_installed_per_unit_and_in_stage_2() {
        let run = |label: &str, installs: usize, integration: Option<(u64, bool)>| BuildRun {
            label: label.into(),
            wall: Duration::from_secs(10),
            cpu: Duration::from_secs(20),
            unit_verify_ms: vec![1000, 3000],
            unit_installs: installs,
            integration_ms: integration.map(|(ms, _)| ms),
            integration_installed: integration.is_some_and(|(_, installed)| installed),
            first_ms: Some(5000),
        };
        let builds = Builds {
            ecosystem: Ecosystem::Node,
            project: "a package".into(),
            units: 2,
            runs: vec![
                run("floor", 0, None),
                run("cold", 2, Some((4000, true))),
                run("warm", 0, Some((2000, false))),
            ],
        };
        let text = markdown(&builds);
        assert!(
            text.contains("| floor | 10.0 s | 20.0 s | 2.0 s | 5.0 s |"),
            "{text}"
        );
        assert!(text.contains("- cold: 2 of 2 units ran an install; stage 2 (the integrated branch) verified in 4.0 s, with an install"), "{text}");
        assert!(text.contains("- warm: 0 of 2 units ran an install; stage 2 (the integrated branch) verified in 2.0 s, without an install"), "{text}");
        assert!(!text.contains("- floor"), "the floor has no stage 2: {text}");
    }
}
