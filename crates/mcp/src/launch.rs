//! Starting a mission as a detached `orchestrator task --json` (or `resume --json`) process.
//!
//! The mission gets its own process group and writes straight into a log file, never into a pipe
//! to this server: a client that closes the server (or Ctrl-C in the client's terminal, which goes
//! to the terminal's foreground group) must not stop the mission, and a mission writing into a pipe
//! whose reader has gone would die of SIGPIPE.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use orchestrator_core::STATE_DIR;
use tokio::sync::oneshot;

use crate::error::ToolError;
use crate::params::StartMissionParams;

/// The folder under the repository's state folder that holds the missions' output.
pub const LOG_DIR: &str = "mcp";

/// A mission process that has announced its mission.
#[derive(Debug, Clone)]
pub struct Started {
    pub mission: String,
    pub pid: u32,
    pub log: PathBuf,
}

/// What came of waiting for the mission to announce itself.
#[derive(Debug)]
pub enum Launch {
    Started(Started),
    /// Still starting after the timeout (a slow endpoint check, say); it goes on in the background.
    Pending {
        pid: u32,
        log: PathBuf,
    },
}

/// Launches `exe task --json …` in `root` and waits until its first event names the mission, the
/// process exits (its output is the error), or `timeout` passes.
pub async fn start(
    exe: &Path,
    root: &Path,
    params: &StartMissionParams,
    timeout: Duration,
) -> Result<Launch, ToolError> {
    run(exe, root, params.task_args(root), timeout).await
}

/// Launches `exe resume --json --mission ID` in `root`, waiting as [`start`] does.
pub async fn resume(exe: &Path, root: &Path, mission: &str, timeout: Duration) -> Result<Launch, ToolError> {
    let mut args: Vec<std::ffi::OsString> = vec!["resume".into(), "--json".into(), "--repo".into()];
    args.push(root.as_os_str().to_owned());
    args.extend(["--mission".into(), mission.into()]);
    run(exe, root, args, timeout).await
}

async fn run(
    exe: &Path,
    root: &Path,
    args: Vec<std::ffi::OsString>,
    timeout: Duration,
) -> Result<Launch, ToolError> {
    exclude_state_dir(root).await?;
    let log = new_log_path(root)?;
    let (pid, exited) = spawn(exe, root, args, &log)?;
    watch(pid, &log, exited, timeout).await
}

/// The engine adds the same exclusion when the mission takes the repository, but a mission refused
/// before that (a dirty tree, say) would leave our log folder showing up in `git status`.
async fn exclude_state_dir(root: &Path) -> Result<(), ToolError> {
    let repo = orchestrator_git::Repo::discover(root)
        .await
        .map_err(|e| ToolError::Other(format!("{}: {e}", root.display())))?;
    repo.exclude_folder_except(STATE_DIR, &[orchestrator_core::role_files::ROLES_SUBDIR])
        .await
        .map_err(|e| ToolError::Other(format!("cannot add {STATE_DIR}/ to .git/info/exclude: {e}")))
}

fn new_log_path(root: &Path) -> Result<PathBuf, ToolError> {
    let dir = root.join(STATE_DIR).join(LOG_DIR);
    std::fs::create_dir_all(&dir)
        .map_err(|e| ToolError::io(format!("cannot create {}", dir.display()), e))?;
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    // The mission id is not known yet; time and our pid keep concurrent starts apart.
    Ok(dir.join(format!("mission-{millis}-{}.log", std::process::id())))
}

/// Spawns the mission and a task that reaps it, so it never lingers as a zombie while we run.
fn spawn(
    exe: &Path,
    root: &Path,
    args: Vec<std::ffi::OsString>,
    log: &Path,
) -> Result<(u32, oneshot::Receiver<ExitStatus>), ToolError> {
    let out = File::create(log).map_err(|e| ToolError::io(format!("cannot create {}", log.display()), e))?;
    let err = out
        .try_clone()
        .map_err(|e| ToolError::io(format!("cannot open {}", log.display()), e))?;
    let mut child = tokio::process::Command::new(exe)
        .args(args)
        .current_dir(root)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
        .map_err(|e| ToolError::io(format!("cannot run {}", exe.display()), e))?;
    let pid = child.id().unwrap_or_default();
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        if let Ok(status) = child.wait().await {
            let _ = tx.send(status);
        }
    });
    Ok((pid, rx))
}

async fn watch(
    pid: u32,
    log: &Path,
    mut exited: oneshot::Receiver<ExitStatus>,
    timeout: Duration,
) -> Result<Launch, ToolError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(mission) = mission_in(log) {
            return Ok(Launch::Started(Started {
                mission,
                pid,
                log: log.to_path_buf(),
            }));
        }
        if let Ok(status) = exited.try_recv() {
            // It may have announced the mission just before it exited.
            return match mission_in(log) {
                Some(mission) => Ok(Launch::Started(Started {
                    mission,
                    pid,
                    log: log.to_path_buf(),
                })),
                None => Err(not_started(status, log)),
            };
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(Launch::Pending {
                pid,
                log: log.to_path_buf(),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn not_started(status: ExitStatus, log: &Path) -> ToolError {
    let code = status
        .code()
        .map(|c| c.to_string())
        .unwrap_or_else(|| "killed by a signal".into());
    let output = std::fs::read_to_string(log).unwrap_or_default();
    ToolError::NotStarted {
        code,
        output: output.trim_end().to_string(),
    }
}

/// The mission id from the first complete `mission_started` (or, for a resume, `mission_resumed`)
/// event line of the log, if written yet.
fn mission_in(log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    first_mission(&text)
}

fn first_mission(text: &str) -> Option<String> {
    // Only lines that end in a newline are complete; the last one may still be being written.
    let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
    complete
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|event| event["type"] == "mission_started" || event["type"] == "mission_resumed")
        .and_then(|event| event["mission"].as_str().map(str::to_string))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_mission_in_the_first_started_event() {
        let text = "WARN something\n{\"seq\":1,\"mission\":\"m-1\",\"type\":\"mission_started\"}\n";
        assert_eq!(first_mission(text).as_deref(), Some("m-1"));
    }

    #[test]
    fn ignores_a_line_still_being_written() {
        assert_eq!(
            first_mission("{\"mission\":\"m-1\",\"type\":\"mission_started\"}"),
            None
        );
        assert_eq!(first_mission("not json\n"), None);
    }
}
