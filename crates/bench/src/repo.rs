//! A throwaway git repository with a private HOME, like the ones the end-to-end tests use.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

pub struct BenchRepo {
    dir: tempfile::TempDir,
    home: PathBuf,
}

impl BenchRepo {
    /// A repository with one commit on `main`: a README and an `orchestrator.toml` whose verification
    /// is a trivial test command, so every unit still goes through the runtime's verification step
    /// (one process per unit and one for stage 2) without a real build dominating the figures.
    pub fn new() -> Result<BenchRepo> {
        let dir = tempfile::Builder::new()
            .prefix("orchestrator-bench-")
            .tempdir()
            .context("cannot make a temporary folder")?;
        let home = dir.path().join("home");
        std::fs::create_dir_all(home.join(".config")).context("cannot make the private HOME")?;
        let repo = BenchRepo { dir, home };
        std::fs::create_dir_all(repo.path()).context("cannot make the repository folder")?;
        repo.git(&["init", "-q", "-b", "main"])?;
        repo.git(&["config", "user.email", "bench@example.com"])?;
        repo.git(&["config", "user.name", "Bench"])?;
        std::fs::write(repo.path().join("README.md"), "# Benchmark project\n")
            .context("cannot write README.md")?;
        std::fs::write(
            repo.path().join("orchestrator.toml"),
            // Four scouts, as before scouting scaled with the repository: the same workload as the
            // measurements in docs/benchmarks.md.
            "[verify]\ntest = \"true\"\n[limits]\nscouts = 4\n",
        )
        .context("cannot write orchestrator.toml")?;
        repo.git(&["add", "-A"])?;
        repo.git(&["commit", "-q", "-m", "benchmark start"])?;
        Ok(repo)
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().join("repo")
    }

    pub fn home(&self) -> &Path {
        &self.home
    }

    /// A scratch folder beside the repository (captured output), outside git's view.
    pub fn scratch(&self) -> &Path {
        self.dir.path()
    }

    pub fn store_path(&self) -> PathBuf {
        self.path().join(".orchestrator").join("state.db")
    }

    pub fn git(&self, args: &[&str]) -> Result<String> {
        let out = Command::new("git")
            .args(args)
            .current_dir(self.path())
            .env("HOME", &self.home)
            .output()
            .context("cannot run git")?;
        if !out.status.success() {
            bail!(
                "git {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}

impl Drop for BenchRepo {
    /// A killed orchestrator leaves its git processes running for a moment (git is never killed
    /// mid-write), and their new files make a single removal fail half-way; `TempDir` would then
    /// leave the repository behind in TMPDIR. Retry briefly instead.
    fn drop(&mut self) {
        for _ in 0..40 {
            match std::fs::remove_dir_all(self.dir.path()) {
                Ok(()) => return,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(50)),
            }
        }
    }
}
