//! An agent cannot turn the orchestrator's own git against it: a worktree's `.git` link rewritten to a
//! repository of the agent's (with an fsmonitor and a filter driver in its config) is put back before
//! git runs there, and the commit lands in the real repository; a planted fsmonitor never runs.

use super::common::{write, Fixture};
use orchestrator_git::{Repo, Worktree};

async fn unit_worktree(fx: &Fixture, repo: &Repo) -> Worktree {
    repo.create_branch("unit", "HEAD").await.expect("create branch");
    repo.add_worktree(&fx.wt_path("unit"), "unit")
        .await
        .expect("add worktree")
}

#[tokio::test]
async fn a_hijacked_worktree_link_is_put_back_before_git_runs() {
    let fx = Fixture::new();
    let repo = fx.repo().await;
    let wt = unit_worktree(&fx, &repo).await;
    let link = std::fs::read_to_string(wt.path().join(".git")).unwrap();
    let marker = fx.root.parent().unwrap().join("ran-outside-the-sandbox");

    // What a hostile agent does from inside the worktree: its own repository in place of the link,
    // with programs in its config that git runs on `add` and `status`.
    std::fs::remove_file(wt.path().join(".git")).unwrap();
    fx.git_in(wt.path(), &["init", "-q"]);
    fx.git_in(
        wt.path(),
        &["config", "core.fsmonitor", &format!("touch {}", marker.display())],
    );
    fx.git_in(
        wt.path(),
        &[
            "config",
            "filter.evil.clean",
            &format!("touch {}; cat", marker.display()),
        ],
    );
    write(wt.path(), ".gitattributes", "* filter=evil\n");
    write(wt.path(), "work.txt", "the unit's work\n");

    let commit = wt
        .commit_all("the unit's work")
        .await
        .expect("commit")
        .expect("a commit");
    assert!(!marker.exists(), "no program from the agent's config ran");
    assert_eq!(
        std::fs::read_to_string(wt.path().join(".git")).unwrap(),
        link,
        "the link is back"
    );
    assert_eq!(
        fx.git(&["rev-parse", "unit"]),
        commit,
        "the commit is in the real repository"
    );
    assert_eq!(fx.git(&["show", "unit:work.txt"]), "the unit's work");
    assert_eq!(wt.head().await.unwrap(), commit);
}

#[tokio::test]
async fn a_link_to_another_folder_is_put_back_and_head_is_the_real_one() {
    let fx = Fixture::new();
    let repo = fx.repo().await;
    let wt = unit_worktree(&fx, &repo).await;
    let real_head = wt.head().await.unwrap();
    // A fake admin folder whose HEAD names another commit: the merge queue must not believe it.
    let other = fx.commit_file("other.txt", "x\n", "not the unit's");
    let fake = wt.path().join("fake-admin");
    std::fs::create_dir_all(&fake).unwrap();
    std::fs::write(fake.join("HEAD"), format!("{other}\n")).unwrap();
    std::fs::write(wt.path().join(".git"), format!("gitdir: {}\n", fake.display())).unwrap();

    assert_eq!(
        wt.head().await.unwrap(),
        real_head,
        "HEAD comes from the registration"
    );
    assert!(wt.has_changes().await.is_ok());
    assert!(std::fs::read_to_string(wt.path().join(".git"))
        .unwrap()
        .contains(".git/worktrees/unit"));
}

#[tokio::test]
async fn a_planted_fsmonitor_in_the_shared_config_never_runs() {
    // Defence in depth behind the sandbox (which keeps agents out of .git/config): the orchestrator's
    // git calls run with core.fsmonitor off.
    let fx = Fixture::new();
    let repo = fx.repo().await;
    let wt = unit_worktree(&fx, &repo).await;
    let marker = fx.root.parent().unwrap().join("fsmonitor-ran");
    fx.git(&["config", "core.fsmonitor", &format!("touch {}", marker.display())]);
    write(wt.path(), "work.txt", "work\n");
    wt.commit_all("work").await.expect("commit").expect("a commit");
    assert!(!wt.has_changes().await.unwrap());
    repo.dirty_paths(&[]).await.unwrap();
    assert!(!marker.exists(), "the orchestrator's git never ran the fsmonitor");
}
