//! Builds the model client from the environment, as each ecosystem expects its variables, behind
//! one shared rate governor per model.

use std::sync::Arc;
use std::time::Duration;

use orchestrator_model::{
    AnthropicClient, ClientConfig, GovernedClient, GovernorConfig, ModelClient, ModelError, OpenAiClient,
};

use crate::config::{Config, Provider};
use crate::error::{EngineError, Result};

const OPENAI_DEFAULT: &str = "https://api.openai.com/v1";
const ANTHROPIC_DEFAULT: &str = "https://api.anthropic.com";

/// The governed client for the mission, and a plain one for the preflight check that gives up fast:
/// a person waiting at the prompt should hear about a wrong URL in seconds, not after minutes of retries.
pub struct Clients {
    pub mission: Arc<GovernedClient>,
    pub preflight: Arc<dyn ModelClient>,
    /// The API key, so the store can mask it wherever a model or tool echoes it.
    pub secrets: Vec<String>,
}

pub fn clients_from_env(config: &Config) -> Result<Clients> {
    let provider = config.provider;
    let (base, key) = endpoint(provider)?;
    let endpoint = &config.endpoint;
    let mut settings = ClientConfig::new(base, Some(key.clone()));
    settings.connect_timeout = endpoint.connect_timeout;
    settings.first_byte_timeout = endpoint.first_byte_timeout;
    settings.idle_timeout = endpoint.idle_timeout;
    settings.request_timeout = endpoint.request_timeout;
    settings.max_reply_bytes = endpoint.max_reply_bytes;
    settings.cut_loops = endpoint.cut_loops;
    settings.prompt_cache = endpoint.prompt_cache;
    settings.output = endpoint.output;
    let mut quick = settings.clone();
    quick.max_retries = 1;
    quick.max_backoff = Duration::from_millis(500);
    quick.connect_timeout = Duration::from_secs(5);
    quick.first_byte_timeout = Duration::from_secs(20);
    // The governor owns every retry, so that a Retry-After pauses all sessions, not just one.
    let name = crate::across_hosts::endpoint_name(&settings.base_url);
    let inner = build(provider, settings.without_retries())?;
    let governor = GovernorConfig {
        max_concurrency: endpoint.max_concurrency,
        requests_per_minute: endpoint.requests_per_minute,
        tokens_per_minute: endpoint.tokens_per_minute,
        max_total_wait: endpoint.max_wait,
        ..GovernorConfig::default()
    };
    Ok(Clients {
        mission: Arc::new(GovernedClient::new(inner, governor).endpoint(name)),
        preflight: build(provider, quick)?,
        secrets: if key.is_empty() { Vec::new() } else { vec![key] },
    })
}

fn endpoint(provider: Provider) -> Result<(String, String)> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    match provider {
        Provider::OpenAi => {
            let key = var("OPENAI_API_KEY").ok_or_else(|| {
                EngineError::Usage(
                    "OPENAI_API_KEY is not set. Export your key (for a local server such as Ollama, vLLM or \
                     llama.cpp that needs none, any value works: OPENAI_API_KEY=local), and OPENAI_BASE_URL for a \
                     server other than OpenAI's."
                        .into(),
                )
            })?;
            Ok((
                var("OPENAI_BASE_URL").unwrap_or_else(|| OPENAI_DEFAULT.to_string()),
                key,
            ))
        }
        Provider::Anthropic => {
            let key = var("ANTHROPIC_API_KEY").ok_or_else(|| {
                EngineError::Usage(
                    "ANTHROPIC_API_KEY is not set. Export your Anthropic key (and ANTHROPIC_BASE_URL for a proxy)."
                        .into(),
                )
            })?;
            Ok((
                var("ANTHROPIC_BASE_URL").unwrap_or_else(|| ANTHROPIC_DEFAULT.to_string()),
                key,
            ))
        }
        // OpenCode hook: OpenCode calls the model itself (see opencode.rs); this client is never called,
        // it only fills the runtime's slot.
        Provider::OpenCode => Ok(("http://127.0.0.1:9/opencode-unused".to_string(), String::new())),
    }
}

fn build(provider: Provider, config: ClientConfig) -> Result<Arc<dyn ModelClient>> {
    let setup = |e: ModelError| EngineError::Usage(format!("cannot set up the model client: {e}"));
    Ok(match provider {
        Provider::Anthropic => Arc::new(AnthropicClient::new(config).map_err(setup)?),
        _ => Arc::new(OpenAiClient::new(config).map_err(setup)?),
    })
}

/// Proves, before anything is started or spent, that the endpoint answers, accepts the key and serves
/// every model the mission will ask for (each role's and the compaction model).
pub async fn preflight(client: &dyn ModelClient, config: &Config) -> Result<()> {
    let mut models: Vec<&str> = config.roles.values().map(|role| role.model.as_str()).collect();
    models.extend(config.compaction.model.as_deref());
    models.sort_unstable();
    models.dedup();
    for model in models {
        preflight_model(client, model).await?;
    }
    Ok(())
}

async fn preflight_model(client: &dyn ModelClient, model: &str) -> Result<()> {
    let anthropic = client.provider() == "anthropic";
    let env_hint = if anthropic {
        "ANTHROPIC_BASE_URL and ANTHROPIC_API_KEY"
    } else {
        "OPENAI_BASE_URL and OPENAI_API_KEY"
    };
    let refuse = |what: String| EngineError::Usage(format!("{what}\nNothing was started."));
    let checked = tokio::time::timeout(Duration::from_secs(30), client.preflight(model)).await;
    match checked {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e @ ModelError::ModelNotFound { .. })) => Err(refuse(format!(
            "{e}\nChoose a model the endpoint serves: --model NAME, ORCHESTRATOR_MODEL, or `model` in \
             orchestrator.toml (and [roles.<role>] model, [compaction] model)."
        ))),
        Ok(Err(e @ ModelError::NotAModelApi { .. })) if anthropic => Err(refuse(format!(
            "{e}\nANTHROPIC_BASE_URL should be Anthropic's API or a proxy of it (https://api.anthropic.com)."
        ))),
        Ok(Err(e @ ModelError::NotAModelApi { .. })) => Err(refuse(format!(
            "{e}\nOPENAI_BASE_URL should be an OpenAI-compatible API, which usually ends in /v1: \
             https://api.openai.com/v1, Ollama http://localhost:11434/v1, llama.cpp or vLLM http://HOST:PORT/v1."
        ))),
        Ok(Err(e)) => Err(refuse(format!("{e}\nCheck {env_hint}."))),
        Err(_) => Err(refuse(format!(
            "the model endpoint did not answer within 30 s (checking the model `{model}`). Check {env_hint}."
        ))),
    }
}
