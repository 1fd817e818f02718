//! `bash {command, timeout?}`: a shell command in the worktree, under a supervisor.
//!
//! The end of the command, a timeout or a cancel kills everything it started (`cargo test` spawns test
//! binaries, `npm` spawns node, a hostile command `setsid`s a daemon): killing only bash would leave
//! processes running in a worktree that is about to be removed, holding the output pipe open so the
//! call would never return. The supervisor (`orchestrator_sandbox::supervise`) is their subreaper, so
//! nothing escapes it.

use std::collections::VecDeque;
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

/// How long output is still collected after the command ended and its tree was killed. Nothing should
/// hold the pipe open by then; if something does, it must not hold up the call.
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
    // Either way the command runs under a supervisor that kills everything it starts (see
    // orchestrator_sandbox::supervise) when it ends or when `lifeline` is dropped.
    let lifeline = match sandbox {
        // The sandbox gives the command its environment from an allow-list (and GIT_TERMINAL_PROMPT=0).
        Some(sandbox) => sandbox.apply(&mut command)?,
        None => {
            // Without a sandbox, at least the credentials known by name are kept from the command.
            orchestrator_sandbox::remove_secret_env(&mut command);
            orchestrator_sandbox::supervise(&mut command)?
        }
    };
    let mut child = command.spawn()?;
    // The command holds our copies of the pipe's write end; dropping it lets the reader see EOF.
    drop(command);
    let mut rx = pipe::Receiver::from_owned_fd(reader.into())?;
    let mut capture = Capture::new(req.max_chars);

    let ending = wait_while_reading(&mut child, &mut rx, &mut capture, req.timeout, cancel).await;
    // On a normal exit the supervisor has already killed whatever the command left behind; on a
    // timeout or cancel, cutting the lifeline kills the whole tree and ends the supervisor.
    lifeline.cut();
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
        // Its own group, so a terminal's Ctrl-C reaches the orchestrator, which cancels the call.
        // Not kill_on_drop: killing the supervisor would orphan the tree; dropping the call drops the
        // lifeline instead, and tokio reaps the supervisor.
        .process_group(0)
        // A credential prompt would wait forever on the null stdin.
        .env("GIT_TERMINAL_PROMPT", "0");
    command
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
