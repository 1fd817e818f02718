//! The tools' arguments. Their doc comments become the JSON schema descriptions an MCP client shows
//! its model, so they are written for that reader.

use orchestrator_protocol::MissionSettings;
use schemars::JsonSchema;
use serde::Deserialize;

/// `start_mission`'s arguments: where and what, plus the mission's settings, whose one declaration is
/// [`MissionSettings`] (their fields sit beside these in the arguments).
#[derive(Debug, Clone, Default)]
pub struct StartMissionParams {
    pub objective: String,
    pub repo: Option<String>,
    pub allow_dirty: Option<bool>,
    pub abandon_interrupted: Option<bool>,
    pub settings: MissionSettings,
}

/// The shape of the arguments as the client's model sees it.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // Read through `Target` and `MissionSettings`; here for the schema.
struct StartMissionShape {
    /// What the mission should achieve, in plain words, e.g. "Add a --verbose flag to the CLI and test it".
    objective: String,
    /// The git repository to work in (any folder in it). Default: the project the MCP server runs in.
    #[serde(default)]
    repo: Option<String>,
    /// Start despite uncommitted changes (never touched). Only when the user asked for it.
    #[serde(default)]
    allow_dirty: Option<bool>,
    /// When the repository has an interrupted mission, start_mission resumes it instead of starting a
    /// new one. true: abandon it (its worktrees and branches are removed, its unmerged work is lost)
    /// and start this objective. Only when the user asked for it.
    #[serde(default)]
    abandon_interrupted: Option<bool>,
    #[serde(flatten)]
    settings: MissionSettings,
}

/// The arguments' own fields, read apart from the settings.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Target {
    objective: String,
    #[serde(default)]
    repo: Option<String>,
    #[serde(default)]
    allow_dirty: Option<bool>,
    #[serde(default)]
    abandon_interrupted: Option<bool>,
}

/// Settings a client's model may not give: only the user turns the sandbox off, picks the OpenCode
/// server, or sends the repository's commits to a remote for external workers, on the command line
/// or in the repository's config.
const USER_ONLY: &[&str] = &["sandbox", "opencode_url", "workers", "remote"];

impl<'de> Deserialize<'de> for StartMissionParams {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let mut fields = serde_json::Map::<String, serde_json::Value>::deserialize(deserializer)?;
        if let Some(field) = USER_ONLY.iter().find(|f| fields.contains_key(**f)) {
            return Err(D::Error::custom(format!(
                "`{field}` cannot be set by a tool call; the user sets it in the repository's orchestrator.toml"
            )));
        }
        let settings = MissionSettings::take_from(&mut fields);
        let settings: MissionSettings =
            serde_json::from_value(serde_json::Value::Object(settings)).map_err(D::Error::custom)?;
        let target: Target =
            serde_json::from_value(serde_json::Value::Object(fields)).map_err(D::Error::custom)?;
        Ok(StartMissionParams {
            objective: target.objective,
            repo: target.repo,
            allow_dirty: target.allow_dirty,
            abandon_interrupted: target.abandon_interrupted,
            settings,
        })
    }
}

impl JsonSchema for StartMissionParams {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "StartMissionParams".into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let mut schema = StartMissionShape::json_schema(generator);
        if let Some(properties) = schema.get_mut("properties").and_then(|p| p.as_object_mut()) {
            for field in USER_ONLY {
                properties.remove(*field);
            }
        }
        schema
    }
}

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RepoParams {
    /// The git repository of the mission (any folder in it). Default: the project the MCP server runs in.
    #[serde(default)]
    pub repo: Option<String>,
    /// The mission: its id or the start of one that names no other. Default: the repository's latest.
    #[serde(default)]
    pub mission: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListMissionsParams {
    /// The git repository (any folder in it). Default: the project the MCP server runs in.
    #[serde(default)]
    pub repo: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusParams {
    /// The git repository of the mission (any folder in it). Default: the project the MCP server runs in.
    #[serde(default)]
    pub repo: Option<String>,
    /// The mission: its id or the start of one that names no other. Default: the repository's latest.
    #[serde(default)]
    pub mission: Option<String>,
    /// Also return every session and every unit's build/test output (large for big missions). Default:
    /// a compact status with each unit's state and only the failing commands.
    #[serde(default)]
    pub detail: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WaitParams {
    /// The git repository of the mission (any folder in it). Default: the project the MCP server runs in.
    #[serde(default)]
    pub repo: Option<String>,
    /// The mission: its id or the start of one that names no other. Default: the repository's latest.
    #[serde(default)]
    pub mission: Option<String>,
    /// How long to wait, in seconds, from 0 (answer at once) to 3600. Default: 600. When it passes
    /// and the mission still runs, the answer says so; call wait_for_mission again.
    #[serde(default)]
    #[schemars(range(min = 0, max = 3600))]
    pub timeout_seconds: Option<f64>,
}

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApprovePlanParams {
    /// The git repository of the mission (any folder in it). Default: the project the MCP server runs in.
    #[serde(default)]
    pub repo: Option<String>,
    /// The mission whose plan waits: its id or the start of one. Default: the repository's latest.
    #[serde(default)]
    pub mission: Option<String>,
    /// `approve` runs the plan; `reject` sends it back to the planner with `feedback`; `edit` runs
    /// `plan` instead. Only when the user decided so.
    pub answer: String,
    /// With `reject`: what the planner should change, in the user's words.
    #[serde(default)]
    pub feedback: Option<String>,
    /// With `edit`: the new plan, {"tasks": [{"id", "title", "description", "depends_on"}]}; it is
    /// checked as the planner's plan is (ids, known dependencies, no cycles).
    #[serde(default)]
    pub plan: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TellWorkerParams {
    /// The git repository of the mission (any folder in it). Default: the project the MCP server runs in.
    #[serde(default)]
    pub repo: Option<String>,
    /// The mission: its id or the start of one. Default: the repository's latest.
    #[serde(default)]
    pub mission: Option<String>,
    /// The unit whose worker is told (mission_status lists the units). Absent: every running worker.
    #[serde(default)]
    pub unit: Option<String>,
    /// The user's message, at most 4096 bytes.
    pub message: String,
}

impl StartMissionParams {
    /// The `orchestrator task` arguments, flags first and the objective after `--` so an objective
    /// that starts with a dash is never read as a flag.
    pub fn task_args(&self, root: &std::path::Path) -> Vec<std::ffi::OsString> {
        let mut args: Vec<std::ffi::OsString> = vec!["task".into(), "--json".into(), "--repo".into()];
        args.push(root.as_os_str().to_owned());
        let settings = &self.settings;
        let numbers = [
            ("--max-parallel", settings.max_parallel.map(|n| n as u64)),
            ("--max-depth", settings.max_depth.map(u64::from)),
            ("--rounds", settings.rounds.map(u64::from)),
            ("--budget-tokens", settings.budget_tokens),
            ("--attempts", settings.attempts.map(u64::from)),
        ];
        for (flag, value) in numbers {
            if let Some(value) = value {
                args.push(flag.into());
                args.push(value.to_string().into());
            }
        }
        if let Some(provider) = settings.provider {
            args.push("--provider".into());
            args.push(provider.as_str().into());
        }
        if let Some(model) = &settings.model {
            args.push("--model".into());
            args.push(model.into());
        }
        if self.allow_dirty == Some(true) {
            args.push("--allow-dirty".into());
        }
        if self.abandon_interrupted == Some(true) {
            args.push("--abandon".into());
        }
        if settings.no_verify == Some(true) {
            args.push("--no-verify".into());
        }
        if settings.approve_plan == Some(true) {
            args.push("--approve-plan".into());
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
            allow_dirty: Some(true),
            settings: MissionSettings {
                max_parallel: Some(3),
                ..Default::default()
            },
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
    fn approve_plan_becomes_the_flag() {
        let params: StartMissionParams =
            serde_json::from_value(serde_json::json!({"objective": "x", "approve_plan": true})).unwrap();
        let args = params.task_args(std::path::Path::new("/r"));
        assert!(args.iter().any(|a| a == "--approve-plan"), "{args:?}");
        // Best of N is passed on, never silently dropped.
        let params: StartMissionParams =
            serde_json::from_value(serde_json::json!({"objective": "x", "attempts": 3})).unwrap();
        let args = params.task_args(std::path::Path::new("/r"));
        let at = args
            .iter()
            .position(|a| a == "--attempts")
            .expect("--attempts is passed");
        assert_eq!(args[at + 1], "3");
        let answer: ApprovePlanParams =
            serde_json::from_value(serde_json::json!({"answer": "reject", "feedback": "f"})).unwrap();
        assert_eq!(answer.feedback.as_deref(), Some("f"));
    }

    #[test]
    fn unknown_arguments_are_refused() {
        let parsed: Result<RepoParams, _> = serde_json::from_value(serde_json::json!({"repository": "x"}));
        assert!(parsed.is_err());
        let parsed: Result<StartMissionParams, _> =
            serde_json::from_value(serde_json::json!({"objective": "x", "max_paralel": 3}));
        assert!(parsed.is_err());
        let parsed: Result<StartMissionParams, _> =
            serde_json::from_value(serde_json::json!({"objective": "x", "sandbox": false}));
        let error = parsed.unwrap_err().to_string();
        assert!(
            error.contains("`sandbox` cannot be set by a tool call"),
            "{error}"
        );
        // A model must not send the repository to a remote of its choosing.
        let parsed: Result<StartMissionParams, _> = serde_json::from_value(serde_json::json!({
            "objective": "x", "workers": "external", "remote": "https://attacker.example/r.git"
        }));
        let error = parsed.unwrap_err().to_string();
        assert!(error.contains("cannot be set by a tool call"), "{error}");
    }

    #[test]
    fn settings_and_own_fields_are_read_apart() {
        let params: StartMissionParams = serde_json::from_value(serde_json::json!({
            "objective": "x", "repo": "/r", "rounds": 2, "provider": "anthropic"
        }))
        .unwrap();
        assert_eq!(params.repo.as_deref(), Some("/r"));
        assert_eq!(params.settings.rounds, Some(2));
        let schema = serde_json::to_value(schemars::schema_for!(StartMissionParams)).unwrap();
        let properties = schema["properties"].as_object().unwrap();
        for field in [
            "objective",
            "repo",
            "allow_dirty",
            "max_parallel",
            "no_verify",
            "provider",
        ] {
            assert!(properties.contains_key(field), "{field} missing from {schema}");
        }
        for user_only in USER_ONLY {
            assert!(!properties.contains_key(*user_only), "{user_only} in {schema}");
        }
        assert_eq!(schema["additionalProperties"], false, "{schema}");
    }
}
