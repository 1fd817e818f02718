//! Helpers shared by the integration tests: a worktree in a temporary directory and a short way to call
//! a tool in it.

use std::fs;
use std::path::{Path, PathBuf};

use orchestrator_tools::{ToolOptions, ToolOutput, Toolbox};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// A temporary directory holding `root/` (the worktree) and, beside it, `outside/`, a place tools must
/// never reach.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub tools: Toolbox,
}

impl Fixture {
    pub fn new(options: ToolOptions) -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::create_dir(dir.path().join("root")).expect("mkdir root");
        fs::create_dir(dir.path().join("outside")).expect("mkdir outside");
        fs::write(dir.path().join("outside/secret.txt"), "outside secret\n").expect("write");
        let tools = Toolbox::new(dir.path().join("root"), options).expect("toolbox");
        Fixture { dir, tools }
    }

    pub fn writable() -> Fixture {
        Fixture::new(ToolOptions {
            allow_write: true,
            ..ToolOptions::default()
        })
    }

    pub fn root(&self) -> PathBuf {
        self.tools.root().to_path_buf()
    }

    pub fn outside(&self) -> PathBuf {
        fs::canonicalize(self.dir.path().join("outside")).expect("canonical")
    }

    /// Writes `content` at `rel` under the root, creating directories.
    pub fn file(&self, rel: &str, content: &str) -> &Self {
        let path = self.root().join(rel);
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        fs::write(path, content).expect("write");
        self
    }

    pub fn read_back(&self, rel: &str) -> String {
        fs::read_to_string(self.root().join(rel)).expect("read back")
    }

    pub async fn call(&self, name: &str, arguments: Value) -> ToolOutput {
        self.tools.call(name, &arguments, &CancellationToken::new()).await
    }

    /// Calls a tool that must succeed and returns its content.
    pub async fn ok(&self, name: &str, arguments: Value) -> String {
        let out = self.call(name, arguments).await;
        assert!(!out.is_error, "{name} failed: {}", out.content);
        out.content
    }

    /// Calls a tool that must fail and returns its message.
    pub async fn err(&self, name: &str, arguments: Value) -> String {
        let out = self.call(name, arguments).await;
        assert!(out.is_error, "{name} should have failed, got: {}", out.content);
        out.content
    }
}

pub fn exists(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok()
}
