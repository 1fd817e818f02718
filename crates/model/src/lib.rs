//! Model clients: one [`ModelClient`] trait, implemented for OpenAI-compatible chat completions
//! (OpenAI, vLLM, Ollama, llama.cpp, OpenRouter) and Anthropic's messages API.
//!
//! The engine speaks only the provider-neutral types in [`types`]; each client translates them to and
//! from its wire format.

mod types;

pub use types::*;
