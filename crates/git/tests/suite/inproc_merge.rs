//! The merge queue's in-process merge (`Repo::merge_into_branch`): the same commits and trees as `git
//! merge --no-ff`, a branch that moves only when the merge is clean, and git left to judge the rest.

use super::common::{read, write, Fixture};
use orchestrator_git::{BranchMerge, MergeOutcome, Repo, Worktree};

/// A repository with `int` checked out in a worktree and one branch per `(name, file, content)`, each a
/// commit on top of the initial one.
async fn with_branches(fx: &Fixture, branches: &[(&str, &str, &str)]) -> (Repo, Worktree, String) {
    let base = fx.git(&["rev-parse", "HEAD"]);
    for (name, file, content) in branches {
        fx.git(&["checkout", "-q", "-b", name, &base]);
        fx.commit_file(file, content, &format!("{name} work"));
    }
    fx.git(&["checkout", "-q", "main"]);
    let repo = fx.repo().await;
    let int = repo
        .add_worktree_on_branch(&fx.wt_path("int"), "int", &base)
        .await
        .expect("integration worktree");
    (repo, int, base)
}

fn merged(outcome: BranchMerge) -> String {
    match outcome {
        BranchMerge::Merged(commit) => commit,
        other => panic!("expected a merge commit, got {other:?}"),
    }
}

#[tokio::test]
async fn clean_merges_move_the_branch_like_git_merge_and_leave_the_checkout_for_later() {
    let fx = Fixture::new();
    let (repo, int, base) = with_branches(&fx, &[("u/a", "a.txt", "a\n"), ("u/b", "dir/b.txt", "b\n")]).await;
    let a = fx.git(&["rev-parse", "u/a"]);
    let b = fx.git(&["rev-parse", "u/b"]);

    let first = merged(
        repo.merge_into_branch("int", &base, &a, "Merge a: first")
            .await
            .expect("merge a"),
    );
    let second = merged(
        repo.merge_into_branch("int", &first, &b, "Merge b: second")
            .await
            .expect("merge b"),
    );

    assert_eq!(fx.git(&["rev-parse", "int"]), second);
    assert_eq!(fx.git(&["rev-parse", &format!("{second}^1")]), first);
    assert_eq!(fx.git(&["rev-parse", &format!("{second}^2")]), b);
    assert_eq!(fx.git(&["rev-parse", &format!("{first}^1")]), base);
    assert_eq!(fx.git(&["rev-parse", &format!("{first}^2")]), a);
    assert_eq!(fx.git(&["log", "-1", "--format=%B", &second]), "Merge b: second");
    assert_eq!(
        fx.git(&["log", "-1", "--format=%an <%ae>|%cn <%ce>", &second]),
        "Test User <test@example.com>|Test User <test@example.com>"
    );
    // A reflog entry as `git merge` writes one, so `git reflog int` tells the story.
    assert!(fx.git(&["reflog", "show", "int"]).contains("Merge b: second"));
    // The same tree git's own merge makes of the two branches.
    fx.git(&["checkout", "-q", "-b", "by-git", &base]);
    fx.git(&["merge", "-q", "--no-ff", "--no-edit", "u/a"]);
    fx.git(&["merge", "-q", "--no-ff", "--no-edit", "u/b"]);
    assert_eq!(
        fx.git(&["rev-parse", "by-git^{tree}"]),
        fx.git(&["rev-parse", &format!("{second}^{{tree}}")])
    );
    fx.git(&["fsck", "--no-progress", "--strict"]);

    // The worktree with `int` checked out still has the old files and index until it is reset.
    assert!(!int.path().join("a.txt").exists());
    assert_eq!(int.head().await.expect("head"), second);
    int.reset_hard(&second).await.expect("check out the merges");
    assert_eq!(read(int.path(), "a.txt"), "a\n");
    assert_eq!(read(int.path(), "dir/b.txt"), "b\n");
    assert!(!int.has_changes().await.expect("status"));
}

#[tokio::test]
async fn conflicts_and_edits_of_one_file_are_left_to_git() {
    let fx = Fixture::new();
    let (repo, int, base) = with_branches(
        &fx,
        &[("u/x", "README", "from x\n"), ("u/y", "README", "from y\n")],
    )
    .await;
    let x = fx.git(&["rev-parse", "u/x"]);
    let y = fx.git(&["rev-parse", "u/y"]);
    let after_x = merged(
        repo.merge_into_branch("int", &base, &x, "Merge x")
            .await
            .expect("merge x"),
    );

    let outcome = repo
        .merge_into_branch("int", &after_x, &y, "Merge y")
        .await
        .expect("merge y");
    let BranchMerge::UseGit(why) = outcome else {
        panic!("a conflict must go to git, got {outcome:?}");
    };
    assert!(why.contains("README"), "{why}");
    assert_eq!(fx.git(&["rev-parse", "int"]), after_x, "the branch did not move");

    // git, in the worktree, then reports the conflict the resolver works on.
    int.reset_hard(&after_x).await.expect("check out");
    assert_eq!(
        int.merge(&y, "Merge y").await.expect("git merge"),
        MergeOutcome::Conflict(vec!["README".to_string()])
    );
}

#[tokio::test]
async fn a_merged_branch_a_moved_target_and_a_bad_name_change_nothing() {
    let fx = Fixture::new();
    let (repo, _int, base) = with_branches(&fx, &[("u/a", "a.txt", "a\n"), ("u/b", "b.txt", "b\n")]).await;
    let a = fx.git(&["rev-parse", "u/a"]);
    let b = fx.git(&["rev-parse", "u/b"]);
    let after_a = merged(
        repo.merge_into_branch("int", &base, &a, "Merge a")
            .await
            .expect("merge"),
    );

    // Merging it again (a resumed unit whose merge had landed) writes nothing.
    assert_eq!(
        repo.merge_into_branch("int", &after_a, &a, "Merge a")
            .await
            .expect("again"),
        BranchMerge::AlreadyMerged
    );
    // The caller's idea of the branch is out of date: refused, not forced.
    let stale = repo
        .merge_into_branch("int", &base, &b, "Merge b")
        .await
        .expect("stale");
    assert!(matches!(stale, BranchMerge::UseGit(_)), "{stale:?}");
    assert_eq!(fx.git(&["rev-parse", "int"]), after_a);
    // A branch name works for the side merged in; a missing one is an error, and `ours` must be a
    // full object name.
    let after_b = merged(
        repo.merge_into_branch("int", &after_a, "u/b", "Merge b")
            .await
            .expect("by name"),
    );
    assert_eq!(fx.git(&["rev-parse", &format!("{after_b}^2")]), b);
    assert!(repo
        .merge_into_branch("int", &after_b, "u/none", "Merge")
        .await
        .is_err());
    assert!(repo
        .merge_into_branch("int", "int", "u/a", "Merge")
        .await
        .is_err());
}

#[tokio::test]
async fn without_an_identity_the_fallback_one_signs_the_merge() {
    let fx = Fixture::without_identity();
    write(&fx.root, "README", "hello\n");
    fx.git(&["add", "README"]);
    fx.git(&[
        "-c",
        "user.name=Setup",
        "-c",
        "user.email=setup@example.com",
        "commit",
        "-q",
        "-m",
        "initial",
    ]);
    let base = fx.git(&["rev-parse", "HEAD"]);
    fx.git(&["branch", "int"]);
    fx.git(&["checkout", "-q", "-b", "u/a"]);
    write(&fx.root, "a.txt", "a\n");
    fx.git(&["add", "a.txt"]);
    fx.git(&[
        "-c",
        "user.name=Setup",
        "-c",
        "user.email=setup@example.com",
        "commit",
        "-q",
        "-m",
        "a",
    ]);
    let a = fx.git(&["rev-parse", "HEAD"]);
    let repo = fx.repo().await;

    let commit = merged(
        repo.merge_into_branch("int", &base, &a, "Merge a")
            .await
            .expect("merge"),
    );
    assert_eq!(
        fx.git(&["log", "-1", "--format=%an <%ae>", &commit]),
        "orchestrator <orchestrator@localhost>"
    );
}
