//! Configuration: defaults, then the user's config file, then `orchestrator.toml` in the repo root, then
//! flags. Model endpoints come from the environment, as each ecosystem expects.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use orchestrator_model::OutputMode;
use orchestrator_protocol::Role;
use serde::Deserialize;

use crate::compact::context_window_for;
use crate::error::{EngineError, Result};
use crate::pricing::PriceTable;

pub use orchestrator_protocol::{MissionSettings, Provider};

/// The model name sessions carry when the model is OpenCode's own choice (its config's `model`).
pub const OPENCODE_DEFAULT_MODEL: &str = "opencode";

/// One config file as written. Every field is optional so that layers can be merged.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Where the mission store lives: `postgres://USER[:PASSWORD]@HOST[:PORT]/DB`; unset, the
    /// repository's own `.orchestrator/state.db`. `--store` and ORCHESTRATOR_STORE_URL win over it.
    /// Read from the user's config.toml only (see `store_url`).
    pub store: Option<String>,
    /// A preset under every file's settings: `"small"` for small local models (see [`profile_layer`]).
    pub profile: Option<String>,
    pub provider: Option<Provider>,
    pub model: Option<String>,
    pub max_parallel: Option<usize>,
    pub max_depth: Option<u32>,
    pub rounds: Option<u32>,
    pub budget_tokens: Option<u64>,
    /// Stop after planning until a person approves the plan (`--approve-plan`). Default: off.
    pub approve_plan: Option<bool>,
    #[serde(default)]
    pub verify: VerifyFile,
    #[serde(default)]
    pub limits: LimitsFile,
    #[serde(default)]
    pub roles: BTreeMap<String, RoleFile>,
    #[serde(default)]
    pub endpoint: EndpointFile,
    /// Per model name: context window and compaction threshold.
    #[serde(default)]
    pub models: BTreeMap<String, ModelFile>,
    #[serde(default)]
    pub compaction: CompactionFile,
    #[serde(default)]
    pub sandbox: SandboxFile,
    #[serde(default)]
    pub notify: NotifyFile,
    /// Lifecycle hooks: commands run at mission start, after the plan, before a merge, after the seal.
    #[serde(default)]
    pub hooks: crate::hooks::HooksFile,
    /// Per model name prefix: USD per million input and output tokens.
    #[serde(default)]
    pub prices: PriceTable,
    /// The user's MCP servers (`[mcp.<name>]`), offered as tools to the roles that list them.
    #[serde(default)]
    pub mcp: BTreeMap<String, McpFile>,
    /// Specialist reviewers run after the built-in ones (`[review] extra`, `extra_master`).
    #[serde(default)]
    pub review: ReviewFile,
    /// Specialist reviewers' role files (`.orchestrator/roles/<name>.md` with `kind:`), by name; only
    /// the role files' layer has them.
    #[serde(skip)]
    pub specialists: BTreeMap<String, SpecialistFile>,
    /// The file this layer was read from, so a bad value can be traced to it.
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

/// The model endpoint's timeouts and the shared rate governor's limits.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointFile {
    pub connect_timeout_secs: Option<u64>,
    pub first_byte_timeout_secs: Option<u64>,
    pub idle_timeout_secs: Option<u64>,
    /// The most one model request may take, reply included (a reply trickling in under the idle
    /// timeout still ends).
    pub request_timeout_secs: Option<u64>,
    /// The largest model reply accepted: its text, reasoning and tool-call arguments, in bytes.
    pub max_reply_bytes: Option<u64>,
    /// Requests in flight per model (the governor adapts below this on 429s).
    pub max_concurrency: Option<usize>,
    pub requests_per_minute: Option<u32>,
    pub tokens_per_minute: Option<u64>,
    /// How long one call may keep failing (429s, 5xx, timeouts) before its unit gives up.
    pub max_wait_secs: Option<u64>,
    /// How replies are constrained: `auto` (the default), `tool_choice`, `json_schema` or `off`
    /// (see [`OutputMode`]).
    pub output: Option<OutputMode>,
    /// The older switch: `false` is `output = "off"`. `output` wins when both are set.
    pub tool_choice: Option<bool>,
    /// Whether a reply that falls into a loop (the same piece of text over and over) is cut off as
    /// it streams; on by default.
    pub cut_loops: Option<bool>,
    /// Whether requests are laid out for the provider's prompt cache (Anthropic `cache_control`
    /// breakpoints, OpenAI `prompt_cache_key`); on by default.
    pub prompt_cache: Option<bool>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelFile {
    pub context_window: Option<u64>,
    /// Fraction of the window at which a session compacts (default 0.8).
    pub compact_at: Option<f64>,
}

/// Who hears of the mission ending (or a unit failing): a desktop notice, a webhook.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyFile {
    /// `"auto"` (the default: where there is a desktop session and `notify-send`), `"on"`, `"off"`,
    /// or `true`/`false`.
    pub desktop: Option<DesktopFile>,
    /// A program to run instead of `notify-send`; it is given `notify-send`'s arguments.
    pub desktop_command: Option<String>,
    /// An http(s) URL each notice is POSTed to as JSON.
    pub webhook: Option<String>,
}

/// `desktop = true` reads as well as `desktop = "on"`.
#[derive(Debug, Clone, Copy)]
pub struct DesktopFile(orchestrator_notify::DesktopMode);

impl DesktopFile {
    fn mode(self) -> orchestrator_notify::DesktopMode {
        self.0
    }
}

impl<'de> Deserialize<'de> for DesktopFile {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        use orchestrator_notify::DesktopMode;
        let mode = match toml::Value::deserialize(deserializer)? {
            toml::Value::Boolean(true) => Some(DesktopMode::On),
            toml::Value::Boolean(false) => Some(DesktopMode::Off),
            toml::Value::String(word) => match word.as_str() {
                "auto" => Some(DesktopMode::Auto),
                "on" => Some(DesktopMode::On),
                "off" => Some(DesktopMode::Off),
                _ => None,
            },
            _ => None,
        };
        mode.map(DesktopFile)
            .ok_or_else(|| serde::de::Error::custom("`desktop` is \"auto\", \"on\", \"off\", true or false"))
    }
}

/// How agent commands (their `bash`, and verification run on their code) are confined.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxFile {
    /// `false` runs agent commands unconfined (as `--sandbox off` does). Default: confined.
    pub enabled: Option<bool>,
    /// Let agent commands open TCP connections (package downloads, local services). Default: off.
    pub network: Option<bool>,
    /// More folders that workers' commands and verification may change (tool caches such as
    /// `~/.cargo/registry` or `~/.npm`); `~/` is your home folder.
    pub writable: Option<Vec<String>>,
    /// More environment variables agent commands get (names; `PREFIX_*` for a prefix). The base list
    /// is `orchestrator_sandbox::BASE_ENV`; nothing else of the orchestrator's environment is passed.
    pub env: Option<Vec<String>>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompactionFile {
    /// The (cheaper) model that writes summaries; default: the session's own model.
    pub model: Option<String>,
    /// Share of the window kept verbatim as recent turns (default 0.3).
    pub keep_recent: Option<f64>,
    /// Tool output longer than this is cut in context and kept whole in a file (default 20000).
    pub tool_output_chars: Option<usize>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyFile {
    pub build: Option<String>,
    pub test: Option<String>,
    /// Static analysis (`cargo clippy -- -D warnings`, `ruff check .`, `eslint .`): run like build
    /// and test, between them.
    pub lint: Option<String>,
    /// What fetches the project's dependencies (`npm ci`): run once by the baseline, with network,
    /// and by a unit only when it has no copy of the baseline's outputs or changed a dependency
    /// manifest. `""` runs none; unset, the pre-scan picks one from the lockfile.
    pub install: Option<String>,
    pub timeout_secs: Option<u64>,
    /// How units' builds start warm: `auto` (a copy of the baseline's build outputs, per ecosystem)
    /// or `off` (every unit builds cold).
    pub cache: Option<VerifyCache>,
    /// Whether a worker's turn that changed a file is followed by the test command, its result shown
    /// to the worker in that turn's last tool result (the small profile says true).
    pub after_write: Option<bool>,
    /// Whether a unit may change or remove an assertion of a test file that existed on the mission's
    /// base commit: `true` fails its verification if it does (the small profile says true).
    pub protect_tests: Option<bool>,
}

/// `[verify] cache`: where a unit's build starts from.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VerifyCache {
    /// Each unit's worktree gets its own copy (reflink where the file system can) of the baseline's
    /// build outputs, for the ecosystems the pre-scan finds (Cargo `target`, Node `node_modules`).
    #[default]
    Auto,
    /// Every unit builds from scratch.
    Off,
    /// One build folder for every unit: refused (see [`SHARED_CACHE_REFUSED`]).
    Shared,
}

/// Why a build folder shared by the units is refused.
pub const SHARED_CACHE_REFUSED: &str = "[verify] cache = \"shared\" is refused: with one build folder for every \
    unit, one unit's build outputs (or a build script it changed) could be what another unit's tests run, so a \
    verdict could be about someone else's code, and a unit's sandbox would have to let it write where the others \
    build. Use \"auto\" (each unit gets its own copy of the baseline's outputs) or \"off\".";

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsFile {
    pub unit_attempts: Option<u32>,
    pub plan_attempts: Option<u32>,
    pub merge_attempts: Option<u32>,
    pub bash_timeout_secs: Option<u64>,
    pub max_parallel_verify: Option<usize>,
    /// Units a mission may hold in all: planned, spawned and follow-ups.
    pub max_units: Option<u32>,
    /// Scouts in discovery (0: the pre-scan alone); by default from the repository's size.
    pub scouts: Option<u32>,
    /// Best of N (`--attempts`): workers that build each unit side by side (default 1).
    pub candidates: Option<u32>,
    /// Whether a worker's `write` may delete most of an existing file it has read in full (default
    /// true; the small profile says false: lines are then removed with `edit`).
    pub rewrites_may_drop: Option<bool>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleFile {
    pub model: Option<String>,
    pub max_turns: Option<u32>,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f32>,
    /// Tokens every session of this role may use together over the mission.
    pub budget_tokens: Option<u64>,
    /// The only tools this role is offered (of `read`, `list`, `glob`, `grep`, `bash`, `write`, `edit`,
    /// `insert`, `spawn`); its submit tool is always offered. Unset: every tool the role may have.
    pub tools: Option<Vec<String>>,
    /// The `[mcp.<name>]` servers whose tools this role is offered.
    pub mcp: Option<Vec<String>>,
}

/// One `[mcp.<name>]` server as written: a program the orchestrator starts and talks to over stdio.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpFile {
    /// The program and its arguments, e.g. `["npx", "-y", "@acme/docs-mcp"]`.
    pub command: Option<Vec<String>>,
    /// A streamable-HTTP server's address (`http://` or `https://`), instead of `command`.
    pub url: Option<String>,
    /// An HTTP server's bearer token: the name of the environment variable that holds it.
    pub bearer_token_env_var: Option<String>,
    /// More headers sent to an HTTP server, as written (e.g. `{ "X-Team" = "core" }`).
    pub http_headers: Option<BTreeMap<String, String>>,
    /// More headers sent to an HTTP server whose values come from environment variables (header =
    /// variable name); their values are secrets, masked in everything the mission writes.
    pub env_http_headers: Option<BTreeMap<String, String>>,
    /// More environment variables the server gets from ours (names; `PREFIX_*`), as `[sandbox] env`.
    pub env: Option<Vec<String>>,
    /// Where it runs, relative to the mission's base worktree (default: that worktree's root).
    pub cwd: Option<String>,
    /// The most one call may take (default 60).
    pub timeout_secs: Option<u64>,
    /// The most the start may take: the handshake and the tool listing (default 30). A server fetched
    /// on first use (`npx -y …`, `uvx …`) may need more.
    pub startup_timeout_secs: Option<u64>,
    /// The only tools of the server that are offered (default: all, up to the bound).
    pub tools: Option<Vec<String>>,
    /// Confine the server like an agent's command that may not write (default: true when the
    /// mission's sandbox is on).
    pub sandbox: Option<bool>,
    /// Let a confined server open TCP connections (default: false).
    pub network: Option<bool>,
    /// The file this server was defined in (set when layers are merged).
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

/// `[review]`: the specialist reviewers (role files with `kind:`) that judge after the built-in ones.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReviewFile {
    /// Specialists of kind `reviewer` that judge each unit after its own review passed.
    pub extra: Option<Vec<String>>,
    /// Specialists of kind `master_reviewer` that judge the whole after the master review passed.
    pub extra_master: Option<Vec<String>>,
}

/// The most specialists one `[review]` list may name: each one is a model session per unit attempt.
pub const MAX_EXTRA_REVIEWERS: usize = 8;

/// A specialist reviewer's role file as the role files' layer carries it into [`resolve`].
#[derive(Debug, Clone)]
pub struct SpecialistFile {
    /// `reviewer` or `master_reviewer`: whose place in the pipeline, tools and defaults it takes.
    pub kind: Role,
    pub settings: RoleFile,
    pub prompt: RolePrompt,
}

/// A specialist reviewer, resolved: its kind's settings under what its file sets, and its prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct Specialist {
    pub name: String,
    pub kind: Role,
    pub settings: RoleSettings,
    pub prompt: RolePrompt,
}

/// Tools a role can be limited to: the toolbox's and the worker's `spawn`.
pub const ROLE_TOOLS: [&str; 9] = [
    "read", "list", "glob", "grep", "bash", "write", "edit", "insert", "spawn",
];

/// Model settings for one role.
#[derive(Debug, Clone, PartialEq)]
pub struct RoleSettings {
    pub model: String,
    pub max_turns: u32,
    pub max_tokens: u32,
    pub temperature: Option<f32>,
    pub budget_tokens: Option<u64>,
    /// The only tools the role is offered (`None`: all it may have).
    pub tools: Option<Vec<String>>,
    /// The `[mcp.<name>]` servers whose tools the role is offered.
    pub mcp: Vec<String>,
    /// The model's context window in tokens, and the share of it at which the session compacts.
    pub context_window: u64,
    pub compact_at: f64,
}

/// Endpoint timeouts and governor limits, resolved.
#[derive(Debug, Clone)]
pub struct EndpointSettings {
    pub connect_timeout: Duration,
    pub first_byte_timeout: Duration,
    pub idle_timeout: Duration,
    pub request_timeout: Duration,
    pub max_reply_bytes: usize,
    pub max_concurrency: usize,
    pub requests_per_minute: Option<u32>,
    pub tokens_per_minute: Option<u64>,
    pub max_wait: Duration,
    pub output: OutputMode,
    pub cut_loops: bool,
    pub prompt_cache: bool,
}

/// How sessions keep inside their context window.
#[derive(Debug, Clone)]
pub struct CompactionSettings {
    pub model: Option<String>,
    pub keep_recent: f64,
    pub tool_output_chars: usize,
}

/// The resolved confinement of agent commands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxSettings {
    pub enabled: bool,
    pub network: bool,
    /// Extra folders workers' commands and verification may change.
    pub writable: Vec<PathBuf>,
    /// Extra environment variables agent commands get.
    pub env: Vec<String>,
}

impl Default for SandboxSettings {
    fn default() -> Self {
        SandboxSettings {
            enabled: true,
            network: false,
            writable: Vec::new(),
            env: Vec::new(),
        }
    }
}

impl SandboxSettings {
    /// The sandbox of one session or verification run: `worktree` is where it may write (none for the
    /// roles that only look), besides its private temp folder and the configured extra folders.
    pub fn sandbox(
        &self,
        worktree: Option<&Path>,
    ) -> std::result::Result<orchestrator_sandbox::Sandbox, String> {
        let writable = match worktree {
            Some(root) => std::iter::once(root.to_path_buf())
                .chain(self.writable.iter().cloned())
                .collect(),
            None => Vec::new(),
        };
        let policy = orchestrator_sandbox::Policy {
            writable,
            network: self.network,
            env: self.env.clone(),
        };
        orchestrator_sandbox::Sandbox::new(self.enabled, &policy).map_err(|e| e.to_string())
    }

    /// What the mission's agents are confined to, in one line for the event log and the progress lines.
    pub fn summary(&self) -> String {
        if !self.enabled {
            return "sandbox off: agent commands run unconfined, with all your access".into();
        }
        let abi = orchestrator_sandbox::landlock_abi();
        let network = orchestrator_sandbox::network_words(abi, self.network);
        let extra = if self.writable.is_empty() {
            String::new()
        } else {
            let list: Vec<String> = self.writable.iter().map(|p| p.display().to_string()).collect();
            format!(" (and {})", list.join(", "))
        };
        format!(
            "sandbox (Landlock ABI {abi}): workers' commands and verification write only in their worktree{extra} \
             and a private temp folder, other roles only in their temp folder; {network}"
        )
    }

    /// Before a mission starts: the sandbox can be had here, or the user is told how to go on.
    pub fn check(&self) -> Result<()> {
        if !self.enabled {
            return Ok(());
        }
        orchestrator_sandbox::check_supported()
            .map(drop)
            .map_err(|e| EngineError::Usage(e.to_string()))
    }
}

/// `~/x` as the home folder's `x`; other paths as written.
fn expand_home(path: &str) -> PathBuf {
    match (path.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(path),
    }
}

/// The resolved configuration a mission runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub provider: Provider,
    /// OpenCode hook: `--opencode-url` (with `--provider opencode`; else a server is started).
    pub opencode_url: Option<String>,
    pub max_parallel: usize,
    pub max_depth: u32,
    pub rounds: u32,
    pub budget_tokens: Option<u64>,
    pub verify_build: Option<String>,
    pub verify_test: Option<String>,
    pub verify_lint: Option<String>,
    /// `[verify] install`: `None` lets the pre-scan choose, `Some("")` runs none.
    pub verify_install: Option<String>,
    /// Whether the mission may run with no verification command (`--no-verify`).
    pub no_verify: bool,
    /// Whether the plan waits for a person's approval before anything is executed.
    pub approve_plan: bool,
    pub verify_timeout: Duration,
    /// `[verify] cache`: `Auto` or `Off` (`Shared` is refused when the config is read).
    pub verify_cache: VerifyCache,
    /// `[verify] after_write`: the tests run after each worker turn that changed a file.
    pub verify_after_write: bool,
    /// `[verify] protect_tests`: units may not change what existing tests assert.
    pub verify_protect_tests: bool,
    pub unit_attempts: u32,
    /// Best of N: candidates per planned unit unless the plan says otherwise (1: none).
    pub candidates: u32,
    pub plan_attempts: u32,
    pub merge_attempts: u32,
    pub bash_timeout: Duration,
    pub max_parallel_verify: usize,
    /// The most units the mission may hold (plan, spawns and follow-ups together).
    pub max_units: usize,
    /// Scouts in discovery; `None`: chosen by the repository's size.
    pub scouts: Option<usize>,
    /// `[limits] rewrites_may_drop` (see `orchestrator_tools::ToolOptions::rewrites_may_drop`).
    pub rewrites_may_drop: bool,
    pub roles: BTreeMap<Role, RoleSettings>,
    pub endpoint: EndpointSettings,
    pub compaction: CompactionSettings,
    pub prices: PriceTable,
    pub sandbox: SandboxSettings,
    pub notify: orchestrator_notify::NotifySettings,
    /// Prompts from the repository's role files (`.orchestrator/roles/<role>.md`), replacing the
    /// built-in ones; the files' settings are already in `roles`.
    pub role_prompts: BTreeMap<Role, RolePrompt>,
    pub hooks: crate::hooks::HookSettings,
    /// The user's MCP servers, by name (only those some role lists are started).
    pub mcp: BTreeMap<String, McpServerSettings>,
    /// Every specialist reviewer the role files define, by name.
    pub specialists: BTreeMap<String, Specialist>,
    /// `[review] extra`: the specialists (kind `reviewer`) that judge each unit, in order.
    pub review_extra: Vec<String>,
    /// `[review] extra_master`: the specialists (kind `master_reviewer`) that judge the whole.
    pub review_extra_master: Vec<String>,
    /// Who runs the units (`--workers`), and the shared remote external workers use (`--remote`).
    pub workers: orchestrator_protocol::Workers,
    pub remote: Option<String>,
}

/// A role's prompt from its role file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolePrompt {
    /// Relative to the repository's root.
    pub path: String,
    /// The body, under the `# Role: <name>` line the runtime writes.
    pub prompt: String,
}

/// One `[mcp.<name>]` server, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct McpServerSettings {
    pub transport: McpTransport,
    pub timeout: Duration,
    /// The most its start (handshake and tool listing) may take.
    pub startup_timeout: Duration,
    pub tools: Option<Vec<String>>,
    /// The file that defined it, for messages.
    pub source: String,
}

/// How a server is reached.
#[derive(Debug, Clone, PartialEq)]
pub enum McpTransport {
    /// A program of ours, speaking MCP on its stdin and stdout.
    Stdio(McpStdio),
    /// A server someone else runs, reached over MCP's streamable HTTP.
    Http(McpHttp),
}

/// A stdio server: the program we start for the mission.
#[derive(Debug, Clone, PartialEq)]
pub struct McpStdio {
    pub command: Vec<String>,
    pub env: Vec<String>,
    /// Relative to the mission's base worktree (absolute when written so).
    pub cwd: Option<PathBuf>,
    pub sandbox: bool,
    pub network: bool,
}

/// A streamable-HTTP server.
#[derive(Debug, Clone, PartialEq)]
pub struct McpHttp {
    pub url: String,
    /// The environment variable holding the bearer token, if any.
    pub bearer_token_env_var: Option<String>,
    /// Headers as written.
    pub headers: BTreeMap<String, String>,
    /// Headers whose values are read from these environment variables when the server is reached.
    pub env_headers: BTreeMap<String, String>,
}

impl McpServerSettings {
    /// How it is reached, for messages: the command line or the URL.
    pub fn describe(&self) -> String {
        match &self.transport {
            McpTransport::Stdio(stdio) => stdio.command.join(" "),
            McpTransport::Http(http) => http.url.clone(),
        }
    }
}

impl Config {
    pub fn role(&self, role: Role) -> &RoleSettings {
        // Every role is filled in by `resolve`; the fallback only guards against future roles.
        self.roles
            .get(&role)
            .unwrap_or_else(|| &self.roles[&Role::Worker])
    }
}

/// Reads one config file; a missing file is an empty layer, a broken one is a usage error naming it.
pub fn load_file(path: &Path) -> Result<FileConfig> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(FileConfig::default()),
        Err(e) => return Err(EngineError::Usage(format!("cannot read {}: {e}", path.display()))),
    };
    let mut layer: FileConfig = toml::from_str(&text).map_err(|e| {
        EngineError::Usage(format!(
            "{} is not a valid orchestrator config: {}\nFix the file or move it aside; see README.md, section Configuration.",
            path.display(),
            e.to_string().trim_end()
        ))
    })?;
    layer.source = Some(path.to_path_buf());
    Ok(layer)
}

/// `$XDG_CONFIG_HOME/orchestrator/config.toml`, else `~/.config/orchestrator/config.toml`.
pub fn user_config_path() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("XDG_CONFIG_HOME").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir).join("orchestrator/config.toml"));
    }
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config/orchestrator/config.toml"))
}

/// Merges the layers (later wins) and checks the result.
fn verify_cache(cache: Option<VerifyCache>) -> Result<VerifyCache> {
    match cache.unwrap_or_default() {
        VerifyCache::Shared => Err(EngineError::Usage(SHARED_CACHE_REFUSED.into())),
        cache => Ok(cache),
    }
}

/// External workers need the remote they exchange commits through; a remote alone means nothing.
fn check_workers(config: &Config) -> Result<()> {
    use orchestrator_protocol::Workers;
    match (config.workers, &config.remote) {
        (Workers::External, None) => Err(EngineError::Usage(
            "--workers external needs --remote URL: the shared git remote that `orchestrator worker` \
             processes fetch the mission's commits from and push their units to"
                .into(),
        )),
        (Workers::Local, Some(_)) => Err(EngineError::Usage(
            "--remote is for --workers external; without it the units run in this process".into(),
        )),
        _ => Ok(()),
    }
}

pub fn resolve(layers: &[FileConfig], flags: &MissionSettings, env_model: Option<String>) -> Result<Config> {
    check_bounds(layers, flags)?;
    let mut merged = FileConfig::default();
    // The profile, if a layer names one, lies under every layer: what a file says explicitly wins.
    let profile = layers.iter().rev().find_map(|l| l.profile.clone());
    if let Some(name) = &profile {
        merge(&mut merged, profile_layer(name)?);
    }
    for layer in layers {
        merge(&mut merged, layer.clone());
    }
    let provider = flags
        .provider
        .or(merged.provider)
        .unwrap_or_else(default_provider);
    let mut model = flags.model.clone().or(env_model).or(merged.model.clone());
    // OpenCode hook: without a model of ours, sessions use the model configured in OpenCode.
    if provider == Provider::OpenCode && model.is_none() {
        model = Some(OPENCODE_DEFAULT_MODEL.to_string());
    }
    let roles = resolve_roles(&merged, flags.model.as_deref(), model.as_deref())?;
    let max_parallel = flags.max_parallel.or(merged.max_parallel).unwrap_or(8);
    let endpoint = resolve_endpoint(&merged.endpoint, max_parallel);
    let compaction = CompactionSettings {
        model: merged.compaction.model.clone(),
        keep_recent: merged.compaction.keep_recent.unwrap_or(0.3),
        tool_output_chars: merged.compaction.tool_output_chars.unwrap_or(20_000),
    };
    let mut prices = PriceTable::with_defaults();
    prices.merge(merged.prices.clone());
    let config = Config {
        provider,
        opencode_url: flags.opencode_url.clone(),
        max_parallel,
        max_depth: flags.max_depth.or(merged.max_depth).unwrap_or(2),
        rounds: flags.rounds.or(merged.rounds).unwrap_or(3),
        // Never unbounded: a model that loops or spawns without end stops at a budget either way.
        budget_tokens: Some(
            flags
                .budget_tokens
                .or(merged.budget_tokens)
                .unwrap_or(DEFAULT_BUDGET_TOKENS),
        ),
        verify_build: merged.verify.build.clone().filter(|c| !c.trim().is_empty()),
        verify_test: merged.verify.test.clone().filter(|c| !c.trim().is_empty()),
        verify_lint: merged.verify.lint.clone().filter(|c| !c.trim().is_empty()),
        verify_install: merged.verify.install.as_ref().map(|c| c.trim().to_string()),
        no_verify: flags.no_verify.unwrap_or(false),
        approve_plan: flags.approve_plan.or(merged.approve_plan).unwrap_or(false),
        verify_timeout: Duration::from_secs(merged.verify.timeout_secs.unwrap_or(900)),
        verify_cache: verify_cache(merged.verify.cache)?,
        verify_after_write: merged.verify.after_write.unwrap_or(false),
        verify_protect_tests: merged.verify.protect_tests.unwrap_or(false),
        unit_attempts: merged.limits.unit_attempts.unwrap_or(3),
        candidates: flags.attempts.or(merged.limits.candidates).unwrap_or(1),
        plan_attempts: merged.limits.plan_attempts.unwrap_or(3),
        merge_attempts: merged.limits.merge_attempts.unwrap_or(2),
        bash_timeout: Duration::from_secs(merged.limits.bash_timeout_secs.unwrap_or(120)),
        max_parallel_verify: merged
            .limits
            .max_parallel_verify
            .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)),
        max_units: merged.limits.max_units.map_or(DEFAULT_MAX_UNITS, |n| n as usize),
        scouts: merged.limits.scouts.map(|n| n as usize),
        rewrites_may_drop: merged.limits.rewrites_may_drop.unwrap_or(true),
        roles,
        endpoint,
        compaction,
        prices,
        sandbox: SandboxSettings {
            enabled: flags.sandbox.or(merged.sandbox.enabled).unwrap_or(true),
            network: merged.sandbox.network.unwrap_or(false),
            writable: merged
                .sandbox
                .writable
                .iter()
                .flatten()
                .map(|p| expand_home(p))
                .collect(),
            env: merged.sandbox.env.clone().unwrap_or_default(),
        },
        notify: orchestrator_notify::NotifySettings {
            desktop: merged.notify.desktop.map(DesktopFile::mode).unwrap_or_default(),
            desktop_command: merged.notify.desktop_command.as_deref().map(expand_home),
            webhook: merged.notify.webhook.clone().filter(|url| !url.trim().is_empty()),
        },
        role_prompts: BTreeMap::new(),
        hooks: crate::hooks::resolve(layers, &merged.hooks)?,
        mcp: BTreeMap::new(),
        specialists: resolve_specialists(&merged, flags.model.as_deref(), model.as_deref())?,
        review_extra: merged.review.extra.clone().unwrap_or_default(),
        review_extra_master: merged.review.extra_master.clone().unwrap_or_default(),
        workers: flags.workers.unwrap_or_default(),
        remote: flags.remote.clone().filter(|r| !r.trim().is_empty()),
    };
    check_extra_reviewers(&config)?;
    check_workers(&config)?;
    let sandbox_on = config.sandbox.enabled;
    let mut config = config;
    config.mcp = resolve_mcp(&merged, sandbox_on)?;
    check_role_mcp(&config)?;
    check(&config)?;
    Ok(config)
}

/// The most `[mcp.<name>]` servers a config may define: each is a process for the whole mission.
pub const MAX_MCP_SERVERS: usize = 16;
/// The longest MCP server name: it prefixes each of its tools' names (`mcp__<name>__<tool>`), which
/// model APIs cap at 64 characters.
pub const MAX_MCP_NAME: usize = 24;
/// A call to an MCP server's tool when `timeout_secs` is not set.
pub const DEFAULT_MCP_TIMEOUT: Duration = Duration::from_secs(60);
/// An MCP server's start (handshake and tool listing) when `startup_timeout_secs` is not set.
pub const DEFAULT_MCP_STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Checks every `[mcp.<name>]` server; each error names the server, the file and what to change.
fn resolve_mcp(merged: &FileConfig, sandbox_on: bool) -> Result<BTreeMap<String, McpServerSettings>> {
    if merged.mcp.len() > MAX_MCP_SERVERS {
        return Err(EngineError::Usage(format!(
            "{} [mcp.*] servers are configured; at most {MAX_MCP_SERVERS} are allowed.",
            merged.mcp.len()
        )));
    }
    merged
        .mcp
        .iter()
        .map(|(name, file)| Ok((name.clone(), resolve_mcp_server(name, file, sandbox_on)?)))
        .collect()
}

fn resolve_mcp_server(name: &str, file: &McpFile, sandbox_on: bool) -> Result<McpServerSettings> {
    let source = file
        .source
        .as_ref()
        .map_or_else(|| "the config".to_string(), |p| p.display().to_string());
    let bad = |what: String| EngineError::Usage(format!("[mcp.{name}] in {source}: {what}"));
    let name_ok = !name.is_empty()
        && name.len() <= MAX_MCP_NAME
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !name_ok {
        return Err(bad(format!(
            "the server's name must be 1 to {MAX_MCP_NAME} letters, digits, `_` or `-` (it begins its tools' names)"
        )));
    }
    let transport = match &file.url {
        Some(url) => McpTransport::Http(resolve_mcp_http(url, file, &bad)?),
        None => McpTransport::Stdio(resolve_mcp_stdio(file, sandbox_on, &bad)?),
    };
    let timeout_secs = file.timeout_secs.unwrap_or(DEFAULT_MCP_TIMEOUT.as_secs());
    if !(1..=3600).contains(&timeout_secs) {
        return Err(bad(format!(
            "`timeout_secs` is {timeout_secs}; one call's time must be between 1 and 3600 seconds"
        )));
    }
    let startup_secs = file
        .startup_timeout_secs
        .unwrap_or(DEFAULT_MCP_STARTUP_TIMEOUT.as_secs());
    if !(1..=600).contains(&startup_secs) {
        return Err(bad(format!(
            "`startup_timeout_secs` is {startup_secs}; the server's start must be given between 1 and 600 seconds"
        )));
    }
    if file.tools.as_ref().is_some_and(Vec::is_empty) {
        return Err(bad(
            "`tools = []` offers nothing; list the tools to offer, or leave `tools` out for all".into(),
        ));
    }
    Ok(McpServerSettings {
        transport,
        timeout: Duration::from_secs(timeout_secs),
        startup_timeout: Duration::from_secs(startup_secs),
        tools: file.tools.clone(),
        source,
    })
}

fn resolve_mcp_stdio(
    file: &McpFile,
    sandbox_on: bool,
    bad: &dyn Fn(String) -> EngineError,
) -> Result<McpStdio> {
    if file.bearer_token_env_var.is_some() || file.http_headers.is_some() || file.env_http_headers.is_some() {
        return Err(bad(
            "`bearer_token_env_var`, `http_headers` and `env_http_headers` apply only to a `url` server"
                .into(),
        ));
    }
    let command = file.command.clone().unwrap_or_default();
    match command.first() {
        None => {
            return Err(bad(
                "set `command = [\"program\", \"arg\", ...]` (a program that serves MCP on stdio) or `url = \"https://…\"` \
                 (a streamable-HTTP server)"
                    .into(),
            ))
        }
        Some(program) if program.trim().is_empty() => {
            return Err(bad("the first element of `command` (the program) is empty".into()))
        }
        Some(_) => {}
    }
    Ok(McpStdio {
        command,
        env: file.env.clone().unwrap_or_default(),
        cwd: file
            .cwd
            .as_deref()
            .filter(|c| !c.trim().is_empty())
            .map(expand_home),
        sandbox: file.sandbox.unwrap_or(sandbox_on),
        network: file.network.unwrap_or(false),
    })
}

/// An HTTP server's address and headers. The variables they name are read when the server is
/// reached, not here: a config is checked (`roles show`, `--dry-run`) where they may not be set.
fn resolve_mcp_http(url: &str, file: &McpFile, bad: &dyn Fn(String) -> EngineError) -> Result<McpHttp> {
    if file.command.is_some() {
        return Err(bad(
            "set either `command` (a stdio server) or `url` (an HTTP server), not both".into(),
        ));
    }
    let stdio_only = [
        ("env", file.env.is_some()),
        ("cwd", file.cwd.is_some()),
        ("sandbox", file.sandbox.is_some()),
        ("network", file.network.is_some()),
    ];
    if let Some((key, _)) = stdio_only.iter().find(|(_, set)| *set) {
        return Err(bad(format!(
            "`{key}` applies only to a `command` server; an HTTP server runs elsewhere and is only called"
        )));
    }
    let parsed = reqwest::Url::parse(url.trim()).map_err(|e| {
        bad(format!(
            "`url = {url:?}` is not a URL ({e}); write e.g. `url = \"https://mcp.example.com/mcp\"`"
        ))
    })?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none_or(str::is_empty) {
        return Err(bad(format!(
            "`url = {url:?}` must be an http:// or https:// address with a host"
        )));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(bad(
            "`url` carries a user name or password, which would be written to the mission's logs; put the \
             token in an environment variable and name it in `bearer_token_env_var` (or `env_http_headers`)"
                .into(),
        ));
    }
    let headers = file.http_headers.clone().unwrap_or_default();
    let env_headers = file.env_http_headers.clone().unwrap_or_default();
    for name in headers.keys().chain(env_headers.keys()) {
        if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(bad(format!("`{name}` is not a valid HTTP header name")));
        }
        if RESERVED_MCP_HEADERS.iter().any(|r| r.eq_ignore_ascii_case(name)) {
            return Err(bad(format!(
                "the header `{name}` is set by the MCP client itself (use `bearer_token_env_var` for a token)"
            )));
        }
    }
    for (name, value) in &headers {
        if reqwest::header::HeaderValue::from_str(value).is_err() {
            return Err(bad(format!(
                "the value of the header `{name}` is not a valid HTTP header value"
            )));
        }
    }
    let variables = file.bearer_token_env_var.iter().chain(env_headers.values());
    if let Some(var) = variables.into_iter().find(|v| !is_env_name(v)) {
        return Err(bad(format!(
            "`{var}` is not an environment variable's name (letters, digits and `_`, not starting with a digit)"
        )));
    }
    Ok(McpHttp {
        url: parsed.to_string(),
        bearer_token_env_var: file.bearer_token_env_var.clone(),
        headers,
        env_headers,
    })
}

/// Headers the MCP client sets itself: configuring them would break the protocol or the session.
const RESERVED_MCP_HEADERS: &[&str] = &[
    "authorization",
    "accept",
    "content-type",
    "mcp-session-id",
    "mcp-protocol-version",
    "last-event-id",
    "host",
    "content-length",
];

fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Every server a role lists is configured, and the sessions can use it.
fn check_role_mcp(config: &Config) -> Result<()> {
    let roles = config
        .roles
        .iter()
        .map(|(role, settings)| (role.to_string(), settings));
    let specialists = config
        .specialists
        .iter()
        .map(|(name, s)| (name.clone(), &s.settings));
    for (role, settings) in roles.chain(specialists) {
        if config.provider == Provider::OpenCode && !settings.mcp.is_empty() {
            return Err(EngineError::Usage(format!(
                "`[roles.{role}] mcp` lists MCP servers, which only the engine's own sessions are offered; with \
                 provider opencode, add them to OpenCode's config instead (its `mcp` section) and remove the list"
            )));
        }
        if let Some(unknown) = settings.mcp.iter().find(|name| !config.mcp.contains_key(*name)) {
            let known: Vec<&str> = config.mcp.keys().map(String::as_str).collect();
            let known = if known.is_empty() {
                "none is configured".to_string()
            } else {
                format!("configured: {}", known.join(", "))
            };
            return Err(EngineError::Usage(format!(
                "`[roles.{role}] mcp` lists `{unknown}`, which is not an [mcp.{unknown}] server ({known}); \
                 define it or remove it from the list"
            )));
        }
    }
    Ok(())
}

/// The settings behind `profile = "small"`: what small local models (a few billion parameters, one
/// llama.cpp sequence on a CPU) need to get through a mission. Fewer tools per role (no `spawn` for
/// workers: a forced first call must be real work; only looking for planners and reviewers), one
/// session at a time (a local server evaluates one prompt at a time and keeps only that one's cache),
/// the pre-scan instead of scouts, short replies and more planning attempts, and the tests run after
/// each change a worker makes (it sees what broke while it still works), and existing tests kept as
/// they are (a small model makes them pass by changing what they expect). Every value can be
/// overridden in the config files, which lie over it.
pub const SMALL_PROFILE: &str = r#"
max_parallel = 1
max_depth = 0

[limits]
scouts = 0
plan_attempts = 5
rewrites_may_drop = false

[verify]
after_write = true
protect_tests = true

[roles.planner]
tools = ["read", "list", "grep"]
max_tokens = 1024

[roles.worker]
tools = ["read", "list", "grep", "insert", "write", "edit", "bash"]
max_turns = 30
max_tokens = 2048

[roles.reviewer]
tools = ["read", "list", "grep"]
max_turns = 8
max_tokens = 1024

[roles.master_reviewer]
tools = ["read", "list", "grep"]
max_turns = 10
max_tokens = 1024

[roles.conflict_resolver]
tools = ["read", "list", "grep", "insert", "write", "edit"]
max_tokens = 2048
"#;

/// The preset layer a profile name stands for.
pub fn profile_layer(name: &str) -> Result<FileConfig> {
    match name {
        "small" => toml::from_str(SMALL_PROFILE)
            .map_err(|e| EngineError::Other(format!("the built-in small profile does not parse: {e}"))),
        "default" => Ok(FileConfig::default()),
        other => Err(EngineError::Usage(format!(
            "unknown profile `{other}` in config; profiles are: small (small local models), default"
        ))),
    }
}

fn resolve_endpoint(file: &EndpointFile, max_parallel: usize) -> EndpointSettings {
    let secs = |v: Option<u64>, default: u64| Duration::from_secs(v.unwrap_or(default));
    EndpointSettings {
        connect_timeout: secs(file.connect_timeout_secs, 10),
        first_byte_timeout: secs(file.first_byte_timeout_secs, 300),
        idle_timeout: secs(file.idle_timeout_secs, 120),
        request_timeout: secs(file.request_timeout_secs, 600),
        max_reply_bytes: file
            .max_reply_bytes
            .map_or(8 << 20, |v| usize::try_from(v).unwrap_or(usize::MAX)),
        // By default the governor lets every session through; it only narrows on 429s.
        max_concurrency: file.max_concurrency.unwrap_or(max_parallel),
        requests_per_minute: file.requests_per_minute,
        tokens_per_minute: file.tokens_per_minute,
        max_wait: secs(file.max_wait_secs, 900),
        output: file.output.unwrap_or(match file.tool_choice {
            Some(false) => OutputMode::Off,
            _ => OutputMode::Auto,
        }),
        cut_loops: file.cut_loops.unwrap_or(true),
        prompt_cache: file.prompt_cache.unwrap_or(true),
    }
}

fn default_provider() -> Provider {
    let has = |name: &str| std::env::var_os(name).is_some_and(|v| !v.is_empty());
    if has("ANTHROPIC_API_KEY") && !has("OPENAI_API_KEY") {
        Provider::Anthropic
    } else {
        Provider::OpenAi
    }
}

fn resolve_roles(
    merged: &FileConfig,
    flag_model: Option<&str>,
    default_model: Option<&str>,
) -> Result<BTreeMap<Role, RoleSettings>> {
    if let Some(unknown) = merged
        .roles
        .keys()
        .find(|k| !Role::ALL.iter().any(|r| r.as_str() == k.as_str()))
    {
        let known: Vec<_> = Role::ALL.iter().map(|r| r.as_str()).collect();
        return Err(EngineError::Usage(format!(
            "unknown role `[roles.{unknown}]` in config; roles are: {}",
            known.join(", ")
        )));
    }
    let mut roles = BTreeMap::new();
    for role in Role::ALL {
        let file = merged.roles.get(role.as_str()).cloned().unwrap_or_default();
        if let Some(unknown) = file
            .tools
            .iter()
            .flatten()
            .find(|t| !ROLE_TOOLS.contains(&t.as_str()))
        {
            return Err(EngineError::Usage(format!(
                "unknown tool `{unknown}` in `[roles.{role}] tools`; tools are: {}",
                ROLE_TOOLS.join(", ")
            )));
        }
        roles.insert(
            role,
            role_settings(merged, file, role_defaults(role), flag_model, default_model)?,
        );
    }
    Ok(roles)
}

/// Each specialist's settings: its kind's `[roles.<kind>]` with its own file's front matter over them.
fn resolve_specialists(
    merged: &FileConfig,
    flag_model: Option<&str>,
    default_model: Option<&str>,
) -> Result<BTreeMap<String, Specialist>> {
    let mut specialists = BTreeMap::new();
    for (name, file) in &merged.specialists {
        let mut layered = FileConfig::default();
        if let Some(kind) = merged.roles.get(file.kind.as_str()) {
            layered.roles.insert(name.clone(), kind.clone());
        }
        let own = FileConfig {
            roles: BTreeMap::from([(name.clone(), file.settings.clone())]),
            ..FileConfig::default()
        };
        merge(&mut layered, own);
        let settings_file = layered.roles.remove(name).unwrap_or_default();
        let settings = role_settings(
            merged,
            settings_file,
            role_defaults(file.kind),
            flag_model,
            default_model,
        )?;
        let specialist = Specialist {
            name: name.clone(),
            kind: file.kind,
            settings,
            prompt: file.prompt.clone(),
        };
        specialists.insert(name.clone(), specialist);
    }
    Ok(specialists)
}

/// `[review] extra` and `extra_master` name specialists of the right kind, each once, a few at most:
/// refused before the mission starts, not when the first unit is reviewed.
fn check_extra_reviewers(config: &Config) -> Result<()> {
    let lists = [
        ("extra", &config.review_extra, Role::Reviewer),
        ("extra_master", &config.review_extra_master, Role::MasterReviewer),
    ];
    for (key, names, kind) in lists {
        let bad = |why: String| Err(EngineError::Usage(format!("`[review] {key}` {why}")));
        if names.len() > MAX_EXTRA_REVIEWERS {
            return bad(format!(
                "names {} specialists; at most {MAX_EXTRA_REVIEWERS} may judge the work",
                names.len()
            ));
        }
        for (i, name) in names.iter().enumerate() {
            if names[..i].contains(name) {
                return bad(format!("names `{name}` twice; name each specialist once"));
            }
            match config.specialists.get(name) {
                None => {
                    return bad(format!(
                        "names `{name}`, but there is no specialist file .orchestrator/roles/{name}.md. \
                         Create it with `kind: {kind}` in its front matter and the reviewer's prompt as its \
                         body, or remove the name (README.md, section \"Roles as files\")"
                    ))
                }
                Some(found) if found.kind != kind => {
                    return bad(format!(
                        "names `{name}`, but {} is of `kind: {}`; `[review] {key}` takes `kind: {kind}` \
                         specialists{}",
                        found.prompt.path,
                        found.kind,
                        match kind {
                            Role::Reviewer => " (master reviewers go in `extra_master`)",
                            _ => " (unit reviewers go in `extra`)",
                        }
                    ))
                }
                Some(_) => {}
            }
        }
    }
    Ok(())
}

/// One role's settings from its merged `[roles.<role>]` file, its defaults and the mission's model.
fn role_settings(
    merged: &FileConfig,
    file: RoleFile,
    (turns, tokens): (u32, u32),
    flag_model: Option<&str>,
    default_model: Option<&str>,
) -> Result<RoleSettings> {
    // `--model` names one model for the whole mission, so it beats per-role models from files.
    let model = flag_model
        .map(str::to_string)
        .or(file.model)
        .or(default_model.map(str::to_string))
        .ok_or_else(|| {
            EngineError::Usage(
                "no model is configured. Set ORCHESTRATOR_MODEL (e.g. ORCHESTRATOR_MODEL=gpt-4.1), pass --model, \
                 or set `model = \"...\"` in orchestrator.toml."
                    .into(),
            )
        })?;
    let model_file = merged.models.get(&model).cloned().unwrap_or_default();
    let context_window = model_file
        .context_window
        .unwrap_or_else(|| context_window_for(&model));
    Ok(RoleSettings {
        model,
        max_turns: file.max_turns.unwrap_or(turns),
        max_tokens: file.max_tokens.unwrap_or(tokens),
        temperature: file.temperature,
        budget_tokens: file.budget_tokens,
        tools: file.tools,
        mcp: file.mcp.unwrap_or_default(),
        context_window,
        compact_at: model_file.compact_at.unwrap_or(0.8),
    })
}

/// Turn and output-token limits per role: scouts and reviewers are short, workers get room.
fn role_defaults(role: Role) -> (u32, u32) {
    match role {
        Role::Scout => (12, 4096),
        Role::Planner => (20, 8192),
        Role::Worker => (60, 8192),
        Role::Reviewer => (16, 4096),
        Role::MasterReviewer => (24, 4096),
        Role::ConflictResolver => (30, 8192),
    }
}

/// Sessions in flight at most: each is a worktree, a model stream and its tools; far past this a
/// machine runs out of file descriptors and the endpoint of rate limit long before.
pub const MAX_PARALLEL: u64 = 256;
/// A budget smaller than this cannot pay for one model call with the mission's context.
pub const MIN_BUDGET_TOKENS: u64 = 1_000;
/// The mission's token budget when none is given: a bound on what a looping model can spend (about
/// $25–$100 at today's large-model prices), raised with `--budget-tokens` or `budget_tokens`.
pub const DEFAULT_BUDGET_TOKENS: u64 = 10_000_000;
/// The units a mission may hold when `limits.max_units` is not set.
pub const DEFAULT_MAX_UNITS: usize = 200;

/// One numeric setting's bounds: what people call it on the command line and in the files, how to
/// read it from a layer or the flags, and what it means (for the message).
struct Bound {
    flag: Option<&'static str>,
    key: &'static str,
    range: std::ops::RangeInclusive<u64>,
    meaning: &'static str,
    from_file: fn(&FileConfig) -> Option<u64>,
    from_flags: fn(&MissionSettings) -> Option<u64>,
}

fn no_flag(_: &MissionSettings) -> Option<u64> {
    None
}

const BOUNDS: &[Bound] = &[
    Bound {
        flag: Some("--max-parallel"),
        key: "max_parallel",
        range: 1..=MAX_PARALLEL,
        meaning: "sessions in flight at once",
        from_file: |f| f.max_parallel.map(|v| v as u64),
        from_flags: |o| o.max_parallel.map(|v| v as u64),
    },
    Bound {
        flag: Some("--max-depth"),
        key: "max_depth",
        range: 0..=8,
        meaning: "levels of spawned sub-units",
        from_file: |f| f.max_depth.map(u64::from),
        from_flags: |o| o.max_depth.map(u64::from),
    },
    Bound {
        flag: Some("--rounds"),
        key: "rounds",
        range: 1..=50,
        meaning: "verification rounds",
        from_file: |f| f.rounds.map(u64::from),
        from_flags: |o| o.rounds.map(u64::from),
    },
    Bound {
        flag: Some("--budget-tokens"),
        key: "budget_tokens",
        range: MIN_BUDGET_TOKENS..=u64::MAX,
        meaning: "tokens for the whole mission",
        from_file: |f| f.budget_tokens,
        from_flags: |o| o.budget_tokens,
    },
    Bound {
        flag: None,
        key: "limits.scouts",
        range: 0..=4,
        meaning: "scouts in discovery (0: the pre-scan alone)",
        from_file: |f| f.limits.scouts.map(u64::from),
        from_flags: no_flag,
    },
    Bound {
        flag: None,
        key: "limits.max_units",
        range: 1..=10_000,
        meaning: "units in the whole mission",
        from_file: |f| f.limits.max_units.map(u64::from),
        from_flags: no_flag,
    },
    Bound {
        flag: None,
        key: "limits.unit_attempts",
        range: 1..=20,
        meaning: "attempts per unit",
        from_file: |f| f.limits.unit_attempts.map(u64::from),
        from_flags: no_flag,
    },
    Bound {
        flag: Some("--attempts"),
        key: "limits.candidates",
        range: 1..=crate::plan::MAX_CANDIDATES as u64,
        meaning: "workers building each unit side by side (best of N)",
        from_file: |f| f.limits.candidates.map(u64::from),
        from_flags: |o| o.attempts.map(u64::from),
    },
    Bound {
        flag: None,
        key: "limits.plan_attempts",
        range: 1..=20,
        meaning: "planning attempts",
        from_file: |f| f.limits.plan_attempts.map(u64::from),
        from_flags: no_flag,
    },
    Bound {
        flag: None,
        key: "limits.merge_attempts",
        range: 1..=20,
        meaning: "conflict-resolver attempts per merge",
        from_file: |f| f.limits.merge_attempts.map(u64::from),
        from_flags: no_flag,
    },
    Bound {
        flag: None,
        key: "limits.max_parallel_verify",
        range: 1..=MAX_PARALLEL,
        meaning: "builds and tests at once",
        from_file: |f| f.limits.max_parallel_verify.map(|v| v as u64),
        from_flags: no_flag,
    },
    Bound {
        flag: None,
        key: "endpoint.request_timeout_secs",
        range: 1..=86_400,
        meaning: "seconds one model request may take",
        from_file: |f| f.endpoint.request_timeout_secs,
        from_flags: no_flag,
    },
    Bound {
        flag: None,
        key: "endpoint.max_reply_bytes",
        range: 65_536..=1 << 30,
        meaning: "bytes of one model reply",
        from_file: |f| f.endpoint.max_reply_bytes,
        from_flags: no_flag,
    },
    Bound {
        flag: None,
        key: "endpoint.max_concurrency",
        range: 1..=1024,
        meaning: "model requests in flight",
        from_file: |f| f.endpoint.max_concurrency.map(|v| v as u64),
        from_flags: no_flag,
    },
];

/// The allowed range of a bounded number and what it counts, by its config key (`max_parallel`,
/// `rounds`, …): for front ends that take the number in another form (the HTTP API's request fields),
/// so that they refuse exactly what the config and the flags refuse.
pub fn bound_of(key: &str) -> Option<(std::ops::RangeInclusive<u64>, &'static str)> {
    BOUNDS
        .iter()
        .find(|bound| bound.key == key)
        .map(|bound| (bound.range.clone(), bound.meaning))
}

/// Every bounded number, checked where it was set — the flag, or the last file that set it — so the
/// message names what to change, before anything starts.
fn check_bounds(layers: &[FileConfig], flags: &MissionSettings) -> Result<()> {
    for bound in BOUNDS {
        let from_flag = (bound.from_flags)(flags).map(|v| (v, bound.flag.unwrap_or(bound.key).to_string()));
        let from_file = || {
            layers.iter().rev().find_map(|layer| {
                let value = (bound.from_file)(layer)?;
                let place = match &layer.source {
                    Some(path) => format!("`{}` in {}", bound.key, path.display()),
                    None => format!("`{}` in the config", bound.key),
                };
                Some((value, place))
            })
        };
        let Some((value, place)) = from_flag.or_else(from_file) else {
            continue;
        };
        if !bound.range.contains(&value) {
            let (low, high) = (bound.range.start(), bound.range.end());
            let allowed = if *high == u64::MAX {
                format!("at least {low}")
            } else {
                format!("between {low} and {high}")
            };
            return Err(EngineError::Usage(format!(
                "{place} is {value}; {} must be {allowed}.",
                bound.meaning
            )));
        }
    }
    for layer in layers {
        for (role, file) in &layer.roles {
            // A role's share may be small (a scout's few calls), but 0 would stop the mission at once.
            if file.budget_tokens == Some(0) {
                let place = layer
                    .source
                    .as_ref()
                    .map(|p| format!(" in {}", p.display()))
                    .unwrap_or_default();
                return Err(EngineError::Usage(format!(
                    "`roles.{role}.budget_tokens`{place} is 0; a role's budget must be at least 1 (leave it out for no cap)."
                )));
            }
        }
    }
    Ok(())
}

fn check(config: &Config) -> Result<()> {
    let bad = |m: &str| Err(EngineError::Usage(m.to_string()));
    if !(0.05..=1.0).contains(&config.compaction.keep_recent) {
        return bad("compaction.keep_recent must be between 0.05 and 1.0");
    }
    for (role, settings) in &config.roles {
        if !(0.1..=1.0).contains(&settings.compact_at) || settings.context_window < 1024 {
            return Err(EngineError::Usage(format!(
                "the {role} model `{}` needs context_window ≥ 1024 and compact_at between 0.1 and 1.0",
                settings.model
            )));
        }
    }
    config
        .prices
        .validate()
        .map_err(|e| EngineError::Usage(format!("prices: {e}")))?;
    if let Some(url) = &config.notify.webhook {
        orchestrator_notify::check_webhook(url)
            .map_err(|e| EngineError::Usage(format!("[notify] webhook: {e}")))?;
    }
    Ok(())
}

fn merge(into: &mut FileConfig, layer: FileConfig) {
    macro_rules! take {
        ($($field:ident).+) => {
            if layer.$($field).+.is_some() {
                into.$($field).+ = layer.$($field).+;
            }
        };
    }
    take!(profile);
    take!(provider);
    take!(model);
    take!(max_parallel);
    take!(max_depth);
    take!(rounds);
    take!(budget_tokens);
    take!(approve_plan);
    take!(verify.build);
    take!(verify.test);
    take!(verify.lint);
    take!(verify.install);
    take!(verify.timeout_secs);
    take!(verify.cache);
    take!(verify.after_write);
    take!(verify.protect_tests);
    take!(limits.unit_attempts);
    take!(limits.plan_attempts);
    take!(limits.merge_attempts);
    take!(limits.bash_timeout_secs);
    take!(limits.max_parallel_verify);
    take!(limits.max_units);
    take!(limits.scouts);
    take!(limits.rewrites_may_drop);
    take!(limits.candidates);
    take!(endpoint.connect_timeout_secs);
    take!(endpoint.first_byte_timeout_secs);
    take!(endpoint.idle_timeout_secs);
    take!(endpoint.request_timeout_secs);
    take!(endpoint.max_reply_bytes);
    take!(endpoint.cut_loops);
    take!(endpoint.prompt_cache);
    take!(endpoint.max_concurrency);
    take!(endpoint.requests_per_minute);
    take!(endpoint.tokens_per_minute);
    take!(endpoint.max_wait_secs);
    take!(endpoint.output);
    take!(endpoint.tool_choice);
    take!(compaction.model);
    take!(compaction.keep_recent);
    take!(compaction.tool_output_chars);
    take!(sandbox.enabled);
    take!(sandbox.network);
    take!(sandbox.writable);
    take!(sandbox.env);
    take!(notify.desktop);
    take!(notify.desktop_command);
    take!(notify.webhook);
    take!(review.extra);
    take!(review.extra_master);
    into.specialists.extend(layer.specialists);
    crate::hooks::merge_layer(&mut into.hooks, layer.hooks);
    for (name, model) in layer.models {
        let slot = into.models.entry(name).or_default();
        if model.context_window.is_some() {
            slot.context_window = model.context_window;
        }
        if model.compact_at.is_some() {
            slot.compact_at = model.compact_at;
        }
    }
    into.prices.merge(layer.prices);
    // A server is defined whole by the last layer that names it: half of a stdio server from one file
    // and half from another would run something neither file says.
    into.mcp.extend(layer.mcp.into_iter().map(|(name, mut server)| {
        server.source = layer.source.clone();
        (name, server)
    }));
    for (name, role) in layer.roles {
        let slot = into.roles.entry(name).or_default();
        if role.model.is_some() {
            slot.model = role.model;
        }
        if role.max_turns.is_some() {
            slot.max_turns = role.max_turns;
        }
        if role.max_tokens.is_some() {
            slot.max_tokens = role.max_tokens;
        }
        if role.temperature.is_some() {
            slot.temperature = role.temperature;
        }
        if role.budget_tokens.is_some() {
            slot.budget_tokens = role.budget_tokens;
        }
        if role.tools.is_some() {
            slot.tools = role.tools;
        }
        if role.mcp.is_some() {
            slot.mcp = role.mcp;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> FileConfig {
        toml::from_str(text).expect("valid test config")
    }

    #[test]
    fn later_layers_and_flags_win() {
        let user = parse("model = \"a\"\nmax_parallel = 4\n[roles.worker]\nmax_turns = 5\n");
        let repo = parse("max_parallel = 6\n[roles.reviewer]\nmodel = \"cheap\"\n");
        let flags = MissionSettings {
            rounds: Some(7),
            ..Default::default()
        };
        let config = resolve(&[user, repo], &flags, None).unwrap();
        assert_eq!(config.max_parallel, 6);
        assert_eq!(config.rounds, 7);
        assert_eq!(config.role(Role::Worker).max_turns, 5);
        assert_eq!(config.role(Role::Worker).model, "a");
        assert_eq!(config.role(Role::Reviewer).model, "cheap");
        assert!(!config.approve_plan, "off unless asked for");
        let asked = parse("approve_plan = true\n");
        let config = resolve(&[parse("model = \"m\"\n"), asked.clone()], &flags, None).unwrap();
        assert!(config.approve_plan, "from a file");
        let off = MissionSettings {
            approve_plan: Some(false),
            ..flags
        };
        assert!(
            !resolve(&[asked], &off, Some("m".into())).unwrap().approve_plan,
            "the flag wins"
        );
    }

    #[test]
    fn out_of_range_values_name_where_they_were_set() {
        let flags = |max_parallel| MissionSettings {
            max_parallel: Some(max_parallel),
            model: Some("m".into()),
            ..Default::default()
        };
        let err = resolve(&[], &flags(usize::MAX), None).unwrap_err().to_string();
        assert!(
            err.starts_with("--max-parallel is 18446744073709551615;"),
            "{err}"
        );
        assert!(err.contains("between 1 and 256"), "{err}");
        assert!(resolve(&[], &flags(100_000), None).is_err());
        assert!(resolve(&[], &flags(256), None).is_ok());

        let mut user = parse("model = \"m\"\nmax_parallel = 0\n");
        user.source = Some(PathBuf::from("/home/me/.config/orchestrator/config.toml"));
        let err = resolve(&[user.clone()], &MissionSettings::default(), None)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "`max_parallel` in /home/me/.config/orchestrator/config.toml is 0; sessions in flight at once must be between 1 and 256."
        );
        // The flag wins over the file, and so does a later file.
        assert!(resolve(&[user.clone()], &flags(4), None).is_ok());
        let mut repo = parse("max_parallel = 3\n");
        repo.source = Some(PathBuf::from("orchestrator.toml"));
        assert!(resolve(&[user, repo], &MissionSettings::default(), None).is_ok());

        let defaults = resolve(
            &[],
            &MissionSettings {
                model: Some("m".into()),
                ..Default::default()
            },
            None,
        )
        .unwrap();
        assert_eq!(
            defaults.budget_tokens,
            Some(DEFAULT_BUDGET_TOKENS),
            "never unbounded"
        );
        assert_eq!(defaults.max_units, DEFAULT_MAX_UNITS);

        let budget = MissionSettings {
            budget_tokens: Some(0),
            model: Some("m".into()),
            ..Default::default()
        };
        let err = resolve(&[], &budget, None).unwrap_err().to_string();
        assert!(
            err.starts_with("--budget-tokens is 0;") && err.contains("at least 1000"),
            "{err}"
        );
        let err = resolve(
            &[parse("model = \"m\"\n[limits]\nunit_attempts = 0\n")],
            &MissionSettings::default(),
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("`limits.unit_attempts` in the config is 0;"),
            "{err}"
        );
        let err = resolve(
            &[parse("model = \"m\"\n[roles.worker]\nbudget_tokens = 0\n")],
            &MissionSettings::default(),
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("roles.worker.budget_tokens"), "{err}");
    }

    /// Every TOML block README.md shows parses and resolves: what users copy works.
    #[test]
    fn the_readme_config_examples_are_valid() {
        let readme = include_str!("../../../README.md");
        let blocks: Vec<&str> = readme
            .split("```toml\n")
            .skip(1)
            .filter_map(|rest| rest.split("\n```").next())
            .collect();
        assert!(blocks.len() >= 3, "README has its config examples");
        for block in blocks {
            let mut layer: FileConfig =
                toml::from_str(block).unwrap_or_else(|e| panic!("README block does not parse: {e}\n{block}"));
            layer.model.get_or_insert_with(|| "m".into());
            // The specialists the examples name, as their role files would define them.
            let specialist = |kind: Role| SpecialistFile {
                kind,
                settings: RoleFile::default(),
                prompt: RolePrompt {
                    path: String::new(),
                    prompt: "Review.".into(),
                },
            };
            let files = FileConfig {
                specialists: BTreeMap::from([
                    ("security-reviewer".to_string(), specialist(Role::Reviewer)),
                    ("docs-audit".to_string(), specialist(Role::MasterReviewer)),
                ]),
                ..FileConfig::default()
            };
            resolve(&[layer, files], &MissionSettings::default(), None)
                .unwrap_or_else(|e| panic!("README block does not resolve: {e}\n{block}"));
        }
    }

    #[test]
    fn the_small_profile_lies_under_what_the_files_say() {
        let none = MissionSettings::default();
        let config = resolve(&[parse("model = \"m\"\nprofile = \"small\"\n")], &none, None).unwrap();
        assert_eq!(config.max_parallel, 1);
        assert_eq!(config.scouts, Some(0));
        assert_eq!(config.plan_attempts, 5);
        assert!(!config.rewrites_may_drop);
        assert!(config.verify_after_write && config.verify_protect_tests);
        let worker = config.role(Role::Worker);
        assert_eq!(worker.max_tokens, 2048);
        let tools = worker.tools.clone().unwrap_or_default();
        assert!(tools.iter().any(|t| t == "write") && !tools.iter().any(|t| t == "spawn"));
        assert!(!config
            .role(Role::Planner)
            .tools
            .clone()
            .unwrap_or_default()
            .iter()
            .any(|t| t == "bash"));
        // A file naming the profile in the user's config and overriding some of it in the repo's.
        let user = parse("model = \"m\"\nprofile = \"small\"\n");
        let repo = parse("max_parallel = 2\n[roles.worker]\ntools = [\"read\", \"write\", \"spawn\"]\n");
        let config = resolve(&[user, repo], &none, None).unwrap();
        assert_eq!(config.max_parallel, 2);
        assert_eq!(
            config.role(Role::Worker).max_tokens,
            2048,
            "the rest of the profile holds"
        );
        assert_eq!(
            config.role(Role::Worker).tools.as_deref(),
            Some(&["read".to_string(), "write".into(), "spawn".into()][..])
        );
        // Without a profile, roles are offered every tool.
        let plain = resolve(&[parse("model = \"m\"\n")], &none, None).unwrap();
        assert!(plain.role(Role::Worker).tools.is_none());
    }

    #[test]
    fn an_unknown_profile_or_tool_is_named() {
        let none = MissionSettings::default();
        let err = resolve(&[parse("model = \"m\"\nprofile = \"tiny\"\n")], &none, None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("unknown profile `tiny`") && err.contains("small"),
            "{err}"
        );
        let err = resolve(
            &[parse(
                "model = \"m\"\n[roles.worker]\ntools = [\"read\", \"shell\"]\n",
            )],
            &none,
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("unknown tool `shell` in `[roles.worker] tools`") && err.contains("bash"),
            "{err}"
        );
    }

    #[test]
    fn the_output_mode_is_auto_unless_set_and_the_old_switch_still_turns_it_off() {
        let endpoint = |text: &str| {
            let file = parse(&format!("model = \"m\"\n[endpoint]\n{text}\n"));
            resolve(&[file], &MissionSettings::default(), None)
                .unwrap()
                .endpoint
                .output
        };
        assert_eq!(endpoint(""), OutputMode::Auto);
        assert_eq!(endpoint("output = \"json_schema\""), OutputMode::JsonSchema);
        assert_eq!(endpoint("tool_choice = false"), OutputMode::Off);
        assert_eq!(
            endpoint("tool_choice = false\noutput = \"tool_choice\""),
            OutputMode::ToolChoice
        );
    }

    #[test]
    fn prompt_cache_hints_are_on_unless_turned_off_and_a_later_layer_wins() {
        let layer = |text: &str| parse(&format!("model = \"m\"\n[endpoint]\n{text}\n"));
        let resolved = |files: &[FileConfig]| {
            resolve(files, &MissionSettings::default(), None)
                .unwrap()
                .endpoint
                .prompt_cache
        };
        assert!(resolved(&[layer("")]));
        assert!(!resolved(&[layer("prompt_cache = false")]));
        assert!(resolved(&[
            layer("prompt_cache = false"),
            layer("prompt_cache = true")
        ]));
        assert!(toml::from_str::<FileConfig>("[endpoint]\nprompt_cache = \"yes\"\n").is_err());
    }

    #[test]
    fn the_install_is_the_pre_scans_unless_set_and_empty_runs_none() {
        let layer = |text: &str| parse(&format!("model = \"m\"\n[verify]\n{text}\n"));
        let resolved = |files: &[FileConfig]| {
            resolve(files, &MissionSettings::default(), None)
                .unwrap()
                .verify_install
        };
        assert_eq!(resolved(&[layer("")]), None, "left to the pre-scan");
        assert_eq!(resolved(&[layer("install = \" \"")]), Some(String::new()), "none");
        assert_eq!(
            resolved(&[layer("install = \"npm ci\""), layer("install = \"pnpm i\"")]),
            Some("pnpm i".into())
        );
        assert!(toml::from_str::<FileConfig>("[verify]\ninstall = 1\n").is_err());
    }

    #[test]
    fn reply_limits_have_defaults_and_bounds() {
        let config = resolve(&[parse("model = \"m\"\n")], &MissionSettings::default(), None).unwrap();
        assert_eq!(config.endpoint.request_timeout, Duration::from_secs(600));
        assert_eq!(config.endpoint.max_reply_bytes, 8 << 20);
        let set = parse("model = \"m\"\n[endpoint]\nrequest_timeout_secs = 30\nmax_reply_bytes = 1048576\n");
        let config = resolve(&[set], &MissionSettings::default(), None).unwrap();
        assert_eq!(config.endpoint.request_timeout, Duration::from_secs(30));
        assert_eq!(config.endpoint.max_reply_bytes, 1 << 20);
        let zero = parse("model = \"m\"\n[endpoint]\nmax_reply_bytes = 0\n");
        let err = resolve(&[zero], &MissionSettings::default(), None)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("`endpoint.max_reply_bytes` in the config is 0;"),
            "{err}"
        );
    }

    #[test]
    fn missing_model_is_a_usage_error() {
        let err = resolve(&[FileConfig::default()], &MissionSettings::default(), None).unwrap_err();
        assert!(
            matches!(err, EngineError::Usage(ref m) if m.contains("ORCHESTRATOR_MODEL")),
            "{err}"
        );
    }

    #[test]
    fn unknown_keys_and_roles_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("orchestrator.toml");
        std::fs::write(&path, "max_paralel = 3\n").unwrap();
        let err = load_file(&path).unwrap_err();
        assert!(err.to_string().contains("max_paralel"), "{err}");
        let layer = parse("model = \"m\"\n[roles.wizard]\nmodel = \"x\"\n");
        let err = resolve(&[layer], &MissionSettings::default(), None).unwrap_err();
        assert!(err.to_string().contains("roles.wizard"), "{err}");
    }

    #[test]
    fn mcp_servers_are_checked_before_anything_starts() {
        let resolve_text = |text: &str| {
            let mut layer = parse(text);
            layer.source = Some(PathBuf::from("orchestrator.toml"));
            resolve(&[layer], &MissionSettings::default(), Some("m".into())).map_err(|e| e.to_string())
        };
        let config = resolve_text(
            "[mcp.docs]\ncommand = [\"docs-mcp\", \"--stdio\"]\ntimeout_secs = 5\ntools = [\"search\"]\n\
             [roles.worker]\nmcp = [\"docs\"]\n",
        )
        .unwrap();
        let docs = &config.mcp["docs"];
        let McpTransport::Stdio(stdio) = &docs.transport else {
            panic!("a stdio server: {docs:?}")
        };
        assert_eq!(stdio.command, ["docs-mcp", "--stdio"]);
        assert_eq!(docs.timeout, Duration::from_secs(5));
        assert_eq!(docs.source, "orchestrator.toml");
        assert!(stdio.sandbox, "confined when the mission's sandbox is on");
        assert_eq!(config.role(Role::Worker).mcp, ["docs"]);
        assert!(
            config.role(Role::Reviewer).mcp.is_empty(),
            "only the roles that list it"
        );

        let err = resolve_text("[roles.worker]\nmcp = [\"docs\"]\n").unwrap_err();
        assert!(
            err.contains("`[roles.worker] mcp` lists `docs`") && err.contains("none is configured"),
            "{err}"
        );
        let err = resolve_text("[mcp.docs]\ncommand = []\n").unwrap_err();
        assert!(
            err.starts_with("[mcp.docs] in orchestrator.toml:") && err.contains("command = ["),
            "{err}"
        );
        let err = resolve_text("[mcp.docs]\ncommand = [\" \"]\n").unwrap_err();
        assert!(err.contains("program) is empty"), "{err}");
        let http = resolve_text(
            "[mcp.docs]\nurl = \"https://mcp.example.com/mcp\"\nbearer_token_env_var = \"DOCS_TOKEN\"\n\
             http_headers = { \"X-Team\" = \"core\" }\nenv_http_headers = { \"X-Api-Key\" = \"DOCS_KEY\" }\n",
        )
        .unwrap();
        let McpTransport::Http(docs) = &http.mcp["docs"].transport else {
            panic!("an HTTP server")
        };
        assert_eq!(docs.url, "https://mcp.example.com/mcp");
        assert_eq!(docs.bearer_token_env_var.as_deref(), Some("DOCS_TOKEN"));
        assert_eq!(docs.headers["X-Team"], "core");
        assert_eq!(docs.env_headers["X-Api-Key"], "DOCS_KEY");
        for (text, says) in [
            ("url = \"ftp://host/mcp\"", "http:// or https://"),
            ("url = \"not a url\"", "is not a URL"),
            ("url = \"https://user:pw@host/mcp\"", "user name or password"),
            ("url = \"http://h/mcp\"\ncommand = [\"x\"]", "not both"),
            (
                "url = \"http://h/mcp\"\nsandbox = false",
                "`sandbox` applies only",
            ),
            (
                "url = \"http://h/mcp\"\nhttp_headers = { Authorization = \"x\" }",
                "set by the MCP client",
            ),
            (
                "url = \"http://h/mcp\"\nhttp_headers = { \"bad header\" = \"x\" }",
                "not a valid HTTP header name",
            ),
            (
                "url = \"http://h/mcp\"\nbearer_token_env_var = \"1X\"",
                "not an environment variable",
            ),
            (
                "command = [\"x\"]\nbearer_token_env_var = \"T\"",
                "only to a `url` server",
            ),
        ] {
            let err = resolve_text(&format!("[mcp.docs]\n{text}\n")).unwrap_err();
            assert!(err.contains(says), "{text}: {err}");
        }
        let err = resolve_text("[mcp.docs]\ncommand = [\"x\"]\ntimeout_secs = 0\n").unwrap_err();
        assert!(err.contains("between 1 and 3600"), "{err}");
        let err = resolve_text("[mcp.docs]\ncommand = [\"x\"]\nstartup_timeout_secs = 601\n").unwrap_err();
        assert!(
            err.contains("`startup_timeout_secs` is 601") && err.contains("between 1 and 600"),
            "{err}"
        );
        let slow = resolve_text("[mcp.docs]\ncommand = [\"x\"]\nstartup_timeout_secs = 120\n").unwrap();
        assert_eq!(slow.mcp["docs"].startup_timeout, Duration::from_secs(120));
        let err = resolve_text("[mcp.\"my docs\"]\ncommand = [\"x\"]\n").unwrap_err();
        assert!(err.contains("letters, digits"), "{err}");
        let err = toml::from_str::<FileConfig>("[mcp.docs]\ncommand = [\"x\"]\nport = 3\n").unwrap_err();
        assert!(
            err.to_string().contains("unknown field `port`"),
            "unknown keys are refused: {err}"
        );
        let err = resolve_text(
            "provider = \"opencode\"\n[mcp.docs]\ncommand = [\"x\"]\n[roles.worker]\nmcp = [\"docs\"]\n",
        )
        .unwrap_err();
        assert!(err.contains("OpenCode's config"), "{err}");
    }

    #[test]
    fn a_later_file_defines_an_mcp_server_whole() {
        let user = parse("[mcp.docs]\ncommand = [\"old\"]\ntimeout_secs = 9\n");
        let repo = parse("[mcp.docs]\ncommand = [\"new\"]\n");
        let config = resolve(&[user, repo], &MissionSettings::default(), Some("m".into())).unwrap();
        assert_eq!(config.mcp["docs"].describe(), "new");
        assert_eq!(
            config.mcp["docs"].timeout, DEFAULT_MCP_TIMEOUT,
            "not half of each file"
        );
    }
}
