//! A mission's shared remote (issue #20): the commander publishes the commits its units start
//! from, workers on other hosts fetch them and push each unit's branch back. Pushes are compare and
//! swap (`--force-with-lease` against the value the pusher last saw), so a worker or commander that
//! was replaced cannot overwrite, in git, what its successor pushed.

use std::path::Path;

use crate::cmd::{Mode, Output, Runner};
use crate::{GitError, Repo};

/// What a push did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Push {
    Done,
    /// The remote's ref was not what the pusher expected (someone else pushed), or the remote
    /// refused the update; git's words.
    Rejected(String),
}

/// A remote URL or path git would not read as an option.
fn checked_url(url: &str) -> Result<&str, GitError> {
    if url.is_empty() || url.starts_with('-') || url.contains('\n') {
        return Err(GitError::InvalidArgument(format!(
            "not a usable git remote: {url:?}"
        )));
    }
    Ok(url)
}

/// A full ref name (`refs/…`) git would not misread.
fn checked_ref(name: &str) -> Result<&str, GitError> {
    let bad = !name.starts_with("refs/")
        || name.contains("..")
        || name.chars().any(|c| c.is_control() || " ~^:?*[\\".contains(c));
    if bad {
        return Err(GitError::InvalidArgument(format!(
            "not a usable ref name: {name:?}"
        )));
    }
    Ok(name)
}

impl Repo {
    /// The repository at `dir`, made empty first when there is none: a worker's local copy of a
    /// mission's remote, which gets its commits by [`Repo::fetch_refs`] alone.
    pub async fn init_or_open(dir: &Path, env: Vec<(String, String)>) -> Result<Repo, GitError> {
        tokio::fs::create_dir_all(dir).await?;
        if !dir.join(".git").exists() {
            Runner::new(env.clone())
                .check(dir, ["init", "--quiet"], Mode::META)
                .await?;
        }
        Repo::discover_with_env(dir, env).await
    }

    /// Fetches `refspecs` (`+src:dst`, full ref names) from `url`, without tags and without
    /// touching FETCH_HEAD, so that fetches of several units at once do not race over it.
    pub async fn fetch_refs(&self, url: &str, refspecs: &[String]) -> Result<(), GitError> {
        let url = checked_url(url)?;
        let mut args = vec![
            "fetch".to_string(),
            "--quiet".into(),
            "--no-tags".into(),
            "--no-write-fetch-head".into(),
            url.to_string(),
        ];
        for spec in refspecs {
            let (src, dst) = spec.trim_start_matches('+').split_once(':').unwrap_or((spec, ""));
            checked_ref(src)?;
            if !dst.is_empty() {
                checked_ref(dst)?;
            }
            args.push(spec.clone());
        }
        self.git().check(self.root(), args, Mode::META).await?;
        Ok(())
    }

    /// The commit `refname` names on `url`, if it exists there.
    pub async fn remote_ref(&self, url: &str, refname: &str) -> Result<Option<String>, GitError> {
        let args = ["ls-remote", "--refs", checked_url(url)?, checked_ref(refname)?];
        let out = self.git().check(self.root(), args, Mode::READ).await?;
        let found = listed(&out.stdout)
            .find(|(_, name)| *name == refname)
            .map(|(commit, _)| commit.to_string());
        Ok(found)
    }

    /// Every ref on `url` whose full name starts with `prefix` (`refs/heads/orchestrator/<mission>/`),
    /// with the commit it names.
    pub async fn remote_refs_with_prefix(
        &self,
        url: &str,
        prefix: &str,
    ) -> Result<Vec<(String, String)>, GitError> {
        checked_ref(prefix)?;
        // Listed whole and filtered here: ls-remote's patterns match a ref's tail, not its start.
        let args = ["ls-remote", "--refs", checked_url(url)?];
        let out = self.git().check(self.root(), args, Mode::READ).await?;
        let refs = listed(&out.stdout)
            .filter(|(_, name)| name.starts_with(prefix))
            .map(|(commit, name)| (name.to_string(), commit.to_string()))
            .collect();
        Ok(refs)
    }

    /// Deletes each `(ref, commit)` on `url` in one push, each only if it still names that commit
    /// (a ref someone moved since it was listed stays: `Rejected`, with git's words for it).
    pub async fn delete_remote_refs(&self, url: &str, refs: &[(String, String)]) -> Result<Push, GitError> {
        if refs.is_empty() {
            return Ok(Push::Done);
        }
        let url = checked_url(url)?;
        let mut args = vec!["push".to_string(), "--porcelain".into(), "--quiet".into()];
        for (name, commit) in refs {
            checked_ref(name)?;
            if !commit.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(GitError::InvalidArgument(format!("not a commit: {commit:?}")));
            }
            args.push(format!("--force-with-lease={name}:{commit}"));
        }
        args.push(url.to_string());
        args.extend(refs.iter().map(|(name, _)| format!(":{name}")));
        leased(self.git().run(self.root(), args, Mode::META).await?)
    }

    /// Points `refname` on `url` at `commit`, only if it is still at `expected` there (`None`: only
    /// if it does not exist yet).
    pub async fn push_with_lease(
        &self,
        url: &str,
        commit: &str,
        refname: &str,
        expected: Option<&str>,
    ) -> Result<Push, GitError> {
        let url = checked_url(url)?;
        let refname = checked_ref(refname)?;
        if commit.starts_with('-') || commit.contains(':') {
            return Err(GitError::InvalidArgument(format!("not a commit: {commit:?}")));
        }
        let lease = format!("--force-with-lease={refname}:{}", expected.unwrap_or(""));
        let spec = format!("{commit}:{refname}");
        let args = [
            "push",
            "--porcelain",
            "--quiet",
            lease.as_str(),
            url,
            spec.as_str(),
        ];
        leased(self.git().run(self.root(), args, Mode::META).await?)
    }
}

/// `git ls-remote`'s lines as (commit, ref name).
fn listed(stdout: &str) -> impl Iterator<Item = (&str, &str)> {
    stdout.lines().filter_map(|line| line.split_once('\t'))
}

/// What a `--force-with-lease` push did: refused by the lease or the remote is an answer, not an
/// error; anything else (no remote, no network) is.
fn leased(out: Output) -> Result<Push, GitError> {
    if out.success() {
        return Ok(Push::Done);
    }
    let said = format!("{}\n{}", out.stdout, out.stderr);
    if said.contains("[rejected]") || said.contains("stale info") || said.contains("[remote rejected]") {
        return Ok(Push::Rejected(said.trim().to_string()));
    }
    Err(out.into_error())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_repo::Scratch;

    /// A repository with two commits and an empty bare remote.
    struct Shared {
        _scratch: Scratch,
        _remote: tempfile::TempDir,
        bare: std::path::PathBuf,
        first: String,
        second: String,
        repo: Repo,
    }

    impl Shared {
        async fn new() -> Shared {
            let scratch = Scratch::new();
            scratch.write("a.txt", "a\n");
            let first = scratch.commit().to_string();
            scratch.write("a.txt", "b\n");
            let second = scratch.commit().to_string();
            let remote = tempfile::tempdir().expect("tempdir");
            let bare = remote.path().join("shared.git");
            scratch.git(&["init", "--bare", "--quiet", bare.to_str().expect("utf-8")]);
            let repo = Repo::discover(&scratch.root).await.expect("repo");
            Shared {
                _scratch: scratch,
                _remote: remote,
                bare,
                first,
                second,
                repo,
            }
        }

        fn url(&self) -> &str {
            self.bare.to_str().expect("utf-8")
        }
    }

    #[tokio::test]
    async fn pushes_are_compare_and_swap_and_fetches_bring_the_commits() {
        let shared = Shared::new().await;
        let (first, second, url, repo) = (&shared.first, &shared.second, shared.url(), &shared.repo);
        let name = "refs/heads/orchestrator/m1/w/u1@t1";

        assert_eq!(repo.remote_ref(url, name).await.expect("ls-remote"), None);
        let push = repo.push_with_lease(url, first, name, None).await.expect("push");
        assert_eq!(push, Push::Done);
        // Expecting it absent when it exists: refused, the remote unchanged.
        let again = repo.push_with_lease(url, second, name, None).await.expect("push");
        assert!(matches!(again, Push::Rejected(_)), "{again:?}");
        let stale = repo
            .push_with_lease(url, second, name, Some(second))
            .await
            .expect("push");
        assert!(matches!(stale, Push::Rejected(_)), "{stale:?}");
        assert_eq!(
            repo.remote_ref(url, name).await.expect("ls-remote").as_deref(),
            Some(first.as_str())
        );
        // Expecting what is there: moved.
        let moved = repo
            .push_with_lease(url, second, name, Some(first))
            .await
            .expect("push");
        assert_eq!(moved, Push::Done);

        let copy_dir = tempfile::tempdir().expect("tempdir");
        let copy = Repo::init_or_open(copy_dir.path(), Vec::new())
            .await
            .expect("init");
        copy.fetch_refs(url, &[format!("+{name}:refs/heads/unit")])
            .await
            .expect("fetch");
        assert_eq!(copy.rev_parse("refs/heads/unit").await.expect("fetched"), *second);
        // Opened again, it is the same repository.
        let reopened = Repo::init_or_open(copy_dir.path(), Vec::new())
            .await
            .expect("open");
        assert_eq!(
            reopened.rev_parse("refs/heads/unit").await.expect("still there"),
            *second
        );
    }

    #[tokio::test]
    async fn a_missions_refs_are_listed_by_prefix_and_deleted_unless_moved() {
        let shared = Shared::new().await;
        let (first, second, url, repo) = (&shared.first, &shared.second, shared.url(), &shared.repo);
        for name in [
            "refs/heads/orchestrator/m1/integration",
            "refs/heads/orchestrator/m1/w/a@t1",
            "refs/heads/orchestrator/m10/w/a@t1",
            "refs/heads/main",
        ] {
            repo.push_with_lease(url, first, name, None).await.expect("push");
        }
        let prefix = "refs/heads/orchestrator/m1/";
        let mut listed = repo
            .remote_refs_with_prefix(url, prefix)
            .await
            .expect("ls-remote");
        listed.sort();
        assert_eq!(
            listed.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
            [
                "refs/heads/orchestrator/m1/integration",
                "refs/heads/orchestrator/m1/w/a@t1"
            ],
            "m10 is not m1's"
        );
        // One of them moves after the listing: it stays, the other goes.
        repo.push_with_lease(url, second, &listed[1].0, Some(first))
            .await
            .expect("push");
        let refused = repo.delete_remote_refs(url, &listed).await.expect("push");
        assert!(
            matches!(refused, Push::Rejected(_)),
            "the moved ref is refused: {refused:?}"
        );
        let left = repo
            .remote_refs_with_prefix(url, "refs/heads/")
            .await
            .expect("ls-remote");
        let names: Vec<&str> = left.iter().map(|(n, _)| n.as_str()).collect();
        assert!(names.contains(&"refs/heads/main") && names.contains(&"refs/heads/orchestrator/m10/w/a@t1"));
        assert!(
            names.contains(&"refs/heads/orchestrator/m1/w/a@t1"),
            "moved, kept: {names:?}"
        );
        assert_eq!(
            repo.delete_remote_refs(url, &[]).await.expect("nothing"),
            Push::Done
        );
        let now = repo
            .remote_refs_with_prefix(url, prefix)
            .await
            .expect("ls-remote");
        assert_eq!(
            repo.delete_remote_refs(url, &now).await.expect("push"),
            Push::Done
        );
        assert!(repo
            .remote_refs_with_prefix(url, prefix)
            .await
            .expect("ls-remote")
            .is_empty());
        assert!(matches!(
            repo.delete_remote_refs(url, &[("refs/heads/x".into(), "--exec".into())])
                .await,
            Err(GitError::InvalidArgument(_))
        ));
    }

    #[tokio::test]
    async fn option_like_urls_and_refs_are_refused() {
        let scratch = Scratch::new();
        scratch.write("a.txt", "a\n");
        scratch.commit();
        let repo = Repo::discover(&scratch.root).await.expect("repo");
        for url in ["--upload-pack=touch /tmp/x", "", "a\nb"] {
            assert!(matches!(
                repo.remote_ref(url, "refs/heads/x").await,
                Err(GitError::InvalidArgument(_))
            ));
        }
        for name in ["heads/x", "refs/heads/a b", "refs/heads/../x", "refs/heads/x:y"] {
            assert!(matches!(
                repo.push_with_lease("/tmp/none.git", "abc", name, None).await,
                Err(GitError::InvalidArgument(_))
            ));
        }
    }
}
