//! Shared by the tests that drive the real OpenCode: a world of a temporary HOME and git repository
//! (test-support's ScratchRepo) with the fake model server as OpenCode's provider, and `opencode serve`
//! run offline in it (test-support's OpenCode environment).

use std::path::{Path, PathBuf};

use orchestrator_fake_model::{Brain, FakeOptions, FakeServer, Reply, SeenMessage, SeenRequest};
use orchestrator_opencode::{OpencodeServer, ServerOptions};
use orchestrator_test_support::git::ScratchRepo;
pub use orchestrator_test_support::opencode::bin as opencode_bin;
use orchestrator_test_support::opencode::{self, FakeProvider};

pub const MODEL: &str = "fake-model-1";

/// A git repository to work in, whose temporary HOME holds OpenCode's global config pointing at the
/// fake model server.
pub struct World {
    pub repo: ScratchRepo,
    pub model: FakeServer,
}

impl World {
    pub async fn new(brain: impl Brain) -> World {
        let repo = ScratchRepo::init();
        repo.write("README.md", "# test project\n");
        repo.git(&["add", "-A"]);
        repo.git(&[
            "-c",
            "user.email=dev@example.com",
            "-c",
            "user.name=Dev",
            "commit",
            "-q",
            "-m",
            "initial",
        ]);
        let model = FakeServer::start(brain, FakeOptions::default())
            .await
            .expect("the fake model server starts");
        // A price, so that OpenCode computes a cost; headless: every permission granted.
        let config = FakeProvider {
            base_url: &model.openai_base_url(),
            model: MODEL,
            cost: Some((1000, 2000)),
            headless: true,
        };
        opencode::write_global_config(&repo.home, "opencode.json", &config.config());
        World { repo, model }
    }

    /// The repository's path as OpenCode reports it (canonical: temp folders may sit behind symlinks).
    pub fn dir(&self) -> PathBuf {
        self.repo.root.clone()
    }

    /// `opencode serve` offline, everything it writes inside the temporary HOME.
    pub fn options(&self, bin: &Path) -> ServerOptions {
        let mut options = ServerOptions::new(bin).current_dir(self.dir());
        for (key, value) in opencode::offline_env(&self.repo.home) {
            options = options.env(key, value);
        }
        for key in opencode::REMOVED_ENV {
            options = options.env_remove(*key);
        }
        options
    }

    pub async fn start(&self, bin: &Path) -> OpencodeServer {
        OpencodeServer::start(self.options(bin))
            .await
            .unwrap_or_else(|e| panic!("opencode serve starts: {e}"))
    }
}

/// OpenCode asks for a session title with a request that offers no tools; any text will do.
pub fn is_title_request(request: &SeenRequest) -> bool {
    request.tools.is_empty()
}

pub fn title_reply() -> Reply {
    Reply::Text("Test session".into())
}

pub fn last_user_text(request: &SeenRequest) -> String {
    request
        .messages
        .iter()
        .rev()
        .find_map(|m| match m {
            SeenMessage::User { text } => Some(text.clone()),
            _ => None,
        })
        .unwrap_or_default()
}
