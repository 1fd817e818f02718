//! Re-opening a worktree that survived a crash.

use orchestrator_git::Repo;

fn git(dir: &std::path::Path, args: &[&str]) {
    let ok = std::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .status()
        .unwrap()
        .success();
    assert!(ok, "git {args:?}");
}

#[tokio::test]
async fn open_worktree_keeps_uncommitted_changes() {
    let dir = tempfile::tempdir().unwrap();
    git(dir.path(), &["init", "-q", "-b", "main"]);
    git(
        dir.path(),
        &[
            "-c",
            "user.email=a@b",
            "-c",
            "user.name=a",
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            "init",
        ],
    );
    let repo = Repo::discover(dir.path()).await.unwrap();
    let head = repo.head_commit().await.unwrap().unwrap();
    repo.create_branch("unit", &head).await.unwrap();
    let path = dir.path().join(".orchestrator/wt/unit");
    let tree = repo.add_worktree(&path, "unit").await.unwrap();
    std::fs::write(tree.path().join("work.txt"), "in progress").unwrap();
    let again = repo
        .open_worktree(&path)
        .await
        .unwrap()
        .expect("still registered");
    assert_eq!(
        std::fs::read_to_string(again.path().join("work.txt")).unwrap(),
        "in progress"
    );
    assert!(repo
        .open_worktree(&dir.path().join("nowhere"))
        .await
        .unwrap()
        .is_none());
    repo.remove_worktree(&path).await.unwrap();
    assert!(repo.open_worktree(&path).await.unwrap().is_none());
}
