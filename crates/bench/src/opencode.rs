//! The reference line: the same fan-out through OpenCode's server. `opencode serve` runs offline with a
//! private HOME and the in-process fake model as its OpenAI-compatible provider (as the CI tests in
//! crates/cli/tests/suite/install.rs run it); 50 sessions are created and prompted at once through its HTTP
//! API, and the server's wall time, peak resident memory and CPU are measured.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use orchestrator_fake_model::{FakeOptions, FakeServer, Reply, SeenRequest};
use serde::Serialize;
use serde_json::{json, Value};

use crate::child::{current_rss_kib, Usage, Watched};
use crate::mission::ser_ms;
use crate::repo::BenchRepo;

const START_TIMEOUT: Duration = Duration::from_secs(60);
const PROMPT_TIMEOUT: Duration = Duration::from_secs(300);
/// Let the freshly started server finish initialising before its idle memory is read.
const SETTLE: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, Serialize)]
pub struct OpenCodeScenario {
    pub sessions: usize,
    #[serde(serialize_with = "ser_ms")]
    pub latency: Duration,
    /// Each session makes one `write` call before it answers (LANDSCAPE.md's "one-tool-call" sessions);
    /// otherwise it answers at once (one turn).
    pub tool_call: bool,
    /// OpenCode's per-step git snapshots (its default is on).
    pub snapshots: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct OpenCodeRun {
    pub scenario: OpenCodeScenario,
    pub version: String,
    /// Spawn → "listening" on stdout.
    #[serde(serialize_with = "ser_ms")]
    pub startup: Duration,
    pub idle_rss_kib: u64,
    /// From the first session created to the last prompt answered.
    #[serde(serialize_with = "ser_ms")]
    pub wall: Duration,
    pub model_calls: usize,
    /// The server process from start to stop (peak RSS, CPU).
    pub server: Usage,
}

/// The OpenCode binary: the path given, else `OPENCODE_BIN`, else the first one in `.ci/opencode`
/// (where .ci/run installs it) that runs on this CPU.
pub fn find(given: Option<&Path>, workspace: &Path) -> Option<PathBuf> {
    if let Some(path) = given {
        return Some(path.to_path_buf());
    }
    if let Some(bin) = std::env::var_os("OPENCODE_BIN").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(bin));
    }
    let modules = workspace.join(".ci/opencode/node_modules");
    let mut candidates: Vec<PathBuf> = std::fs::read_dir(&modules)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("bin/opencode"))
        .filter(|p| p.is_file())
        .collect();
    // The plain build before the baseline (no-AVX2) one, as .ci/run's glob order picks it.
    candidates.sort();
    candidates.into_iter().find(|bin| version(bin).is_ok())
}

fn version(bin: &Path) -> Result<String> {
    let home = tempfile::tempdir().context("cannot make a temporary folder")?;
    let out = opencode_command(bin, home.path(), home.path())
        .arg("--version")
        .stdout(Stdio::piped())
        .output()
        .context("cannot run opencode")?;
    if !out.status.success() {
        bail!("opencode --version failed");
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// OpenCode with every folder it writes to inside `home`, nothing fetched, no model keys from outside.
fn opencode_command(bin: &Path, home: &Path, cwd: &Path) -> Command {
    let mut command = crate::child::clean_command(bin, home);
    command
        .current_dir(cwd)
        // OpenCode takes its project folder from PWD, as a shell would have set it.
        .env("PWD", cwd)
        .env("XDG_DATA_HOME", home.join(".local/share"))
        .env("XDG_CACHE_HOME", home.join(".cache"))
        .env("XDG_STATE_HOME", home.join(".local/state"))
        .env("OPENCODE_DISABLE_MODELS_FETCH", "1")
        .env("OPENCODE_DISABLE_AUTOUPDATE", "1")
        .env("OPENCODE_DISABLE_SHARE", "1")
        .env("OPENCODE_DISABLE_LSP_DOWNLOAD", "1")
        .stdin(Stdio::null());
    command
}

/// What the fake model answers OpenCode: a title to the title agent (it offers no tools), and to each
/// session either an answer at once or one `write` of its own file and then the answer.
fn brain(tool_call: bool, repo: PathBuf) -> impl Fn(&SeenRequest) -> Reply + Send + Sync + 'static {
    move |request: &SeenRequest| {
        if !request.offers("write") {
            return Reply::Text("Benchmark session".into());
        }
        if tool_call && request.tool_results().is_empty() {
            let name: String = request
                .first_user_text()
                .chars()
                .filter(char::is_ascii_digit)
                .collect();
            let path = repo.join("out").join(format!("s{name}.txt"));
            let arguments = json!({"filePath": path, "content": format!("session {name}\n")});
            return Reply::ToolCalls {
                text: String::new(),
                calls: vec![("write".into(), arguments.to_string())],
            };
        }
        Reply::Text("Done.".into())
    }
}

fn config(server: &FakeServer, snapshots: bool) -> String {
    json!({
        "$schema": "https://opencode.ai/config.json",
        "provider": {
            "fake": {
                "npm": "@ai-sdk/openai-compatible",
                "name": "Fake",
                "options": { "baseURL": server.openai_base_url(), "apiKey": "bench-key" },
                "models": { "scripted": { "name": "Fake model", "tool_call": true } }
            }
        },
        "model": "fake/scripted",
        "small_model": "fake/scripted",
        "snapshot": snapshots,
        "autoupdate": false,
        "share": "disabled",
        "permission": { "edit": "allow", "bash": "allow" }
    })
    .to_string()
}

pub async fn run(bin: &Path, scenario: OpenCodeScenario) -> Result<OpenCodeRun> {
    let version = version(bin)?;
    let repo = BenchRepo::new()?;
    let options = FakeOptions {
        latency: scenario.latency,
        ..FakeOptions::default()
    };
    let server = FakeServer::start(brain(scenario.tool_call, repo.path()), options)
        .await
        .context("cannot start the fake model server")?;
    let config_dir = repo.home().join(".config/opencode");
    std::fs::create_dir_all(&config_dir).context("cannot make OpenCode's config folder")?;
    std::fs::write(
        config_dir.join("opencode.json"),
        config(&server, scenario.snapshots),
    )
    .context("cannot write OpenCode's config")?;

    let out_path = repo.scratch().join("opencode.out");
    let mut command = opencode_command(bin, repo.home(), &repo.path());
    command
        .args(["serve", "--port", "0", "--hostname", "127.0.0.1"])
        .stdout(std::fs::File::create(&out_path).context("cannot capture stdout")?)
        .stderr(std::fs::File::create(repo.scratch().join("opencode.err")).context("cannot capture stderr")?);
    let watched = Watched::spawn(command)?;
    let pid = watched.pid();
    let handle = watched.handle();
    let started = watched.started;
    let mut waiter = tokio::task::spawn_blocking(move || watched.wait());

    let measured = drive(&out_path, started, pid, scenario).await;
    // Stop the server whatever happened; SIGTERM first so it can shut down as it normally would.
    let _ = handle.signal(libc::SIGTERM);
    let stopped = tokio::time::timeout(Duration::from_secs(10), &mut waiter).await;
    let usage = match stopped {
        Ok(joined) => joined.context("the waiting thread panicked")??,
        Err(_) => {
            // Seen with 1.18.33 after the tool-call sessions: the measurement is taken already, so
            // the run counts; its CPU then includes the idle seconds before the kill.
            handle.signal(libc::SIGKILL)?;
            eprintln!("[bench] opencode serve did not stop within 10 s of SIGTERM; killed");
            tokio::time::timeout(Duration::from_secs(10), waiter)
                .await
                .context("opencode serve did not exit even after SIGKILL")?
                .context("the waiting thread panicked")??
        }
    };
    let (startup, idle_rss_kib, wall) = measured?;
    let model_calls = server.request_count();
    server.shutdown().await;
    Ok(OpenCodeRun {
        scenario,
        version,
        startup,
        idle_rss_kib,
        wall,
        model_calls,
        server: usage,
    })
}

/// Waits for the server, reads its idle memory, then runs the sessions: (start-up, idle RSS, wall).
async fn drive(
    out_path: &Path,
    started: Instant,
    pid: u32,
    scenario: OpenCodeScenario,
) -> Result<(Duration, u64, Duration)> {
    let (base, startup) = loop {
        let out = std::fs::read_to_string(out_path).unwrap_or_default();
        if let Some(url) = out
            .lines()
            .find_map(|l| l.split("listening on ").nth(1))
            .map(|u| u.trim().to_string())
        {
            break (url, started.elapsed());
        }
        if started.elapsed() > START_TIMEOUT {
            bail!(
                "opencode serve did not start within {} s: {out}",
                START_TIMEOUT.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let client = reqwest::Client::builder()
        .timeout(PROMPT_TIMEOUT)
        .build()
        .context("cannot build an HTTP client")?;
    // The first request makes OpenCode set up the project; idle memory is read after it.
    client
        .get(format!("{base}/session"))
        .send()
        .await
        .context("opencode serve does not answer")?
        .error_for_status()?;
    tokio::time::sleep(SETTLE).await;
    let idle = current_rss_kib(pid).unwrap_or(0);

    let began = Instant::now();
    let sessions = (1..=scenario.sessions).map(|k| {
        let client = client.clone();
        let base = base.clone();
        tokio::spawn(async move { one_session(&client, &base, k).await })
    });
    let results = join_all(sessions.collect()).await;
    let wall = began.elapsed();
    let failed: Vec<String> = results.into_iter().filter_map(|r| r.err()).collect();
    if !failed.is_empty() {
        bail!(
            "{} of {} OpenCode sessions failed; first: {}",
            failed.len(),
            scenario.sessions,
            failed[0]
        );
    }
    Ok((startup, idle, wall))
}

async fn join_all(handles: Vec<tokio::task::JoinHandle<Result<()>>>) -> Vec<Result<(), String>> {
    let mut results = Vec::with_capacity(handles.len());
    for handle in handles {
        results.push(match handle.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("{e:#}")),
            Err(e) => Err(format!("task failed: {e}")),
        });
    }
    results
}

/// Creates a session and sends it one prompt; OpenCode answers when the assistant's turn is complete.
async fn one_session(client: &reqwest::Client, base: &str, k: usize) -> Result<()> {
    let session: Value = client
        .post(format!("{base}/session"))
        .json(&json!({}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let id = session["id"]
        .as_str()
        .context("no session id in OpenCode's answer")?;
    let prompt = format!("Benchmark session {k}: do your part.");
    let reply: Value = client
        .post(format!("{base}/session/{id}/message"))
        .json(&json!({"parts": [{"type": "text", "text": prompt}]}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    if let Some(error) = reply["info"].get("error") {
        bail!("session {k}: {error}");
    }
    if reply["info"]["finish"] != "stop" {
        bail!("session {k} did not finish: {}", reply["info"]);
    }
    Ok(())
}
