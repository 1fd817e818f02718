//! Diff statistics against a real repository.

use super::common::Fixture;
use orchestrator_git::FileStat;

fn stat(path: &str, added: u64, removed: u64) -> FileStat {
    FileStat {
        path: path.into(),
        added: Some(added),
        removed: Some(removed),
    }
}

#[tokio::test]
async fn a_range_counts_lines_per_file() {
    let fx = Fixture::new();
    let base = fx.git(&["rev-parse", "HEAD"]);
    fx.write("README", "hello\nworld\n");
    fx.write("src/new file.txt", "a\nb\nc\n");
    fx.git(&["add", "-A"]);
    fx.git(&["commit", "-q", "-m", "two files"]);
    let repo = fx.repo().await;
    let files = repo.diff_stat(&base, "HEAD").await.expect("diff stat");
    assert_eq!(files, vec![stat("README", 1, 0), stat("src/new file.txt", 3, 0)]);
}

#[tokio::test]
async fn a_merge_is_counted_against_its_first_parent() {
    let fx = Fixture::new();
    fx.git(&["checkout", "-q", "-b", "side"]);
    fx.commit_file("side.txt", "one\ntwo\n", "side work");
    fx.git(&["checkout", "-q", "main"]);
    fx.commit_file("main.txt", "main\n", "main work");
    fx.git(&["merge", "-q", "--no-ff", "-m", "merge side", "side"]);
    let repo = fx.repo().await;
    let files = repo.first_parent_diff_stat("HEAD").await.expect("diff stat");
    assert_eq!(files, vec![stat("side.txt", 2, 0)]);
}

#[tokio::test]
async fn an_unknown_commit_is_an_error() {
    let fx = Fixture::new();
    let repo = fx.repo().await;
    let missing = "0123456789012345678901234567890123456789";
    assert!(repo.first_parent_diff_stat(missing).await.is_err());
}
