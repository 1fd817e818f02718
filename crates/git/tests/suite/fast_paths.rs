//! The few-process paths a mission's units take: a worktree on a new branch in one command, a verified
//! tree reset only when it changed, one listing for many lookups, branches deleted in one batch.

use super::common::{read, write, Fixture};
use orchestrator_git::GitError;

#[tokio::test]
async fn a_worktree_on_a_new_branch_starts_at_the_given_commit() {
    let fx = Fixture::new();
    let first = fx.git(&["rev-parse", "HEAD"]);
    fx.commit_file("second.txt", "2\n", "second");
    let repo = fx.repo().await;

    let wt = repo
        .add_worktree_on_branch(&fx.wt_path("u1"), "orchestrator/m/u/u1", &first)
        .await
        .expect("new branch");
    assert_eq!(wt.path(), fx.wt_path("u1"));
    assert_eq!(wt.head().await.expect("head"), first);
    assert_eq!(read(wt.path(), "README"), "hello\n");
    assert!(!wt.path().join("second.txt").exists());
    assert!(!wt.has_changes().await.expect("status"), "checkout is complete");
    assert_eq!(
        fx.git_in(wt.path(), &["symbolic-ref", "--short", "HEAD"]),
        "orchestrator/m/u/u1"
    );
    // No upstream is recorded for the new branch.
    let upstream = fx
        .command(&fx.root, &["config", "branch.orchestrator/m/u/u1.merge"])
        .output()
        .expect("git");
    assert!(!upstream.status.success());

    // Existing branch (a resumed unit): checked out as it is, not moved back to `start`.
    write(wt.path(), "work.txt", "w\n");
    let work = wt.commit_all("work").await.expect("commit").expect("a commit");
    repo.remove_worktree(wt.path()).await.expect("remove");
    let again = repo
        .add_worktree_on_branch(&fx.wt_path("u1"), "orchestrator/m/u/u1", &first)
        .await
        .expect("existing branch");
    assert_eq!(again.head().await.expect("head"), work);
    assert_eq!(read(again.path(), "work.txt"), "w\n");
}

#[tokio::test]
async fn a_worktree_on_a_branch_replaces_stale_and_leftover_state() {
    let fx = Fixture::new();
    let repo = fx.repo().await;
    let wt = repo
        .add_worktree_on_branch(&fx.wt_path("s"), "s", "HEAD")
        .await
        .expect("add");
    write(wt.path(), "scratch.txt", "left behind\n");

    // A live worktree at the path: replaced.
    let live = repo
        .add_worktree_on_branch(&fx.wt_path("s"), "s", "HEAD")
        .await
        .expect("re-add live");
    assert!(!live.path().join("scratch.txt").exists());

    // Its directory deleted behind git's back: the stale registration (at the path, holding the
    // branch) is pruned.
    std::fs::remove_dir_all(live.path()).expect("rm");
    let stale = repo
        .add_worktree_on_branch(&fx.wt_path("s"), "s", "HEAD")
        .await
        .expect("re-add stale");
    assert_eq!(read(stale.path(), "README"), "hello\n");

    // The branch held by a stale registration elsewhere: pruned, then checked out at the new path.
    std::fs::remove_dir_all(stale.path()).expect("rm");
    let moved = repo
        .add_worktree_on_branch(&fx.wt_path("s2"), "s", "HEAD")
        .await
        .expect("add at new path");
    assert_eq!(repo.list_worktrees().await.expect("list").len(), 2);

    // A live worktree elsewhere still holds the branch: refused, nothing forced.
    let clash = repo.add_worktree_on_branch(&fx.wt_path("s3"), "s", "HEAD").await;
    assert!(matches!(clash, Err(GitError::Command { .. })), "{clash:?}");
    assert!(moved.path().join("README").exists());
    assert!(!fx.wt_path("s3").exists());

    // A user's directory at the path is never deleted.
    write(&fx.wt_path("mine"), "precious.txt", "mine\n");
    assert!(repo
        .add_worktree_on_branch(&fx.wt_path("mine"), "m", "HEAD")
        .await
        .is_err());
    assert_eq!(read(&fx.wt_path("mine"), "precious.txt"), "mine\n");
}

#[tokio::test]
async fn a_worktree_on_a_branch_reports_bad_starts() {
    let fx = Fixture::new();
    let repo = fx.repo().await;
    let bad = repo
        .add_worktree_on_branch(&fx.wt_path("x"), "x", "no-such-commit")
        .await;
    assert!(matches!(bad, Err(GitError::Command { .. })), "{bad:?}");
    assert!(!repo.branch_exists("x").await.expect("exists"));
    assert_eq!(repo.list_worktrees().await.expect("list").len(), 1);

    let empty = Fixture::empty();
    let repo = empty.repo().await;
    let unborn = repo
        .add_worktree_on_branch(&empty.wt_path("x"), "x", "HEAD")
        .await;
    assert!(matches!(unborn, Err(GitError::NoCommits)), "{unborn:?}");
}

#[tokio::test]
async fn head_and_tree_are_what_git_says() {
    let fx = Fixture::new();
    let repo = fx.repo().await;
    let wt = repo
        .add_worktree_on_branch(&fx.wt_path("h"), "h", "HEAD")
        .await
        .expect("add");
    let (head, tree) = wt.head_and_tree().await.expect("head and tree");
    assert_eq!(head, wt.head().await.expect("head"));
    assert_eq!(tree, wt.tree_hash().await.expect("tree"));
    assert_ne!(head, tree);
    // After a commit made by git in the worktree (read in-process from the ref and the commit).
    write(wt.path(), "new.txt", "new\n");
    let commit = wt.commit_all("new").await.expect("commit").expect("a commit");
    let (head, tree) = wt.head_and_tree().await.expect("head and tree");
    assert_eq!(head, commit);
    assert_eq!(tree, fx.git_in(wt.path(), &["rev-parse", "HEAD^{tree}"]));

    let empty = Fixture::empty();
    let repo = empty.repo().await;
    let detached = repo.add_detached_worktree(&empty.wt_path("d"), "HEAD").await;
    assert!(detached.is_err(), "no commit to check out");
}

#[tokio::test]
async fn a_tree_is_reset_only_when_something_changed() {
    let fx = Fixture::new();
    fx.commit_file(".gitignore", "target/\n", "ignore");
    let repo = fx.repo().await;
    let wt = repo
        .add_worktree_on_branch(&fx.wt_path("r"), "r", "HEAD")
        .await
        .expect("add");
    let start = wt.head().await.expect("head");

    // Nothing changed, ignored output is not a change.
    write(wt.path(), "target/build.out", "keep\n");
    assert!(!wt.reset_hard_if_changed(&start).await.expect("reset"));
    assert_eq!(read(wt.path(), "target/build.out"), "keep\n");

    // Untracked and modified files: undone.
    write(wt.path(), "junk/untracked.txt", "u\n");
    write(wt.path(), "README", "edited\n");
    assert!(wt.reset_hard_if_changed(&start).await.expect("reset"));
    assert!(!wt.path().join("junk").exists());
    assert_eq!(read(wt.path(), "README"), "hello\n");
    assert_eq!(read(wt.path(), "target/build.out"), "keep\n");

    // A staged change: undone.
    write(wt.path(), "README", "staged\n");
    fx.git_in(wt.path(), &["add", "README"]);
    assert!(wt.reset_hard_if_changed(&start).await.expect("reset"));
    assert!(!wt.has_changes().await.expect("status"));

    // A commit made by the command (HEAD moved, tree clean): undone.
    write(wt.path(), "a.txt", "a\n");
    wt.commit_all("a").await.expect("commit").expect("a commit");
    assert!(wt.reset_hard_if_changed(&start).await.expect("reset"));
    assert_eq!(wt.head().await.expect("head"), start);
    assert!(!wt.path().join("a.txt").exists());
    assert!(!wt.reset_hard_if_changed(&start).await.expect("reset"));
}

#[tokio::test]
async fn commit_all_names_the_commit_it_made() {
    let fx = Fixture::new();
    let repo = fx.repo().await;
    let wt = repo
        .add_worktree_on_branch(&fx.wt_path("c"), "c", "HEAD")
        .await
        .expect("add");
    assert_eq!(wt.commit_all("nothing").await.expect("commit"), None);
    write(wt.path(), "a b.txt", "x\n");
    // A subject with brackets, and a detached HEAD, must not confuse the summary line.
    let commit = wt
        .commit_all("[x] a] b")
        .await
        .expect("commit")
        .expect("a commit");
    assert_eq!(commit, wt.head().await.expect("head"));

    let detached = repo
        .add_detached_worktree(&fx.wt_path("d"), "HEAD")
        .await
        .expect("detached");
    write(detached.path(), "d.txt", "d\n");
    let commit = detached
        .commit_all("on a detached head")
        .await
        .expect("commit")
        .expect("a commit");
    assert_eq!(commit, detached.head().await.expect("head"));
    // Deleting a tracked file is a change too.
    std::fs::remove_file(detached.path().join("d.txt")).expect("rm");
    let removal = detached.commit_all("remove").await.expect("commit");
    assert_eq!(removal, Some(detached.head().await.expect("head")));
}

#[tokio::test]
async fn one_listing_serves_many_lookups() {
    let fx = Fixture::new();
    let repo = fx.repo().await;
    let a = repo
        .add_worktree_on_branch(&fx.wt_path("a"), "a", "HEAD")
        .await
        .expect("add");
    write(a.path(), "work.txt", "in progress\n");
    let listed = repo.list_worktrees().await.expect("list");
    let again = repo
        .open_listed_worktree(&fx.wt_path("a"), &listed)
        .await
        .expect("open")
        .expect("registered");
    assert_eq!(read(again.path(), "work.txt"), "in progress\n");
    assert!(repo
        .open_listed_worktree(&fx.wt_path("nowhere"), &listed)
        .await
        .expect("open")
        .is_none());
    // A directory that is not a registered worktree is not one.
    write(&fx.wt_path("plain"), "f.txt", "f\n");
    assert!(repo
        .open_listed_worktree(&fx.wt_path("plain"), &listed)
        .await
        .expect("open")
        .is_none());
}

#[tokio::test]
async fn branches_are_listed_by_prefix_and_deleted_in_one_batch() {
    let fx = Fixture::new();
    let repo = fx.repo().await;
    for name in [
        "orchestrator/m1/u/a",
        "orchestrator/m1/u/b.1",
        "orchestrator/m1/integration",
    ] {
        repo.create_branch(name, "HEAD").await.expect("branch");
    }
    repo.create_branch("orchestrator/m10/u/a", "HEAD")
        .await
        .expect("branch");
    let mut units = repo
        .branches_with_prefix("orchestrator/m1/u/")
        .await
        .expect("list");
    units.sort();
    assert_eq!(units, ["orchestrator/m1/u/a", "orchestrator/m1/u/b.1"]);
    assert!(repo.branches_with_prefix("x*").await.is_err());

    repo.delete_branches(&units).await.expect("delete");
    assert!(repo
        .branches_with_prefix("orchestrator/m1/u/")
        .await
        .expect("list")
        .is_empty());
    assert!(repo
        .branch_exists("orchestrator/m1/integration")
        .await
        .expect("exists"));
    assert!(repo.branch_exists("orchestrator/m10/u/a").await.expect("exists"));
    repo.delete_branches::<&str>(&[])
        .await
        .expect("nothing to delete");
    // One missing: the others still go, and the error says which.
    let err = repo
        .delete_branches(&["orchestrator/m10/u/a", "nope"])
        .await
        .expect_err("missing branch");
    assert!(err.to_string().contains("nope"), "{err}");
    assert!(!repo.branch_exists("orchestrator/m10/u/a").await.expect("exists"));
}

#[tokio::test]
async fn a_half_made_worktree_is_replaced_not_reused() {
    let fx = Fixture::new();
    let repo = fx.repo().await;
    let wt = repo
        .add_worktree_on_branch(&fx.wt_path("h"), "h", "HEAD")
        .await
        .expect("add");
    // What `git worktree add` leaves when it is killed before its checkout finished.
    std::fs::write(fx.root.join(".git/worktrees/h/locked"), "initializing").expect("lock");
    std::fs::remove_file(wt.path().join("README")).expect("rm");
    let listed = repo.list_worktrees().await.expect("list");
    assert!(repo
        .open_listed_worktree(wt.path(), &listed)
        .await
        .expect("open")
        .is_none());
    let again = repo
        .add_worktree_on_branch(wt.path(), "h", "HEAD")
        .await
        .expect("replaced");
    assert_eq!(read(again.path(), "README"), "hello\n");
    assert!(!fx.root.join(".git/worktrees/h/locked").exists());
}

/// Killed earlier still, git (or the in-process add) leaves a registration that does not validate:
/// no HEAD in its admin area, or no `.git` file in the directory. `git worktree remove` refuses those
/// ("validation failed"), so they must still be cleared for the unit's worktree to be made again.
#[tokio::test]
async fn a_worktree_cut_short_before_its_head_is_cleared() {
    for damage in ["no HEAD", "no .git file", "empty .git file"] {
        let fx = Fixture::new();
        let repo = fx.repo().await;
        let wt = repo
            .add_worktree_on_branch(&fx.wt_path("k"), "k", "HEAD")
            .await
            .expect("add");
        let admin = fx.root.join(".git/worktrees/k");
        std::fs::write(admin.join("locked"), "initializing").expect("lock");
        match damage {
            "no HEAD" => std::fs::remove_file(admin.join("HEAD")).expect("rm HEAD"),
            "no .git file" => std::fs::remove_file(wt.path().join(".git")).expect("rm .git"),
            _ => std::fs::write(wt.path().join(".git"), "").expect("truncate .git"),
        }
        let again = repo
            .add_worktree_on_branch(wt.path(), "k", "HEAD")
            .await
            .unwrap_or_else(|e| panic!("{damage}: replaced: {e}"));
        assert_eq!(read(again.path(), "README"), "hello\n", "{damage}");
        assert!(!again.has_changes().await.expect("status"), "{damage}");
        let listed = repo.list_worktrees().await.expect("list");
        assert_eq!(
            listed.len(),
            2,
            "{damage}: one registration at the path: {listed:?}"
        );
        repo.remove_worktree(again.path()).await.expect("removable again");
    }
}

#[tokio::test]
async fn an_empty_directory_is_filled() {
    let fx = Fixture::new();
    let repo = fx.repo().await;
    std::fs::create_dir_all(fx.wt_path("e")).expect("mkdir");
    let wt = repo
        .add_worktree_on_branch(&fx.wt_path("e"), "e", "HEAD")
        .await
        .expect("add into an empty directory");
    assert_eq!(read(wt.path(), "README"), "hello\n");
    assert!(!wt.merge_in_progress().await.expect("merge state"));
}

#[tokio::test]
async fn head_is_read_from_files_when_they_are_conclusive() {
    let fx = Fixture::new();
    let repo = fx.repo().await;
    let wt = repo
        .add_worktree_on_branch(&fx.wt_path("b"), "b", "HEAD")
        .await
        .expect("add");
    write(wt.path(), "f.txt", "f\n");
    let commit = wt.commit_all("f").await.expect("commit").expect("a commit");
    assert_eq!(wt.head().await.expect("head"), commit);
    // Packed: no loose ref file any more, git is asked.
    fx.git(&["pack-refs", "--all"]);
    assert!(!fx.root.join(".git/refs/heads/b").exists());
    assert_eq!(wt.head().await.expect("head"), commit);
    // Detached: HEAD holds the commit itself.
    let detached = repo
        .add_detached_worktree(&fx.wt_path("d"), &commit)
        .await
        .expect("detached");
    assert_eq!(detached.head().await.expect("head"), commit);
    // The main worktree, whose git directory is `.git` itself.
    let main = repo
        .open_worktree(&fx.root)
        .await
        .expect("open")
        .expect("the main worktree is registered");
    assert_eq!(main.head().await.expect("head"), fx.git(&["rev-parse", "HEAD"]));
    // An unborn branch is still NoCommits.
    let empty = Fixture::empty();
    let repo = empty.repo().await;
    let main = repo
        .open_worktree(&empty.root)
        .await
        .expect("open")
        .expect("main");
    assert!(matches!(main.head().await, Err(GitError::NoCommits)));
}

/// A run killed while git held a ref or an index leaves `<name>.lock`; a resumed mission deletes those
/// of its own refs and worktrees, and nothing else.
#[tokio::test]
async fn stale_locks_of_the_mission_go_and_others_stay() {
    let fx = Fixture::new();
    let repo = fx.repo().await;
    let wt = repo
        .add_worktree_on_branch(&fx.wt_path("u1"), "orchestrator/m1/u/u1", "HEAD")
        .await
        .expect("add");
    let git = fx.root.join(".git");
    let ours = [
        git.join("refs/heads/orchestrator/m1/u/u1.lock"),
        git.join("refs/heads/orchestrator/m1/u/kid.lock"),
        git.join("worktrees/u1/index.lock"),
        git.join("worktrees/u1/HEAD.lock"),
    ];
    let theirs = [
        git.join("refs/heads/main.lock"),
        git.join("refs/heads/orchestrator/m2/u/x.lock"),
        git.join("packed-refs.lock"),
        git.join("index.lock"),
    ];
    for path in ours.iter().chain(&theirs) {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, "").expect("lock");
    }
    let worktrees = wt.path().parent().expect("worktrees dir").to_path_buf();
    let repaired = repo
        .repair_after_kill("orchestrator/m1/", &worktrees)
        .await
        .expect("cleared");
    assert!(repaired.worktrees.is_empty(), "{repaired:?}");
    let mut removed = repaired.locks;
    removed.sort();
    let mut expected = ours.to_vec();
    expected.sort();
    assert_eq!(removed, expected);
    for path in &theirs {
        assert!(path.exists(), "{} stays", path.display());
        std::fs::remove_file(path).expect("the user's lock goes the user's way");
    }
    // The branch the lock blocked can be written again.
    write(wt.path(), "w.txt", "w\n");
    wt.commit_all("work").await.expect("commit").expect("a commit");
    // Nothing to do is fine, and a missing prefix is no error.
    assert!(repo
        .repair_after_kill("orchestrator/none/", &worktrees)
        .await
        .expect("nothing")
        .is_empty());
}

/// `git worktree add` killed right after creating `commondir` leaves it empty, and from then on every
/// `git worktree list` of the repository dies. The mission's repair removes that worktree, and the
/// unit's worktree can be made again on its branch.
#[tokio::test]
async fn a_worktree_killed_while_registering_is_repaired() {
    let fx = Fixture::new();
    let repo = fx.repo().await;
    let wt = repo
        .add_worktree_on_branch(&fx.wt_path("c"), "orchestrator/m1/u/c", "HEAD")
        .await
        .expect("add");
    let admin = fx.root.join(".git/worktrees/c");
    std::fs::write(admin.join("commondir"), "").expect("cut commondir short");
    std::fs::write(admin.join("locked"), "initializing").expect("lock");
    assert!(repo.list_worktrees().await.is_err(), "git itself cannot list");
    let worktrees = wt.path().parent().expect("dir").to_path_buf();
    let repaired = repo
        .repair_after_kill("orchestrator/m1/", &worktrees)
        .await
        .expect("repaired");
    assert_eq!(repaired.worktrees, vec![wt.path().to_path_buf()]);
    assert!(!admin.exists() && !wt.path().exists());
    assert_eq!(repo.list_worktrees().await.expect("lists again").len(), 1);
    let again = repo
        .add_worktree_on_branch(&fx.wt_path("c"), "orchestrator/m1/u/c", "HEAD")
        .await
        .expect("made again");
    assert_eq!(read(again.path(), "README"), "hello\n");
}
