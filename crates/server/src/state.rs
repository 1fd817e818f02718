//! What every request handler shares: the token check, the registry of missions, and the signal
//! that the server is closing.

use std::path::PathBuf;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::auth::{Auth, Token};
use crate::registry::Registry;

/// What the server needs to know to start.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Required on every API request (`Authorization: Bearer`, or the dashboard's cookie).
    pub token: Token,
    /// Repository roots whose missions are listed from the start, and the only ones missions may be
    /// started in (unless `any_repo`).
    pub repos: Vec<PathBuf>,
    /// Whether `POST /api/missions` may name any repository on the server, not only `repos`.
    pub any_repo: bool,
    /// The OTLP/HTTP traces URL every mission started here is exported to (`None`: no traces).
    pub otlp_endpoint: Option<String>,
}

/// The state behind every route.
#[derive(Clone)]
pub struct AppState {
    pub auth: Arc<Auth>,
    pub registry: Arc<Registry>,
    /// Cancelled when the server stops: every event stream ends.
    pub closing: CancellationToken,
}

impl AppState {
    pub fn new(config: ServerConfig) -> Self {
        AppState {
            auth: Arc::new(Auth::new(config.token)),
            registry: Arc::new(
                Registry::new(config.repos)
                    .starting_in_any_repo(config.any_repo)
                    .with_traces(config.otlp_endpoint),
            ),
            closing: CancellationToken::new(),
        }
    }
}
