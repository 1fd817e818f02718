//! Re-opening a worktree that survived a crash.

use orchestrator_git::Repo;
use orchestrator_test_support::git::ScratchRepo;

#[tokio::test]
async fn open_worktree_keeps_uncommitted_changes() {
    let scratch = ScratchRepo::init();
    scratch.git(&[
        "-c",
        "user.email=a@b",
        "-c",
        "user.name=a",
        "commit",
        "-q",
        "--allow-empty",
        "-m",
        "init",
    ]);
    let dir = scratch.path();
    let repo = Repo::discover(dir).await.unwrap();
    let head = repo.head_commit().await.unwrap().unwrap();
    repo.create_branch("unit", &head).await.unwrap();
    let path = dir.join(".orchestrator/wt/unit");
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
    assert!(repo.open_worktree(&dir.join("nowhere")).await.unwrap().is_none());
    repo.remove_worktree(&path).await.unwrap();
    assert!(repo.open_worktree(&path).await.unwrap().is_none());
}
