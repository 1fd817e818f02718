//! `write {path, content}` and `edit {path, old_string, new_string, replace_all?}`.

use std::fs;

use crate::error::ToolError;
use crate::paths::{Kind, Resolved};
use crate::read::excerpt;
use crate::text::{
    carries_read_gutter, carries_retyped_gutter, looks_binary, numbers_a_statement, without_read_gutter,
};

/// `read_in_full`: whether the session has read (or written) the whole file. A write that would
/// drop most of a file it has not (at least [`BLIND_DROP_LINES`] of its non-blank lines, and half
/// of them) is refused: small models "add a function" by writing a file holding only that
/// function, which deletes the rest, and nothing is lost by asking to read first. Short files, and
/// writes that keep most of the old lines, go through. Once read, such a write is a rewrite and is
/// allowed, but its result says what it deleted.
/// `rewrites_may_drop` false refuses such a write even once read (`ToolOptions::rewrites_may_drop`).
/// `offers_insert`: whether the session has `insert`, the way to add without rewriting, which the
/// messages then name.
pub(crate) fn write(
    file: &Resolved,
    content: &str,
    read_in_full: bool,
    rewrites_may_drop: bool,
    offers_insert: bool,
) -> Result<String, ToolError> {
    let rel = file.rel.as_str();
    file.check_not_dir_or_special("")?;
    refuse_read_gutter("content", content)?;
    let existed = file.kind() == Kind::File;
    let old = existed.then(|| fs::read(&file.abs).ok()).flatten();
    // Like an edit whose two strings are the same: a write that changes nothing is said to, so a
    // model writing the same file again and again is seen going round (the 1.5B did, for 20 turns).
    if old.as_deref() == Some(content.as_bytes()) {
        return Err(ToolError::refused(format!(
            "not written: {rel} already holds exactly this content, so the write would change nothing"
        )));
    }
    let dropped = old.as_deref().and_then(|old| most_lines_dropped(old, content));
    if let Some(dropped) = dropped.as_ref().filter(|_| !read_in_full) {
        return Err(ToolError::refused(format!(
            "not written: this would replace {rel}, which you have not read in full, and delete {} of its \
             {} lines (such as {}). Read it first; then write the whole file with what must stay, or \
             change part of it with `edit`{}.",
            dropped.lines.len(),
            dropped.of,
            dropped.examples(),
            if offers_insert {
                ", or add to it with `insert`"
            } else {
                ""
            },
        )));
    }
    if let Some(dropped) = dropped.as_ref().filter(|_| !rewrites_may_drop) {
        return Err(ToolError::refused(format!(
            "not written: this would delete {} of the {} lines of {rel} (such as {}), and this mission's \
             writes keep what a file holds. Write the whole file with those lines kept{}; to remove lines, \
             `edit` them (the lines as `old_string`, an empty `new_string`).",
            dropped.lines.len(),
            dropped.of,
            dropped.examples(),
            if offers_insert {
                ", or add only the new lines with `insert`"
            } else {
                ""
            },
        )));
    }
    if let Some(parent) = file.abs.parent() {
        fs::create_dir_all(parent).map_err(|e| ToolError::io(rel, e))?;
    }
    fs::write(&file.abs, content).map_err(|e| ToolError::io(rel, e))?;
    let verb = if existed { "overwrote" } else { "created" };
    let mut done = format!("{verb} {rel} ({} bytes)", content.len());
    // Said plainly: the failing test that follows (`cannot import name 'add'`) does not tell a
    // small model why.
    if let Some(dropped) = dropped {
        done.push_str(&format!(
            "; this deleted {} of its {} lines (such as {}): if you meant to add to the file, write \
             it again with them kept{}",
            dropped.lines.len(),
            dropped.of,
            dropped.examples(),
            if offers_insert {
                " (or `insert` only the new lines)"
            } else {
                ""
            },
        ));
    }
    Ok(done)
}

/// Lines of an existing file a `write` may drop without the session having looked at it.
const BLIND_DROP_LINES: usize = 5;

/// The non-blank lines of a file that a new content leaves out, when that is most of them (at least
/// [`BLIND_DROP_LINES`], and half).
struct Dropped {
    lines: Vec<String>,
    of: usize,
}

impl Dropped {
    fn examples(&self) -> String {
        let examples: Vec<String> = self.lines.iter().take(3).map(|l| format!("`{l}`")).collect();
        examples.join(", ")
    }
}

fn most_lines_dropped(old: &[u8], content: &str) -> Option<Dropped> {
    let old = String::from_utf8_lossy(old);
    let kept: std::collections::HashSet<&str> = content.lines().map(str::trim).collect();
    let old_lines: Vec<&str> = old.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let lines: Vec<String> = old_lines
        .iter()
        .filter(|l| !kept.contains(*l))
        .map(|l| l.to_string())
        .collect();
    (lines.len() >= BLIND_DROP_LINES && lines.len() * 2 >= old_lines.len()).then_some(Dropped {
        lines,
        of: old_lines.len(),
    })
}

/// Refuses text pasted from `read` with its line numbers (see [`carries_read_gutter`]).
pub(crate) fn refuse_read_gutter(what: &str, text: &str) -> Result<(), ToolError> {
    if carries_read_gutter(text) {
        return Err(ToolError::refused(format!(
            "`{what}` carries `read`'s line numbers (the number and tab in front of each line), which \
             are not in the file; send the lines without them"
        )));
    }
    if carries_retyped_gutter(text) || numbers_a_statement(text) {
        return Err(ToolError::refused(format!(
            "lines of `{what}` start with a line number (like the numbers `read` shows in front of each \
             line), which is not in the file; send the lines of code alone, with their own indentation"
        )));
    }
    Ok(())
}

/// The names a text defines, one per line that starts (after its indentation) a function or a type
/// in the common languages: `def x(`, `class X`, `fn x(`, `function x(`, `func X(`.
fn definitions(text: &str) -> Vec<String> {
    const STARTS: [&str; 11] = [
        "async def ",
        "def ",
        "class ",
        "pub fn ",
        "pub(crate) fn ",
        "fn ",
        "async fn ",
        "export function ",
        "function ",
        "func ",
        "struct ",
    ];
    text.lines()
        .filter_map(|line| {
            let code = line.trim_start();
            let rest = STARTS.iter().find_map(|s| code.strip_prefix(s))?;
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            (!name.is_empty()).then_some(name)
        })
        .collect()
}

/// An edit whose `old_string` defines something its `new_string` no longer does, while the new one
/// defines something else: a replacement of one definition by another. Small models "add `mul`" by
/// replacing `def sub` with it (in the field, `from calc import add, sub` then failed). Returns
/// (what goes, what comes).
fn replaced_definitions(old: &str, new: &str) -> Option<(Vec<String>, Vec<String>)> {
    let (before, after) = (definitions(old), definitions(new));
    let gone: Vec<String> = before.iter().filter(|d| !after.contains(d)).cloned().collect();
    let came: Vec<String> = after.iter().filter(|d| !before.contains(d)).cloned().collect();
    (!gone.is_empty() && !came.is_empty()).then_some((gone, came))
}

pub(crate) struct EditRequest<'a> {
    pub file: Resolved,
    pub old: &'a str,
    pub new: &'a str,
    pub replace_all: bool,
    /// `ToolOptions::rewrites_may_drop`: when false, an edit that replaces one definition by
    /// another is refused (to rename, remove the old one with an empty `new_string`, then add).
    pub may_replace_definitions: bool,
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
    refuse_read_gutter("new_string", req.new)?;
    let text = read_text(&req.file, "edit")?;
    let count = text.matches(req.old).count();
    if count == 0 && carries_read_gutter(req.old) && text.contains(&without_read_gutter(req.old)) {
        refuse_read_gutter("old_string", req.old)?;
    }
    check_count(rel, count, req.replace_all)?;
    let replaced = replaced_definitions(req.old, req.new);
    if let (Some((gone, came)), false) = (&replaced, req.may_replace_definitions) {
        return Err(ToolError::refused(format!(
            "not edited: this would replace {} with {} in {rel}, deleting {}. To add {}, keep the old lines \
             in `new_string` (or add only the new ones with `insert`); to remove {}, edit it with an empty \
             `new_string`.",
            quoted(gone),
            quoted(came),
            quoted(gone),
            quoted(came),
            quoted(gone)
        )));
    }
    let edited = if req.replace_all {
        text.replace(req.old, req.new)
    } else {
        text.replacen(req.old, req.new, 1)
    };
    fs::write(&req.file.abs, &edited).map_err(|e| ToolError::io(rel, e))?;
    let noun = if count == 1 { "occurrence" } else { "occurrences" };
    // The first replacement as it now reads, numbered: "replaced 1 occurrence" alone let the 1.5B
    // miss that its edit had left `def mul` indented, and fail verification again.
    let first = text
        .find(req.old)
        .map_or(0, |at| text[..at].matches('\n').count());
    let changed = req.new.lines().count().max(1);
    let mut done = format!(
        "edited {rel}: replaced {count} {noun}; the first now reads:\n{}",
        excerpt(&edited, first, changed)
    );
    if let Some((gone, _)) = replaced {
        done.push_str(&format!(
            "\nThis deleted {} (not in `new_string`): if you meant to add, put it back.",
            quoted(&gone)
        ));
    }
    Ok(done)
}

fn quoted(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The file as text, for a `tool` that changes part of it.
pub(crate) fn read_text(file: &Resolved, tool: &str) -> Result<String, ToolError> {
    let rel = file.rel.as_str();
    file.check_not_dir_or_special("")?;
    let bytes = fs::read(&file.abs).map_err(|e| ToolError::io(rel, e))?;
    if looks_binary(&bytes) {
        return Err(ToolError::refused(format!(
            "{rel} is a binary file; `{tool}` changes text only"
        )));
    }
    // Changing part of a file must not silently replace undecodable bytes elsewhere in it.
    String::from_utf8(bytes).map_err(|_| {
        ToolError::refused(format!(
            "{rel} is not valid UTF-8; `{tool}` cannot change it safely"
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
