//! What `orchestrator install opencode` writes into an OpenCode config, and where that config lives.
//!
//! OpenCode (v1 config format) reads `opencode.json` or `opencode.jsonc` from, among others, the
//! global config folder (`$XDG_CONFIG_HOME/opencode`, else `~/.config/opencode`), the folder
//! `OPENCODE_CONFIG_DIR` names, the file `OPENCODE_CONFIG` names, and the project (walking up to the
//! git root). It starts a `local` MCP server with the project folder as working directory and its
//! own environment plus the entry's `environment`, so the server needs nothing but its command.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use jsonc_parser::cst::CstInputValue;
use serde_json::Value;

use super::edit::Entry;

/// The MCP server's name in `mcp`; OpenCode prefixes each of its tools with it.
pub const SERVER: &str = "orchestrator";
/// The command's name in `command`: `/task` in OpenCode.
pub const COMMAND: &str = "task";
/// The OpenCode tool name of our `start_mission` (server name, underscore, tool name). Its presence in
/// a command template is also how `install` recognises the command as its own.
const START_TOOL: &str = "orchestrator_start_mission";
/// The OpenCode tool name of our `wait_for_mission`.
const WAIT_TOOL: &str = "orchestrator_wait_for_mission";
/// OpenCode's time limit for one request to our server, in ms (its own default is 5 s for a local
/// server). `wait_for_mission` waits up to 600 s by default and sends progress every 30 s at the
/// latest, which restarts OpenCode's clock; this is above the default wait with a minute to spare.
const REQUEST_TIMEOUT_MS: u64 = 660_000;

const DESCRIPTION: &str = "Run an orchestrator mission: parallel AI agents plan, build, verify and merge it";

/// The `/task` prompt: hand the objective to the mission engine and report, rather than doing the
/// work in this session.
fn template() -> String {
    format!(
        "Start an orchestrator mission with this objective:\n\n$ARGUMENTS\n\n\
Call the `{START_TOOL}` tool of the orchestrator MCP server with `objective` set to the objective above, \
exactly as written. Do not do the work yourself and do not edit any file: the mission runs in the background \
with its own agents and delivers its result as commits on the current branch.\n\
If the tool returns an error (for example uncommitted changes in the working tree, or another mission \
already running), show the error to the user verbatim and stop.\n\
Otherwise tell the user the mission id, then call `{WAIT_TOOL}` with `mission` set to that id and wait \
for it to return; do nothing else meanwhile. When it returns:\n\
- with the mission's result: show the user the outcome, the summary and the result commit;\n\
- saying the mission is still running: call `{WAIT_TOOL}` again the same way;\n\
- saying a plan waits for approval: show the plan to the user and ask what to do; pass their answer to \
`orchestrator_approve_plan`, then call `{WAIT_TOOL}` again.\n\
If the user interrupts, the mission keeps running in the background: they can ask for it later \
(`orchestrator_mission_status`, `orchestrator_mission_result`) or stop it (`orchestrator_cancel_mission`)."
    )
}

/// The entries `install` adds; `exe` is the `orchestrator` binary OpenCode will start.
pub fn entries(exe: &Path) -> Vec<Entry> {
    let server = CstInputValue::Object(vec![
        ("type".into(), "local".into()),
        (
            "command".into(),
            CstInputValue::Array(vec![exe.to_string_lossy().into_owned().into(), "mcp".into()]),
        ),
        ("enabled".into(), true.into()),
        ("timeout".into(), REQUEST_TIMEOUT_MS.into()),
    ]);
    let command = CstInputValue::Object(vec![
        ("template".into(), template().into()),
        ("description".into(), DESCRIPTION.into()),
    ]);
    vec![
        Entry {
            section: "mcp",
            key: SERVER,
            value: server,
            ours: is_our_server,
        },
        Entry {
            section: "command",
            key: COMMAND,
            value: command,
            ours: is_our_command,
        },
    ]
}

/// `["…/orchestrator", "mcp"]` as a local server: ours, whichever binary path it names.
fn is_our_server(value: &Value) -> bool {
    let Some(command) = value["command"].as_array() else {
        return false;
    };
    let binary_is_ours = command
        .first()
        .and_then(Value::as_str)
        .and_then(|program| Path::new(program).file_name())
        .is_some_and(|name| name.to_string_lossy().starts_with("orchestrator"));
    value["type"] == "local" && command.len() == 2 && command[1] == "mcp" && binary_is_ours
}

fn is_our_command(value: &Value) -> bool {
    value["template"].as_str().is_some_and(|t| t.contains(START_TOOL))
}

/// The environment that decides where the global config is.
#[derive(Debug, Clone, Default)]
pub struct ConfigEnv {
    pub home: Option<PathBuf>,
    pub xdg_config_home: Option<PathBuf>,
    pub opencode_config_dir: Option<PathBuf>,
}

impl ConfigEnv {
    pub fn from_process() -> Self {
        let path = |key: &str| std::env::var_os(key).filter(|v| !v.is_empty()).map(PathBuf::from);
        ConfigEnv {
            home: path("HOME"),
            xdg_config_home: path("XDG_CONFIG_HOME"),
            opencode_config_dir: path("OPENCODE_CONFIG_DIR"),
        }
    }

    /// The folder of the user's own config: `OPENCODE_CONFIG_DIR` when set (the user moved it there),
    /// else OpenCode's XDG config folder.
    pub fn global_dir(&self) -> Option<PathBuf> {
        if let Some(dir) = &self.opencode_config_dir {
            return Some(dir.clone());
        }
        // XDG says a relative XDG_CONFIG_HOME is invalid and must be ignored.
        let xdg = self.xdg_config_home.clone().filter(|p| p.is_absolute());
        xdg.or_else(|| self.home.as_ref().map(|h| h.join(".config")))
            .map(|base| base.join("opencode"))
    }
}

/// The config file in `dir`: the one that exists (`opencode.jsonc` when both do), else a new
/// `opencode.json`.
pub fn config_in(dir: &Path) -> PathBuf {
    let jsonc = dir.join("opencode.jsonc");
    if jsonc.is_file() {
        return jsonc;
    }
    dir.join("opencode.json")
}

/// `<file>.orchestrator-backup`, beside the file.
pub fn backup_of(file: &Path) -> PathBuf {
    let mut name = file.file_name().map(OsString::from).unwrap_or_default();
    name.push(".orchestrator-backup");
    file.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::install::edit;

    #[test]
    fn global_dir_follows_opencode_config_dir_then_xdg_then_home() {
        let mut env = ConfigEnv {
            home: Some("/home/u".into()),
            ..Default::default()
        };
        assert_eq!(env.global_dir(), Some(PathBuf::from("/home/u/.config/opencode")));
        env.xdg_config_home = Some("relative".into());
        assert_eq!(env.global_dir(), Some(PathBuf::from("/home/u/.config/opencode")));
        env.xdg_config_home = Some("/x".into());
        assert_eq!(env.global_dir(), Some(PathBuf::from("/x/opencode")));
        env.opencode_config_dir = Some("/oc".into());
        assert_eq!(env.global_dir(), Some(PathBuf::from("/oc")));
    }

    #[test]
    fn recognises_its_own_entries_only() {
        let entries = entries(Path::new("/usr/bin/orchestrator"));
        let server = edit::to_json(&entries[0].value);
        assert!(is_our_server(&server));
        assert!(is_our_server(
            &serde_json::json!({"type": "local", "command": ["/old/orchestrator", "mcp"]})
        ));
        assert!(!is_our_server(
            &serde_json::json!({"type": "local", "command": ["other", "mcp"]})
        ));
        assert!(!is_our_server(
            &serde_json::json!({"type": "remote", "url": "http://x"})
        ));
        assert!(is_our_command(&edit::to_json(&entries[1].value)));
        assert!(!is_our_command(&serde_json::json!({"template": "run the tests"})));
    }

    #[test]
    fn the_template_passes_the_arguments_as_the_objective() {
        let template = template();
        assert!(template.contains("$ARGUMENTS") && template.contains(START_TOOL));
        assert!(template.contains(WAIT_TOOL) && template.contains("orchestrator_approve_plan"));
    }

    #[test]
    fn backup_sits_beside_the_file() {
        assert_eq!(
            backup_of(Path::new("/p/opencode.json")),
            PathBuf::from("/p/opencode.json.orchestrator-backup")
        );
    }
}
