//! Built-in agent tools (`read`, `list`, `glob`, `grep`, `bash`, `write`, `edit`), executed for model
//! sessions and confined to one worktree.
//!
//! A [`Toolbox`] is made per session with the worktree as its root. [`Toolbox::specs`] gives the tool
//! definitions to offer the model and [`Toolbox::call`] runs a call. A call never fails from the
//! engine's point of view: every problem, from malformed arguments to a path outside the worktree,
//! becomes a [`ToolOutput`] with `is_error` set and a message the model can act on.

mod args;
mod bash;
mod dispatch;
mod edit;
mod error;
mod glob;
mod grep;
mod insert;
mod list;
mod paths;
mod read;
mod specs;
mod summary;
mod text;
mod walk;

use std::path::{Path, PathBuf};
use std::time::Duration;

use orchestrator_model::ToolSpec;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::paths::Root;

pub use crate::summary::summarize_call;

/// `text` cut in the middle to the bound the built-in tools' output has by default, as they cut
/// theirs: for results of tools that run elsewhere (the user's MCP servers).
pub fn clip_output(text: &str) -> String {
    text::clip(text, ToolOptions::default().max_output_chars)
}

/// What a toolbox offers and how far its output and commands may go.
#[derive(Debug, Clone)]
pub struct ToolOptions {
    /// Offer `write` and `edit` (workers and conflict resolvers); others only look and run commands.
    pub allow_write: bool,
    /// The confinement `bash` runs in (`None`: none, as the tools' own tests run).
    pub sandbox: Option<orchestrator_sandbox::Sandbox>,
    /// `bash` timeout when the call gives none.
    pub bash_timeout: Duration,
    /// Upper bound for a timeout the model asks for; larger requests are clamped.
    pub max_bash_timeout: Duration,
    /// Longer output is cut in the middle, keeping head and tail, with a note saying how much.
    pub max_output_chars: usize,
    /// The tools offered, when a role is limited to some (`[roles.<role>] tools` in the config);
    /// `None` offers every tool the session may have. Names outside [`TOOL_NAMES`] are ignored.
    pub only: Option<Vec<String>>,
    /// Names the session was given that are not folders (its unit's name): a write that would make a
    /// folder of such a name to hold a copy of an existing file is refused every time, not once.
    pub not_folders: Vec<String>,
    /// Whether a `write` may delete most of an existing file once the session has read it in full
    /// (`true`, the default: a rewrite), or never (`false`: lines are removed with `edit`); and
    /// whether an `edit` may replace one definition by another (`false`: refused; a rename is a
    /// removal, then an addition). Small models "add a function" by writing a file holding only it,
    /// or by editing another function into it.
    pub rewrites_may_drop: bool,
    /// The files the session's task is planned to change. With `rewrites_may_drop` false, creating
    /// any other file is refused until the session has changed a planned one: the 1.5B put `mul` in
    /// a new `src/mul.py` for a unit planned on `calc.py`. Empty: no plan, no check.
    pub planned_files: Vec<String>,
}

/// Every tool a toolbox can offer, in the order they are offered.
pub const TOOL_NAMES: [&str; 8] = ["read", "list", "glob", "grep", "bash", "write", "edit", "insert"];

/// The tools that change files, offered only to sessions that may write.
pub const WRITING_TOOLS: [&str; 3] = ["write", "edit", "insert"];

impl ToolOptions {
    /// Whether a session with these options is offered `name`: writing tools only when it may
    /// write, and only the tools `only` lists when it lists some.
    pub(crate) fn offers(&self, name: &str) -> bool {
        (self.allow_write || !WRITING_TOOLS.contains(&name))
            && self
                .only
                .as_ref()
                .is_none_or(|only| only.iter().any(|o| o == name))
    }
}

impl Default for ToolOptions {
    fn default() -> Self {
        ToolOptions {
            allow_write: false,
            sandbox: None,
            bash_timeout: Duration::from_secs(120),
            max_bash_timeout: Duration::from_secs(600),
            max_output_chars: 30_000,
            only: None,
            not_folders: Vec::new(),
            rewrites_may_drop: true,
            planned_files: Vec::new(),
        }
    }
}

/// The result of one tool call, as sent back to the model.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolOutput {
    pub content: String,
    /// Set when the call could not do what was asked (bad arguments, refused path, timeout, cancel).
    /// A command that ran and exited non-zero is not an error: its exit code is in `content`.
    pub is_error: bool,
}

impl ToolOutput {
    pub(crate) fn ok(content: String) -> Self {
        ToolOutput {
            content,
            is_error: false,
        }
    }

    pub(crate) fn error(content: String) -> Self {
        ToolOutput {
            content,
            is_error: true,
        }
    }
}

/// The tools of one session, confined to a root directory.
#[derive(Debug, Clone)]
pub struct Toolbox {
    root: Root,
    options: ToolOptions,
    /// Files this session has read, written or edited: `write` will not blindly replace most of a
    /// file the session has never looked at (see `edit::write`).
    seen: dispatch::Seen,
}

impl Toolbox {
    /// Fails when `root` does not exist or is not a directory. The root is canonicalised so that
    /// confinement checks compare real paths.
    pub fn new(root: impl Into<PathBuf>, options: ToolOptions) -> std::io::Result<Toolbox> {
        Ok(Toolbox {
            root: Root::new(root.into())?,
            options,
            seen: dispatch::Seen::default(),
        })
    }

    /// The files the session's task is planned to change (see [`ToolOptions::planned_files`]).
    pub fn plan_files(&mut self, files: Vec<String>) {
        self.options.planned_files = files;
    }

    /// How many files this session has read in full, written or edited. It grows when the session
    /// learns a file, which can change the answer to a call refused before (a `write` refused as a
    /// blind overwrite is allowed once the file was read).
    pub fn files_seen(&self) -> usize {
        self.seen.len()
    }

    /// The canonical root.
    pub fn root(&self) -> &Path {
        &self.root.canonical
    }

    /// What confines this toolbox's commands, in words; `None` when it runs them without a sandbox.
    pub fn sandbox_description(&self) -> Option<&str> {
        self.options.sandbox.as_ref().map(|s| s.describe())
    }

    pub fn specs(&self) -> Vec<ToolSpec> {
        let offered = self.tool_names();
        specs::specs(&self.options)
            .into_iter()
            .filter(|spec| offered.contains(&spec.name.as_str()))
            .collect()
    }

    pub fn provides(&self, name: &str) -> bool {
        self.tool_names().contains(&name)
    }

    /// Runs a call. Never panics and never returns an engine error: see [`ToolOutput::is_error`].
    pub async fn call(&self, name: &str, arguments: &Value, cancel: &CancellationToken) -> ToolOutput {
        tracing::debug!(tool = name, call = %summarize_call(name, arguments), "tool call");
        if !self.provides(name) {
            return ToolOutput::error(self.unknown_tool(name));
        }
        if cancel.is_cancelled() {
            return ToolOutput::error("the call was cancelled before it started".into());
        }
        if name == "bash" {
            return self.call_bash(arguments, cancel).await;
        }
        let result = self.call_file_tool(name, arguments, cancel).await;
        let max = self.options.max_output_chars;
        match result {
            Ok(text) => ToolOutput::ok(text::clip(&text, max)),
            Err(e) => ToolOutput::error(text::clip(&e.to_string(), max)),
        }
    }

    /// Runs a command of the runtime's own (not a model's call) in the root, confined and timed out
    /// like `bash`, whether or not `bash` is offered: the tests after a change
    /// (`[verify] after_write`). Output is cut to `max_chars`.
    pub async fn run_command(
        &self,
        command: &str,
        max_chars: usize,
        cancel: &CancellationToken,
    ) -> ToolOutput {
        let request = bash::BashRequest {
            command,
            timeout: self.options.bash_timeout.min(self.options.max_bash_timeout),
            clamped_from: None,
            max_chars,
        };
        bash::bash(
            &self.root.canonical,
            &request,
            self.options.sandbox.as_ref(),
            cancel,
        )
        .await
    }

    fn tool_names(&self) -> Vec<&'static str> {
        TOOL_NAMES
            .into_iter()
            .filter(|name| self.options.offers(name))
            .collect()
    }

    fn unknown_tool(&self, name: &str) -> String {
        let available = self.tool_names().join(", ");
        if TOOL_NAMES.contains(&name) && self.options.only.is_some() {
            format!("`{name}` is not offered to this session; available tools: {available}")
        } else if WRITING_TOOLS.contains(&name) {
            format!("`{name}` is not available in this session, which may not change files; available tools: {available}")
        } else {
            format!("unknown tool `{name}`; available tools: {available}")
        }
    }

    async fn call_bash(&self, arguments: &Value, cancel: &CancellationToken) -> ToolOutput {
        match dispatch::bash_request(&self.options, arguments) {
            Ok(request) => {
                bash::bash(
                    &self.root.canonical,
                    &request,
                    self.options.sandbox.as_ref(),
                    cancel,
                )
                .await
            }
            Err(e) => ToolOutput::error(e.to_string()),
        }
    }

    /// File tools block on the file system (a grep over a large tree takes a while), so they run on
    /// tokio's blocking pool instead of stalling the runtime that drives the other sessions.
    async fn call_file_tool(
        &self,
        name: &str,
        arguments: &Value,
        cancel: &CancellationToken,
    ) -> Result<String, error::ToolError> {
        let (root, options, seen) = (self.root.clone(), self.options.clone(), self.seen.clone());
        let (name, arguments, cancel) = (name.to_string(), arguments.clone(), cancel.clone());
        tokio::task::spawn_blocking(move || {
            dispatch::file_tool(&root, &options, &seen, &name, &arguments, &cancel)
        })
        .await
        .unwrap_or_else(|e| {
            Err(error::ToolError::refused(format!(
                "the tool failed unexpectedly: {e}"
            )))
        })
    }
}
