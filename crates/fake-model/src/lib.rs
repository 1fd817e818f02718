//! A scripted fake model server, OpenAI- and Anthropic-compatible, for tests and offline demos.

pub mod script;
