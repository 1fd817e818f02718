//! Worktree lifecycle and the work done inside one: commits, diffs, merges, resets.

use super::common::{read, write, Fixture};
use orchestrator_git::{GitError, MergeOutcome, Repo, Worktree};

async fn branch_worktree(fx: &Fixture, repo: &Repo, name: &str) -> Worktree {
    repo.create_branch(name, "HEAD").await.expect("create branch");
    repo.add_worktree(&fx.wt_path(name), name)
        .await
        .expect("add worktree")
}

#[tokio::test]
async fn worktrees_are_added_listed_and_removed() {
    let fx = Fixture::new();
    let repo = fx.repo().await;
    let wt = branch_worktree(&fx, &repo, "a").await;
    assert_eq!(wt.path(), fx.wt_path("a"));
    assert_eq!(read(wt.path(), "README"), "hello\n");
    assert!(
        !wt.has_changes().await.expect("changes"),
        "checkout must be complete"
    );
    assert_eq!(wt.head().await.expect("head"), fx.git(&["rev-parse", "HEAD"]));
    assert_eq!(fx.git_in(wt.path(), &["symbolic-ref", "--short", "HEAD"]), "a");

    let detached_at = fx.wt_path("d");
    let detached = repo
        .add_detached_worktree(&detached_at, "HEAD")
        .await
        .expect("detached");
    assert!(
        fx.command(detached.path(), &["symbolic-ref", "-q", "HEAD"])
            .status()
            .expect("git")
            .code()
            == Some(1)
    );

    let listed = repo.list_worktrees().await.expect("list");
    assert_eq!(listed, [fx.root.clone(), fx.wt_path("a"), detached_at.clone()]);

    repo.remove_worktree(wt.path()).await.expect("remove");
    repo.remove_worktree(wt.path())
        .await
        .expect("removing again is fine");
    repo.remove_worktree(&detached_at).await.expect("remove detached");
    assert!(!wt.path().exists());
    assert_eq!(repo.list_worktrees().await.expect("list"), vec![fx.root.clone()]);
    // The branch is free again.
    repo.delete_branch("a").await.expect("delete branch");
}

#[tokio::test]
async fn adding_over_a_stale_or_live_worktree_replaces_it() {
    let fx = Fixture::new();
    let repo = fx.repo().await;
    let wt = branch_worktree(&fx, &repo, "s").await;
    write(wt.path(), "scratch.txt", "left behind\n");

    // Live worktree at the path: replaced.
    let again = repo
        .add_worktree(&fx.wt_path("s"), "s")
        .await
        .expect("re-add live");
    assert!(!again.path().join("scratch.txt").exists());

    // Directory deleted behind git's back (a crash, a cleanup): the registration is pruned.
    std::fs::remove_dir_all(again.path()).expect("rm worktree dir");
    let third = repo
        .add_worktree(&fx.wt_path("s"), "s")
        .await
        .expect("re-add stale");
    assert_eq!(read(third.path(), "README"), "hello\n");

    // Same branch, new path, old worktree gone: the branch is not "checked out" any more.
    std::fs::remove_dir_all(third.path()).expect("rm worktree dir");
    let moved = repo
        .add_worktree(&fx.wt_path("s2"), "s")
        .await
        .expect("add at new path");
    assert_eq!(repo.list_worktrees().await.expect("list").len(), 2);

    // A live worktree elsewhere still holds its branch: git refuses, nothing is forced.
    let clash = repo.add_worktree(&fx.wt_path("s3"), "s").await;
    assert!(matches!(clash, Err(GitError::Command { .. })), "{clash:?}");
    assert!(moved.path().join("README").exists());
}

#[tokio::test]
async fn adding_a_missing_branch_or_over_a_user_directory_fails() {
    let fx = Fixture::new();
    let repo = fx.repo().await;
    let missing = repo.add_worktree(&fx.wt_path("x"), "no-such-branch").await;
    assert!(matches!(missing, Err(GitError::NoSuchBranch(ref b)) if b == "no-such-branch"));

    repo.create_branch("b", "HEAD").await.expect("branch");
    write(&fx.wt_path("b"), "precious.txt", "mine\n");
    assert!(repo.add_worktree(&fx.wt_path("b"), "b").await.is_err());
    assert_eq!(read(&fx.wt_path("b"), "precious.txt"), "mine\n");
}

#[tokio::test]
async fn commit_all_commits_everything_or_nothing() {
    let fx = Fixture::new();
    let repo = fx.repo().await;
    let base = repo.head_commit().await.expect("head").expect("a commit");
    let wt = branch_worktree(&fx, &repo, "c").await;
    let tree_before = wt.tree_hash().await.expect("tree");

    assert_eq!(wt.commit_all("nothing").await.expect("commit"), None);

    write(wt.path(), "src/new.rs", "fn main() {}\n");
    write(wt.path(), "README", "hello, world\n");
    assert!(wt.has_changes().await.expect("changes"));
    let commit = wt
        .commit_all("add new.rs")
        .await
        .expect("commit")
        .expect("a commit");
    assert_eq!(commit, wt.head().await.expect("head"));
    assert_eq!(repo.rev_parse("c").await.expect("branch"), commit);
    assert!(!wt.has_changes().await.expect("changes"));
    assert_ne!(wt.tree_hash().await.expect("tree"), tree_before);
    assert_eq!(
        fx.git(&["log", "-1", "--format=%an <%ae>|%s", "c"]),
        "Test User <test@example.com>|add new.rs"
    );

    let diff = wt.diff_since(&base).await.expect("diff");
    assert!(diff.contains("+++ b/src/new.rs"), "{diff}");
    assert!(diff.contains("+hello, world"), "{diff}");
    let stat = wt.diff_stat_since(&base).await.expect("stat");
    assert!(
        stat.contains("src/new.rs") && stat.contains("2 files changed"),
        "{stat}"
    );
}

/// A worker running `python3 test_calc.py` in a repository without a `.gitignore` leaves
/// `__pycache__` behind: not its work, so not committed (a tracked file of such a name still is).
#[tokio::test]
async fn tools_caches_are_left_out_of_a_commit_unless_tracked() {
    let fx = Fixture::new();
    let repo = fx.repo().await;
    let wt = branch_worktree(&fx, &repo, "k").await;
    // A project that tracks such a file added it itself.
    write(wt.path(), "kept.pyc", "tracked on purpose\n");
    fx.git_in(wt.path(), &["add", "kept.pyc"]);
    fx.git_in(wt.path(), &["commit", "-q", "-m", "a tracked pyc"]);
    write(wt.path(), "__pycache__/calc.cpython-311.pyc", "junk");
    write(wt.path(), "pkg/__pycache__/m.cpython-311.pyc", "junk");
    write(wt.path(), "node_modules/left-pad/index.js", "junk");
    write(wt.path(), ".pytest_cache/v/cache", "junk");
    assert!(
        !wt.has_changes().await.expect("changes"),
        "caches alone are no change"
    );
    assert_eq!(wt.commit_all("only caches").await.expect("commit"), None);
    write(wt.path(), "calc.py", "def mul(a, b):\n    return a * b\n");
    write(wt.path(), "kept.pyc", "changed\n");
    wt.commit_all("work").await.expect("commit").expect("a commit");
    let files = fx.git(&["ls-tree", "-r", "--name-only", "k"]);
    let files: Vec<&str> = files.lines().collect();
    assert!(
        files.contains(&"calc.py") && files.contains(&"kept.pyc"),
        "{files:?}"
    );
    assert!(
        !files
            .iter()
            .any(|f| f.contains("__pycache__") || f.contains("node_modules") || f.contains(".pytest_cache")),
        "{files:?}"
    );
    assert_eq!(fx.git(&["show", "k:kept.pyc"]), "changed");
}

#[tokio::test]
async fn commits_without_a_configured_identity_use_the_fallback() {
    let fx = Fixture::without_identity();
    let repo = fx.repo().await;
    let wt_path = fx.wt_path("w");
    // A worktree needs a commit to start from: seed one with a one-off identity, then work without.
    fx.write("README", "x\n");
    fx.git(&["add", "README"]);
    fx.git(&[
        "-c",
        "user.name=Seed",
        "-c",
        "user.email=seed@example.com",
        "commit",
        "-q",
        "-m",
        "seed",
    ]);
    repo.create_branch("w", "HEAD").await.expect("branch");
    let wt = repo.add_worktree(&wt_path, "w").await.expect("worktree");
    write(wt.path(), "f.txt", "f\n");
    wt.commit_all("anonymous")
        .await
        .expect("commit")
        .expect("a commit");
    let who = fx.git(&["log", "-1", "--format=%an <%ae>|%cn <%ce>", "w"]);
    assert_eq!(
        who,
        "orchestrator <orchestrator@localhost>|orchestrator <orchestrator@localhost>"
    );
}

/// Main has a commit changing `shared.txt` one way, branch `feature` another way.
async fn diverged(fx: &Fixture, repo: &Repo, conflicting: bool) -> Worktree {
    fx.commit_file("shared.txt", "one\ntwo\nthree\n", "shared");
    repo.create_branch("feature", "HEAD").await.expect("branch");
    let feature = repo
        .add_worktree(&fx.wt_path("feature"), "feature")
        .await
        .expect("wt");
    let theirs = if conflicting {
        "one\nTWO (feature)\nthree\n"
    } else {
        "one\ntwo\nthree\nfour\n"
    };
    write(feature.path(), "shared.txt", theirs);
    write(feature.path(), "feature.txt", "f\n");
    feature
        .commit_all("feature work")
        .await
        .expect("commit")
        .expect("a commit");

    repo.create_branch("integration", "main").await.expect("branch");
    let integration = repo
        .add_worktree(&fx.wt_path("integration"), "integration")
        .await
        .expect("wt");
    let ours = if conflicting {
        "one\nTWO (main)\nthree\n"
    } else {
        "zero\none\ntwo\nthree\n"
    };
    write(integration.path(), "shared.txt", ours);
    integration
        .commit_all("integration work")
        .await
        .expect("commit")
        .expect("a commit");
    integration
}

fn parents(fx: &Fixture, commit: &str) -> usize {
    fx.git(&["rev-list", "--parents", "-n", "1", commit])
        .split(' ')
        .count()
        - 1
}

#[tokio::test]
async fn a_clean_merge_makes_a_merge_commit() {
    let fx = Fixture::new();
    let repo = fx.repo().await;
    let wt = diverged(&fx, &repo, false).await;
    let outcome = wt.merge("feature", "Merge feature").await.expect("merge");
    let MergeOutcome::Merged(commit) = outcome else {
        panic!("expected a merge: {outcome:?}")
    };
    assert_eq!(parents(&fx, &commit), 2);
    assert_eq!(read(wt.path(), "shared.txt"), "zero\none\ntwo\nthree\nfour\n");
    assert_eq!(fx.git(&["log", "-1", "--format=%s", &commit]), "Merge feature");
    assert!(!wt.merge_in_progress().await.expect("state"));
    // Already merged: nothing new, HEAD returned.
    assert_eq!(
        wt.merge("feature", "again").await.expect("merge"),
        MergeOutcome::Merged(commit)
    );
}

#[tokio::test]
async fn a_conflict_is_reported_then_concluded_only_without_markers() {
    let fx = Fixture::new();
    let repo = fx.repo().await;
    let wt = diverged(&fx, &repo, true).await;
    let outcome = wt.merge("feature", "Merge feature").await.expect("merge");
    assert_eq!(outcome, MergeOutcome::Conflict(vec!["shared.txt".to_string()]));
    assert!(wt.merge_in_progress().await.expect("state"));
    assert_eq!(wt.conflicted_paths().await.expect("paths"), ["shared.txt"]);

    let refused = wt.conclude_merge().await;
    assert!(
        matches!(refused, Err(GitError::ConflictMarkers(ref p)) if p == &["shared.txt"]),
        "{refused:?}"
    );
    assert_eq!(
        wt.conflicted_paths().await.expect("paths"),
        ["shared.txt"],
        "refusal stages nothing"
    );

    // Staging the file does not hide the markers either.
    fx.git_in(wt.path(), &["add", "shared.txt"]);
    assert!(matches!(
        wt.conclude_merge().await,
        Err(GitError::ConflictMarkers(_))
    ));

    write(wt.path(), "shared.txt", "one\nTWO (both)\nthree\n");
    let commit = wt.conclude_merge().await.expect("conclude");
    assert_eq!(parents(&fx, &commit), 2);
    assert!(!wt.merge_in_progress().await.expect("state"));
    assert!(!wt.has_changes().await.expect("changes"));
    let message = fx.git(&["log", "-1", "--format=%B", &commit]);
    assert_eq!(message, "Merge feature");
    assert!(matches!(
        wt.conclude_merge().await,
        Err(GitError::NoMergeInProgress)
    ));
}

#[tokio::test]
async fn abort_restores_the_pre_merge_state() {
    let fx = Fixture::new();
    let repo = fx.repo().await;
    let wt = diverged(&fx, &repo, true).await;
    let head = wt.head().await.expect("head");
    assert!(matches!(
        wt.merge("feature", "m").await.expect("merge"),
        MergeOutcome::Conflict(_)
    ));
    wt.abort_merge().await.expect("abort");
    assert!(!wt.merge_in_progress().await.expect("state"));
    assert_eq!(wt.head().await.expect("head"), head);
    assert!(!wt.has_changes().await.expect("changes"));
    wt.abort_merge().await.expect("aborting nothing is fine");
}

#[tokio::test]
async fn a_merge_that_cannot_start_is_an_error_and_leaves_no_merge() {
    let fx = Fixture::new();
    let repo = fx.repo().await;
    let wt = diverged(&fx, &repo, false).await;
    write(wt.path(), "feature.txt", "untracked and in the way\n");
    let failed = wt.merge("feature", "m").await;
    match failed {
        Err(GitError::Command { stderr, .. }) => {
            assert!(stderr.contains("feature.txt"), "{stderr}")
        }
        other => panic!("expected an error, got {other:?}"),
    }
    assert!(!wt.merge_in_progress().await.expect("state"));
    assert_eq!(read(wt.path(), "feature.txt"), "untracked and in the way\n");
    assert!(wt.merge("no-such-rev", "m").await.is_err());
}

#[tokio::test]
async fn reset_hard_discards_changes_but_keeps_ignored_files() {
    let fx = Fixture::new();
    fx.commit_file(".gitignore", "target/\n", "ignore");
    let repo = fx.repo().await;
    let wt = branch_worktree(&fx, &repo, "r").await;
    let start = wt.head().await.expect("head");
    write(wt.path(), "a.txt", "a\n");
    wt.commit_all("a").await.expect("commit").expect("a commit");
    write(wt.path(), "README", "edited\n");
    write(wt.path(), "junk/untracked.txt", "u\n");
    write(wt.path(), "target/build.out", "keep\n");

    wt.reset_hard(&start).await.expect("reset");
    assert_eq!(wt.head().await.expect("head"), start);
    assert_eq!(read(wt.path(), "README"), "hello\n");
    assert!(!wt.path().join("a.txt").exists());
    assert!(!wt.path().join("junk").exists());
    assert_eq!(read(wt.path(), "target/build.out"), "keep\n");
    assert!(!wt.has_changes().await.expect("changes"));
}

#[tokio::test]
async fn user_hooks_and_signing_config_do_not_block_commits_or_merges() {
    let fx = Fixture::new();
    let hooks = fx.root.join(".git/failing-hooks");
    for hook in [
        "pre-commit",
        "commit-msg",
        "pre-merge-commit",
        "prepare-commit-msg",
    ] {
        write(&hooks, hook, "#!/bin/sh\necho hook ran >&2\nexit 1\n");
        let script = hooks.join(hook);
        let mut perms = std::fs::metadata(&script).expect("meta").permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
        std::fs::set_permissions(&script, perms).expect("chmod");
    }
    fx.git(&["config", "core.hooksPath", hooks.to_str().expect("utf8")]);
    fx.git(&["config", "commit.gpgsign", "true"]);
    fx.git(&["config", "gpg.program", "false"]);

    let repo = fx.repo().await;
    let wt = diverged(&fx, &repo, false).await;
    assert!(matches!(
        wt.merge("feature", "m").await.expect("merge"),
        MergeOutcome::Merged(_)
    ));
}
