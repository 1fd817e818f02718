//! Repository-level queries: discovery, state, exclusion, branches.

use super::common::Fixture;
use orchestrator_git::{GitError, Repo};

#[tokio::test]
async fn discover_finds_the_main_root_from_a_subdirectory_and_a_linked_worktree() {
    let fx = Fixture::new();
    fx.write("sub/dir/file.txt", "x\n");
    let repo = Repo::discover_with_env(&fx.root.join("sub/dir"), fx.env.clone())
        .await
        .expect("discover");
    assert_eq!(repo.root(), fx.root);
    assert_eq!(repo.git_common_dir(), fx.root.join(".git"));

    let linked = fx.root.parent().expect("parent").join("linked");
    fx.git(&[
        "worktree",
        "add",
        "-q",
        "--detach",
        linked.to_str().expect("utf8"),
        "HEAD",
    ]);
    let from_linked = Repo::discover_with_env(&linked, fx.env.clone())
        .await
        .expect("discover linked");
    assert_eq!(from_linked.root(), fx.root);
    assert_eq!(from_linked.git_common_dir(), fx.root.join(".git"));
}

#[tokio::test]
async fn discover_reports_not_a_repo() {
    let fx = Fixture::new();
    let outside = fx.root.parent().expect("parent").join("home");
    let env = fx.env.clone();
    match Repo::discover_with_env(&outside, env.clone()).await {
        Err(GitError::NotARepo(path)) => assert_eq!(path, outside),
        other => panic!("expected NotARepo, got {other:?}"),
    }
    let missing = outside.join("does-not-exist");
    assert!(matches!(
        Repo::discover_with_env(&missing, env).await,
        Err(GitError::NotARepo(_))
    ));
}

#[tokio::test]
async fn a_repo_without_commits_has_no_head() {
    let fx = Fixture::empty();
    let repo = fx.repo().await;
    assert_eq!(repo.head_commit().await.expect("head"), None);
    assert_eq!(
        repo.current_branch().await.expect("branch").as_deref(),
        Some("main")
    );
    assert!(matches!(repo.rev_parse("HEAD").await, Err(GitError::NoCommits)));
    assert!(matches!(
        repo.create_branch("b", "HEAD").await,
        Err(GitError::NoCommits)
    ));
}

#[tokio::test]
async fn head_branch_and_rev_parse() {
    let fx = Fixture::new();
    let repo = fx.repo().await;
    let head = fx.git(&["rev-parse", "HEAD"]);
    assert_eq!(repo.head_commit().await.expect("head"), Some(head.clone()));
    assert_eq!(repo.rev_parse("main").await.expect("rev-parse"), head);
    assert_eq!(
        repo.current_branch().await.expect("branch").as_deref(),
        Some("main")
    );

    fx.git(&["checkout", "-q", "--detach"]);
    assert_eq!(repo.current_branch().await.expect("branch"), None);

    match repo.rev_parse("no-such-rev").await {
        Err(GitError::Command { args, stderr, .. }) => {
            assert!(args.contains("rev-parse"), "{args}");
            assert!(!stderr.is_empty());
        }
        other => panic!("expected a command error, got {other:?}"),
    }
}

#[tokio::test]
async fn dirty_paths_cover_staged_unstaged_untracked_but_not_ignored_or_prefixed() {
    let fx = Fixture::new();
    fx.commit_file(".gitignore", "*.log\n", "ignore logs");
    let repo = fx.repo().await;
    assert!(repo.dirty_paths(&[]).await.expect("clean").is_empty());

    fx.write("README", "changed\n");
    fx.write("staged.txt", "s\n");
    fx.git(&["add", "staged.txt"]);
    fx.write("new/deep/untracked.txt", "u\n");
    fx.write("build.log", "ignored\n");
    fx.write(".orchestrator/state.json", "{}\n");

    let mut dirty = repo.dirty_paths(&[".orchestrator/"]).await.expect("dirty");
    dirty.sort();
    assert_eq!(dirty, ["README", "new/deep/untracked.txt", "staged.txt"]);

    let all = repo.dirty_paths(&[]).await.expect("dirty");
    assert!(all.contains(&".orchestrator/state.json".to_string()), "{all:?}");
}

#[tokio::test]
async fn ensure_excluded_is_idempotent_and_takes_effect() {
    let fx = Fixture::new();
    let exclude = fx.root.join(".git/info/exclude");
    // A file without a final newline, and no info/ directory at first.
    std::fs::remove_dir_all(fx.root.join(".git/info")).ok();
    let repo = fx.repo().await;
    repo.ensure_excluded(".orchestrator/").await.expect("exclude");
    std::fs::write(&exclude, "# mine\n.orchestrator/\n*.tmp").expect("write exclude");
    repo.ensure_excluded(".orchestrator/")
        .await
        .expect("exclude again");
    repo.ensure_excluded("target/").await.expect("exclude another");
    repo.ensure_excluded("target/").await.expect("and again");

    let content = std::fs::read_to_string(&exclude).expect("read exclude");
    assert_eq!(content, "# mine\n.orchestrator/\n*.tmp\ntarget/\n");

    fx.write(".orchestrator/state.json", "{}\n");
    assert!(repo.dirty_paths(&[]).await.expect("dirty").is_empty());
    assert!(matches!(
        repo.ensure_excluded("a\nb").await,
        Err(GitError::InvalidArgument(_))
    ));
}

#[tokio::test]
async fn branches_are_created_once_and_deleted() {
    let fx = Fixture::new();
    let repo = fx.repo().await;
    let name = "orchestrator/m1/task-1";
    assert!(!repo.branch_exists(name).await.expect("exists"));
    repo.create_branch(name, "HEAD").await.expect("create");
    assert!(repo.branch_exists(name).await.expect("exists"));
    assert_eq!(
        repo.rev_parse(name).await.expect("rev"),
        repo.rev_parse("HEAD").await.expect("head")
    );

    let again = repo.create_branch(name, "HEAD").await;
    assert!(matches!(again, Err(GitError::Command { .. })), "{again:?}");

    repo.delete_branch(name).await.expect("delete");
    assert!(!repo.branch_exists(name).await.expect("exists"));
    assert!(repo.delete_branch(name).await.is_err());
}

#[tokio::test]
async fn ancestry() {
    let fx = Fixture::new();
    let first = fx.git(&["rev-parse", "HEAD"]);
    let second = fx.commit_file("a.txt", "a\n", "second");
    let repo = fx.repo().await;
    assert!(repo.is_ancestor(&first, &second).await.expect("ancestor"));
    assert!(repo.is_ancestor(&second, &second).await.expect("self"));
    assert!(!repo.is_ancestor(&second, &first).await.expect("not ancestor"));
    assert!(repo.is_ancestor("nope", &first).await.is_err());
}

#[tokio::test]
async fn a_folder_is_excluded_but_for_the_subfolders_a_team_commits() {
    let fx = Fixture::new();
    let exclude = fx.root.join(".git/info/exclude");
    // An older version excluded the whole folder; that line goes, the user's own lines stay.
    std::fs::write(&exclude, "# mine\n/.orchestrator/\n*.tmp").expect("write exclude");
    let repo = fx.repo().await;
    repo.exclude_folder_except(".orchestrator", &["roles"])
        .await
        .expect("exclude");
    repo.exclude_folder_except(".orchestrator", &["roles"])
        .await
        .expect("and again");
    let content = std::fs::read_to_string(&exclude).expect("read exclude");
    assert_eq!(
        content,
        "# mine\n*.tmp\n/.orchestrator/*\n!/.orchestrator/roles/\n"
    );

    fx.write(".orchestrator/state.json", "{}\n");
    fx.write(".orchestrator/worktrees/m/a.txt", "a\n");
    fx.write(".orchestrator/roles/worker.md", "---\nmodel: m\n---\nWork.\n");
    let dirty = repo.dirty_paths(&[]).await.expect("dirty");
    assert_eq!(
        dirty,
        vec![".orchestrator/roles/worker.md".to_string()],
        "only the role file shows"
    );
    assert!(matches!(
        repo.exclude_folder_except("a/b", &[]).await,
        Err(GitError::InvalidArgument(_))
    ));
}
