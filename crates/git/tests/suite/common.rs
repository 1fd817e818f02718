//! Temporary repositories for the tests: test-support's [`ScratchRepo`] (isolated from the machine's
//! git config, see there), with what only this crate's tests need: the crate's own [`Repo`] on it,
//! sharing its environment (through `Repo::discover_with_env`), and where worktrees go.

use std::ops::Deref;
use std::path::PathBuf;

use orchestrator_git::Repo;
use orchestrator_test_support::git::ScratchRepo;
pub use orchestrator_test_support::git::{read, write};

pub struct Fixture(ScratchRepo);

impl Fixture {
    /// A repository with an identity and one commit (`README` = "hello\n") on `main`.
    pub fn new() -> Fixture {
        let fx = Fixture::empty();
        fx.commit_file("README", "hello\n", "initial");
        fx
    }

    /// `git init` on `main` with an identity, no commits.
    pub fn empty() -> Fixture {
        Fixture(ScratchRepo::with_identity("Test User", "test@example.com"))
    }

    /// `git init` with no identity anywhere (an empty HOME, no system config).
    pub fn without_identity() -> Fixture {
        Fixture(ScratchRepo::init())
    }

    pub async fn repo(&self) -> Repo {
        Repo::discover_with_env(&self.root, self.env.clone())
            .await
            .expect("discover fixture repo")
    }

    /// Where tests put worktrees, like the engine does.
    pub fn wt_path(&self, name: &str) -> PathBuf {
        self.root.join(".orchestrator").join("wt").join(name)
    }
}

/// `root`, `env`, `git`, `git_in`, `command`, `write`, `read` and `commit_file` are the scratch
/// repository's.
impl Deref for Fixture {
    type Target = ScratchRepo;

    fn deref(&self) -> &ScratchRepo {
        &self.0
    }
}
