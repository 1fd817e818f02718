//! A unit's worktree made and removed in-process (`Repo::add_worktree_on_branch` with a full object
//! name as the start, `Repo::remove_worktree`): laid out as `git worktree add -b` lays it out, usable
//! by every git command afterwards, and left to git whenever in-process might differ.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::common::{read, Fixture};

/// A commit with a nested file, an executable and a symlink; returns its full name.
fn rich_commit(fx: &Fixture) -> String {
    fx.write("src/lib.rs", "pub fn f() {}\n");
    fx.write("run.sh", "#!/bin/sh\necho hi\n");
    let run = fx.root.join("run.sh");
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::os::unix::fs::symlink("src/lib.rs", fx.root.join("link")).expect("symlink");
    fx.git(&["add", "-A"]);
    fx.git(&["commit", "-q", "-m", "rich"]);
    fx.git(&["rev-parse", "HEAD"])
}

/// git's own `worktree add` checks out with `git reset --hard`, which leaves `ORIG_HEAD` in the
/// worktree's administrative folder; the in-process add has no reason to write one.
fn made_by_git(fx: &Fixture, worktree: &Path) -> bool {
    let admin = fx.git_in(worktree, &["rev-parse", "--absolute-git-dir"]);
    Path::new(&admin).join("ORIG_HEAD").exists()
}

#[tokio::test]
async fn a_new_branch_worktree_is_made_in_process_as_git_makes_it() {
    let fx = Fixture::new();
    let base = rich_commit(&fx);
    let repo = fx.repo().await;
    let path = fx.wt_path("unit-a");
    std::fs::create_dir_all(&path).expect("the engine makes the directory first");

    let wt = repo
        .add_worktree_on_branch(&path, "u/a", &base)
        .await
        .expect("add");

    assert!(!made_by_git(&fx, wt.path()), "expected the in-process add");
    assert_eq!(read(wt.path(), "README"), "hello\n");
    assert_eq!(read(wt.path(), "src/lib.rs"), "pub fn f() {}\n");
    let mode = std::fs::metadata(wt.path().join("run.sh"))
        .expect("run.sh")
        .permissions()
        .mode();
    assert_eq!(mode & 0o111, 0o111, "executable bit kept");
    assert_eq!(
        std::fs::read_link(wt.path().join("link")).expect("a symlink"),
        Path::new("src/lib.rs")
    );
    // git sees a clean worktree on the new branch, registered like any other.
    assert_eq!(fx.git_in(wt.path(), &["status", "--porcelain"]), "");
    assert_eq!(fx.git_in(wt.path(), &["symbolic-ref", "HEAD"]), "refs/heads/u/a");
    assert_eq!(fx.git_in(wt.path(), &["rev-parse", "HEAD"]), base);
    let listed = fx.git(&["worktree", "list", "--porcelain"]);
    assert!(
        listed.contains(&format!(
            "worktree {}\nHEAD {base}\nbranch refs/heads/u/a",
            path.display()
        )),
        "{listed}"
    );
    assert!(
        fx.git(&["reflog", "show", "--format=%gs", "u/a"])
            .contains("branch: Created from"),
        "the branch has git's reflog entry"
    );
    let admin = fx.git_in(wt.path(), &["rev-parse", "--absolute-git-dir"]);
    assert!(
        !Path::new(&admin).join("locked").exists(),
        "not left locked as initializing"
    );

    // Work there goes through git as usual, and the branch outlives the worktree.
    std::fs::write(wt.path().join("new.txt"), "new\n").expect("write");
    let commit = wt.commit_all("add new").await.expect("commit").expect("a commit");
    repo.remove_worktree(&path).await.expect("remove");
    assert!(!path.exists());
    assert!(!Path::new(&admin).exists(), "its registration is gone too");
    assert!(!fx.git(&["worktree", "list"]).contains("unit-a"));
    assert_eq!(fx.git(&["rev-parse", "u/a"]), commit);
    fx.git(&["fsck", "--no-progress"]);
}

#[tokio::test]
async fn many_worktrees_at_once_each_get_their_own_registration() {
    let fx = Fixture::new();
    let base = fx.git(&["rev-parse", "HEAD"]);
    let repo = fx.repo().await;
    let adds = (0..12).map(|i| {
        let repo = repo.clone();
        let path = fx.wt_path(&format!("m{i}/unit"));
        let base = base.clone();
        async move { repo.add_worktree_on_branch(&path, &format!("u/{i}"), &base).await }
    });
    let worktrees: Vec<_> = futures::future::join_all(adds)
        .await
        .into_iter()
        .collect::<Result<_, _>>()
        .expect("every add");
    // Same basename everywhere: git's naming (`unit`, `unit1`, …) keeps the registrations apart.
    let admins: std::collections::HashSet<String> = worktrees
        .iter()
        .map(|wt| fx.git_in(wt.path(), &["rev-parse", "--absolute-git-dir"]))
        .collect();
    assert_eq!(admins.len(), 12);
    for (i, wt) in worktrees.iter().enumerate() {
        assert_eq!(
            fx.git_in(wt.path(), &["symbolic-ref", "--short", "HEAD"]),
            format!("u/{i}")
        );
    }
    for wt in &worktrees {
        repo.remove_worktree(wt.path()).await.expect("remove");
    }
    assert_eq!(fx.git(&["worktree", "list"]).lines().count(), 1);
}

#[tokio::test]
async fn filter_drivers_and_submodules_are_left_to_git() {
    // A configured filter driver runs a program on checkout: git does it.
    let fx = Fixture::new();
    fx.git(&["config", "filter.upper.smudge", "tr a-z A-Z"]);
    fx.git(&["config", "filter.upper.clean", "cat"]);
    fx.write(".gitattributes", "*.up filter=upper\n");
    fx.write("x.up", "shout\n");
    fx.git(&["add", "-A"]);
    fx.git(&["commit", "-q", "-m", "filtered"]);
    let base = fx.git(&["rev-parse", "HEAD"]);
    let repo = fx.repo().await;
    let wt = repo
        .add_worktree_on_branch(&fx.wt_path("filtered"), "u/f", &base)
        .await
        .expect("add");
    assert!(made_by_git(&fx, wt.path()));
    assert_eq!(read(wt.path(), "x.up"), "SHOUT\n");

    // A tree with submodules: git lays them out.
    let fx = Fixture::new();
    fx.write(
        ".gitmodules",
        "[submodule \"lib\"]\n\tpath = lib\n\turl = ./lib\n",
    );
    fx.git(&["add", ".gitmodules"]);
    fx.git(&["commit", "-q", "-m", "submodules"]);
    let base = fx.git(&["rev-parse", "HEAD"]);
    let repo = fx.repo().await;
    let wt = repo
        .add_worktree_on_branch(&fx.wt_path("subs"), "u/s", &base)
        .await
        .expect("add");
    assert!(made_by_git(&fx, wt.path()));
}

#[tokio::test]
async fn an_existing_branch_or_a_symbolic_start_goes_through_git() {
    let fx = Fixture::new();
    let base = fx.git(&["rev-parse", "HEAD"]);
    fx.git(&["branch", "u/old", &base]);
    let repo = fx.repo().await;
    // A resumed unit: its branch is there already, and is checked out as it is.
    let wt = repo
        .add_worktree_on_branch(&fx.wt_path("old"), "u/old", &base)
        .await
        .expect("add on the existing branch");
    assert_eq!(
        fx.git_in(wt.path(), &["symbolic-ref", "--short", "HEAD"]),
        "u/old"
    );
    // Not a full object name: git resolves it.
    let wt = repo
        .add_worktree_on_branch(&fx.wt_path("sym"), "u/sym", "HEAD")
        .await
        .expect("add from HEAD");
    assert!(made_by_git(&fx, wt.path()));
    assert_eq!(fx.git_in(wt.path(), &["rev-parse", "HEAD"]), base);
}
