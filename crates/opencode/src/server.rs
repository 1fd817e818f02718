//! Starting and stopping `opencode serve`.
//!
//! We pass `--port 0` and read the address OpenCode prints (`opencode server listening on
//! http://127.0.0.1:PORT`): the OS picks a free port, so there is no window in which another program
//! can take a port we probed. The server runs in its own process group, so stopping it also stops
//! whatever it started (MCP servers, LSPs, shell commands of its sessions).

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};

use crate::client::{Auth, Client};
use crate::error::{Error, Result};

/// How to run `opencode serve`.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub bin: PathBuf,
    /// The server's own working folder. Sessions choose theirs per request; this only matters for
    /// requests that name none.
    pub current_dir: Option<PathBuf>,
    /// Set on the server's environment (e.g. HOME, XDG_*, OPENCODE_CONFIG_CONTENT, OPENCODE_DISABLE_*).
    pub env: Vec<(String, String)>,
    /// Removed from the server's environment.
    pub env_remove: Vec<String>,
    /// When set, the server requires HTTP basic auth (`opencode` / this password).
    pub password: Option<String>,
    pub startup_timeout: Duration,
}

impl ServerOptions {
    pub fn new(bin: impl Into<PathBuf>) -> Self {
        ServerOptions {
            bin: bin.into(),
            current_dir: None,
            env: Vec::new(),
            env_remove: Vec::new(),
            password: None,
            startup_timeout: Duration::from_secs(60),
        }
    }

    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    pub fn env_remove(mut self, key: impl Into<String>) -> Self {
        self.env_remove.push(key.into());
        self
    }

    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.current_dir = Some(dir.into());
        self
    }

    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(password.into());
        self
    }
}

/// The last lines OpenCode wrote, kept for error messages.
#[derive(Clone, Default)]
struct Tail(Arc<Mutex<VecDeque<String>>>);

impl Tail {
    const LINES: usize = 40;

    fn push(&self, line: String) {
        if let Ok(mut lines) = self.0.lock() {
            if lines.len() == Self::LINES {
                lines.pop_front();
            }
            lines.push_back(line);
        }
    }

    fn text(&self) -> String {
        self.0
            .lock()
            .map(|lines| lines.iter().cloned().collect::<Vec<_>>().join("\n"))
            .unwrap_or_default()
    }
}

/// A running `opencode serve`; stopped (with its process group) by [`OpencodeServer::stop`] or on drop.
pub struct OpencodeServer {
    child: Option<Child>,
    pgid: Option<i32>,
    url: String,
    auth: Option<Auth>,
    tail: Tail,
}

impl OpencodeServer {
    pub async fn start(options: ServerOptions) -> Result<OpencodeServer> {
        let mut cmd = Command::new(&options.bin);
        cmd.args(["serve", "--hostname", "127.0.0.1", "--port", "0"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            // Its own group: stop() signals everything OpenCode started, not just OpenCode.
            .process_group(0)
            .kill_on_drop(true);
        // If we die without cleaning up (SIGKILL, a second Ctrl-C), the kernel ends the server too,
        // so no `opencode serve` outlives the mission that started it.
        #[cfg(target_os = "linux")]
        // SAFETY: prctl is async-signal-safe and only sets this child's parent-death signal.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        if let Some(dir) = &options.current_dir {
            // OpenCode takes its folder from PWD, as a shell would have set it.
            cmd.current_dir(dir).env("PWD", dir);
        }
        for key in &options.env_remove {
            cmd.env_remove(key);
        }
        for (key, value) in &options.env {
            cmd.env(key, value);
        }
        // The password reaches the server only through its environment, never its command line.
        match &options.password {
            Some(password) => cmd.env("OPENCODE_SERVER_PASSWORD", password),
            None => cmd.env_remove("OPENCODE_SERVER_PASSWORD"),
        };
        cmd.env_remove("OPENCODE_SERVER_USERNAME");
        let mut child = cmd.spawn().map_err(|source| Error::Spawn {
            bin: options.bin.clone(),
            source,
        })?;
        let pgid = child.id().and_then(|id| i32::try_from(id).ok());
        let tail = Tail::default();
        let (url_tx, mut url_rx) = tokio::sync::mpsc::channel::<String>(1);
        if let Some(stdout) = child.stdout.take() {
            drain(stdout, tail.clone(), Some(url_tx));
        }
        if let Some(stderr) = child.stderr.take() {
            drain(stderr, tail.clone(), None);
        }
        let mut server = OpencodeServer {
            child: Some(child),
            pgid,
            url: String::new(),
            auth: options.password.map(|password| Auth::new("opencode", password)),
            tail,
        };
        let secs = options.startup_timeout.as_secs();
        let url = tokio::time::timeout(options.startup_timeout, url_rx.recv()).await;
        match url {
            Ok(Some(url)) => server.url = url,
            Ok(None) => {
                // stdout closed without an address: OpenCode exited (or closed it); say how.
                let status = match server.child.as_mut() {
                    Some(child) => match tokio::time::timeout(Duration::from_secs(5), child.wait()).await {
                        Ok(Ok(status)) => status.to_string(),
                        _ => "still running, but its output ended".into(),
                    },
                    None => "unknown".into(),
                };
                // Give the stderr reader a moment to collect the reason.
                tokio::time::sleep(Duration::from_millis(100)).await;
                return Err(Error::ExitedEarly {
                    status,
                    output: server.tail.text(),
                });
            }
            Err(_) => {
                return Err(Error::StartTimeout {
                    secs,
                    output: server.tail.text(),
                })
            }
        }
        // The address is printed once the listener is up; a health call confirms the API answers.
        server.client()?.health().await?;
        Ok(server)
    }

    /// The base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn auth(&self) -> Option<&Auth> {
        self.auth.as_ref()
    }

    /// A client for this server, with its credentials.
    pub fn client(&self) -> Result<Client> {
        Client::new(&self.url, self.auth.clone())
    }

    /// The last lines OpenCode printed (for diagnostics).
    pub fn output(&self) -> String {
        self.tail.text()
    }

    /// Stops the server and its process group: SIGTERM, then SIGKILL after `grace`.
    pub async fn stop(mut self, grace: Duration) {
        self.signal(libc::SIGTERM);
        if let Some(mut child) = self.child.take() {
            if tokio::time::timeout(grace, child.wait()).await.is_err() {
                self.signal(libc::SIGKILL);
                let _ = child.wait().await;
            }
        }
        // Whatever the group still holds (children that ignored SIGTERM) goes too.
        self.signal(libc::SIGKILL);
        self.pgid = None;
    }

    fn signal(&self, signal: i32) {
        if let Some(pgid) = self.pgid {
            // SAFETY: killpg has no memory effects; the group is the one we created for OpenCode,
            // so no other process can be hit (an exited group gives ESRCH, which is ignored).
            unsafe {
                libc::killpg(pgid, signal);
            }
        }
    }
}

impl Drop for OpencodeServer {
    fn drop(&mut self) {
        self.signal(libc::SIGKILL);
    }
}

/// Reads lines into the tail; the first URL after "listening on" is sent once.
fn drain(
    stream: impl AsyncRead + Unpin + Send + 'static,
    tail: Tail,
    mut url_tx: Option<tokio::sync::mpsc::Sender<String>>,
) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(url) = listening_url(&line) {
                if let Some(tx) = url_tx.take() {
                    let _ = tx.send(url).await;
                }
            }
            tail.push(line);
        }
    });
}

/// `opencode server listening on http://127.0.0.1:4096` -> `http://127.0.0.1:4096`.
fn listening_url(line: &str) -> Option<String> {
    let (_, rest) = line.split_once("listening on ")?;
    let url = rest.split_whitespace().next()?;
    url.starts_with("http")
        .then(|| url.trim_end_matches('/').to_string())
}

#[cfg(test)]
mod tests {
    use super::listening_url;

    #[test]
    fn reads_the_address_line() {
        assert_eq!(
            listening_url("opencode server listening on http://127.0.0.1:4096").as_deref(),
            Some("http://127.0.0.1:4096")
        );
        assert_eq!(
            listening_url("Warning: OPENCODE_SERVER_PASSWORD is not set"),
            None
        );
    }
}
