//! Scratch git repositories for tests.
//!
//! Isolation: every git command a [`ScratchRepo`] runs gets `HOME`/`XDG_CONFIG_HOME` pointing at an
//! empty directory, `GIT_CONFIG_NOSYSTEM=1` and a ceiling at the repository's temporary folder, so the
//! machine's git config cannot change results, no repository above the folder (a temp dir inside
//! someone's checkout) is ever found, and the process environment shared by parallel tests is never
//! modified. [`ScratchRepo::env`] holds those variables, for code under test that runs git too.

use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

/// Identity variables removed from every git command, so commits use the repository's config (or
/// fail for want of an identity) whatever the test process's environment holds.
pub const IDENTITY_VARS: &[&str] = &[
    "GIT_AUTHOR_NAME",
    "GIT_AUTHOR_EMAIL",
    "GIT_COMMITTER_NAME",
    "GIT_COMMITTER_EMAIL",
    "EMAIL",
];

/// A git repository in a temporary folder: the work tree at `<temp>/repo`, beside it an empty HOME at
/// `<temp>/home`. Both go when it is dropped.
pub struct ScratchRepo {
    _tmp: TempDir,
    /// The work tree (canonical, so it compares equal to the paths git reports).
    pub root: PathBuf,
    /// An empty folder that is HOME (and holds XDG_CONFIG_HOME) for every git command; a test may
    /// use it as HOME for the programs it runs in the repository too.
    pub home: PathBuf,
    /// The variables every git command of the repository gets.
    pub env: Vec<(String, String)>,
}

impl ScratchRepo {
    /// `git init` on `main`, with no identity anywhere (an empty HOME, no system config).
    pub fn init() -> ScratchRepo {
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
            // Never find a repository above this one.
            ("GIT_CEILING_DIRECTORIES".to_string(), base.display().to_string()),
        ];
        let repo = ScratchRepo {
            _tmp: tmp,
            root,
            home,
            env,
        };
        repo.git(&["init", "-q", "-b", "main"]);
        repo
    }

    /// `git init` on `main` with `user.name` and `user.email` in the repository's config, no commits.
    pub fn with_identity(name: &str, email: &str) -> ScratchRepo {
        let repo = ScratchRepo::init();
        repo.git(&["config", "user.name", name]);
        repo.git(&["config", "user.email", email]);
        repo
    }

    /// The work tree.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// Runs git in the work tree; panics with git's message on failure. Returns stdout without its
    /// trailing whitespace.
    pub fn git(&self, args: &[&str]) -> String {
        self.git_in(&self.root, args)
    }

    /// Runs git in `dir` (a linked worktree, say) with the repository's environment.
    pub fn git_in(&self, dir: &Path, args: &[&str]) -> String {
        let out = self.command(dir, args).output().expect("run git");
        assert!(
            out.status.success(),
            "git {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim_end().to_string()
    }

    /// The git command [`ScratchRepo::git_in`] runs, for a test that wants its status or output itself.
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

    /// Writes `content` at `rel` in the work tree, creating folders.
    pub fn write(&self, rel: &str, content: &str) {
        write(&self.root, rel, content);
    }

    /// The file at `rel` in the work tree; panics when it cannot be read.
    pub fn read(&self, rel: &str) -> String {
        read(&self.root, rel)
    }

    /// Writes and commits one file in the work tree; returns the new commit.
    pub fn commit_file(&self, rel: &str, content: &str, message: &str) -> String {
        self.write(rel, content);
        self.git(&["add", "--", rel]);
        self.git(&["commit", "-q", "-m", message]);
        self.git(&["rev-parse", "HEAD"])
    }
}

/// Writes `content` at `rel` under `dir`, creating folders.
pub fn write(dir: &Path, rel: &str, content: &str) {
    let path = dir.join(rel);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("mkdir");
    }
    std::fs::write(path, content).expect("write file");
}

/// The file at `rel` under `dir`; panics when it cannot be read.
pub fn read(dir: &Path, rel: &str) -> String {
    std::fs::read_to_string(dir.join(rel)).expect("read file")
}
