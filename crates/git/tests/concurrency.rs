//! Many sessions at once on one repository: the lock-file race the metadata lock exists for.

mod common;

use common::{read, write, Fixture};

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
