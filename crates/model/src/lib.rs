//! Model clients: one [`ModelClient`] trait, implemented for OpenAI-compatible chat completions
//! (OpenAI, vLLM, Ollama, llama.cpp, OpenRouter) and Anthropic's messages API.
//!
//! The engine speaks only the provider-neutral types in [`types`]; each client translates them to and
//! from its wire format. Both clients share one transport policy: bounded connect, first-byte and
//! idle timeouts; retries with jittered exponential backoff (honouring `Retry-After`) for connection
//! failures, timeouts, 429 and 5xx; immediate failure for 401/403 and other 4xx; and prompt
//! cancellation. API keys never appear in errors or logs (see [`redact`]).

mod anthropic;
mod backoff;
mod openai;
mod redact;
mod transport;
mod types;

pub use anthropic::AnthropicClient;
pub use openai::OpenAiClient;
pub use redact::redact;
pub use types::*;
