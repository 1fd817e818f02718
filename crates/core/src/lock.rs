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
        match file.try_lock() {
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
}
