//! Temporary repositories for the tests.
//!
//! Isolation: every git command, both the fixtures' own and the crate's (through
//! `Repo::discover_with_env`), runs with `HOME`/`XDG_CONFIG_HOME` pointing at an empty directory and
//! `GIT_CONFIG_NOSYSTEM=1` (and discovery stops at the fixture's directory), so the machine's git config cannot change results and the process
//! environment shared by parallel tests is never modified.

use std::path::{Path, PathBuf};
use std::process::Command;

use orchestrator_git::Repo;
use tempfile::TempDir;

pub const IDENTITY_VARS: &[&str] = &[
    "GIT_AUTHOR_NAME",
    "GIT_AUTHOR_EMAIL",
    "GIT_COMMITTER_NAME",
    "GIT_COMMITTER_EMAIL",
    "EMAIL",
];

pub struct Fixture {
    _tmp: TempDir,
    pub root: PathBuf,
    pub env: Vec<(String, String)>,
}

impl Fixture {
    /// A repository with an identity and one commit (`README` = "hello\n") on `main`.
    pub fn new() -> Fixture {
        let fx = Fixture::empty();
        fx.commit_file("README", "hello\n", "initial");
        fx
    }

    /// `git init` on `main` with an identity, no commits.
    pub fn empty() -> Fixture {
        let fx = Fixture::bare_init();
        fx.git(&["config", "user.name", "Test User"]);
        fx.git(&["config", "user.email", "test@example.com"]);
        fx
    }

    /// `git init` with no identity anywhere (an empty HOME, no system config).
    pub fn without_identity() -> Fixture {
        Fixture::bare_init()
    }

    fn bare_init() -> Fixture {
        let tmp = tempfile::tempdir().expect("tempdir");
        let base = tmp.path().canonicalize().expect("canonical tempdir");
        let home = base.join("home");
        let root = base.join("repo");
        std::fs::create_dir_all(&home).expect("mkdir home");
        std::fs::create_dir_all(&root).expect("mkdir repo");
        let env = vec![
            ("HOME".to_string(), home.display().to_string()),
            (
                "XDG_CONFIG_HOME".to_string(),
                home.join(".config").display().to_string(),
            ),
            ("GIT_CONFIG_NOSYSTEM".to_string(), "1".to_string()),
            // Never find a repository above the fixture (a temp dir inside someone's checkout).
            ("GIT_CEILING_DIRECTORIES".to_string(), base.display().to_string()),
        ];
        let fx = Fixture { _tmp: tmp, root, env };
        fx.git(&["init", "-q", "-b", "main"]);
        fx
    }

    pub async fn repo(&self) -> Repo {
        Repo::discover_with_env(&self.root, self.env.clone())
            .await
            .expect("discover fixture repo")
    }

    /// Where tests put worktrees, like the engine does.
    pub fn wt_path(&self, name: &str) -> PathBuf {
        self.root.join(".orchestrator").join("wt").join(name)
    }

    /// Runs git in the repository root; panics with git's message on failure.
    pub fn git(&self, args: &[&str]) -> String {
        self.git_in(&self.root, args)
    }

    pub fn git_in(&self, dir: &Path, args: &[&str]) -> String {
        let out = self.command(dir, args).output().expect("run git");
        assert!(
            out.status.success(),
            "git {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim_end().to_string()
    }

    pub fn command(&self, dir: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new("git");
        // Setup commands are not under test: keep a test's own hooks/signing config from stopping them.
        cmd.arg("-C").arg(dir);
        cmd.args(["-c", "core.hooksPath=/dev/null", "-c", "commit.gpgsign=false"]);
        cmd.args(args);
        cmd.env("GIT_CONFIG_NOSYSTEM", "1").env("LC_ALL", "C");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        for var in IDENTITY_VARS {
            cmd.env_remove(var);
        }
        cmd
    }

    pub fn write(&self, rel: &str, content: &str) {
        write(&self.root, rel, content);
    }

    pub fn read(&self, rel: &str) -> String {
        read(&self.root, rel)
    }

    /// Writes and commits one file in the root; returns the new commit.
    pub fn commit_file(&self, rel: &str, content: &str, message: &str) -> String {
        self.write(rel, content);
        self.git(&["add", "--", rel]);
        self.git(&["commit", "-q", "-m", message]);
        self.git(&["rev-parse", "HEAD"])
    }
}

pub fn write(dir: &Path, rel: &str, content: &str) {
    let path = dir.join(rel);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("mkdir");
    }
    std::fs::write(path, content).expect("write file");
}

pub fn read(dir: &Path, rel: &str) -> String {
    std::fs::read_to_string(dir.join(rel)).expect("read file")
}
