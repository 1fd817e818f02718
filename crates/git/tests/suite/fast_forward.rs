//! Bringing the result home: fast-forwarding the user's checked-out branch, and other branches.

use super::common::{write, Fixture};
use orchestrator_git::{FastForward, Repo};

/// Commits a change to README (and a new file) on `mission`, made in a worktree like the engine does.
async fn mission_result(fx: &Fixture, repo: &Repo) -> String {
    repo.create_branch("mission", "HEAD").await.expect("branch");
    let wt = repo
        .add_worktree(&fx.wt_path("mission"), "mission")
        .await
        .expect("worktree");
    write(wt.path(), "README", "hello from the mission\n");
    write(wt.path(), "added.txt", "new\n");
    let commit = wt
        .commit_all("mission result")
        .await
        .expect("commit")
        .expect("a commit");
    // Detach the worktree so the branch is free, as after integration.
    repo.remove_worktree(wt.path()).await.expect("remove");
    commit
}

#[tokio::test]
async fn fast_forward_updates_the_users_branch_and_files() {
    let fx = Fixture::new();
    let repo = fx.repo().await;
    let result = mission_result(&fx, &repo).await;
    assert_eq!(
        repo.fast_forward_checked_out("mission").await.expect("ff"),
        FastForward::Done
    );
    assert_eq!(repo.head_commit().await.expect("head"), Some(result.clone()));
    assert_eq!(
        repo.current_branch().await.expect("branch").as_deref(),
        Some("main")
    );
    assert_eq!(fx.read("README"), "hello from the mission\n");
    assert_eq!(fx.read("added.txt"), "new\n");
    assert!(repo
        .dirty_paths(&[".orchestrator/"])
        .await
        .expect("dirty")
        .is_empty());
    // Already there.
    assert_eq!(
        repo.fast_forward_checked_out(&result).await.expect("ff"),
        FastForward::Done
    );
}

#[tokio::test]
async fn unrelated_local_changes_survive_a_fast_forward() {
    let fx = Fixture::new();
    fx.commit_file("notes.txt", "notes\n", "notes");
    let repo = fx.repo().await;
    mission_result(&fx, &repo).await;
    fx.write("notes.txt", "my uncommitted notes\n");
    fx.write("scratch.txt", "untracked\n");
    assert_eq!(
        repo.fast_forward_checked_out("mission").await.expect("ff"),
        FastForward::Done
    );
    assert_eq!(fx.read("notes.txt"), "my uncommitted notes\n");
    assert_eq!(fx.read("scratch.txt"), "untracked\n");
    assert_eq!(fx.read("README"), "hello from the mission\n");
}

#[tokio::test]
async fn a_moved_branch_is_not_fast_forwarded() {
    let fx = Fixture::new();
    let repo = fx.repo().await;
    let result = mission_result(&fx, &repo).await;
    let users = fx.commit_file("user.txt", "the user kept working\n", "user work");
    assert_eq!(
        repo.fast_forward_checked_out(&result).await.expect("ff"),
        FastForward::NotFastForward
    );
    assert_eq!(repo.head_commit().await.expect("head"), Some(users));
    assert_eq!(fx.read("README"), "hello\n");
}

#[tokio::test]
async fn an_untracked_file_in_the_way_blocks_and_is_untouched() {
    let fx = Fixture::new();
    let repo = fx.repo().await;
    let before = repo.head_commit().await.expect("head");
    mission_result(&fx, &repo).await;
    fx.write("added.txt", "the user's own file\n");
    match repo.fast_forward_checked_out("mission").await.expect("ff") {
        FastForward::Blocked(reason) => assert!(reason.contains("added.txt"), "{reason}"),
        other => panic!("expected Blocked, got {other:?}"),
    }
    assert_eq!(fx.read("added.txt"), "the user's own file\n");
    assert_eq!(fx.read("README"), "hello\n");
    assert_eq!(repo.head_commit().await.expect("head"), before);
}

#[tokio::test]
async fn a_modified_file_in_the_way_blocks_and_is_untouched() {
    let fx = Fixture::new();
    let repo = fx.repo().await;
    let before = repo.head_commit().await.expect("head");
    mission_result(&fx, &repo).await;
    fx.write("README", "the user's edit\n");
    match repo.fast_forward_checked_out("mission").await.expect("ff") {
        FastForward::Blocked(reason) => assert!(reason.contains("README"), "{reason}"),
        other => panic!("expected Blocked, got {other:?}"),
    }
    assert_eq!(fx.read("README"), "the user's edit\n");
    assert_eq!(repo.head_commit().await.expect("head"), before);
}

#[tokio::test]
async fn an_operation_in_progress_blocks() {
    let fx = Fixture::new();
    let repo = fx.repo().await;
    let result = mission_result(&fx, &repo).await;
    let merge_head = fx.root.join(".git/MERGE_HEAD");
    std::fs::write(&merge_head, format!("{result}\n")).expect("fake a merge");
    assert!(matches!(
        repo.fast_forward_checked_out(&result).await.expect("ff"),
        FastForward::Blocked(_)
    ));
}

#[tokio::test]
async fn other_branches_are_fast_forwarded_only_when_safe() {
    let fx = Fixture::new();
    let repo = fx.repo().await;
    let start = repo.head_commit().await.expect("head").expect("a commit");
    let result = mission_result(&fx, &repo).await;
    repo.create_branch("target", &start).await.expect("branch");

    assert_eq!(
        repo.fast_forward_branch("target", &result).await.expect("ff"),
        FastForward::Done
    );
    assert_eq!(repo.rev_parse("target").await.expect("rev"), result);
    assert_eq!(
        repo.fast_forward_branch("target", &result).await.expect("ff"),
        FastForward::Done
    );
    assert_eq!(
        repo.fast_forward_branch("target", &start).await.expect("ff"),
        FastForward::NotFastForward,
        "going backwards is not a fast-forward"
    );
    assert_eq!(repo.rev_parse("target").await.expect("rev"), result);

    // `main` is checked out in the root: moving it would desynchronise the user's files.
    assert!(matches!(
        repo.fast_forward_branch("main", &result).await.expect("ff"),
        FastForward::Blocked(_)
    ));
    assert_eq!(repo.head_commit().await.expect("head"), Some(start));
}
