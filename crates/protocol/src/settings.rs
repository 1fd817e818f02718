//! How a mission runs, declared once for every front end: the `task`/`resume` flags convert into it,
//! the HTTP API's start body and MCP's `start_mission` carry its fields, and the store keeps it so
//! that `resume` runs the mission the same way.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Where the models come from.
// Read through `FromStr`, so every front end and the config files name a wrong one the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(try_from = "String")]
pub enum Provider {
    /// An OpenAI-compatible API (OpenAI, vLLM, Ollama, llama.cpp, OpenRouter).
    #[serde(rename = "openai")]
    OpenAi,
    /// Anthropic's Messages API.
    #[serde(rename = "anthropic")]
    Anthropic,
    /// Sessions run on an OpenCode server, with the model configured there.
    #[serde(rename = "opencode")]
    OpenCode,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::OpenAi => "openai",
            Provider::Anthropic => "anthropic",
            Provider::OpenCode => "opencode",
        }
    }
}

impl std::fmt::Display for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TryFrom<String> for Provider {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        text.parse()
    }
}

impl std::str::FromStr for Provider {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "openai" => Ok(Provider::OpenAi),
            "anthropic" => Ok(Provider::Anthropic),
            "opencode" => Ok(Provider::OpenCode),
            other => Err(format!(
                "unknown provider `{other}` (expected openai, anthropic or opencode)"
            )),
        }
    }
}

/// The settings a front end may give a mission. Each is optional: unset leaves the value to the
/// config files (the user's, then the repository's `orchestrator.toml`), then the default. Unknown
/// fields are refused, so a misspelt option is never silently ignored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(default, deny_unknown_fields)]
pub struct MissionSettings {
    /// openai, anthropic or opencode.
    pub provider: Option<Provider>,
    /// The model for every role, as the provider names it.
    pub model: Option<String>,
    /// Sessions in flight at once, across all roles and depths (default 8).
    pub max_parallel: Option<usize>,
    /// How deep workers may split their units with `spawn` (default 2).
    pub max_depth: Option<u32>,
    /// Verification rounds before the mission gives up (default 3).
    pub rounds: Option<u32>,
    /// Stop the mission cleanly when this many tokens are used.
    pub budget_tokens: Option<u64>,
    /// With provider opencode: a running `opencode serve` to use (else one is started).
    pub opencode_url: Option<String>,
    /// Confine agent commands (Landlock); false runs them with the user's full access.
    pub sandbox: Option<bool>,
    /// Start although no build, lint or test command would judge the work: reviews alone judge it,
    /// and the outcome says "sealed without verification". Only when the user accepted that.
    pub no_verify: Option<bool>,
    /// Stop after planning until a person approves the plan (or rejects it with feedback, or edits it).
    pub approve_plan: Option<bool>,
    /// Best of N: workers that build each unit side by side, the reviewer keeping the best passing
    /// one (default 1; `[limits] candidates`). Not retries (`[limits] unit_attempts`).
    pub attempts: Option<u32>,
    /// Who runs the units: `local` (this process, the default) or `external` (`orchestrator worker`
    /// processes on any host, through a PostgreSQL store and the shared git `remote`).
    pub workers: Option<Workers>,
    /// The shared git remote that external workers fetch the mission's commits from and push their
    /// units' branches to (a URL or a path git understands).
    pub remote: Option<String>,
}

/// Who runs a mission's units.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum Workers {
    /// The commander's own process.
    #[default]
    Local,
    /// `orchestrator worker` processes, which claim units from the mission's store.
    External,
}

impl std::str::FromStr for Workers {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "local" => Ok(Workers::Local),
            "external" => Ok(Workers::External),
            other => Err(format!("unknown workers `{other}` (expected local or external)")),
        }
    }
}

impl MissionSettings {
    /// These settings, with `earlier`'s filling in what these leave unset (a resume's flags over the
    /// ones the mission was started with).
    pub fn or(self, earlier: &MissionSettings) -> MissionSettings {
        let e = earlier.clone();
        MissionSettings {
            provider: self.provider.or(e.provider),
            model: self.model.or(e.model),
            max_parallel: self.max_parallel.or(e.max_parallel),
            max_depth: self.max_depth.or(e.max_depth),
            rounds: self.rounds.or(e.rounds),
            budget_tokens: self.budget_tokens.or(e.budget_tokens),
            opencode_url: self.opencode_url.or(e.opencode_url),
            sandbox: self.sandbox.or(e.sandbox),
            no_verify: self.no_verify.or(e.no_verify),
            approve_plan: self.approve_plan.or(e.approve_plan),
            attempts: self.attempts.or(e.attempts),
            workers: self.workers.or(e.workers),
            remote: self.remote.or(e.remote),
        }
    }

    /// The names of the settings, as they appear in JSON.
    pub fn field_names() -> Vec<String> {
        match serde_json::to_value(MissionSettings::default()) {
            Ok(Value::Object(fields)) => fields.keys().cloned().collect(),
            _ => Vec::new(),
        }
    }

    /// Takes the settings' fields out of a JSON object whose other fields belong to the caller (an API
    /// request, a tool call's arguments), leaving those in place.
    pub fn take_from(object: &mut Map<String, Value>) -> Map<String, Value> {
        MissionSettings::field_names()
            .into_iter()
            .filter_map(|name| object.remove(&name).map(|value| (name, value)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_settings_win_and_earlier_ones_fill_the_gaps() {
        let started = MissionSettings {
            model: Some("a".into()),
            max_parallel: Some(4),
            ..MissionSettings::default()
        };
        let resumed = MissionSettings {
            model: Some("b".into()),
            ..MissionSettings::default()
        };
        let merged = resumed.or(&started);
        assert_eq!(merged.model.as_deref(), Some("b"));
        assert_eq!(merged.max_parallel, Some(4));
    }

    #[test]
    fn only_the_settings_are_taken_from_a_request() {
        let mut body =
            serde_json::json!({"repo": "/r", "objective": "o", "rounds": 2, "provider": "anthropic"});
        let Value::Object(object) = &mut body else {
            unreachable!()
        };
        let taken = MissionSettings::take_from(object);
        assert_eq!(object.len(), 2, "repo and objective stay");
        let settings: MissionSettings = serde_json::from_value(Value::Object(taken)).unwrap();
        assert_eq!(settings.rounds, Some(2));
        assert_eq!(settings.provider, Some(Provider::Anthropic));
    }

    #[test]
    fn a_misspelt_or_unknown_setting_is_refused() {
        let error = serde_json::from_str::<MissionSettings>(r#"{"max_paralel": 3}"#).unwrap_err();
        assert!(
            error.to_string().contains("unknown field `max_paralel`"),
            "{error}"
        );
        let error = serde_json::from_str::<MissionSettings>(r#"{"provider": "gemini"}"#).unwrap_err();
        assert!(error.to_string().contains("unknown provider `gemini`"), "{error}");
    }

    #[test]
    fn settings_stored_by_earlier_versions_still_read() {
        let stored = r#"{"provider":"openai","model":null,"max_parallel":8,"max_depth":null,"rounds":null,"budget_tokens":null}"#;
        let settings: MissionSettings = serde_json::from_str(stored).unwrap();
        assert_eq!(settings.provider, Some(Provider::OpenAi));
        assert_eq!(settings.max_parallel, Some(8));
    }
}
