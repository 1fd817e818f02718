//! `list {path?}`: one directory level, sorted, directories marked with a trailing `/`.

use std::fs;

use crate::error::ToolError;
use crate::paths::Resolved;

pub(crate) fn list(dir: &Resolved) -> Result<String, ToolError> {
    let rel = dir.rel.as_str();
    if dir.abs.is_file() {
        return Err(ToolError::refused(format!(
            "{rel} is a file; use `read` to see its contents"
        )));
    }
    let entries = fs::read_dir(&dir.abs).map_err(|e| ToolError::io(rel, e))?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| ToolError::io(rel, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        // `.git` is git's business and, in a worktree, only a pointer file.
        if name == ".git" {
            continue;
        }
        // `fs::metadata` follows symlinks, so a link to a directory is shown as one.
        let is_dir = fs::metadata(entry.path()).is_ok_and(|m| m.is_dir());
        names.push(if is_dir { name + "/" } else { name });
    }
    if names.is_empty() {
        return Ok(format!("({rel} is empty)"));
    }
    names.sort();
    Ok(names.join("\n") + "\n")
}
