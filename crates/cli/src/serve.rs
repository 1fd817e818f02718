//! `orchestrator serve`: the HTTP API and web dashboard (crates/server) on an address, until Ctrl-C
//! or SIGTERM; then the missions it runs are cancelled cleanly (resumable) before it exits.
//!
//! Every request needs a token, loopback or not: from `--token-file` or ORCHESTRATOR_TOKEN, else one
//! made for this run and printed in the dashboard's address (as Jupyter does). Never from the command
//! line, where every local user reads it in `ps`.

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Args;
use orchestrator_server::{Resumed, Server, ServerConfig, Token};

use crate::out::{self, errln};

/// The environment variable a token may come in.
const TOKEN_ENV: &str = "ORCHESTRATOR_TOKEN";

#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on (IP:PORT; port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:7700")]
    bind: SocketAddr,
    /// A file holding the token every API request must carry (at least 16 characters; the
    /// ORCHESTRATOR_TOKEN variable works too). Without either, a token is made for this run and
    /// printed in the dashboard's address.
    #[arg(long, value_name = "PATH")]
    token_file: Option<PathBuf>,
    /// Refused with a word on what to use instead: the command line is visible to everyone in `ps`.
    #[arg(long, hide = true, value_name = "TOKEN")]
    token: Option<String>,
    /// A repository whose missions are listed and may be started (repeatable); default: the current
    /// one, if any.
    #[arg(long = "repo", value_name = "PATH")]
    repos: Vec<PathBuf>,
    /// Let API requests start missions in any repository on this machine, not only the --repo ones.
    #[arg(long)]
    any_repo: bool,
    /// Export every mission started here as OpenTelemetry traces (OTLP/HTTP, e.g.
    /// http://localhost:4318); the OTEL_EXPORTER_OTLP_* variables work too.
    #[arg(long, value_name = "URL")]
    otlp_endpoint: Option<String>,
    /// At start, continue each repository's interrupted mission (killed, crashed, cancelled) in this
    /// server, as `orchestrator resume` would. Without it they are only named, for
    /// `POST /api/missions/{id}/resume` or the dashboard's Resume button.
    #[arg(long)]
    resume_interrupted: bool,
}

/// Where the server's token came from.
enum Source {
    File(PathBuf),
    Env,
    Made,
}

pub async fn run(args: ServeArgs) -> u8 {
    let (token, source) = match token(&args) {
        Ok(found) => found,
        Err(message) => {
            errln!("error: {message}");
            return 2;
        }
    };
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
    let listener = match orchestrator_server::bind(args.bind).await {
        Ok(listener) => listener,
        Err(e) => {
            errln!("error: {e}");
            return 2;
        }
    };
    let addr = listener.local_addr().unwrap_or(args.bind);
    announce(addr, &token, &source, &repos, args.any_repo);
    let server = Server::new(ServerConfig {
        token,
        repos,
        any_repo: args.any_repo,
        otlp_endpoint,
    });
    if args.resume_interrupted {
        // Beside serving: a slow endpoint check must not keep the API from answering.
        let resumer = server.clone();
        tokio::spawn(async move { resumer.resume_interrupted().await.iter().for_each(say_resumed) });
    } else {
        name_interrupted(&server).await;
    }
    match server.serve(listener, shutdown_signal()).await {
        Ok(()) => 0,
        Err(e) => {
            errln!("error: {e}");
            1
        }
    }
}

/// The token: `--token-file`, else ORCHESTRATOR_TOKEN, else a new random one. A given token must be
/// strong enough to resist guessing; `--token` on the command line is refused.
fn token(args: &ServeArgs) -> Result<(Token, Source), String> {
    if args.token.is_some() {
        return Err(format!(
            "--token is not accepted: the command line is visible to every user of this machine in `ps`. Put \
             the token in a file only you can read and pass --token-file PATH, or set {TOKEN_ENV}, or leave \
             both out and a token is made for this run (and choose a new token: that one has been seen)"
        ));
    }
    let or_leave_it =
        format!("; or leave out --token-file and {TOKEN_ENV}, and a token is made for this run");
    if let Some(path) = &args.token_file {
        let text = read_token_file(path)?;
        let token =
            Token::new(&text).map_err(|e| format!("the token in {} {e}{or_leave_it}", path.display()))?;
        return Ok((token, Source::File(path.clone())));
    }
    // Empty counts as unset, as it always has.
    if let Some(value) = std::env::var_os(TOKEN_ENV).filter(|v| !v.is_empty()) {
        let value = value
            .into_string()
            .map_err(|_| format!("{TOKEN_ENV} is not valid UTF-8{or_leave_it}"))?;
        let token = Token::new(&value).map_err(|e| format!("the token in {TOKEN_ENV} {e}{or_leave_it}"))?;
        return Ok((token, Source::Env));
    }
    let token = Token::generate().map_err(|e| {
        format!(
            "cannot make a token: the system's random source failed ({e}); give one in {TOKEN_ENV} or \
             --token-file"
        )
    })?;
    Ok((token, Source::Made))
}

/// The token file's text; a file far longer than any token (`/dev/zero`) is not read to its end.
fn read_token_file(path: &Path) -> Result<String, String> {
    let cannot = |e: std::io::Error| format!("--token-file {}: {e}", path.display());
    let file = std::fs::File::open(path).map_err(cannot)?;
    warn_if_others_can_read(path, &file);
    // Room for the longest token and a line ending, and one byte more to notice a longer file.
    let limit = Token::MAX_CHARS + 3;
    let mut bytes = Vec::new();
    file.take(limit as u64).read_to_end(&mut bytes).map_err(cannot)?;
    if bytes.len() == limit {
        return Err(format!(
            "--token-file {}: the file is longer than a token may be ({} characters at most)",
            path.display(),
            Token::MAX_CHARS
        ));
    }
    String::from_utf8(bytes).map_err(|_| {
        format!(
            "--token-file {}: the file is not text (a token is visible ASCII characters)",
            path.display()
        )
    })
}

/// A token file others can read is no secret; say so, but serve (the user may share it on purpose).
fn warn_if_others_can_read(path: &Path, file: &std::fs::File) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = file.metadata() else { return };
    let mode = meta.permissions().mode();
    if meta.is_file() && mode & 0o077 != 0 {
        errln!(
            "warning: {} can be read by other users (mode {:04o}); `chmod 600 {}` keeps the token yours",
            path.display(),
            mode & 0o7777,
            path.display()
        );
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

/// The first line is the address, for people and for scripts that start the server on port 0. A made
/// token is shown in the dashboard's address, the one place the user can learn it; stdout is the
/// user's own terminal. A token the user gave is never printed.
///
/// Nothing here may stop the server: with stdout closed (`| head -1`) the lines are dropped and the
/// server goes on serving, and stops on Ctrl-C or SIGTERM as ever.
fn announce(addr: SocketAddr, token: &Token, source: &Source, repos: &[PathBuf], any_repo: bool) {
    let mut lines = vec![format!("orchestrator serve: listening on http://{addr}/")];
    match source {
        Source::Made => {
            lines.push(format!(
                "open the dashboard: http://{addr}/?token={}",
                token.reveal()
            ));
            lines.push(format!(
                "(a token made for this run; API clients send `Authorization: Bearer <that token>`; set \
                 {TOKEN_ENV} or --token-file to choose your own)"
            ));
        }
        Source::File(_) | Source::Env => {
            let from = match source {
                Source::File(path) => format!("the token in {}", path.display()),
                _ => format!("the token in {TOKEN_ENV}"),
            };
            lines.push(format!(
                "open http://{addr}/?token=<your token> once ({from}); the browser then keeps it in a cookie"
            ));
            lines.push("API clients send `Authorization: Bearer <your token>`".into());
        }
    }
    for repo in repos {
        lines.push(format!("watching missions of {}", repo.display()));
    }
    if any_repo {
        lines.push("--any-repo: API requests may start missions in any repository on this machine".into());
    } else if !repos.is_empty() {
        lines.push("missions start only in the repositories above (--repo adds one)".into());
    }
    lines.push("Ctrl-C stops the server; missions it runs are cancelled cleanly and stay resumable".into());
    for line in lines {
        if out::line(format_args!("{line}")).is_err() {
            break;
        }
    }
    if repos.is_empty() && !any_repo {
        errln!(
            "note: no repository to start missions in (not inside one, and no --repo): the API refuses every \
             start; pass --repo PATH (or --any-repo)"
        );
    }
    if !addr.ip().is_loopback() {
        errln!(
            "note: serving beyond this machine over plain HTTP: the token and the missions cross the network \
             unencrypted; put a TLS proxy in front"
        );
    }
}

/// Interrupted missions are never silently left behind: each is named with the ways to continue it.
async fn name_interrupted(server: &Server) {
    for mission in server.interrupted().await {
        let id = &mission.record.id;
        let line = format!(
            "interrupted mission {} in {}: resume it with POST /api/missions/{id}/resume (the dashboard's \
             Resume button), or restart serve with --resume-interrupted",
            mission.line(),
            mission.repo.display()
        );
        tracing::info!("{line}");
        let _ = out::line(format_args!("{line}"));
    }
}

/// What `--resume-interrupted` did with one mission, on stdout (a refusal on stderr).
fn say_resumed(resumed: &Resumed) {
    match resumed {
        Resumed::Running(mission) => {
            let line = format!(
                "resumed interrupted mission {} in {}; follow it at /api/missions/{}",
                mission.line(),
                mission.repo.display(),
                mission.record.id
            );
            tracing::info!("{line}");
            let _ = out::line(format_args!("{line}"));
        }
        Resumed::Waiting(mission) => {
            let _ = out::line(format_args!(
                "interrupted mission {} in {} waits: one mission at a time runs there; POST \
                 /api/missions/{}/resume once the other has finished",
                mission.line(),
                mission.repo.display(),
                mission.record.id
            ));
        }
        Resumed::Refused(mission, error) => {
            errln!(
                "warning: interrupted mission {} in {} was not resumed: {}",
                mission.line(),
                mission.repo.display(),
                error.message
            );
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
