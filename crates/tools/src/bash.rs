//! `bash {command, timeout?}`: a shell command in the worktree, in its own process group.
//!
//! The command gets a process group of its own so that a timeout, a cancel, or the end of the command
//! kills everything it started (`cargo test` spawns test binaries, `npm` spawns node): killing only
//! bash would leave children running in a worktree that is about to be removed, and holding the output
//! pipe open so the call would never return.

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use orchestrator_sandbox::Sandbox;

use crate::text::clip_parts;
use crate::ToolOutput;

/// How long output is still collected after the command ended and its group was killed. Only a process
/// that left the group (`setsid`) can keep the pipe open that long, and it must not hold up the call.
const DRAIN_GRACE: Duration = Duration::from_millis(500);

pub(crate) struct BashRequest<'a> {
    pub command: &'a str,
    pub timeout: Duration,
    /// The timeout the model asked for, when it was above the maximum and `timeout` is the clamp.
    pub clamped_from: Option<f64>,
    pub max_chars: usize,
}

enum Ending {
    Exited(std::io::Result<ExitStatus>),
    TimedOut,
    Cancelled,
}

pub(crate) async fn bash(
    root: &Path,
    req: &BashRequest<'_>,
    sandbox: Option<&Sandbox>,
    cancel: &CancellationToken,
) -> ToolOutput {
    match run(root, req, sandbox, cancel).await {
        Ok(output) => output,
        Err(e) => ToolOutput::error(format!("could not run the command with bash: {e}")),
    }
}

async fn run(
    root: &Path,
    req: &BashRequest<'_>,
    sandbox: Option<&Sandbox>,
    cancel: &CancellationToken,
) -> std::io::Result<ToolOutput> {
    // One pipe for both streams keeps stdout and stderr interleaved as a terminal would show them.
    let (reader, writer) = std::io::pipe()?;
    let mut command = command(root, req.command, writer.try_clone()?, writer);
    match sandbox {
        // The sandbox gives the command its environment from an allow-list (and GIT_TERMINAL_PROMPT=0).
        Some(sandbox) => sandbox.apply(&mut command),
        None => remove_secret_env(&mut command),
    }
    let mut child = command.spawn()?;
    // The command holds our copies of the pipe's write end; dropping it lets the reader see EOF.
    drop(command);
    let mut group = child.id().and_then(ProcessGroup::new);
    let mut rx = pipe::Receiver::from_owned_fd(reader.into())?;
    let mut capture = Capture::new(req.max_chars);

    let ending = wait_while_reading(&mut child, &mut rx, &mut capture, req.timeout, cancel).await;
    // Kill whatever the command left behind, then reap bash if it did not exit on its own.
    if let Some(group) = group.as_mut() {
        group.kill();
    }
    if !matches!(ending, Ending::Exited(_)) {
        let _ = child.wait().await;
    }
    let _ = tokio::time::timeout(DRAIN_GRACE, read_into(&mut rx, &mut capture)).await;
    Ok(render(req, ending, capture))
}

fn command(root: &Path, script: &str, stdout: std::io::PipeWriter, stderr: std::io::PipeWriter) -> Command {
    let mut command = Command::new("bash");
    command
        .arg("-c")
        .arg(script)
        .current_dir(root)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .process_group(0)
        .kill_on_drop(true)
        // A credential prompt would wait forever on the null stdin.
        .env("GIT_TERMINAL_PROMPT", "0");
    command
}

/// Without a sandbox (a toolbox built with none), at least the credentials known by name are kept
/// from the command.
fn remove_secret_env(command: &mut Command) {
    for (name, _) in std::env::vars_os() {
        if is_secret_env(&name) {
            command.env_remove(name);
        }
    }
}

/// Whether an environment variable holds a credential the model must not be able to read back:
/// model keys, and the usual names for tokens, secrets and passwords (`GITHUB_TOKEN`,
/// `AWS_SECRET_ACCESS_KEY`, `NPM_TOKEN`, `DB_PASSWORD`, …). A model's commands are not the user's:
/// they get the environment without them.
pub(crate) fn is_secret_env(name: &OsStr) -> bool {
    let name = name.to_string_lossy().to_ascii_uppercase();
    const SUFFIXES: &[&str] = &[
        "_API_KEY",
        "_AUTH_TOKEN",
        "_TOKEN",
        "_SECRET",
        "_SECRET_KEY",
        "_SECRET_ACCESS_KEY",
        "_PASSWORD",
        "_PASSWD",
    ];
    SUFFIXES.iter().any(|s| name.ends_with(s))
        || matches!(
            name.as_str(),
            "OPENAI_API_KEY" | "ANTHROPIC_API_KEY" | "GH_TOKEN" | "GITHUB_TOKEN"
        )
}

async fn wait_while_reading(
    child: &mut tokio::process::Child,
    rx: &mut pipe::Receiver,
    capture: &mut Capture,
    timeout: Duration,
    cancel: &CancellationToken,
) -> Ending {
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let reading = read_into(rx, capture);
    tokio::pin!(reading);
    let mut eof = false;
    loop {
        tokio::select! {
            _ = &mut reading, if !eof => eof = true,
            status = child.wait() => return Ending::Exited(status),
            _ = &mut deadline => return Ending::TimedOut,
            _ = cancel.cancelled() => return Ending::Cancelled,
        }
    }
}

/// Reads until EOF. Dropping it part-way loses nothing: every chunk read is already in `capture`.
async fn read_into(rx: &mut pipe::Receiver, capture: &mut Capture) {
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n) = rx.read(&mut buf).await {
        if n == 0 {
            return;
        }
        capture.push(&buf[..n]);
    }
}

fn render(req: &BashRequest<'_>, ending: Ending, capture: Capture) -> ToolOutput {
    let mut header = String::new();
    if let Some(asked) = req.clamped_from {
        header.push_str(&format!(
            "(requested timeout {asked} s is above the maximum; used {} s)\n",
            req.timeout.as_secs_f64()
        ));
    }
    let is_error = match &ending {
        Ending::Exited(Ok(status)) => {
            header.push_str(&describe_exit(*status));
            false
        }
        Ending::Exited(Err(e)) => {
            header.push_str(&format!("could not wait for the command: {e}"));
            true
        }
        Ending::TimedOut => {
            header.push_str(&format!(
                "timed out after {} s; the command and every process it started were killed",
                req.timeout.as_secs_f64()
            ));
            true
        }
        Ending::Cancelled => {
            header.push_str("cancelled; the command and every process it started were killed");
            true
        }
    };
    header.push('\n');
    let body = capture.finish(req.max_chars.saturating_sub(header.chars().count()));
    ToolOutput {
        content: header + &body,
        is_error,
    }
}

fn describe_exit(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code: {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => format!("ended with {status}"),
    }
}

/// The command's process group, killed when the command ends or when the call is abandoned (the
/// engine dropping the future must not leave a build running).
struct ProcessGroup {
    id: libc::pid_t,
    killed: bool,
}

impl ProcessGroup {
    fn new(pid: u32) -> Option<Self> {
        // Never 0 or 1: killpg(0) would signal our own group and 1 is init.
        libc::pid_t::try_from(pid)
            .ok()
            .filter(|&id| id > 1)
            .map(|id| ProcessGroup { id, killed: false })
    }

    fn kill(&mut self) {
        if !self.killed {
            self.killed = true;
            // SAFETY: killpg takes plain integers and touches no memory of ours. ESRCH (the group is
            // already empty) is the common case after a normal exit and needs no handling.
            unsafe {
                libc::killpg(self.id, libc::SIGKILL);
            }
        }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Output kept while a command runs: the head and a rolling tail, so a command that prints gigabytes
/// costs bounded memory and the model still sees how it began and how it ended.
struct Capture {
    head: Vec<u8>,
    tail: VecDeque<u8>,
    cap: usize,
    dropped: u64,
}

impl Capture {
    fn new(max_chars: usize) -> Self {
        // A character is at most 4 bytes, so each half holds more than the final output can show.
        let cap = max_chars.saturating_mul(4).max(4096);
        Capture {
            head: Vec::new(),
            tail: VecDeque::new(),
            cap,
            dropped: 0,
        }
    }

    fn push(&mut self, data: &[u8]) {
        let to_head = (self.cap - self.head.len()).min(data.len());
        self.head.extend_from_slice(&data[..to_head]);
        let rest = &data[to_head..];
        if rest.len() >= self.cap {
            self.dropped += (self.tail.len() + rest.len() - self.cap) as u64;
            self.tail.clear();
            self.tail.extend(&rest[rest.len() - self.cap..]);
            return;
        }
        let overflow = (self.tail.len() + rest.len()).saturating_sub(self.cap);
        self.tail.drain(..overflow);
        self.dropped += overflow as u64;
        self.tail.extend(rest);
    }

    fn finish(self, max_chars: usize) -> String {
        if self.head.is_empty() {
            return "(no output)".to_string();
        }
        let head = String::from_utf8_lossy(&self.head);
        let tail: Vec<u8> = self.tail.into_iter().collect();
        let tail = String::from_utf8_lossy(&tail);
        clip_parts(&head, &tail, self.dropped, max_chars)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_recognised_by_name() {
        for name in [
            "OPENAI_API_KEY",
            "ANTHROPIC_API_KEY",
            "MY_API_KEY",
            "gh_auth_token",
            "GITHUB_TOKEN",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "NPM_TOKEN",
            "DB_PASSWORD",
            "STRIPE_SECRET",
        ] {
            assert!(is_secret_env(OsStr::new(name)), "{name}");
        }
        for name in [
            "PATH",
            "HOME",
            "API_KEY_FILE",
            "OPENAI_BASE_URL",
            "TOKENIZERS_PARALLELISM",
            "SECRETS_DIR",
        ] {
            assert!(!is_secret_env(OsStr::new(name)), "{name}");
        }
    }

    #[test]
    fn capture_keeps_head_and_tail_and_counts_the_rest() {
        let mut capture = Capture::new(1);
        capture.cap = 4;
        capture.push(b"abcdef");
        capture.push(b"gh");
        capture.push(b"ijklmnop");
        assert_eq!(capture.head, b"abcd");
        assert_eq!(capture.tail.iter().copied().collect::<Vec<_>>(), b"mnop");
        assert_eq!(capture.dropped, 8);
    }
}
