//! `--builds N`: what verification costs on a real Rust crate with dependencies (serde with derive,
//! serde_json), N units each changing one module: a mission whose units build cold (`[verify] cache =
//! "off"`), one whose units start from a copy of the baseline's `target` (`"auto"`), and the floor —
//! one cold build and test, then N incremental ones, in one folder, one after another.
//!
//! The registry is reached once (`cargo fetch` into a private CARGO_HOME); every build after that is
//! `--offline`.

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

const BUILD: &str = "cargo build --offline --all-targets";
const TEST: &str = "cargo test --offline";
const MISSION_TIMEOUT: Duration = Duration::from_secs(1800);

/// One way of running the N builds.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BuildRun {
    pub label: String,
    #[serde(serialize_with = "crate::mission::ser_ms")]
    pub wall: Duration,
    /// CPU of everything the run started (builds, tests, git), user + system.
    #[serde(serialize_with = "crate::mission::ser_ms")]
    pub cpu: Duration,
    /// Each unit's verification (build + test) wall time, in unit order.
    pub unit_verify_ms: Vec<u64>,
    /// The baseline's own run (the missions) or the first cold build (the floor).
    pub first_ms: Option<u64>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Builds {
    pub units: usize,
    pub runs: Vec<BuildRun>,
}

/// Runs the floor, then the cold and the warm mission.
pub async fn run(orchestrator: &Path, units: usize, progress: &dyn Fn(&str)) -> Result<Builds> {
    let scratch = tempfile::Builder::new()
        .prefix("orchestrator-builds-")
        .tempdir()
        .context("cannot make a temporary folder")?;
    let cargo_home = scratch.path().join("cargo-home");
    let template = scratch.path().join("template");
    progress("fetching the crate's dependencies once");
    write_crate(&template, units)?;
    cargo(&template, &cargo_home, &["generate-lockfile"])?;
    cargo(&template, &cargo_home, &["fetch"])?;
    let mut runs = Vec::new();
    progress("the floor: one cold build, then incremental ones");
    runs.push(floor(&template, &cargo_home, units)?);
    for cache in ["off", "auto"] {
        progress(&format!(
            "a mission of {units} units with [verify] cache = \"{cache}\""
        ));
        runs.push(mission(orchestrator, &template, &cargo_home, units, cache).await?);
    }
    Ok(Builds { units, runs })
}

/// The crate: a library of `units` modules (unit i rewrites module i) that uses its dependencies.
fn write_crate(dir: &Path, units: usize) -> Result<()> {
    std::fs::create_dir_all(dir.join("src"))?;
    std::fs::write(
        dir.join("Cargo.toml"),
        "[package]\nname = \"warm\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\n\
         serde = { version = \"1\", features = [\"derive\"] }\nserde_json = \"1\"\n",
    )?;
    std::fs::write(dir.join(".gitignore"), "target/\n")?;
    let mut lib = String::from(
        "#[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]\npub struct Part {\n    pub n: u32,\n}\n\n",
    );
    for i in 1..=units {
        lib.push_str(&format!("pub mod p{i};\n"));
        std::fs::write(dir.join(format!("src/p{i}.rs")), module(i, 0))?;
    }
    std::fs::write(dir.join("src/lib.rs"), lib)?;
    Ok(())
}

/// Module `i` as version `v` of it: a function and a test through serde_json.
fn module(i: usize, v: usize) -> String {
    format!(
        "pub fn part() -> crate::Part {{\n    crate::Part {{ n: {} }}\n}}\n\n#[cfg(test)]\nmod tests {{\n    #[test]\n    fn round_trips() {{\n        let text = serde_json::to_string(&super::part()).unwrap();\n        assert_eq!(serde_json::from_str::<crate::Part>(&text).unwrap(), super::part());\n    }}\n}}\n",
        i * 100 + v
    )
}

fn cargo(dir: &Path, cargo_home: &Path, args: &[&str]) -> Result<Usage> {
    let mut command = Command::new("cargo");
    command
        .args(args)
        .current_dir(dir)
        .env("CARGO_HOME", cargo_home)
        .env_remove("CARGO_TARGET_DIR")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let usage = Watched::spawn(command)?.wait()?;
    if usage.exit_code != Some(0) {
        bail!("cargo {} failed in {}", args.join(" "), dir.display());
    }
    Ok(usage)
}

/// Build and test, as verification runs them; wall and CPU of both.
fn verify_here(dir: &Path, cargo_home: &Path) -> Result<(Duration, Duration)> {
    let build = cargo(dir, cargo_home, &["build", "--offline", "--all-targets"])?;
    let test = cargo(dir, cargo_home, &["test", "--offline"])?;
    Ok((
        build.wall + test.wall,
        build.own_cpu + build.children_cpu + test.own_cpu + test.children_cpu,
    ))
}

fn floor(template: &Path, cargo_home: &Path, units: usize) -> Result<BuildRun> {
    let dir = template.with_file_name("floor");
    copy_dir(template, &dir)?;
    let (first_wall, mut cpu) = verify_here(&dir, cargo_home)?;
    let mut wall = first_wall;
    let mut unit_verify_ms = Vec::new();
    for i in 1..=units {
        std::fs::write(dir.join(format!("src/p{i}.rs")), module(i, 1))?;
        let (w, c) = verify_here(&dir, cargo_home)?;
        wall += w;
        cpu += c;
        unit_verify_ms.push(w.as_millis() as u64);
    }
    Ok(BuildRun {
        label: "floor: 1 cold + incremental, one folder".into(),
        wall,
        cpu,
        unit_verify_ms,
        first_ms: Some(first_wall.as_millis() as u64),
    })
}

async fn mission(
    orchestrator: &Path,
    template: &Path,
    cargo_home: &Path,
    units: usize,
    cache: &str,
) -> Result<BuildRun> {
    let repo = BenchRepo::new()?;
    copy_dir(template, &repo.path())?;
    std::fs::write(
        repo.path().join("orchestrator.toml"),
        format!(
            "[verify]\nbuild = \"{BUILD}\"\ntest = \"{TEST}\"\ncache = \"{cache}\"\ntimeout_secs = 1800\n[limits]\nscouts = 1\n"
        ),
    )?;
    repo.git(&["add", "-A"])?;
    repo.git(&["commit", "-q", "-m", "the crate"])?;
    let plan = (1..=units)
        .map(|i| {
            let content = module(i, 1).replace('\n', "\\n");
            PlanUnit::file(&format!("u{i}"), &format!("src/p{i}.rs"), &content)
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
        .env("CARGO_HOME", cargo_home)
        .env("RUSTUP_HOME", rustup_home())
        .args(["task", OBJECTIVE, "--max-parallel", &units.to_string()]);
    let usage = wait_with_timeout(Watched::spawn(command)?, MISSION_TIMEOUT).await?;
    server.shutdown().await;
    if usage.exit_code != Some(0) {
        let stderr = std::fs::read_to_string(repo.scratch().join("stderr.txt")).unwrap_or_default();
        bail!("the {cache} mission did not seal; its stderr:\n{stderr}");
    }
    let (unit_verify_ms, first_ms) = verification_times(&repo.store_path())?;
    Ok(BuildRun {
        label: format!("mission, cache = \"{cache}\""),
        wall: usage.wall,
        cpu: usage.own_cpu + usage.children_cpu,
        unit_verify_ms,
        first_ms,
    })
}

/// Each unit's build + test wall time from the mission's evidence (its last verification), and
/// the baseline's duration.
fn verification_times(store: &Path) -> Result<(Vec<u64>, Option<u64>)> {
    let store = Store::open_existing(store).context("cannot open the mission store")?;
    let Some(mission) = store.latest_mission()? else {
        bail!("no mission in the store");
    };
    let mut per_unit = std::collections::BTreeMap::<String, u64>::new();
    let mut baseline = None;
    for envelope in store.events_after(&mission.id, None)? {
        match envelope.event {
            Event::EvidenceRecorded {
                unit: Some(unit),
                evidence,
            } => *per_unit.entry(unit).or_default() += evidence.duration_ms,
            Event::BaselineVerified { baseline: b } => baseline = Some(b.duration_ms),
            _ => {}
        }
    }
    Ok((per_unit.into_values().collect(), baseline))
}

/// The toolchain the bench itself was started with, for a mission whose HOME is private.
fn rustup_home() -> PathBuf {
    std::env::var_os("RUSTUP_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".rustup")))
        .unwrap_or_default()
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
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

/// The section for docs/benchmarks.md.
pub fn markdown(builds: &Builds) -> String {
    let mut out = format!(
        "| {} units | wall | CPU (all processes) | verification per unit, mean wall | first build (baseline / cold) |\n|---|---|---|---|---|\n",
        builds.units
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
    out
}
