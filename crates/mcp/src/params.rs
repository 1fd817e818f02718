//! The tools' arguments. Their doc comments become the JSON schema descriptions an MCP client shows
//! its model, so they are written for that reader.

use schemars::JsonSchema;
use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StartMissionParams {
    /// What the mission should achieve, in plain words, e.g. "Add a --verbose flag to the CLI and test it".
    pub objective: String,
    /// The git repository to work in (any folder in it). Default: the project the MCP server runs in.
    #[serde(default)]
    pub repo: Option<String>,
    /// Sessions in flight at once, across all roles and depths (default 8).
    #[serde(default)]
    pub max_parallel: Option<u32>,
    /// How deep workers may split their units (default 2).
    #[serde(default)]
    pub max_depth: Option<u32>,
    /// Verification rounds before the mission gives up (default 3).
    #[serde(default)]
    pub rounds: Option<u32>,
    /// Stop the mission cleanly when this many tokens are used.
    #[serde(default)]
    pub budget_tokens: Option<u64>,
    /// The model for every role, as the configured provider names it.
    #[serde(default)]
    pub model: Option<String>,
    /// Start despite uncommitted changes (never touched). Only when the user asked for it.
    #[serde(default)]
    pub allow_dirty: Option<bool>,
    /// Start although the repository has no build, lint or test command (none found or configured):
    /// reviews alone judge the work and the outcome says "sealed without verification". Only when the
    /// user accepted that; better, name the commands in the repository's orchestrator.toml `[verify]`.
    #[serde(default)]
    pub no_verify: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RepoParams {
    /// The git repository of the mission (any folder in it). Default: the project the MCP server runs in.
    #[serde(default)]
    pub repo: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusParams {
    /// The git repository of the mission (any folder in it). Default: the project the MCP server runs in.
    #[serde(default)]
    pub repo: Option<String>,
    /// Also return every session and every unit's build/test output (large for big missions). Default:
    /// a compact status with each unit's state and only the failing commands.
    #[serde(default)]
    pub detail: Option<bool>,
}

impl StartMissionParams {
    /// The `orchestrator task` arguments, flags first and the objective after `--` so an objective
    /// that starts with a dash is never read as a flag.
    pub fn task_args(&self, root: &std::path::Path) -> Vec<std::ffi::OsString> {
        let mut args: Vec<std::ffi::OsString> = vec!["task".into(), "--json".into(), "--repo".into()];
        args.push(root.as_os_str().to_owned());
        let numbers = [
            ("--max-parallel", self.max_parallel.map(u64::from)),
            ("--max-depth", self.max_depth.map(u64::from)),
            ("--rounds", self.rounds.map(u64::from)),
            ("--budget-tokens", self.budget_tokens),
        ];
        for (flag, value) in numbers {
            if let Some(value) = value {
                args.push(flag.into());
                args.push(value.to_string().into());
            }
        }
        if let Some(model) = &self.model {
            args.push("--model".into());
            args.push(model.into());
        }
        if self.allow_dirty == Some(true) {
            args.push("--allow-dirty".into());
        }
        if self.no_verify == Some(true) {
            args.push("--no-verify".into());
        }
        args.push("--".into());
        args.push(self.objective.clone().into());
        args
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objective_comes_last_after_a_separator() {
        let params = StartMissionParams {
            objective: "--not-a-flag".into(),
            max_parallel: Some(3),
            allow_dirty: Some(true),
            ..Default::default()
        };
        let args: Vec<String> = params
            .task_args(std::path::Path::new("/r"))
            .into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args,
            [
                "task",
                "--json",
                "--repo",
                "/r",
                "--max-parallel",
                "3",
                "--allow-dirty",
                "--",
                "--not-a-flag"
            ]
        );
    }

    #[test]
    fn unknown_arguments_are_refused() {
        let parsed: Result<RepoParams, _> = serde_json::from_value(serde_json::json!({"repository": "x"}));
        assert!(parsed.is_err());
    }
}
