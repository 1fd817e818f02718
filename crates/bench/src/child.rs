//! Measuring one child process: wall time, its own CPU time apart from its children's, and its peak
//! resident memory.
//!
//! std's `Child::wait` reaps the process at once, after which `/proc/<pid>` is gone and only the
//! combined rusage of the process *and* every child it reaped is left (`wait4` reports `RUSAGE_BOTH`).
//! The orchestrator runs git and the verification commands as children, so to tell its own CPU time
//! apart we first wait *without* reaping (`waitid(WNOWAIT)`), read the zombie's `/proc/<pid>/stat`
//! (own and children's times are separate fields there), and only then reap it with `wait4`.
//! A zombie has no memory map any more, so the peak resident set (`VmHWM`, a high-water mark kept by
//! the kernel) is sampled from `/proc/<pid>/status` while the process runs.

use std::path::Path;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// How often `/proc/<pid>/status` is read. VmHWM is a high-water mark, so a sample only has to come
/// after the peak, not at it; the last sample before exit is at most this old.
const SAMPLE_EVERY: Duration = Duration::from_millis(5);

/// What the kernel told us about a finished child.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Usage {
    /// Spawn to exit, as seen from here.
    #[serde(serialize_with = "crate::mission::ser_ms")]
    pub wall: Duration,
    /// `Some(code)` for a normal exit, `None` when a signal ended it.
    pub exit_code: Option<i32>,
    /// User + system time of the process itself (all its threads), from `/proc/<pid>/stat`.
    #[serde(serialize_with = "crate::mission::ser_ms")]
    pub own_cpu: Duration,
    /// User + system time of the children it waited for (git, verification commands).
    #[serde(serialize_with = "crate::mission::ser_ms")]
    pub children_cpu: Duration,
    /// Peak resident set of the process itself (`VmHWM`), in KiB.
    pub peak_rss_kib: u64,
    /// `ru_maxrss` from `wait4`: the larger of the process's and any reaped child's peak, in KiB.
    pub maxrss_kib: u64,
    /// Most threads seen at once.
    pub peak_threads: u64,
}

/// A running child under observation.
pub struct Watched {
    handle: Handle,
    pub started: Instant,
    sampler: std::thread::JoinHandle<Sample>,
    stop: Arc<AtomicBool>,
    // Kept so std does not close anything it owns early; never waited on through std (see the module doc).
    _child: Child,
}

#[derive(Default, Clone, Copy)]
struct Sample {
    hwm_kib: u64,
    threads: u64,
}

impl Watched {
    /// Spawns `command` and starts sampling its memory.
    pub fn spawn(mut command: Command) -> Result<Watched> {
        let started = Instant::now();
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {:?}", command.get_program()))?;
        let pid = libc::pid_t::try_from(child.id()).context("pid out of range")?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let sampler = std::thread::spawn(move || {
            let mut best = Sample::default();
            while !flag.load(Ordering::Relaxed) {
                if let Some(s) = read_status(pid) {
                    best.hwm_kib = best.hwm_kib.max(s.hwm_kib);
                    best.threads = best.threads.max(s.threads);
                }
                std::thread::sleep(SAMPLE_EVERY);
            }
            best
        });
        Ok(Watched {
            handle: Handle {
                pid,
                reaped: Arc::new(Mutex::new(false)),
            },
            started,
            sampler,
            stop,
            _child: child,
        })
    }

    pub fn pid(&self) -> u32 {
        self.handle.pid as u32
    }

    /// A handle that can signal the process while another thread waits for it.
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// Blocks until the process exits, then reaps it. Call from a blocking thread.
    pub fn wait(self) -> Result<Usage> {
        let pid = self.handle.pid;
        wait_exited(pid)?;
        let wall = self.started.elapsed();
        self.stop.store(true, Ordering::Relaxed);
        // The zombie still has its /proc entry with its final CPU times.
        let times = read_stat_times(pid);
        let (status, rusage) = {
            let mut reaped = lock(&self.handle.reaped);
            *reaped = true;
            reap(pid)?
        };
        let sample = self.sampler.join().unwrap_or_default();
        let (own_cpu, children_cpu) = times.unwrap_or_else(|| {
            // Without /proc: the combined figure is all we have; attribute it to the process.
            (
                timeval(rusage.ru_utime) + timeval(rusage.ru_stime),
                Duration::ZERO,
            )
        });
        Ok(Usage {
            wall,
            exit_code: libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)),
            own_cpu,
            children_cpu,
            peak_rss_kib: sample.hwm_kib,
            maxrss_kib: u64::try_from(rusage.ru_maxrss).unwrap_or(0),
            peak_threads: sample.threads,
        })
    }
}

/// Signals a watched process; safe against pid reuse because the reaping waits for the same lock.
#[derive(Clone)]
pub struct Handle {
    pid: libc::pid_t,
    reaped: Arc<Mutex<bool>>,
}

impl Handle {
    /// Sends a signal (e.g. `SIGKILL` to simulate a crash). False when the process was already reaped.
    pub fn signal(&self, signal: libc::c_int) -> Result<bool> {
        let reaped = lock(&self.reaped);
        if *reaped {
            return Ok(false);
        }
        // SAFETY: kill(2) on a pid we spawned and have not reaped (checked under the lock the reaper
        // takes), so the pid cannot have been reused; a zombie ignores the signal harmlessly.
        if unsafe { libc::kill(self.pid, signal) } != 0 {
            bail!(
                "kill({}, {signal}): {}",
                self.pid,
                std::io::Error::last_os_error()
            );
        }
        Ok(true)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Waits for the child to become a zombie without reaping it.
fn wait_exited(pid: libc::pid_t) -> Result<()> {
    loop {
        // SAFETY: an all-zero siginfo_t is a valid out-parameter for waitid.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid writes only into `info`; WNOWAIT leaves the child waitable for wait4 below.
        let rc = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if rc == 0 {
            return Ok(());
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            bail!("waitid({pid}): {err}");
        }
    }
}

fn reap(pid: libc::pid_t) -> Result<(libc::c_int, libc::rusage)> {
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: an all-zero rusage is a valid out-parameter.
        let mut rusage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: wait4 writes only into `status` and `rusage`.
        let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut rusage) };
        if rc == pid {
            return Ok((status, rusage));
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            bail!("wait4({pid}): {err}");
        }
    }
}

fn timeval(t: libc::timeval) -> Duration {
    Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
}

fn read_status(pid: libc::pid_t) -> Option<Sample> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some(Sample {
        // Absent once the process is a zombie; then this sample adds nothing.
        hwm_kib: field("VmHWM:")?,
        threads: field("Threads:").unwrap_or(0),
    })
}

/// Resident set right now, in KiB (for a process we did not spawn through [`Watched`]).
pub fn current_rss_kib(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// (own utime+stime, children's cutime+cstime) from `/proc/<pid>/stat`.
fn read_stat_times(pid: libc::pid_t) -> Option<(Duration, Duration)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat_times(&text, clock_ticks())
}

fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).ok().filter(|t| *t > 0).unwrap_or(100)
}

/// The command name (field 2) may hold spaces and parentheses, so fields are counted from the last `)`.
fn parse_stat_times(text: &str, ticks: u64) -> Option<(Duration, Duration)> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, so utime (14), stime (15), cutime (16), cstime (17) sit at 11..=14.
    let get = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok());
    let to = |t: u64| Duration::from_nanos(t.saturating_mul(1_000_000_000) / ticks);
    let own = get(11)? + get(12)?;
    let children = get(13)? + get(14)?;
    Some((to(own), to(children)))
}

/// A command for `bin` with a controlled environment: the caller's PATH (git must be found), a private
/// HOME and XDG config (no user config leaks into a measurement), and no model variables from outside.
pub fn clean_command(bin: &Path, home: &Path) -> Command {
    let mut command = Command::new(bin);
    command.env_clear();
    if let Some(path) = std::env::var_os("PATH") {
        command.env("PATH", path);
    }
    command
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .env("LANG", "C.UTF-8")
        .env("GIT_TERMINAL_PROMPT", "0");
    command
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        let line = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 7 3 20 0 1 0 1 2 3";
        let (own, children) = parse_stat_times(line, 100).expect("parses");
        assert_eq!(own, Duration::from_millis(3000));
        assert_eq!(children, Duration::from_millis(100));
    }

    #[test]
    fn a_watched_child_reports_its_exit_and_memory() {
        let mut command = Command::new("sh");
        command.args(["-c", "sleep 0.05; exit 3"]);
        let usage = Watched::spawn(command).and_then(Watched::wait).expect("runs");
        assert_eq!(usage.exit_code, Some(3));
        assert!(usage.peak_rss_kib > 0, "{usage:?}");
    }
}
