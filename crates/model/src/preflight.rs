//! The check made before a mission spends anything: the endpoint answers, accepts the key, and serves
//! the model the mission will ask for.
//!
//! A wrong base URL (Ollama without `/v1`) or a misspelt model used to pass a reachability check and
//! fail later inside every scout, leaving a half-started mission behind. Here the model list settles
//! most cases for free; only a model the list does not name costs one tiny chat request, since some
//! servers (llama.cpp) serve whatever name they are asked for.

use std::future::Future;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::transport::{Failure, Transport};
use crate::{ChatRequest, ChatResponse, Message, ModelError};

/// What `GET {base}/models` said.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Listing {
    /// The ids of the models the server says it serves.
    Listed(Vec<String>),
    /// No usable list: the status (when the server answered at all with one) and what it said.
    Unlisted { status: u16, detail: String },
}

/// The chat request used when the list cannot settle it: as small as a request can be.
pub(crate) fn probe_request(model: &str) -> ChatRequest {
    ChatRequest {
        cache_key: None,
        shared_head: 0,
        model: model.to_string(),
        system: String::new(),
        messages: vec![Message::user("Reply with the word OK.")],
        tools: Vec::new(),
        max_tokens: 16,
        temperature: Some(0.0),
        tool_choice: Default::default(),
    }
}

/// Runs the whole check for `model`; `probe` sends [`probe_request`] through the client's own chat.
pub(crate) async fn check<P, Fut>(
    transport: &Transport,
    models_path: &str,
    model: &str,
    probe: P,
) -> Result<(), ModelError>
where
    P: FnOnce() -> Fut,
    Fut: Future<Output = Result<ChatResponse, ModelError>>,
{
    let models_url = transport.url(models_path);
    let listing = list_models(transport, &models_url).await?;
    if let Listing::Listed(ids) = &listing {
        if ids.iter().any(|id| same_model(id, model)) {
            return Ok(());
        }
    }
    if model_retrievable(transport, &models_url, model).await? {
        return Ok(());
    }
    judge_probe(transport, model, &listing, probe().await)
}

/// `GET {base}/models`. 401/403 fail here; any other answer is a listing or the lack of one.
async fn list_models(transport: &Transport, url: &str) -> Result<Listing, ModelError> {
    let never = CancellationToken::new();
    transport
        .with_retries("preflight", &never, || async {
            let (status, body) = transport
                .within_deadline(async {
                    let response = transport.send_raw(url, transport.http().get(url)).await?;
                    let status = response.status().as_u16();
                    Ok((status, transport.read_body(response).await.unwrap_or_default()))
                })
                .await?;
            let text = String::from_utf8_lossy(&body);
            if matches!(status, 401 | 403) {
                return Err(Failure::from_status(status, transport.quote(&text), None));
            }
            if status == 200 {
                if let Some(ids) = model_ids(&text) {
                    tracing::debug!(url, models = ids.len(), "preflight: model list");
                    return Ok(Listing::Listed(ids));
                }
            }
            Ok(Listing::Unlisted {
                status,
                detail: transport.quote(&text),
            })
        })
        .await
}

/// `GET {base}/models/{model}`: OpenAI, Anthropic and Ollama answer 200 for a model they serve under
/// that name (aliases included), though their list may spell it otherwise.
async fn model_retrievable(transport: &Transport, models_url: &str, model: &str) -> Result<bool, ModelError> {
    let Ok(mut url) = reqwest::Url::parse(models_url) else {
        return Ok(false);
    };
    match url.path_segments_mut() {
        Ok(mut segments) => {
            segments.pop_if_empty().push(model);
        }
        Err(()) => return Ok(false),
    }
    let url = url.to_string();
    let body = transport
        .within_deadline(async {
            let response = transport.send_raw(&url, transport.http().get(&url)).await?;
            if response.status().as_u16() != 200 {
                return Ok(Vec::new());
            }
            transport.read_body(response).await
        })
        .await
        .unwrap_or_default();
    // A catch-all web server answers 200 with a page: only a model object counts.
    Ok(serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| {
            v.get("id")
                .and_then(Value::as_str)
                .map(|id| same_model(id, model))
        })
        .unwrap_or(false))
}

/// What the probe's outcome says about the endpoint and the model.
fn judge_probe(
    transport: &Transport,
    model: &str,
    listing: &Listing,
    probe: Result<ChatResponse, ModelError>,
) -> Result<(), ModelError> {
    let base = transport.redact(&transport.config().base_url);
    let available = match listing {
        Listing::Listed(ids) => ids.clone(),
        Listing::Unlisted { .. } => Vec::new(),
    };
    let error = match probe {
        Ok(_) => return Ok(()),
        Err(error) => error,
    };
    match error {
        ModelError::BadRequest { status, body } => match (status, listing) {
            // Neither a model list nor a chat endpoint: the URL points somewhere else.
            (404, Listing::Unlisted { status: 404, .. }) | (405 | 501 | 505, _) => {
                Err(ModelError::NotAModelApi {
                    url: base,
                    detail: format!("the chat request got HTTP {status}: {body}"),
                })
            }
            (400 | 404 | 422, _) => Err(ModelError::ModelNotFound {
                model: model.to_string(),
                available,
                detail: format!("HTTP {status}: {body}"),
            }),
            _ => Err(ModelError::BadRequest { status, body }),
        },
        // A reply this client cannot read (an HTML page with 200, say) is not a model API either.
        ModelError::Protocol(problem) => Err(ModelError::NotAModelApi {
            url: base,
            detail: problem,
        }),
        // Rate limits and server errors say the model is there and busy; the mission's governor
        // waits those out. Everything else (key, network, time) is the caller's to report.
        error @ (ModelError::RateLimited { .. } | ModelError::Server { .. }) => {
            tracing::debug!(%error, "preflight: the endpoint is busy but serves the model");
            Ok(())
        }
        error => Err(error),
    }
}

/// The `id`s of an OpenAI- or Anthropic-shaped model list (`{"data": [{"id": ...}]}`), or Ollama's own
/// (`{"models": [{"name": ...}]}`).
fn model_ids(body: &str) -> Option<Vec<String>> {
    let value: Value = serde_json::from_str(body).ok()?;
    let (items, key) = match (value.get("data"), value.get("models")) {
        (Some(Value::Array(items)), _) => (items, "id"),
        (_, Some(Value::Array(items))) => (items, "name"),
        _ => return None,
    };
    Some(
        items
            .iter()
            .filter_map(|item| item.get(key).and_then(Value::as_str))
            .map(str::to_string)
            .collect(),
    )
}

/// Whether the endpoint's model list says it runs a server with JSON-schema grammars: llama.cpp
/// (`owned_by: "llamacpp"`), vLLM (`"vllm"`) or Ollama (`"library"`, or a user's namespace for
/// pulled models, so `"ollama"` too). One quick request without retries: anything but a clear yes
/// (no list, an error, ten seconds of silence) is a no, and the caller uses `tool_choice` instead.
pub(crate) async fn grammar_server(transport: &Transport) -> bool {
    let url = transport.url("models");
    let listing = async {
        let response = transport.send_raw(&url, transport.http().get(&url)).await.ok()?;
        if !response.status().is_success() {
            return None;
        }
        transport.read_body(response).await.ok()
    };
    match tokio::time::timeout(std::time::Duration::from_secs(10), listing).await {
        Ok(Some(body)) => lists_grammar_runtime(&String::from_utf8_lossy(&body)),
        _ => false,
    }
}

fn lists_grammar_runtime(body: &str) -> bool {
    const RUNTIMES: [&str; 4] = ["llamacpp", "vllm", "ollama", "library"];
    let Ok(value) = serde_json::from_str::<Value>(body) else {
        return false;
    };
    ["data", "models"]
        .iter()
        .filter_map(|key| value.get(key).and_then(Value::as_array))
        .flatten()
        .filter_map(|item| item.get("owned_by").and_then(Value::as_str))
        .any(|owner| RUNTIMES.contains(&owner.to_ascii_lowercase().as_str()))
}

/// Whether a listed id names the asked model: the same, or Ollama's implicit `:latest` tag.
fn same_model(listed: &str, asked: &str) -> bool {
    listed == asked
        || listed.strip_suffix(":latest") == Some(asked)
        || asked.strip_suffix(":latest") == Some(listed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grammar_runtimes_are_told_by_their_model_list() {
        let llama = r#"{"object":"list","data":[{"id":"q","object":"model","owned_by":"llamacpp"}]}"#;
        let vllm = r#"{"data":[{"id":"Qwen/Qwen2.5","owned_by":"vllm"}]}"#;
        let ollama = r#"{"object":"list","data":[{"id":"qwen2.5:0.5b","owned_by":"library"}]}"#;
        let openai = r#"{"data":[{"id":"gpt-4o","owned_by":"system"},{"id":"o1","owned_by":"openai"}]}"#;
        for (body, expected) in [
            (llama, true),
            (vllm, true),
            (ollama, true),
            (openai, false),
            ("<html>", false),
        ] {
            assert_eq!(lists_grammar_runtime(body), expected, "{body}");
        }
    }

    #[test]
    fn reads_the_model_lists_people_serve() {
        let openai = r#"{"object":"list","data":[{"id":"gpt-4.1","object":"model"},{"id":"gpt-4.1-mini"}]}"#;
        assert_eq!(
            model_ids(openai),
            Some(vec!["gpt-4.1".into(), "gpt-4.1-mini".into()])
        );
        let ollama = r#"{"models":[{"name":"qwen2.5-coder:7b"}]}"#;
        assert_eq!(model_ids(ollama), Some(vec!["qwen2.5-coder:7b".into()]));
        assert_eq!(model_ids("<html>hello</html>"), None);
        assert_eq!(model_ids(r#"{"data": "nope"}"#), None);
    }

    #[test]
    fn ollama_latest_tags_match_bare_names() {
        assert!(same_model("llama3:latest", "llama3"));
        assert!(same_model("llama3", "llama3:latest"));
        assert!(!same_model("llama3:8b", "llama3"));
        assert!(!same_model("gpt-4.1-mini", "gpt-4.1"));
    }
}
