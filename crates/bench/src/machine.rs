//! The machine a report was measured on, read from /proc (best effort: a missing field says so).

use std::path::Path;

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub date: String,
    pub cpu: String,
    pub nproc: usize,
    pub ram_gib: f64,
    pub kernel: String,
    pub load_before: String,
    /// The commit of the workspace being measured, with `+dirty` when it has uncommitted changes.
    pub commit: String,
    /// The temporary folder the repositories are made in, and its filesystem: git's cost per file
    /// created depends on it (see docs/benchmarks.md on ext4 without a journal).
    pub tmp_dir: String,
    pub tmp_fs: String,
}

impl Machine {
    /// `orchestrator` is the binary measured: the commit reported is that of the source tree it was
    /// built in (its `target/` folder's parent), which need not be this workspace.
    pub fn detect(orchestrator: &Path) -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|rest| rest.split_once(':'))
            .map(|(_, name)| name.trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let ram_kib: f64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        Machine {
            date: chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
            cpu,
            nproc: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            ram_gib: ram_kib / 1024.0 / 1024.0,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| "unknown".into()),
            load_before: load_average(),
            commit: source_tree(orchestrator)
                .map(|dir| format!("{} in {}", commit(&dir), dir.display()))
                .unwrap_or_else(|| "unknown (the binary is not inside a cargo target folder)".into()),
            tmp_dir: std::env::temp_dir().display().to_string(),
            tmp_fs: filesystem_of(&std::env::temp_dir()),
        }
    }
}

/// The filesystem type of the mount holding `path` (longest mount point that prefixes it), with
/// "no journal" for an ext4 mount without one: there every new inode pays a scan of recently deleted
/// inodes (ext4's `find_inode_bit`), which makes git's file creation several times dearer.
pub fn filesystem_of(path: &Path) -> String {
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let best = mounts
        .lines()
        .filter_map(|l| {
            let mut fields = l.split_whitespace();
            Some((fields.next()?, fields.next()?, fields.next()?))
        })
        .filter(|(_, point, _)| path.starts_with(point))
        .max_by_key(|(_, point, _)| point.len());
    let Some((device, _, fs)) = best else {
        return "unknown".into();
    };
    if fs == "ext4" {
        let name = device.rsplit('/').next().unwrap_or(device);
        let journal = std::fs::read_to_string(format!("/sys/fs/ext4/{name}/journal_task"));
        if journal.is_ok_and(|j| j.trim() == "<none>") {
            return "ext4 (no journal)".into();
        }
    }
    fs.to_string()
}

/// The 1, 5 and 15 minute load averages.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// The folder holding the `target/` folder the binary sits in.
fn source_tree(binary: &Path) -> Option<std::path::PathBuf> {
    let binary = std::fs::canonicalize(binary).ok()?;
    binary
        .ancestors()
        .find(|dir| dir.file_name().is_some_and(|n| n == "target"))
        .and_then(Path::parent)
        .map(Path::to_path_buf)
}

fn commit(workspace: &Path) -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(workspace)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let Some(head) = git(&["rev-parse", "--short", "HEAD"]) else {
        return "unknown".into();
    };
    // Only the engine's sources matter to the figures; the bench's own edits do not make it dirty.
    let dirty =
        git(&["status", "--porcelain", "--", "crates", ":!crates/bench"]).is_some_and(|s| !s.is_empty());
    if dirty {
        format!("{head}+dirty")
    } else {
        head
    }
}
