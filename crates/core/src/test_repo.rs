//! A throwaway repository for the engine's unit tests.

use std::path::Path;

use orchestrator_git::Repo;

/// Runs git in `dir` with a fixed identity and no hooks or system config; panics when git fails.
pub fn git(dir: &Path, args: &[&str]) {
    let ok = std::process::Command::new("git")
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "-c",
            "core.hooksPath=/dev/null",
        ])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .status()
        .expect("git runs")
        .success();
    assert!(ok, "git {args:?}");
}

/// A repository on `main` with one commit (a README), in a folder that lives as long as the guard.
pub async fn committed_repo() -> (tempfile::TempDir, Repo) {
    let dir = tempfile::tempdir().expect("tempdir");
    git(dir.path(), &["init", "-q", "-b", "main"]);
    std::fs::write(dir.path().join("README"), "hi\n").expect("write README");
    git(dir.path(), &["add", "README"]);
    git(dir.path(), &["commit", "-q", "-m", "init"]);
    let repo = Repo::discover(dir.path()).await.expect("repo");
    (dir, repo)
}
