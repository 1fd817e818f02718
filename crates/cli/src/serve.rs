//! `orchestrator serve`: the HTTP API and web dashboard (crates/server) on an address, until Ctrl-C
//! or SIGTERM; then the missions it runs are cancelled cleanly (resumable) before it exits.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use orchestrator_server::{Server, ServerConfig};

use crate::out::{self, errln};

#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on (IP:PORT; port 0 picks a free one). Anything but loopback needs a token.
    #[arg(long, default_value = "127.0.0.1:7700")]
    bind: SocketAddr,
    /// Required on every API request as `Authorization: Bearer <token>`; open the dashboard once as
    /// /?token=<token> to let the browser keep it in a cookie.
    #[arg(long, env = "ORCHESTRATOR_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A repository whose missions are listed (repeatable); default: the current one, if any.
    #[arg(long = "repo", value_name = "PATH")]
    repos: Vec<PathBuf>,
    /// Export every mission started here as OpenTelemetry traces (OTLP/HTTP, e.g.
    /// http://localhost:4318); the OTEL_EXPORTER_OTLP_* variables work too.
    #[arg(long, value_name = "URL")]
    otlp_endpoint: Option<String>,
}

pub async fn run(args: ServeArgs) -> u8 {
    let token = args.token.filter(|t| !t.is_empty());
    let env = |name: &str| std::env::var(name).ok();
    let otlp_endpoint = match orchestrator_telemetry::traces_endpoint(args.otlp_endpoint.as_deref(), &env) {
        Ok(url) => url,
        Err(e) => {
            errln!("error: --otlp-endpoint: {e}");
            return 2;
        }
    };
    let repos = match repo_roots(&args.repos).await {
        Ok(repos) => repos,
        Err(message) => {
            errln!("error: {message}");
            return 2;
        }
    };
    let listener = match orchestrator_server::bind(args.bind, token.as_deref()).await {
        Ok(listener) => listener,
        Err(e) => {
            errln!("error: {e}");
            return 2;
        }
    };
    let addr = listener.local_addr().unwrap_or(args.bind);
    announce(addr, token.is_some(), &repos);
    let server = Server::new(ServerConfig {
        token,
        repos,
        loopback_only: addr.ip().is_loopback(),
        otlp_endpoint,
    });
    match server.serve(listener, shutdown_signal()).await {
        Ok(()) => 0,
        Err(e) => {
            errln!("error: {e}");
            1
        }
    }
}

/// The repositories' top folders; without `--repo`, the current folder's repository if it is one.
async fn repo_roots(given: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    if given.is_empty() {
        let here = orchestrator_core::repo_root(std::path::Path::new(".")).await;
        return Ok(here.into_iter().collect());
    }
    let mut roots = Vec::new();
    for path in given {
        let root = orchestrator_core::repo_root(path)
            .await
            .map_err(|e| format!("--repo {}: {e}", path.display()))?;
        roots.push(root);
    }
    Ok(roots)
}

/// The first line is the address, for people and for scripts that start the server on port 0.
///
/// Nothing here may stop the server: with stdout closed (`| head -1`) the lines are dropped and the
/// server goes on serving, and stops on Ctrl-C or SIGTERM as ever.
fn announce(addr: SocketAddr, with_token: bool, repos: &[PathBuf]) {
    let mut lines = vec![format!("orchestrator serve: listening on http://{addr}/")];
    if with_token {
        lines.push(format!(
            "open http://{addr}/?token=<your token> once; the browser then keeps the token in a cookie"
        ));
        lines.push("API clients send `Authorization: Bearer <your token>`".into());
    }
    for repo in repos {
        lines.push(format!("watching missions of {}", repo.display()));
    }
    lines.push("Ctrl-C stops the server; missions it runs are cancelled cleanly and stay resumable".into());
    for line in lines {
        if out::line(format_args!("{line}")).is_err() {
            break;
        }
    }
}

/// Ctrl-C or SIGTERM starts a clean stop; a second Ctrl-C leaves at once.
async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => Some(term),
        Err(e) => {
            tracing::warn!("cannot watch SIGTERM: {e}");
            None
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
    }
    errln!("\nstopping: cancelling running missions cleanly (Ctrl-C again to quit at once)…");
    tokio::spawn(async {
        if tokio::signal::ctrl_c().await.is_ok() {
            std::process::exit(3);
        }
    });
}
