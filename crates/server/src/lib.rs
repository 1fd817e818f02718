//! `orchestrator serve`: an HTTP API for missions and a web dashboard, served from the binary.
//!
//! Missions started over the API run in this process through [`orchestrator_core::run_task`] — one
//! engine, many front ends — each with its own event bus, [`MissionControl`] and cancellation token.
//! Missions found in the stores of the repositories the server knows (given with `--repo`, or where a
//! mission was started) are listed and followed too, by reading their store, so the dashboard also
//! shows a mission that `orchestrator task` runs in a terminal.
//!
//! Nothing unfinished is lost: a mission killed, crashed or cancelled is listed as interrupted, and
//! `POST /api/missions/{id}/resume` (or `serve --resume-interrupted`, at start) continues it here
//! through [`orchestrator_core::resume`]; a new mission beside one is refused until it is resumed or
//! abandoned, as `orchestrator task` does.
//!
//! Every request to the API needs the server's token ([`Token`]); missions start only in the
//! repositories the server was given, unless it was told to allow any ([`ServerConfig::any_repo`]).
//!
//! Every view reads the one fold of the event stream, [`orchestrator_view::MissionView`]; the
//! dashboard's script only renders what `GET /api/missions/{id}` returns.
//!
//! [`MissionControl`]: orchestrator_core::MissionControl

mod auth;
mod dashboard;
mod error;
mod registry;
mod resume;
mod routes;
mod start;
mod state;
mod stream;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use auth::{Token, TokenError, TOKEN_COOKIE};
pub use error::ApiError;
pub use registry::{MissionDetail, MissionSummary, RepoSummary};
pub use resume::{Interrupted, Resumed};
pub use start::StartRequest;
pub use state::ServerConfig;

/// How long shutdown waits for the missions it cancelled to stop (they stop within seconds: running
/// sessions are aborted, work is kept).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(120);

/// Problems that keep the server from starting.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the server stopped on an error: {0}")]
    Serve(#[source] std::io::Error),
}

/// The HTTP server: the API, the dashboard and the missions it runs.
#[derive(Clone)]
pub struct Server {
    state: state::AppState,
}

impl Server {
    pub fn new(config: ServerConfig) -> Self {
        Server {
            state: state::AppState::new(config),
        }
    }

    /// The routes, for serving or for calling directly in tests.
    pub fn router(&self) -> axum::Router {
        routes::router(self.state.clone())
    }

    /// Serves on `listener` until `shutdown` completes; then cancels the missions it runs (they stay
    /// resumable), waits for them to stop, ends the event streams and returns.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let streams_closed = self.state.closing.clone();
        let registry = self.state.registry.clone();
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        tokio::spawn(async move {
            // The shutdown signal runs as a task of its own: should it panic (a message to a closed
            // stderr, say), the stop still happens, instead of the server going on deaf to signals.
            if let Err(e) = tokio::spawn(shutdown).await {
                tracing::warn!("the shutdown signal failed ({e}); stopping anyway");
            }
            let cancelled = registry.cancel_all();
            if cancelled > 0 {
                tracing::info!("cancelling {cancelled} running mission(s)");
            }
            registry.wait_stopped(SHUTDOWN_GRACE).await;
            // The event streams end only now, so that browsers see the missions' last events.
            streams_closed.cancel();
            stop.cancel();
        });
        axum::serve(listener, self.router())
            .with_graceful_shutdown(stopped.cancelled_owned())
            .await
            .map_err(ServerError::Serve)
    }

    /// The interrupted missions of the repositories this server knows, newest first per repository:
    /// what `POST /api/missions/{id}/resume` continues.
    pub async fn interrupted(&self) -> Vec<Interrupted> {
        resume::interrupted(&self.state.registry).await
    }

    /// `--resume-interrupted`: continues the newest interrupted mission of each repository in this
    /// process (one mission at a time runs in a repository) and says what became of each.
    pub async fn resume_interrupted(&self) -> Vec<Resumed> {
        resume::resume_all(self.state.registry.clone()).await
    }

    /// How many missions this server runs now.
    pub fn running_missions(&self) -> usize {
        self.state.registry.running_count()
    }
}

/// Binds `addr`. Any address is allowed: every request needs the token.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr, source })
}
