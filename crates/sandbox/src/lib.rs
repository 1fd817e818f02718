//! Confinement for the commands agents run: their `bash` calls and the verification commands run on
//! their code.
//!
//! On Linux this is Landlock: a command may read and run anything, but write only beneath the folders
//! its session may change (a worker's worktree) and its own private temp folder; TCP is closed unless
//! the policy opens it; it cannot signal processes outside its sandbox or reach their abstract unix
//! sockets. Everything else — the user's checkout, the repository's `.git` (config, hooks, refs,
//! objects), `.orchestrator/`, other worktrees, `/tmp` — is read-only to it.
//!
//! The ruleset is built once per sandbox in the orchestrator, with the Landlock maintainers' crate;
//! only the final two system calls (`no_new_privs`, `landlock_restrict_self`) run in the child between
//! fork and exec, where nothing may allocate or lock.
//!
//! Every command runs under a supervisor ([`supervise`]) that kills whatever it started — also what
//! left with `setsid` or a double fork — when the command ends, is cancelled, or the orchestrator dies.
//!
//! Limits (Landlock's, documented in README.md): reads are not confined; UDP and pathname unix sockets
//! are not covered before Landlock ABI 9; on kernels older than ABI 4 TCP stays open and before ABI 6
//! signals are not scoped — [`Sandbox::describe`] says what is enforced.

use std::path::{Path, PathBuf};
use std::sync::Arc;

#[cfg(target_os = "linux")]
mod landlock_rules;
#[cfg(target_os = "linux")]
mod supervise;

#[cfg(target_os = "linux")]
pub use supervise::{supervise, Lifeline};

/// Elsewhere commands are not supervised: the lifeline holds nothing.
#[cfg(not(target_os = "linux"))]
#[derive(Debug)]
pub struct Lifeline;

#[cfg(not(target_os = "linux"))]
impl Lifeline {
    pub fn cut(self) {}
}

#[cfg(not(target_os = "linux"))]
pub fn supervise(_command: &mut tokio::process::Command) -> std::io::Result<Lifeline> {
    Ok(Lifeline)
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(
        "agent commands cannot be confined here: {0}. Run on Linux 5.13 or newer with Landlock enabled, or pass \
         `--sandbox off` (or set `[sandbox] enabled = false`) to let agents run unconfined, with every access \
         your user has"
    )]
    Unsupported(String),
    #[error("cannot set up the sandbox: {0}")]
    Setup(String),
}

/// Which Landlock ABI the running kernel offers (0: none).
pub fn landlock_abi() -> u32 {
    #[cfg(target_os = "linux")]
    {
        landlock_rules::kernel_abi()
    }
    #[cfg(not(target_os = "linux"))]
    {
        0
    }
}

/// What a sandboxed command may do besides reading.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// Folders (or files) the command may change, with everything beneath them. Missing ones are skipped.
    pub writable: Vec<PathBuf>,
    /// Whether it may open TCP connections and listen.
    pub network: bool,
    /// Environment variables passed on besides [`BASE_ENV`] (`[sandbox] env`).
    pub env: Vec<String>,
}

/// The variables agent commands get from the orchestrator's environment: what shells, compilers,
/// package managers and test runners need to find themselves, and nothing that holds a credential.
/// An allow-list, because a deny-list of names let `DATABASE_URL`, `GITHUB_PAT`, `OPENAI_KEY` and
/// `SSH_AUTH_SOCK` through. Names ending in `*` match a prefix.
pub const BASE_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "LANG",
    "LANGUAGE",
    "LC_*",
    "TERM",
    "COLORTERM",
    "NO_COLOR",
    "TZ",
    "XDG_CACHE_HOME",
    "XDG_CONFIG_HOME",
    "XDG_DATA_HOME",
    "XDG_STATE_HOME",
    "XDG_RUNTIME_DIR",
    // Toolchains and their caches.
    "CARGO_HOME",
    "RUSTUP_HOME",
    "RUSTUP_TOOLCHAIN",
    "RUSTFLAGS",
    "CARGO_TARGET_DIR",
    "GOPATH",
    "GOROOT",
    "GOCACHE",
    "GOMODCACHE",
    "GOFLAGS",
    "GOPROXY",
    "JAVA_HOME",
    "MAVEN_OPTS",
    "GRADLE_USER_HOME",
    "NODE_PATH",
    "NVM_DIR",
    "NPM_CONFIG_CACHE",
    "PNPM_HOME",
    "PYTHONPATH",
    "PYTHONHOME",
    "VIRTUAL_ENV",
    "CONDA_PREFIX",
    "PIP_INDEX_URL",
    "UV_CACHE_DIR",
    "PKG_CONFIG_PATH",
    "LD_LIBRARY_PATH",
    "LIBRARY_PATH",
    "CPATH",
    "CC",
    "CXX",
    "CFLAGS",
    "CXXFLAGS",
    "LDFLAGS",
    "MAKEFLAGS",
    // Certificates, for the builds that may reach a registry.
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS",
    "CURL_CA_BUNDLE",
];

/// The environment of an agent command: [`BASE_ENV`] and `extra` as the orchestrator has them, plus a
/// git that never prompts (stdin is closed; a credential prompt would wait forever).
pub fn command_env(extra: &[String]) -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
    let allowed = |name: &str| {
        BASE_ENV
            .iter()
            .map(|s| s.to_string())
            .chain(extra.iter().cloned())
            .any(|pattern| match pattern.strip_suffix('*') {
                Some(prefix) => name.starts_with(prefix),
                None => name == pattern,
            })
    };
    let mut env: Vec<_> = std::env::vars_os()
        .filter(|(name, _)| name.to_str().is_some_and(allowed))
        .collect();
    env.push(("GIT_TERMINAL_PROMPT".into(), "0".into()));
    env
}

/// A confinement ready to put on commands: the ruleset (none when unconfined) and the session's private
/// temp folder, removed when the last clone is dropped.
#[derive(Clone)]
pub struct Sandbox {
    inner: Arc<Inner>,
}

struct Inner {
    #[cfg(target_os = "linux")]
    ruleset: Option<std::os::fd::OwnedFd>,
    temp: tempfile::TempDir,
    description: String,
    env: Vec<(std::ffi::OsString, std::ffi::OsString)>,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("temp", &self.temp_dir())
            .field("description", &self.inner.description)
            .finish()
    }
}

impl Sandbox {
    /// No confinement (`--sandbox off`), but still a private temp folder and the allow-listed
    /// environment: turning the sandbox off is not asking for the key to be handed out.
    pub fn unconfined(env: &[String]) -> Result<Sandbox, SandboxError> {
        Ok(Sandbox {
            inner: Arc::new(Inner {
                #[cfg(target_os = "linux")]
                ruleset: None,
                temp: private_temp()?,
                description: "off: agent commands run unconfined".into(),
                env: command_env(env),
            }),
        })
    }

    /// Commands may write only beneath `policy.writable` and the private temp folder.
    pub fn confined(policy: &Policy) -> Result<Sandbox, SandboxError> {
        #[cfg(target_os = "linux")]
        {
            let temp = private_temp()?;
            let mut writable = policy.writable.clone();
            writable.push(temp.path().to_path_buf());
            let abi = landlock_abi();
            let ruleset = landlock_rules::build(abi, &writable, policy.network)?;
            let description = describe(abi, policy, &writable);
            Ok(Sandbox {
                inner: Arc::new(Inner {
                    ruleset: Some(ruleset),
                    temp,
                    description,
                    env: command_env(&policy.env),
                }),
            })
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = policy;
            Err(SandboxError::Unsupported(
                "only Linux (Landlock) is supported so far".into(),
            ))
        }
    }

    /// Confined when `enabled`, else unconfined.
    pub fn new(enabled: bool, policy: &Policy) -> Result<Sandbox, SandboxError> {
        if enabled {
            Sandbox::confined(policy)
        } else {
            Sandbox::unconfined(&policy.env)
        }
    }

    pub fn is_confined(&self) -> bool {
        #[cfg(target_os = "linux")]
        {
            self.inner.ruleset.is_some()
        }
        #[cfg(not(target_os = "linux"))]
        {
            false
        }
    }

    /// The session's own temp folder (`TMPDIR` of its commands).
    pub fn temp_dir(&self) -> &Path {
        self.inner.temp.path()
    }

    /// What is enforced, in words: for events, `status` and the README's promise.
    pub fn describe(&self) -> &str {
        &self.inner.description
    }

    /// Puts the confinement on `command`: the allow-listed environment (everything else is dropped),
    /// `TMPDIR` at the private temp folder, a supervisor that kills everything the command starts when
    /// it ends or the returned [`Lifeline`] is dropped, and the restriction the command puts on itself
    /// right before it executes the program.
    pub fn apply(&self, command: &mut tokio::process::Command) -> std::io::Result<Lifeline> {
        command.env_clear();
        command.envs(self.inner.env.iter().map(|(k, v)| (k, v)));
        command.env("TMPDIR", self.temp_dir());
        // First: the supervisor forks before the restriction, so it stays outside the command's domain.
        let lifeline = supervise(command)?;
        #[cfg(target_os = "linux")]
        if let Some(ruleset) = &self.inner.ruleset {
            landlock_rules::restrict_before_exec(command, ruleset);
        }
        Ok(lifeline)
    }
}

/// Makes the orchestrator's own process not dumpable: its memory (where the API key is) then needs
/// `CAP_SYS_PTRACE`, which no agent command has (root's commands drop it). Also means no core dumps
/// of the orchestrator. Call once, early.
pub fn protect_process() {
    #[cfg(target_os = "linux")]
    {
        const PR_SET_DUMPABLE: libc::c_int = 4;
        // SAFETY: a prctl on this process with integer arguments.
        if unsafe { libc::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
            tracing::warn!(
                "cannot make the process non-dumpable: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

/// Empties the block the kernel shows as `/proc/<pid>/environ`, after moving every variable to the
/// heap so that the process still sees its whole environment. Some kernels let any process of the
/// same user (even a confined one) read that file despite the process being non-dumpable, and it is
/// where `OPENAI_API_KEY` sits. Children started afterwards still get the environment.
///
/// # Safety
/// Call before any other thread exists: it sets every environment variable.
pub unsafe fn scrub_environment_block() {
    #[cfg(target_os = "linux")]
    {
        for (name, value) in std::env::vars_os() {
            // The C library copies name=value to the heap and points `environ` at the copy.
            std::env::set_var(name, value);
        }
        let Some((start, end)) = environment_block() else {
            tracing::warn!("cannot find this process's environment block; it stays readable in /proc");
            return;
        };
        // SAFETY: [start, end) is the environment block the kernel set up on our stack at exec; after
        // the loop above nothing points into it any more (argv and auxv lie outside it).
        std::ptr::write_bytes(start as *mut u8, 0, end - start);
    }
}

/// `env_start` and `env_end` (fields 50 and 51 of `/proc/self/stat`).
#[cfg(target_os = "linux")]
fn environment_block() -> Option<(usize, usize)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields are counted after the command name, which may hold spaces: field 3 (state) comes first.
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 1..)?.split_whitespace().collect();
    let start: usize = fields.get(50 - 3)?.parse().ok()?;
    let end: usize = fields.get(51 - 3)?.parse().ok()?;
    (start != 0 && end > start).then_some((start, end))
}

/// Removes from `command`'s environment every variable of ours that holds a credential (see
/// [`is_secret_env`]).
pub fn remove_secret_env(command: &mut tokio::process::Command) {
    for (name, _) in std::env::vars_os() {
        if is_secret_env(&name) {
            command.env_remove(name);
        }
    }
}

/// Whether an environment variable holds a credential, by the usual names: model keys, and tokens,
/// secrets and passwords (`GITHUB_TOKEN`, `AWS_SECRET_ACCESS_KEY`, `NPM_TOKEN`, `DB_PASSWORD`, …).
/// Agent commands get an allow-listed environment instead; this is for the programs the orchestrator
/// runs itself (git), which must not carry the key where an agent's `/proc` reading could find it.
pub fn is_secret_env(name: &std::ffi::OsStr) -> bool {
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
        "_KEY",
        "_PAT",
    ];
    SUFFIXES.iter().any(|s| name.ends_with(s))
        || matches!(
            name.as_str(),
            "GH_TOKEN" | "DATABASE_URL" | "ORCHESTRATOR_STORE_URL"
        )
}

/// Checks, before a mission starts, that confinement works here; the error says how to go on.
pub fn check_supported() -> Result<u32, SandboxError> {
    check_abi(landlock_abi())
}

/// [`check_supported`] for a given kernel ABI (0: no Landlock).
fn check_abi(abi: u32) -> Result<u32, SandboxError> {
    if abi == 0 {
        return Err(SandboxError::Unsupported(if cfg!(target_os = "linux") {
            "this kernel has no Landlock (not built in, or not in the `lsm=` boot list)".into()
        } else {
            "only Linux (Landlock) is supported so far".into()
        }));
    }
    Ok(abi)
}

fn private_temp() -> Result<tempfile::TempDir, SandboxError> {
    tempfile::Builder::new()
        .prefix("orchestrator-session-")
        .tempdir()
        .map_err(|e| SandboxError::Setup(format!("cannot create a private temp folder: {e}")))
}

/// What happens to TCP for agent commands, in words: Landlock closes it from ABI 4 on.
pub fn network_words(abi: u32, network: bool) -> &'static str {
    match (network, abi >= 4) {
        (true, _) => "network on",
        (false, true) => "network off",
        (false, false) => "network not confined (needs Landlock ABI 4)",
    }
}

fn describe(abi: u32, policy: &Policy, writable: &[PathBuf]) -> String {
    let places: Vec<String> = writable
        .iter()
        .filter(|p| p.exists())
        .map(|p| p.display().to_string())
        .collect();
    let network = network_words(abi, policy.network);
    let signals = if abi >= 6 { "; signals scoped" } else { "" };
    format!(
        "landlock ABI {abi}: writes only in {}; {network}{signals}",
        places.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_recognised_by_name() {
        use std::ffi::OsStr;
        for name in [
            "OPENAI_API_KEY",
            "ANTHROPIC_API_KEY",
            "OPENAI_KEY",
            "MY_API_KEY",
            "gh_auth_token",
            "GITHUB_TOKEN",
            "GITHUB_PAT",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "NPM_TOKEN",
            "DB_PASSWORD",
            "STRIPE_SECRET",
            "DATABASE_URL",
            "ORCHESTRATOR_STORE_URL",
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
    fn a_kernel_without_landlock_is_refused_with_the_way_out() {
        let message = check_abi(0).unwrap_err().to_string();
        assert!(message.contains("--sandbox off"), "{message}");
        assert!(message.contains("[sandbox] enabled = false"), "{message}");
        assert_eq!(check_abi(7).unwrap(), 7);
    }

    #[test]
    fn the_description_says_what_is_enforced() {
        let policy = Policy {
            writable: vec![PathBuf::from("/")],
            ..Policy::default()
        };
        assert!(
            describe(3, &policy, &policy.writable).contains("network not confined (needs Landlock ABI 4)")
        );
        let text = describe(7, &policy, &policy.writable);
        assert!(
            text.contains("network off") && text.contains("signals scoped"),
            "{text}"
        );
    }
}
