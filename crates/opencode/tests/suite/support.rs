//! Shared by the tests that drive the real OpenCode: its binary, an offline environment in a temporary
//! HOME, the fake model server as its provider, and temporary git repositories.

use std::path::{Path, PathBuf};

use orchestrator_fake_model::{Brain, FakeOptions, FakeServer, Reply, SeenMessage, SeenRequest};
use orchestrator_opencode::{OpencodeServer, ServerOptions};

pub const MODEL: &str = "fake-model-1";

/// The OpenCode binary from OPENCODE_BIN. The tests that call this are ignored when it was unset at
/// build time (`cfg(opencode_missing)`, from build.rs); run anyway, they fail here rather than pass
/// having checked nothing.
pub fn opencode_bin() -> PathBuf {
    match std::env::var_os("OPENCODE_BIN").filter(|v| !v.is_empty()) {
        Some(bin) => PathBuf::from(bin),
        None => panic!("needs OpenCode: set OPENCODE_BIN (.ci/run installs it)"),
    }
}

/// A temporary HOME with OpenCode's global config pointing at the fake model server, and a git
/// repository to work in.
pub struct World {
    pub home: tempfile::TempDir,
    pub repo: tempfile::TempDir,
    pub model: FakeServer,
}

impl World {
    pub async fn new(brain: impl Brain) -> World {
        let home = tempfile::tempdir().expect("tempdir");
        let repo = tempfile::tempdir().expect("tempdir");
        git(repo.path(), &["init", "-q", "-b", "main"]);
        std::fs::write(repo.path().join("README.md"), "# test project\n").expect("write");
        git(repo.path(), &["add", "-A"]);
        git(
            repo.path(),
            &[
                "-c",
                "user.email=dev@example.com",
                "-c",
                "user.name=Dev",
                "commit",
                "-q",
                "-m",
                "initial",
            ],
        );
        let model = FakeServer::start(brain, FakeOptions::default())
            .await
            .expect("the fake model server starts");
        let config = home.path().join(".config/opencode/opencode.json");
        std::fs::create_dir_all(config.parent().expect("a folder")).expect("mkdir");
        std::fs::write(&config, provider_config(&model)).expect("write the config");
        World { home, repo, model }
    }

    /// The repository's path as OpenCode reports it (temp folders may sit behind symlinks).
    pub fn dir(&self) -> PathBuf {
        self.repo.path().canonicalize().expect("the repo exists")
    }

    /// `opencode serve` offline, everything it writes inside the temporary HOME.
    pub fn options(&self, bin: &Path) -> ServerOptions {
        let home = self.home.path();
        let path = |p: &str| home.join(p).to_string_lossy().into_owned();
        ServerOptions::new(bin)
            .current_dir(self.dir())
            .env("HOME", home.to_string_lossy())
            .env("XDG_CONFIG_HOME", path(".config"))
            .env("XDG_DATA_HOME", path(".local/share"))
            .env("XDG_CACHE_HOME", path(".cache"))
            .env("XDG_STATE_HOME", path(".local/state"))
            .env("OPENCODE_DISABLE_MODELS_FETCH", "1")
            .env("OPENCODE_DISABLE_AUTOUPDATE", "1")
            .env("OPENCODE_DISABLE_SHARE", "1")
            .env("OPENCODE_DISABLE_LSP_DOWNLOAD", "1")
            .env_remove("OPENCODE_CONFIG")
            .env_remove("OPENCODE_CONFIG_DIR")
            .env_remove("OPENCODE_CONFIG_CONTENT")
            .env_remove("OPENAI_BASE_URL")
            .env_remove("OPENAI_API_KEY")
            .env_remove("ANTHROPIC_BASE_URL")
            .env_remove("ANTHROPIC_API_KEY")
    }

    pub async fn start(&self, bin: &Path) -> OpencodeServer {
        OpencodeServer::start(self.options(bin))
            .await
            .unwrap_or_else(|e| panic!("opencode serve starts: {e}"))
    }
}

/// The fake server as an OpenAI-compatible provider (OpenCode bundles that SDK, so nothing is
/// downloaded), with a price so that OpenCode computes a cost, and every permission granted: a
/// headless session has nobody to answer a question.
fn provider_config(server: &FakeServer) -> String {
    format!(
        r#"{{
  "$schema": "https://opencode.ai/config.json",
  "provider": {{
    "fake": {{
      "npm": "@ai-sdk/openai-compatible",
      "name": "Fake",
      "options": {{ "baseURL": "{}", "apiKey": "test-key" }},
      "models": {{
        "{MODEL}": {{
          "name": "Fake model",
          "tool_call": true,
          "cost": {{ "input": 1000, "output": 2000 }}
        }}
      }}
    }}
  }},
  "model": "fake/{MODEL}",
  "small_model": "fake/{MODEL}",
  "permission": {{ "edit": "allow", "bash": "allow", "external_directory": "allow" }},
  "autoupdate": false,
  "share": "disabled"
}}
"#,
        server.openai_base_url()
    )
}

pub fn git(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
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
