//! Model clients: one [`ModelClient`] trait, implemented for OpenAI-compatible chat completions
//! (OpenAI, vLLM, Ollama, llama.cpp, OpenRouter) and Anthropic's messages API.
//!
//! The engine speaks only the provider-neutral types in [`types`]; each client translates them to and
//! from its wire format. Both clients share one transport policy: bounded connect, first-byte and
//! idle timeouts, and a deadline for each whole request; a bounded reply size, so that no reply,
//! however endless, can exhaust memory, read in time linear in its size; retries with jittered
//! exponential backoff (honouring `Retry-After`) for connection failures, timeouts, 429 and 5xx;
//! immediate failure for 401/403, other 4xx and replies past the size or time limit; and prompt
//! cancellation. API keys never appear in errors or logs (see [`redact`]).
//!
//! With many sessions, wrap the client in a [`GovernedClient`]: one [`Governor`] per model shares
//! concurrency, rate budgets and every retry wait between all sessions (build the wrapped client
//! with [`ClientConfig::without_retries`]).

mod anthropic;
mod backoff;
mod constrain;
mod envelope;
mod governor;
mod lenient;
mod loops;
mod openai;
mod preflight;
mod redact;
mod sse;
mod transport;
mod types;

pub use anthropic::AnthropicClient;
pub use governor::{GovernedClient, Governor, GovernorConfig, GovernorStats, SharedThrottle, SharedView};
pub use lenient::{json_objects_in_text, tool_calls_from_text, unknown_tool_names_in_text};
pub use loops::Loop;
pub use openai::OpenAiClient;
pub use redact::redact;
pub use types::*;
