//! `write {path, content}` and `edit {path, old_string, new_string, replace_all?}`.

use std::fs;

use crate::error::ToolError;
use crate::paths::{Kind, Resolved};
use crate::text::looks_binary;

pub(crate) fn write(file: &Resolved, content: &str) -> Result<String, ToolError> {
    let rel = file.rel.as_str();
    file.check_not_dir_or_special("")?;
    let existed = file.kind() == Kind::File;
    if let Some(parent) = file.abs.parent() {
        fs::create_dir_all(parent).map_err(|e| ToolError::io(rel, e))?;
    }
    fs::write(&file.abs, content).map_err(|e| ToolError::io(rel, e))?;
    let verb = if existed { "overwrote" } else { "created" };
    Ok(format!("{verb} {rel} ({} bytes)", content.len()))
}

pub(crate) struct EditRequest<'a> {
    pub file: Resolved,
    pub old: &'a str,
    pub new: &'a str,
    pub replace_all: bool,
}

pub(crate) fn edit(req: &EditRequest<'_>) -> Result<String, ToolError> {
    let rel = req.file.rel.as_str();
    if req.old.is_empty() {
        return Err(ToolError::refused(
            "`old_string` must not be empty; use `write` to create a file",
        ));
    }
    if req.old == req.new {
        return Err(ToolError::refused(
            "`old_string` and `new_string` are identical, so the edit would change nothing",
        ));
    }
    let text = read_text(&req.file)?;
    let count = text.matches(req.old).count();
    check_count(rel, count, req.replace_all)?;
    let edited = if req.replace_all {
        text.replace(req.old, req.new)
    } else {
        text.replacen(req.old, req.new, 1)
    };
    fs::write(&req.file.abs, edited).map_err(|e| ToolError::io(rel, e))?;
    let noun = if count == 1 { "occurrence" } else { "occurrences" };
    Ok(format!("edited {rel}: replaced {count} {noun}"))
}

fn read_text(file: &Resolved) -> Result<String, ToolError> {
    let rel = file.rel.as_str();
    file.check_not_dir_or_special("")?;
    let bytes = fs::read(&file.abs).map_err(|e| ToolError::io(rel, e))?;
    if looks_binary(&bytes) {
        return Err(ToolError::refused(format!(
            "{rel} is a binary file; `edit` changes text only"
        )));
    }
    // Editing must not silently replace undecodable bytes elsewhere in the file.
    String::from_utf8(bytes).map_err(|_| {
        ToolError::refused(format!(
            "{rel} is not valid UTF-8; `edit` cannot change it safely"
        ))
    })
}

fn check_count(rel: &str, count: usize, replace_all: bool) -> Result<(), ToolError> {
    match count {
        0 => Err(ToolError::refused(format!(
            "`old_string` was not found in {rel}; it must match the file exactly, including whitespace \
             and indentation (use `read` to check)"
        ))),
        1 => Ok(()),
        _ if replace_all => Ok(()),
        n => Err(ToolError::refused(format!(
            "`old_string` occurs {n} times in {rel}; include more surrounding lines to make it unique, \
             or set `replace_all` to true to replace every occurrence"
        ))),
    }
}
