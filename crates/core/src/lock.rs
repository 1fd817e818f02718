//! One active mission per repository. The lock is an OS file lock on `.orchestrator/lock`, so a
//! process that dies (even by SIGKILL) releases it: a stale lock can never block the next run.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use crate::error::{EngineError, Result};

pub struct RepoLock {
    file: File,
}

impl RepoLock {
    pub fn acquire(state_dir: &Path, mission: &str) -> Result<RepoLock> {
        // The first thing a mission makes in the repository: private to the user from the start.
        orchestrator_store::private_dir(state_dir)
            .map_err(|e| EngineError::io(format!("cannot create {}", state_dir.display()), e))?;
        let path = state_dir.join("lock");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| EngineError::io(format!("cannot open {}", path.display()), e))?;
        match lock_briefly_contended(&file) {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                return Err(EngineError::Locked(format!(
                    "another orchestrator mission is running in this repository ({}). Wait for it, or stop it with \
                     `orchestrator cancel`.",
                    holder.trim()
                )));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(EngineError::io(format!("cannot lock {}", path.display()), e))
            }
        }
        let note = format!("mission {mission}, pid {}", std::process::id());
        let _ = file.set_len(0);
        let _ = file.seek(SeekFrom::Start(0));
        let _ = file.write_all(note.as_bytes());
        Ok(RepoLock { file })
    }
}

/// Whether process `pid` holds the mission lock of the repository whose state folder is `state_dir`.
/// A mission's recorded pid outlives its process (a kill -9 leaves it in the store) and may since
/// name an unrelated process, which a signal meant for the mission would end: SIGTERM's and
/// SIGUSR1's default action. Only the live holder of the lock is the mission's process: the lock is
/// held (a shared probe would block) and the holder's note names `pid`.
pub fn held_by(state_dir: &Path, pid: u32) -> bool {
    if !crate::status::process_alive(pid) {
        return false;
    }
    let Ok(mut file) = File::open(state_dir.join("lock")) else {
        return false; // no mission ever ran here, so none can be running
    };
    match file.try_lock_shared() {
        // Nobody holds it: whatever the note says is left by a process that died.
        Ok(()) => {
            let _ = file.unlock();
            false
        }
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut note = String::new();
            let _ = file.read_to_string(&mut note);
            note_names(&note, pid)
        }
        // A lock that cannot be probed: the process check above is all there is.
        Err(std::fs::TryLockError::Error(_)) => true,
    }
}

/// Whether the holder's note (`mission <id>, pid <pid>`) names `pid`.
fn note_names(note: &str, pid: u32) -> bool {
    note.rsplit_once("pid ")
        .and_then(|(_, p)| p.trim().parse::<u32>().ok())
        == Some(pid)
}

/// Takes the lock, waiting out a [`held_by`] probe (a shared lock held for microseconds) with a few
/// short tries; a mission that holds it is still refused at once in human terms.
fn lock_briefly_contended(file: &File) -> std::result::Result<(), std::fs::TryLockError> {
    for _ in 0..PROBE_TRIES {
        match file.try_lock() {
            Err(std::fs::TryLockError::WouldBlock) => {
                std::thread::sleep(std::time::Duration::from_millis(10))
            }
            other => return other,
        }
    }
    file.try_lock()
}

/// How often taking the lock is tried while something holds it: 5 × 10 ms.
const PROBE_TRIES: usize = 5;

impl Drop for RepoLock {
    fn drop(&mut self) {
        let _ = self.file.set_len(0);
        let _ = self.file.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = RepoLock::acquire(dir.path(), "m1").unwrap();
        let err = RepoLock::acquire(dir.path(), "m2").err().unwrap();
        assert!(
            matches!(err, EngineError::Locked(ref m) if m.contains("m1")),
            "{err}"
        );
        drop(first);
        assert!(RepoLock::acquire(dir.path(), "m2").is_ok());
    }

    #[test]
    fn only_the_live_holder_of_the_lock_counts_as_the_mission_process() {
        let dir = tempfile::tempdir().unwrap();
        let me = std::process::id();
        assert!(!held_by(dir.path(), me), "no lock file: no mission runs");
        let lock = RepoLock::acquire(dir.path(), "m1").unwrap();
        assert!(held_by(dir.path(), me));
        // A live process that is not the holder: what a recorded pid may name after a kill -9.
        let mut other = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        assert!(
            !held_by(dir.path(), other.id()),
            "a reused pid is not the mission"
        );
        drop(lock);
        assert!(!held_by(dir.path(), me), "a released lock has no holder");
        // A kill -9 leaves the holder's note behind; the note alone proves nothing.
        std::fs::write(dir.path().join("lock"), format!("mission m1, pid {}", other.id())).unwrap();
        assert!(!held_by(dir.path(), other.id()), "a stale note is not a holder");
        let _ = other.kill();
        let _ = other.wait();
    }
}
