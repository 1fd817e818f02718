//! No orphans: every process a command starts dies with the command.
//!
//! A process group is not enough — `setsid` or a double fork leaves it, and the process is then
//! re-parented to init and outlives the session, the mission and the orchestrator. So each command
//! runs under a small supervisor: the child forked by `spawn` marks itself a *child subreaper*
//! (`PR_SET_CHILD_SUBREAPER`), forks again and lets the grandchild become the command. Every process
//! the command leaves behind, however it detached, is re-parented to the supervisor and not to init.
//! When the command exits — or when its [`Lifeline`] closes: a timeout, a cancel, the engine dropping
//! the call, or the orchestrator dying, even by `kill -9` — the supervisor kills its children with
//! `SIGKILL` until none are left, then exits the way the command did.
//!
//! The supervisor forks before the Landlock restriction is applied, so it stays outside the command's
//! domain: with signal scoping (Landlock ABI 6) a confined command cannot kill its supervisor to
//! escape. The supervisor runs only system calls on stack memory: it is a fork of a multi-threaded
//! process and must not allocate or take locks.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// The orchestrator's end of a command's lifeline. Dropping it kills the command and everything it
/// started; the supervisor then exits and `wait` on the child returns.
#[derive(Debug)]
pub struct Lifeline {
    _write: OwnedFd,
}

impl Lifeline {
    /// Kills the command's whole tree now (the same as dropping the lifeline).
    pub fn cut(self) {}
}

/// Runs `command` under a supervisor (see the module docs). Register this before any other
/// `pre_exec` step that must apply to the command only (the Landlock restriction).
pub fn supervise(command: &mut tokio::process::Command) -> std::io::Result<Lifeline> {
    let (read, write) = lifeline_pipe()?;
    let read_fd = read.as_raw_fd();
    // The closure owns the read end: the parent's copy is closed when the command is dropped.
    let keep = read;
    // SAFETY: the closure runs in the child between fork and exec. Everything it does, in both the
    // supervisor and the command branch, is a plain system call on stack memory (see `imp`).
    unsafe {
        command.pre_exec(move || {
            let _ = &keep;
            imp::fork_supervisor(read_fd)
        });
    }
    Ok(Lifeline { _write: write })
}

/// A pipe whose read end becomes readable (POLLHUP) once every copy of the write end is closed.
/// Both ends are close-on-exec: no program the orchestrator runs keeps a lifeline alive.
fn lifeline_pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 writes two descriptors into the array we own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

mod imp {
    use std::os::fd::RawFd;

    /// In the child `spawn` forked: forks the command and, in this process, supervises it until
    /// it is over. Returns only in the command's process (which then goes on to exec).
    ///
    /// # Safety
    /// Only between fork and exec.
    pub(super) unsafe fn fork_supervisor(lifeline: RawFd) -> std::io::Result<()> {
        let mut children = std::mem::zeroed::<libc::sigset_t>();
        libc::sigemptyset(&mut children);
        libc::sigaddset(&mut children, libc::SIGCHLD);
        // Blocked before the fork, so the command's exit cannot come before the supervisor listens.
        if libc::sigprocmask(libc::SIG_BLOCK, &children, std::ptr::null_mut()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let signals = libc::signalfd(-1, &children, libc::SFD_CLOEXEC);
        if signals < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let command = libc::fork();
        if command < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if command == 0 {
            // The command: the state the spawn gave us, without the supervisor's descriptors.
            libc::sigprocmask(libc::SIG_UNBLOCK, &children, std::ptr::null_mut());
            libc::close(signals);
            libc::close(lifeline);
            return Ok(());
        }
        supervise(command, lifeline, signals)
    }

    /// The supervisor's life: wait for the command's exit or the lifeline's end, then kill every
    /// child left and exit as the command did.
    unsafe fn supervise(command: libc::pid_t, lifeline: RawFd, signals: RawFd) -> ! {
        // Nothing of the orchestrator's stays open here: not the output pipes (their readers wait for
        // EOF), not spawn's exec-status pipe, not other commands' lifelines.
        close_all_but(&[lifeline, signals]);
        let mut status: Option<libc::c_int> = None;
        let mut fds = [
            libc::pollfd {
                fd: lifeline,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: signals,
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        while status.is_none() {
            if libc::poll(fds.as_mut_ptr(), 2, -1) < 0 {
                if errno() == libc::EINTR {
                    continue;
                }
                break;
            }
            if fds[0].revents != 0 {
                break;
            }
            if fds[1].revents != 0 {
                let mut info = [0u8; 128];
                libc::read(signals, info.as_mut_ptr().cast(), info.len());
                reap_exited(command, &mut status);
            }
        }
        kill_every_child(command, &mut status);
        exit_like(status)
    }

    /// Reaps children that have exited, noting the command's status among them.
    unsafe fn reap_exited(command: libc::pid_t, status: &mut Option<libc::c_int>) {
        loop {
            let mut raw = 0;
            let pid = libc::waitpid(-1, &mut raw, libc::WNOHANG);
            if pid <= 0 {
                return;
            }
            if pid == command {
                *status = Some(raw);
            }
        }
    }

    /// Kills the supervisor's children until it has none: a killed process's own children are
    /// re-parented here (we are their subreaper) and go in the next round.
    unsafe fn kill_every_child(command: libc::pid_t, status: &mut Option<libc::c_int>) {
        let me = libc::getpid();
        loop {
            kill_children_of(me);
            let mut raw = 0;
            let pid = libc::waitpid(-1, &mut raw, 0);
            if pid == command {
                *status = Some(raw);
            }
            if pid < 0 && errno() != libc::EINTR {
                return; // ECHILD: nobody is left.
            }
        }
    }

    /// Sends SIGKILL to every process whose parent is `parent`, found by scanning /proc.
    unsafe fn kill_children_of(parent: libc::pid_t) {
        let proc_dir = libc::open(
            c"/proc".as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        );
        if proc_dir < 0 {
            return;
        }
        let mut entries = [0u8; 8192];
        loop {
            let n = libc::syscall(
                libc::SYS_getdents64,
                proc_dir,
                entries.as_mut_ptr(),
                entries.len(),
            );
            if n <= 0 {
                break;
            }
            let mut at = 0usize;
            while at + 19 < n as usize {
                // struct linux_dirent64: u64 ino, i64 off, u16 reclen, u8 type, name...
                let reclen = u16::from_ne_bytes([entries[at + 16], entries[at + 17]]) as usize;
                if reclen == 0 {
                    break;
                }
                let name = &entries[at + 19..(at + reclen).min(n as usize)];
                if let Some(pid) = parse_pid(name) {
                    if pid != parent && parent_of(pid) == Some(parent) {
                        libc::kill(pid, libc::SIGKILL);
                    }
                }
                at += reclen;
            }
        }
        libc::close(proc_dir);
    }

    /// A /proc entry's name as a pid: all digits up to the terminating NUL.
    fn parse_pid(name: &[u8]) -> Option<libc::pid_t> {
        let mut pid: libc::pid_t = 0;
        let mut digits = 0;
        for &b in name {
            match b {
                0 => break,
                b'0'..=b'9' => {
                    pid = pid.checked_mul(10)?.checked_add((b - b'0') as libc::pid_t)?;
                    digits += 1;
                }
                _ => return None,
            }
        }
        (digits > 0).then_some(pid)
    }

    /// The parent of `pid` from `/proc/<pid>/stat`: `pid (comm) state ppid …`, where comm may hold
    /// spaces and parentheses, so the fields are counted from the last `)`.
    unsafe fn parent_of(pid: libc::pid_t) -> Option<libc::pid_t> {
        let mut path = [0u8; 32];
        let prefix = b"/proc/";
        path[..prefix.len()].copy_from_slice(prefix);
        let at = prefix.len() + write_decimal(&mut path[prefix.len()..], pid)?;
        let suffix = b"/stat\0";
        path.get_mut(at..at + suffix.len())?.copy_from_slice(suffix);
        let fd = libc::open(path.as_ptr().cast(), libc::O_RDONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return None;
        }
        let mut stat = [0u8; 512];
        let n = libc::read(fd, stat.as_mut_ptr().cast(), stat.len());
        libc::close(fd);
        if n <= 0 {
            return None;
        }
        parse_parent(&stat[..n as usize])
    }

    pub(super) fn parse_parent(stat: &[u8]) -> Option<libc::pid_t> {
        let close = stat.iter().rposition(|&b| b == b')')?;
        // ") S 1234 …": skip ") ", the state and a space.
        let rest = stat.get(close + 4..)?;
        let end = rest.iter().position(|&b| b == b' ').unwrap_or(rest.len());
        parse_pid(&rest[..end])
    }

    fn write_decimal(out: &mut [u8], value: libc::pid_t) -> Option<usize> {
        let mut digits = [0u8; 12];
        let mut n = value.unsigned_abs();
        let mut len = 0;
        loop {
            digits[len] = b'0' + (n % 10) as u8;
            len += 1;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        for i in 0..len {
            *out.get_mut(i)? = digits[len - 1 - i];
        }
        Some(len)
    }

    /// Closes every descriptor but `keep` (close_range where the kernel has it, else one by one).
    unsafe fn close_all_but(keep: &[RawFd]) {
        let sorted = [keep[0].min(keep[1]), keep[0].max(keep[1]), RawFd::MAX];
        let mut from: RawFd = 0;
        for &fd in &sorted {
            if fd > from {
                close_range(from, fd - 1);
            }
            from = fd.saturating_add(1);
        }
    }

    unsafe fn close_range(first: RawFd, last: RawFd) {
        if libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            last as libc::c_uint,
            0,
        ) == 0
        {
            return;
        }
        let limit = last.min(65_535);
        for fd in first..=limit {
            libc::close(fd);
        }
    }

    /// Ends the supervisor with the command's status: its exit code, or death by its signal.
    unsafe fn exit_like(status: Option<libc::c_int>) -> ! {
        let signal = match status {
            Some(raw) if libc::WIFEXITED(raw) => libc::_exit(libc::WEXITSTATUS(raw)),
            Some(raw) if libc::WIFSIGNALED(raw) => libc::WTERMSIG(raw),
            _ => libc::SIGKILL,
        };
        // Default action, unblocked, then raise it: the orchestrator sees "killed by signal N".
        libc::signal(signal, libc::SIG_DFL);
        let mut all = std::mem::zeroed::<libc::sigset_t>();
        libc::sigfillset(&mut all);
        libc::sigprocmask(libc::SIG_UNBLOCK, &all, std::ptr::null_mut());
        libc::kill(libc::getpid(), signal);
        libc::_exit(128 + signal)
    }

    fn errno() -> libc::c_int {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_stat_line_gives_its_parent_even_with_odd_command_names() {
        assert_eq!(super::imp::parse_parent(b"42 (bash) S 7 42 42 0"), Some(7));
        assert_eq!(super::imp::parse_parent(b"42 (a) b (c) R 1234 1 1"), Some(1234));
        assert_eq!(super::imp::parse_parent(b"42 (x"), None);
    }
}
