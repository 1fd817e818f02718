//! Test support for end-to-end missions: temporary git repositories (on test-support's ScratchRepo),
//! the scripted fake model server on 127.0.0.1, and the real `orchestrator` binary run against both.

use std::path::{Path, PathBuf};
use std::process::Output;

use orchestrator_fake_model::script::{role_of, Script, ScriptedMission};
use orchestrator_fake_model::{FakeOptions, FakeServer, SeenMessage, SeenRequest};
use orchestrator_test_support::git::ScratchRepo;

pub const MODEL: &str = "fake-model-1";

/// The config of a test repository: a test command that always passes.
pub const DEFAULT_CONFIG: &str = "[verify]\ntest = \"true\"\n";

/// A throwaway git repository with one commit on `main`. Its temporary HOME is the orchestrator's
/// (and OpenCode's) too when a test runs them there.
pub struct TestRepo(ScratchRepo);

impl TestRepo {
    /// A repository with no build, lint or test command anywhere.
    pub fn bare(files: &[(&str, &str)]) -> Self {
        let repo = TestRepo::new(files);
        repo.git(&["rm", "-q", "orchestrator.toml"]);
        repo.git(&["commit", "-q", "-m", "no config"]);
        repo
    }

    pub fn new(files: &[(&str, &str)]) -> Self {
        let repo = TestRepo(ScratchRepo::with_identity("Dev", "dev@example.com"));
        // A mission needs a command to judge the work: a trivial test, unless the test's own config
        // has a `[verify]` section (`TestRepo::bare` is a repository with none).
        repo.write("orchestrator.toml", DEFAULT_CONFIG);
        for (path, content) in files {
            if *path == "orchestrator.toml" && !content.contains("[verify]") {
                repo.write(path, &format!("{content}\n{DEFAULT_CONFIG}"));
            } else {
                repo.write(path, content);
            }
        }
        repo.write("README.md", "# test project\n");
        repo.git(&["add", "-A"]);
        repo.git(&["commit", "-q", "-m", "initial"]);
        repo
    }

    pub fn path(&self) -> &Path {
        self.0.path()
    }

    pub fn write(&self, path: &str, content: &str) {
        self.0.write(path, content);
    }

    pub fn read(&self, path: &str) -> Option<String> {
        std::fs::read_to_string(self.path().join(path)).ok()
    }

    /// Git's output without whitespace at either end.
    pub fn git(&self, args: &[&str]) -> String {
        self.0.git(args).trim().to_string()
    }

    /// Paths tracked at the tip of `main`.
    pub fn files_on_main(&self) -> Vec<String> {
        self.git(&["ls-tree", "-r", "--name-only", "main"])
            .lines()
            .map(str::to_string)
            .collect()
    }

    pub fn show(&self, rev_path: &str) -> String {
        self.git(&["show", rev_path])
    }

    pub fn worktrees(&self) -> Vec<String> {
        self.git(&["worktree", "list", "--porcelain"])
            .lines()
            .filter_map(|l| l.strip_prefix("worktree "))
            .map(str::to_string)
            .collect()
    }

    pub fn branches(&self) -> Vec<String> {
        self.git(&["branch", "--format=%(refname:short)"])
            .lines()
            .map(str::to_string)
            .collect()
    }

    pub fn home(&self) -> &Path {
        &self.0.home
    }
}

pub async fn fake(script: Script) -> FakeServer {
    fake_with(script, FakeOptions::default()).await
}

pub async fn fake_with(script: Script, options: FakeOptions) -> FakeServer {
    FakeServer::start(ScriptedMission::new(script), options)
        .await
        .expect("fake model server starts")
}

/// How a test runs the binary.
pub struct Run {
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub remove_env: Vec<String>,
}

impl Run {
    pub fn task(objective: &str) -> Self {
        Run::cmd(&["task", objective])
    }

    /// Any subcommand with its arguments, e.g. `Run::cmd(&["status", "--json"])`.
    pub fn cmd(args: &[&str]) -> Self {
        Run {
            args: args.iter().map(|a| a.to_string()).collect(),
            env: Vec::new(),
            remove_env: Vec::new(),
        }
    }

    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    pub fn without_env(mut self, key: &str) -> Self {
        self.remove_env.push(key.into());
        self
    }

    /// Points the binary at the fake server through the OpenAI variables.
    pub fn openai(self, server: &FakeServer) -> Self {
        self.env("OPENAI_BASE_URL", &server.openai_base_url())
            .env("OPENAI_API_KEY", "test-key")
    }

    /// The configured command, for tests that need the running child (to signal it).
    pub fn command(&self, repo: &TestRepo) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(binary());
        cmd.args(&self.args)
            .current_dir(repo.path())
            .env("HOME", repo.home())
            .env("XDG_CONFIG_HOME", repo.home().join(".config"))
            .env("ORCHESTRATOR_MODEL", MODEL)
            .env_remove("OPENAI_BASE_URL")
            .env_remove("OPENAI_API_KEY")
            .env_remove("ANTHROPIC_BASE_URL")
            .env_remove("ANTHROPIC_API_KEY")
            // The developer's own store never serves a test; the PostgreSQL tests pass --store.
            .env_remove("ORCHESTRATOR_STORE_URL")
            // No desktop session: a test run must not pop notices on the developer's screen.
            .env_remove("DISPLAY")
            .env_remove("WAYLAND_DISPLAY")
            .env_remove("DBUS_SESSION_BUS_ADDRESS")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        for key in &self.remove_env {
            cmd.env_remove(key);
        }
        for (key, value) in &self.env {
            cmd.env(key, value);
        }
        cmd
    }

    pub async fn run(self, repo: &TestRepo) -> Finished {
        let out = tokio::time::timeout(std::time::Duration::from_secs(240), self.command(repo).output())
            .await
            .expect("the orchestrator finished within 240 s")
            .expect("the orchestrator binary runs");
        Finished::from(out)
    }
}

pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_orchestrator"))
}

pub struct Finished {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Finished {
    fn from(out: Output) -> Self {
        Finished {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl Finished {
    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code,
            Some(code),
            "unexpected exit status\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    /// The `--json` events, parsed.
    pub fn events(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    pub fn events_of(&self, kind: &str) -> Vec<serde_json::Value> {
        self.events().into_iter().filter(|e| e["type"] == kind).collect()
    }

    /// The messages of the run's `notice` events (with `--json`).
    pub fn notices(&self) -> Vec<String> {
        self.events_of("notice")
            .iter()
            .filter_map(|e| e["message"].as_str().map(str::to_string))
            .collect()
    }
}

/// Requests whose system prompt names `role`.
pub fn requests_of(server: &FakeServer, role: &str) -> Vec<SeenRequest> {
    server
        .requests()
        .into_iter()
        .filter(|r| role_of(r) == role)
        .collect()
}

/// Every tool result the fake model was shown, with the tool name: (tool, content, is_error).
pub fn tool_results(server: &FakeServer) -> Vec<(String, String, bool)> {
    let mut seen = std::collections::BTreeSet::new();
    for request in server.requests() {
        for (call, content, is_error) in request.tool_results() {
            seen.insert((call.name.clone(), content.to_string(), is_error));
        }
    }
    seen.into_iter().collect()
}

/// Whether any message of the request is a user message containing `text`.
pub fn has_user_message(request: &SeenRequest, text: &str) -> bool {
    request
        .messages
        .iter()
        .any(|m| matches!(m, SeenMessage::User { text: t } if t.contains(text)))
}

/// An `orchestrator serve` that has said where it listens.
pub struct Serving {
    pub child: tokio::process::Child,
    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub base: String,
    /// The line that named the address.
    pub first_line: String,
    /// The line after it: the dashboard's address, with the token when the server made one.
    pub second_line: String,
    /// The token the server made and printed; `None` when it was given one (it never prints that).
    pub token: Option<String>,
    /// The rest of its stdout; read it (or drain it) so the server never blocks on a full pipe.
    pub lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

/// Starts `orchestrator serve` as `run` says, in the repository, and waits for the address it prints
/// and the dashboard's address after it.
pub async fn spawn_serve(repo: &TestRepo, run: Run) -> Serving {
    use tokio::io::AsyncBufReadExt;
    let mut child = run.command(repo).spawn().expect("orchestrator serve starts");
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let mut next_line = async || {
        tokio::time::timeout(std::time::Duration::from_secs(30), lines.next_line())
            .await
            .expect("serve prints its address within 30 s")
            .expect("stdout reads")
            .expect("a line")
    };
    let first_line = next_line().await;
    let second_line = next_line().await;
    let base = first_line
        .split("listening on ")
        .nth(1)
        .expect("the first line names the address")
        .trim_end_matches('/')
        .to_string();
    let token = second_line
        .strip_prefix("open the dashboard: ")
        .and_then(|url| url.split_once("/?token="))
        .map(|(_, token)| token.trim().to_string());
    Serving {
        child,
        base,
        first_line,
        second_line,
        token,
        lines,
    }
}
