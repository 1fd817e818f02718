//! Desktop notices through `notify-send` (libnotify), which every Linux desktop answers.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Notice;

/// Whether to show desktop notices.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DesktopMode {
    /// Where there is a desktop session to show them in and `notify-send` to show them with.
    #[default]
    Auto,
    On,
    Off,
}

/// `notify-send` returns at once; one that hangs (a stuck notification daemon) is not waited for.
const SHOW_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) struct Desktop {
    program: Option<PathBuf>,
}

impl Desktop {
    /// `command`: the program to run instead of `notify-send` (found on PATH).
    pub(crate) fn new(mode: DesktopMode, command: Option<&Path>) -> Desktop {
        let program = match mode {
            DesktopMode::Off => None,
            DesktopMode::Auto if !has_session() => None,
            DesktopMode::Auto | DesktopMode::On => {
                let found = match command {
                    Some(command) => is_executable(command).then(|| command.to_path_buf()),
                    None => find_program("notify-send"),
                };
                if found.is_none() && mode == DesktopMode::On {
                    let what = command.map_or(
                        "`notify-send` is not on PATH (install libnotify-bin)".to_string(),
                        |c| format!("{} is not an executable file", c.display()),
                    );
                    tracing::warn!("notify: desktop notices are on but {what}");
                }
                found
            }
        };
        Desktop { program }
    }

    pub(crate) async fn show(&self, notice: &Notice) {
        let Some(program) = &self.program else {
            return;
        };
        let urgency = if notice.needs_attention {
            "critical"
        } else {
            "normal"
        };
        let args: Vec<OsString> = vec![
            "--app-name=orchestrator".into(),
            format!("--urgency={urgency}").into(),
            // After `--`, a title or message starting with a dash is never read as an option.
            "--".into(),
            notice.title.clone().into(),
            notice.message.clone().into(),
        ];
        let run = tokio::process::Command::new(program)
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .status();
        match tokio::time::timeout(SHOW_TIMEOUT, run).await {
            Ok(Ok(status)) if status.success() => {}
            Ok(Ok(status)) => tracing::warn!("notify: notify-send exited with {status}"),
            Ok(Err(e)) => tracing::warn!("notify: cannot run notify-send: {e}"),
            Err(_) => tracing::warn!(
                "notify: notify-send did not return within {} s",
                SHOW_TIMEOUT.as_secs()
            ),
        }
    }
}

/// A graphical session to show notices in (X11, Wayland, or a session bus).
fn has_session() -> bool {
    ["DISPLAY", "WAYLAND_DISPLAY", "DBUS_SESSION_BUS_ADDRESS"]
        .iter()
        .any(|var| std::env::var_os(var).is_some_and(|v| !v.is_empty()))
}

fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
