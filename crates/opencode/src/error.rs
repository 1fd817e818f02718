//! Errors of the OpenCode client, worded so a user can act on them.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot start OpenCode ({}): {source}. Is it installed? Set its path with OPENCODE_BIN or put `opencode` on PATH", bin.display())]
    Spawn {
        bin: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("OpenCode exited before it was ready ({status}); its last output:\n{output}")]
    ExitedEarly { status: String, output: String },
    #[error("OpenCode did not say where it listens within {secs} s; its last output:\n{output}")]
    StartTimeout { secs: u64, output: String },
    #[error("`{url}` is not a usable OpenCode server address: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("cannot reach OpenCode at {url}: {source}. Is `opencode serve` running there?")]
    Connect {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error(
        "OpenCode at {url} refused our credentials (HTTP 401). Check the password given for it \
         (the server's OPENCODE_SERVER_PASSWORD); the username is `opencode` unless the server \
         sets OPENCODE_SERVER_USERNAME"
    )]
    Unauthorized { url: String },
    #[error("OpenCode answered {method} {path} with HTTP {status}: {body}")]
    Http {
        method: &'static str,
        path: String,
        status: u16,
        body: String,
    },
    #[error(
        "OpenCode's reply to {what} is not what this client understands ({source}); is this OpenCode 1.x?"
    )]
    Decode {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("OpenCode's event stream broke: {0}")]
    Events(String),
    #[error("cannot start the tool bridge: {0}")]
    Bridge(#[source] std::io::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
