//! Many sessions at once on one repository: the lock-file race the metadata lock exists for.

use super::common::{read, write, Fixture};

const SESSIONS: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn twenty_sessions_add_worktrees_and_commit_at_once() {
    let fx = Fixture::new();
    let repo = fx.repo().await;

    let tasks: Vec<_> = (0..SESSIONS)
        .map(|i| {
            let repo = repo.clone();
            let path = fx.wt_path(&format!("s{i}"));
            tokio::spawn(async move {
                let branch = format!("orchestrator/m/s{i}");
                repo.create_branch(&branch, "main").await?;
                let wt = repo.add_worktree(&path, &branch).await?;
                write(wt.path(), &format!("file{i}.txt"), &format!("session {i}\n"));
                let commit = wt.commit_all(&format!("session {i}")).await?;
                Ok::<_, orchestrator_git::GitError>((branch, wt, commit))
            })
        })
        .collect();

    let mut done = Vec::new();
    for task in tasks {
        let (branch, wt, commit) = task.await.expect("task").expect("session");
        let commit = commit.expect("a commit");
        assert_eq!(repo.rev_parse(&branch).await.expect("rev"), commit);
        assert_eq!(read(wt.path(), "README"), "hello\n");
        done.push(wt);
    }
    assert_eq!(repo.list_worktrees().await.expect("list").len(), SESSIONS + 1);

    let removals: Vec<_> = done
        .into_iter()
        .map(|wt| {
            let repo = repo.clone();
            tokio::spawn(async move { repo.remove_worktree(wt.path()).await })
        })
        .collect();
    for removal in removals {
        removal.await.expect("task").expect("remove");
    }
    assert_eq!(repo.list_worktrees().await.expect("list"), vec![fx.root.clone()]);
    assert_eq!(fx.read("README"), "hello\n");
}

/// Units start and finish at different moments: adds on new branches run while other sessions commit
/// and remove theirs, all on the shared side of the metadata lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn worktrees_come_and_go_at_once() {
    let fx = Fixture::new();
    let repo = fx.repo().await;
    let base = fx.git(&["rev-parse", "HEAD"]);
    // A worktree that stays for the whole run, as the mission's base and integration trees do.
    let _integration = repo
        .add_worktree_on_branch(&fx.wt_path("integration"), "orchestrator/m/integration", &base)
        .await
        .expect("integration");
    let tasks: Vec<_> = (0..SESSIONS)
        .map(|i| {
            let repo = repo.clone();
            let base = base.clone();
            let path = fx.wt_path(&format!("u{i}"));
            tokio::spawn(async move {
                let branch = format!("orchestrator/m/u/u{i}");
                let wt = repo.add_worktree_on_branch(&path, &branch, &base).await?;
                write(wt.path(), &format!("file{i}.txt"), &format!("session {i}\n"));
                let commit = wt.commit_all(&format!("session {i}")).await?;
                repo.remove_worktree(wt.path()).await?;
                Ok::<_, orchestrator_git::GitError>((branch, commit))
            })
        })
        .collect();
    let mut branches = Vec::new();
    for task in tasks {
        let (branch, commit) = task.await.expect("task").expect("session");
        assert_eq!(
            repo.rev_parse(&branch).await.expect("rev"),
            commit.expect("a commit")
        );
        branches.push(branch);
    }
    assert_eq!(repo.list_worktrees().await.expect("list").len(), 2);
    let mut listed = repo
        .branches_with_prefix("orchestrator/m/u/")
        .await
        .expect("branches");
    listed.sort();
    branches.sort();
    assert_eq!(listed, branches);
    repo.delete_branches(&branches).await.expect("delete");
    assert!(repo
        .branches_with_prefix("orchestrator/m/u/")
        .await
        .expect("branches")
        .is_empty());
}
