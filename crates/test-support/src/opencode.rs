//! The real OpenCode in tests: its binary from OPENCODE_BIN, run offline with every folder it writes
//! inside the test's own HOME, and the fake model server as its only provider.
//!
//! The tests that need it are marked
//! `#[cfg_attr(opencode_missing, ignore = "needs OpenCode: set OPENCODE_BIN (.ci/run installs it)")]`:
//! their crate's build.rs sets `cfg(opencode_missing)` when OPENCODE_BIN is unset at build time, so
//! without OpenCode they count as ignored (which .ci/run fails on), not as passed.

use std::path::{Path, PathBuf};

/// The OpenCode binary from OPENCODE_BIN. The tests that call this are ignored when it was unset at
/// build time (`cfg(opencode_missing)`, from their crate's build.rs); run anyway, they fail here rather
/// than pass having checked nothing.
pub fn bin() -> PathBuf {
    match std::env::var_os("OPENCODE_BIN").filter(|v| !v.is_empty()) {
        Some(bin) => PathBuf::from(bin),
        None => panic!("needs OpenCode: set OPENCODE_BIN (.ci/run installs it)"),
    }
}

/// The variables that run OpenCode offline with every folder it writes (config, data, cache, state)
/// inside `home`. Pass them with [`REMOVED_ENV`] removed.
pub fn offline_env(home: &Path) -> Vec<(&'static str, String)> {
    let path = |p: &str| home.join(p).to_string_lossy().into_owned();
    vec![
        ("HOME", home.to_string_lossy().into_owned()),
        ("XDG_CONFIG_HOME", path(".config")),
        ("XDG_DATA_HOME", path(".local/share")),
        ("XDG_CACHE_HOME", path(".cache")),
        ("XDG_STATE_HOME", path(".local/state")),
        ("OPENCODE_DISABLE_MODELS_FETCH", "1".into()),
        ("OPENCODE_DISABLE_AUTOUPDATE", "1".into()),
        ("OPENCODE_DISABLE_SHARE", "1".into()),
        ("OPENCODE_DISABLE_LSP_DOWNLOAD", "1".into()),
    ]
}

/// Variables of the test's own environment that must not reach OpenCode: a config of the machine's,
/// and real model endpoints and keys.
pub const REMOVED_ENV: &[&str] = &[
    "OPENCODE_CONFIG",
    "OPENCODE_CONFIG_DIR",
    "OPENCODE_CONFIG_CONTENT",
    "OPENAI_BASE_URL",
    "OPENAI_API_KEY",
    "ANTHROPIC_BASE_URL",
    "ANTHROPIC_API_KEY",
];

/// An OpenCode config with the fake model server as an OpenAI-compatible provider (OpenCode bundles
/// that SDK, so nothing is downloaded) serving one model, which is also the default model.
pub struct FakeProvider<'a> {
    /// The fake server's OpenAI base URL (`FakeServer::openai_base_url`).
    pub base_url: &'a str,
    pub model: &'a str,
    /// A price (input, output per million tokens), so that OpenCode computes a cost.
    pub cost: Option<(u32, u32)>,
    /// Every permission granted, no autoupdate, no sharing: a headless session has nobody to answer
    /// a question. Without it OpenCode's defaults apply, as for a user's own config.
    pub headless: bool,
}

impl FakeProvider<'_> {
    /// The config file's text.
    pub fn config(&self) -> String {
        let FakeProvider { base_url, model, .. } = self;
        let cost = match self.cost {
            Some((input, output)) => {
                format!(",\n          \"cost\": {{ \"input\": {input}, \"output\": {output} }}")
            }
            None => String::new(),
        };
        let headless = if self.headless {
            concat!(
                ",\n",
                r#"  "permission": { "edit": "allow", "bash": "allow", "external_directory": "allow" },"#,
                "\n",
                r#"  "autoupdate": false,"#,
                "\n",
                r#"  "share": "disabled""#,
            )
        } else {
            ""
        };
        format!(
            r#"{{
  "$schema": "https://opencode.ai/config.json",
  "provider": {{
    "fake": {{
      "npm": "@ai-sdk/openai-compatible",
      "name": "Fake",
      "options": {{ "baseURL": "{base_url}", "apiKey": "test-key" }},
      "models": {{
        "{model}": {{
          "name": "Fake model",
          "tool_call": true{cost}
        }}
      }}
    }}
  }},
  "model": "fake/{model}",
  "small_model": "fake/{model}"{headless}
}}
"#
        )
    }
}

/// Writes `text` as OpenCode's global config `file_name` (`opencode.json` or `opencode.jsonc`) for
/// the HOME `home` (the XDG_CONFIG_HOME of [`offline_env`]); returns its path.
pub fn write_global_config(home: &Path, file_name: &str, text: &str) -> PathBuf {
    let config = home.join(".config/opencode").join(file_name);
    std::fs::create_dir_all(config.parent().expect("a folder")).expect("mkdir");
    std::fs::write(&config, text).expect("write the OpenCode config");
    config
}
