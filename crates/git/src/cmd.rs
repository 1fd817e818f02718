//! Running `git` itself: one place that decides the environment, options and retries of every call.

use std::ffi::{OsStr, OsString};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::Command;

use crate::GitError;

/// Variables that would make git pick a repository other than the one `-C` names. They leak in when the
/// orchestrator itself is started from a git hook or alias; cleared so every call targets `-C <dir>`.
const LOCATING_VARS: &[&str] = &[
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_COMMON_DIR",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_NAMESPACE",
    "GIT_PREFIX",
];

/// Options for commands that commit, merge or check out. Signing could prompt for a passphrase and hooks
/// could block or prompt; the runtime verifies work itself. Automatic gc is off because a background
/// repack or `pack-refs` racing 50 sessions' ref updates is exactly the lock contention we avoid; the
/// user's next own git command does that housekeeping. rerere is off so a conflict is always reported as
/// a conflict, never silently replayed from an old resolution.
const WRITE_CONFIG: &[&str] = &[
    "-c",
    "commit.gpgsign=false",
    "-c",
    "core.hooksPath=/dev/null",
    "-c",
    "gc.auto=0",
    "-c",
    "maintenance.auto=false",
    "-c",
    "rerere.enabled=false",
];

/// The identity used when the repository has none configured.
const FALLBACK_NAME: &str = "orchestrator";
const FALLBACK_EMAIL: &str = "orchestrator@localhost";

/// How often a command that lost a race for a `.lock` file is tried in all.
const LOCK_ATTEMPTS: u32 = 6;

/// What a call needs beyond the common environment.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Mode {
    /// Commits, merges or checks out: add [`WRITE_CONFIG`].
    pub writes: bool,
    /// Creates commits or reflog entries: supply the fallback identity when none is configured.
    pub identity: bool,
    /// Try again when another process holds a lock file git needs.
    pub retry_locks: bool,
    /// Only reads: tell git not to take optional locks (e.g. `status` refreshing the index), so reading
    /// the user's tree never makes the user's own git command fail on `index.lock`.
    pub read_only: bool,
}

impl Mode {
    pub const READ: Mode = Mode {
        writes: false,
        identity: false,
        retry_locks: false,
        read_only: true,
    };
    /// Changes shared repository metadata (refs, worktree registrations). Reflog entries need no
    /// configured identity (git falls back quietly), so no identity lookup is spent here.
    pub const META: Mode = Mode {
        writes: true,
        identity: false,
        retry_locks: true,
        read_only: false,
    };
    /// Creates commits (commit, merge): needs an identity git will accept.
    pub const COMMIT: Mode = Mode {
        writes: true,
        identity: true,
        retry_locks: true,
        read_only: false,
    };
}

/// What a finished git process left behind.
#[derive(Debug)]
pub(crate) struct Output {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub command: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// git's message: stderr, or stdout when git reported there (as `merge` does for conflicts).
    pub fn message(&self) -> String {
        let stderr = self.stderr.trim();
        if stderr.is_empty() {
            self.stdout.trim().to_string()
        } else {
            stderr.to_string()
        }
    }

    pub fn into_error(self) -> GitError {
        GitError::Command {
            code: self.code,
            stderr: self.message(),
            args: self.command,
        }
    }

    /// Ok(self) on exit 0, the command error otherwise.
    pub fn checked(self) -> Result<Output, GitError> {
        if self.success() {
            Ok(self)
        } else {
            Err(self.into_error())
        }
    }

    /// stdout without its final newline, for commands that print one value.
    pub fn line(&self) -> String {
        self.stdout.trim_end_matches(['\n', '\r']).to_string()
    }
}

/// Author/committer variables a commit needs (empty when the repository has an identity).
type Identity = Vec<(&'static str, &'static str)>;

/// Starts git for one repository. Holds the extra environment given to `Repo::discover_with_env`.
#[derive(Debug)]
pub(crate) struct Runner {
    extra_env: Vec<(String, String)>,
    /// The fallback identity, looked up once per repository: every commit and merge needs it, and a
    /// `git config` process per commit was 2 of the ~25 git processes a unit used to cost.
    identity: tokio::sync::OnceCell<Identity>,
}

impl Runner {
    pub fn new(extra_env: Vec<(String, String)>) -> Runner {
        Runner {
            extra_env,
            identity: tokio::sync::OnceCell::new(),
        }
    }

    /// Runs git in `dir` and returns whatever it did; only failing to start it is an error.
    pub async fn run<I, S>(&self, dir: &Path, args: I, mode: Mode) -> Result<Output, GitError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let identity: &[(&str, &str)] = if mode.identity {
            self.identity
                .get_or_try_init(|| self.fallback_identity(dir))
                .await?
        } else {
            &[]
        };
        let mut attempt = 1;
        loop {
            let out = self.spawn(dir, &args, mode, identity).await?;
            if out.success()
                || !mode.retry_locks
                || attempt >= LOCK_ATTEMPTS
                || !is_lock_contention(&out.stderr)
            {
                return Ok(out);
            }
            tracing::debug!(command = %out.command, attempt, "git lock busy, retrying");
            tokio::time::sleep(backoff(attempt)).await;
            attempt += 1;
        }
    }

    /// Runs git in `dir`; a non-zero exit is an error.
    pub async fn check<I, S>(&self, dir: &Path, args: I, mode: Mode) -> Result<Output, GitError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.run(dir, args, mode).await?.checked()
    }

    async fn spawn(
        &self,
        dir: &Path,
        args: &[OsString],
        mode: Mode,
        identity: &[(&str, &str)],
    ) -> Result<Output, GitError> {
        let mut cmd = Command::new("git");
        cmd.arg("-C").arg(dir);
        // Never run a file-system monitor program from the repository's config: one planted there
        // would run with the orchestrator's rights on every status, add and diff.
        cmd.args(["-c", "core.fsmonitor=false"]);
        if mode.writes {
            cmd.args(WRITE_CONFIG);
        }
        cmd.args(args);
        for var in LOCATING_VARS {
            cmd.env_remove(var);
        }
        // A git process is readable through /proc by agent commands of the same user while it runs:
        // it does not need the model's key or any other credential of ours.
        orchestrator_sandbox::remove_secret_env(&mut cmd);
        cmd.env("GIT_TERMINAL_PROMPT", "0")
            .env("LC_ALL", "C")
            .env("GIT_EDITOR", "true")
            .env("GIT_MERGE_AUTOEDIT", "no");
        if mode.read_only {
            cmd.env("GIT_OPTIONAL_LOCKS", "0");
        }
        cmd.envs(self.extra_env.iter().map(|(k, v)| (k, v)));
        cmd.envs(identity.iter().copied());
        // Not kill_on_drop: killing git mid-write leaves a stale index.lock that breaks every later call.
        // If the caller stops waiting, git finishes on its own and tokio reaps it.
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());

        let started = Instant::now();
        let out = cmd.output().await.map_err(|e| {
            std::io::Error::new(e.kind(), format!("could not run git in {}: {e}", dir.display()))
        })?;
        let command = command_line(dir, args);
        tracing::debug!(%command, code = ?out.status.code(), elapsed_ms = started.elapsed().as_millis() as u64, "git");
        Ok(Output {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            command,
        })
    }

    /// Author/committer variables to set for a commit in `dir`: none when the repository has an identity.
    /// When `user.email` is missing all four fall back to `orchestrator`; when only `user.name` is missing
    /// only the names do (git would otherwise fail with an empty name on machines without a GECOS field).
    /// Variables already in our environment are the user's explicit choice and are left alone.
    async fn fallback_identity(&self, dir: &Path) -> Result<Identity, GitError> {
        let args = ["config", "--get-regexp", r"^user\.(name|email)$"].map(OsString::from);
        let out = self.spawn(dir, &args, Mode::READ, &[]).await?;
        // Exit 1 means "no such key": no identity at all.
        if !out.success() && out.code != Some(1) {
            return Err(out.into_error());
        }
        let configured = |key: &str| {
            out.stdout.lines().any(|l| {
                l.split_once(' ')
                    .is_some_and(|(k, v)| k == key && !v.trim().is_empty())
            })
        };
        let has_email = configured("user.email");
        let has_name = has_email && configured("user.name");
        let mut vars = Vec::new();
        if !has_email {
            vars.extend([
                ("GIT_AUTHOR_EMAIL", FALLBACK_EMAIL),
                ("GIT_COMMITTER_EMAIL", FALLBACK_EMAIL),
            ]);
        }
        if !has_name {
            vars.extend([
                ("GIT_AUTHOR_NAME", FALLBACK_NAME),
                ("GIT_COMMITTER_NAME", FALLBACK_NAME),
            ]);
        }
        vars.retain(|(var, _)| !self.env_has(var));
        Ok(vars)
    }

    /// Whether this runner adds variables of its own (tests isolating git from the machine's config).
    pub fn has_extra_env(&self) -> bool {
        !self.extra_env.is_empty()
    }

    fn env_has(&self, var: &str) -> bool {
        self.extra_env.iter().any(|(k, _)| k == var) || std::env::var_os(var).is_some()
    }
}

/// git's wording when another process holds a lock file (`index.lock`, `config.lock`, `packed-refs.lock`,
/// a ref's lock). Other failures are real and are not retried.
fn is_lock_contention(stderr: &str) -> bool {
    stderr.contains(".lock")
        && (stderr.contains("File exists")
            || stderr.contains("Unable to create")
            || stderr.contains("could not lock"))
}

fn backoff(attempt: u32) -> Duration {
    // 20, 40, 80, 160, 320 ms: enough for another git command to finish, bounded well under 1 s in all.
    Duration::from_millis(20u64 << attempt.saturating_sub(1).min(4))
}

/// The command line as a user would type it, for error messages.
fn command_line(dir: &Path, args: &[OsString]) -> String {
    let mut line = format!("git -C {}", quote(dir.as_os_str()));
    for arg in args {
        line.push(' ');
        line.push_str(&quote(arg));
    }
    line
}

fn quote(arg: &OsStr) -> String {
    let text = arg.to_string_lossy();
    if text.is_empty() || text.contains(|c: char| c.is_whitespace() || c == '\'' || c == '"') {
        format!("{text:?}")
    } else {
        text.into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_lock_contention() {
        assert!(is_lock_contention(
            "fatal: Unable to create '/r/.git/index.lock': File exists.\n\nAnother git process seems to be running"
        ));
        assert!(is_lock_contention(
            "error: could not lock config file .git/config.lock: File exists"
        ));
        assert!(!is_lock_contention("fatal: a branch named 'x' already exists"));
        assert!(!is_lock_contention(
            "fatal: cannot lock ref 'refs/heads/x': is at 1234 but expected 5678"
        ));
    }

    #[test]
    fn backoff_is_bounded() {
        let total: Duration = (1..LOCK_ATTEMPTS).map(backoff).sum();
        assert!(total < Duration::from_secs(1), "{total:?}");
    }

    #[test]
    fn quotes_only_when_needed() {
        let line = command_line(
            Path::new("/r"),
            &["commit".into(), "-m".into(), "two words".into()],
        );
        assert_eq!(line, r#"git -C /r commit -m "two words""#);
    }
}
