//! From a tool name and its JSON arguments to a call of the right tool: argument checking and path
//! confinement happen here so each tool receives only values it can trust.

use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::args::Args;
use crate::bash::BashRequest;
use crate::edit::EditRequest;
use crate::error::ToolError;
use crate::grep::GrepRequest;
use crate::insert::InsertRequest;
use crate::paths::Root;
use crate::read::{ReadRequest, DEFAULT_LIMIT};
use crate::specs::{
    BASH_ARGS, EDIT_ARGS, GLOB_ARGS, GREP_ARGS, INSERT_ARGS, LIST_ARGS, READ_ARGS, WRITE_ARGS,
};
use crate::ToolOptions;

/// The files a session has read, written or edited (absolute paths), shared by its toolbox's clones.
#[derive(Debug, Clone, Default)]
pub(crate) struct Seen(std::sync::Arc<std::sync::Mutex<Files>>);

/// What a session has done with files: the ones it has read in full, written or edited (`seen`),
/// and the ones it changed (`changed`).
#[derive(Debug, Default)]
struct Files {
    seen: std::collections::HashSet<std::path::PathBuf>,
    changed: std::collections::HashSet<std::path::PathBuf>,
}

impl Seen {
    fn files(&self) -> std::sync::MutexGuard<'_, Files> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn add(&self, path: &std::path::Path) {
        self.files().seen.insert(path.to_path_buf());
    }

    fn contains(&self, path: &std::path::Path) -> bool {
        self.files().seen.contains(path)
    }

    /// The session changed `path` (a write, edit or insert that took).
    fn changed(&self, path: &std::path::Path) {
        self.files().changed.insert(path.to_path_buf());
    }

    fn has_changed(&self, path: &std::path::Path) -> bool {
        self.files().changed.contains(path)
    }

    pub(crate) fn len(&self) -> usize {
        self.files().seen.len()
    }
}

/// The fewest lines a `read` page holds (fewer only at the end of the file).
const MIN_PAGE: u64 = 40;

/// Room left in a `read` page for the note that says where to continue.
const READ_NOTE_RESERVE: usize = 200;

/// Runs one of the file-system tools. They block on the file system, so the caller runs this on a
/// blocking thread; long walks check `cancel` as they go.
pub(crate) fn file_tool(
    root: &Root,
    options: &ToolOptions,
    seen: &Seen,
    name: &str,
    arguments: &Value,
    cancel: &CancellationToken,
) -> Result<String, ToolError> {
    // Not for `write`: a whole-file write is where a folder named like the unit may be meant
    // (`docs/README.md` for a unit `docs`), and its refusal names the file to write instead.
    let repaired = (name != "write")
        .then(|| without_unit_folder(root, options, arguments))
        .flatten();
    let (arguments, note) = match &repaired {
        Some((arguments, note)) => (arguments, note.as_str()),
        None => (arguments, ""),
    };
    let result = match name {
        "read" => read(root, options, seen, arguments),
        "list" => list(root, arguments),
        "glob" => glob(root, arguments, cancel),
        "grep" => grep(root, arguments, cancel),
        "write" => write(root, options, seen, arguments),
        "edit" => edit(root, options, seen, arguments),
        "insert" => insert(root, options, seen, arguments),
        other => Err(ToolError::refused(format!("`{other}` is not a file tool"))),
    };
    match result.map_err(|e| with_path_hint(root, e)) {
        Ok(done) => Ok(format!("{note}{done}")),
        Err(e) if !note.is_empty() => Err(ToolError::refused(format!("{note}{e}"))),
        Err(e) => Err(e),
    }
}

/// A `path` that starts with the unit's name as a folder the worktree does not have, followed by a
/// path the worktree does have: taken without the folder, with a note that says so. Refusing did
/// not converge: the field's 1.5B sent `calc_mul-r2-r3/calc.py` and `calc_mul-r2-r3/test_calc.py` to
/// `read`, `write`, `edit` and `insert` eleven times, each refused with "`calc_mul-r2-r3` is your
/// unit's name, not a folder", until it was cut off as a loop. A new file under such a folder
/// (`big/1.txt` for a unit `big`) is left as asked. What is left is resolved inside the worktree
/// like any path.
fn without_unit_folder(root: &Root, options: &ToolOptions, arguments: &Value) -> Option<(Value, String)> {
    let path = arguments.get("path")?.as_str()?;
    let trimmed = path.trim().trim_start_matches("./");
    let (first, rest) = trimmed.split_once('/')?;
    let rest = rest.trim_start_matches('/');
    if rest.is_empty()
        || !options.not_folders.iter().any(|name| name == first)
        || root.canonical.join(first).exists()
        || !root.canonical.join(rest).exists()
    {
        return None;
    }
    let mut repaired = arguments.clone();
    repaired["path"] = Value::String(rest.to_string());
    let note = format!("(`{first}` is your unit's name, not a folder: this is `{rest}`.)\n");
    Some((repaired, note))
}

/// A path that is not there, said with what to do: models copy paths from what they were shown
/// (a traceback from another folder, a unit's name), and the 1.5B asked for
/// `units/1-r2/test_calc.py` eight times, each time told only "No such file or directory".
fn with_path_hint(root: &Root, error: ToolError) -> ToolError {
    let ToolError::Io { path, source } = &error else {
        return error;
    };
    if source.kind() != std::io::ErrorKind::NotFound {
        return error;
    }
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let existing = without_folders(&parts, 0).find(|candidate| root.canonical.join(candidate).exists());
    ToolError::refused(match existing {
        Some(candidate) => format!(
            "{path}: no such file or directory. Paths are relative to the root of your worktree, where \
             `{candidate}` exists: use that path"
        ),
        None => format!(
            "{path}: no such file or directory (paths are relative to the root of your worktree; `list` \
             shows what is there)"
        ),
    })
}

fn read(root: &Root, options: &ToolOptions, seen: &Seen, arguments: &Value) -> Result<String, ToolError> {
    let args = Args::parse("read", arguments, READ_ARGS)?;
    let path = args.required_str("path")?;
    // Line numbers start at 1, but models count from 0 as often (the field's 1.5B reviewer sent
    // `offset: 0` and, refused, sent it again): 0 is the start of the file too.
    let offset = args.optional_count("offset")?.unwrap_or(1).max(1);
    // Pages of a few lines only make a model read a file many times, or act on part of it (the 1.5B
    // read five lines of nine, then rewrote the file), so a page has at least MIN_PAGE lines.
    let limit = args
        .optional_positive_int("limit")?
        .unwrap_or(DEFAULT_LIMIT)
        .max(MIN_PAGE);
    let (file, note) = match diff_header_path(path) {
        Some(meant) if !root.resolve(path)?.abs.exists() => {
            let note = format!("(`{path}` is a line of a diff; this is {meant})\n");
            (root.resolve(meant)?, note)
        }
        _ => (root.resolve(path)?, String::new()),
    };
    let abs = file.abs.clone();
    let page = crate::read::read(&ReadRequest {
        file,
        offset,
        limit,
        max_chars: options.max_output_chars.saturating_sub(READ_NOTE_RESERVE),
    })?;
    // Only a read of the whole file counts as having seen it (for `write`'s blind-overwrite check).
    if offset == 1 && page.reaches_the_end {
        seen.add(&abs);
    }
    Ok(format!("{note}{}", page.text))
}

/// The file a diff line names, when a model passes the line itself as a path (`diff --git a/x b/x`,
/// `--- a/x`, `+++ b/x`): weak reviewers copy these from the diff they were shown.
fn diff_header_path(path: &str) -> Option<&str> {
    let path = path.trim();
    let rest = path
        .strip_prefix("diff --git ")
        .or_else(|| path.strip_prefix("--- "))
        .or_else(|| path.strip_prefix("+++ "))?;
    let first = rest.split_whitespace().next()?;
    first
        .strip_prefix("a/")
        .or_else(|| first.strip_prefix("b/"))
        .filter(|p| !p.is_empty())
}

fn list(root: &Root, arguments: &Value) -> Result<String, ToolError> {
    let args = Args::parse("list", arguments, LIST_ARGS)?;
    let path = args.optional_str("path")?.unwrap_or(".");
    crate::list::list(&root.resolve(path)?)
}

fn glob(root: &Root, arguments: &Value, cancel: &CancellationToken) -> Result<String, ToolError> {
    let args = Args::parse("glob", arguments, GLOB_ARGS)?;
    crate::glob::glob(root, args.required_str("pattern")?, cancel)
}

fn grep(root: &Root, arguments: &Value, cancel: &CancellationToken) -> Result<String, ToolError> {
    let args = Args::parse("grep", arguments, GREP_ARGS)?;
    let pattern = args.required_str("pattern")?;
    let path = args.optional_str("path")?.unwrap_or(".");
    let include = args.optional_str("include")?;
    let request = GrepRequest {
        pattern,
        start: root.resolve(path)?,
        include,
    };
    if !request.start.abs.exists() {
        return Err(ToolError::refused(format!(
            "{} does not exist",
            request.start.rel
        )));
    }
    crate::grep::grep(root, &request, cancel)
}

fn write(root: &Root, options: &ToolOptions, seen: &Seen, arguments: &Value) -> Result<String, ToolError> {
    let args = Args::parse("write", arguments, WRITE_ARGS)?;
    let path = args.required_str("path")?;
    let content = args.required_str("content")?;
    let file = root.resolve_for_write(path)?;
    if let Some((existing, named)) = misplaced_copy(root, &file, seen, &options.not_folders) {
        // Warned once: the same write again is taken as meant, unless the new folder bears the
        // unit's name (small models send the same call again whatever they are told).
        seen.add(&file.abs);
        let again = match named {
            Some(name) => format!("`{name}` is your unit's name, not a folder."),
            None => "If you do mean a second file in a new folder, send the same write again.".to_string(),
        };
        return Err(ToolError::refused(format!(
            "`{path}` would be a new file in a new folder, and `{existing}` already exists. Paths are \
             relative to the root of your worktree: to change that file, write `{existing}`. {again}"
        )));
    }
    refuse_unplanned(root, options, seen, &file)?;
    let read_in_full = seen.contains(&file.abs);
    let done = crate::edit::write(
        &file,
        content,
        read_in_full,
        options.rewrites_may_drop,
        options.offers("insert"),
    )?;
    seen.add(&file.abs);
    seen.changed(&file.abs);
    Ok(done)
}

/// A new file outside the task's planned files, under `rewrites_may_drop` false: refused until the
/// session has changed one of the planned files (the work the plan placed starts there; a helper
/// file may follow). A "send it again" way out did not hold: the 1.5B sent the same `insert` of
/// `src/mul.py` again at once, for a unit planned on `calc.py`.
fn refuse_unplanned(
    root: &Root,
    options: &ToolOptions,
    seen: &Seen,
    file: &crate::paths::Resolved,
) -> Result<(), ToolError> {
    let planned = &options.planned_files;
    let rel = file.rel.trim_start_matches("./");
    let is_planned = |p: &String| p.trim_start_matches("./") == rel;
    let started = planned
        .iter()
        .any(|p| seen.has_changed(&root.canonical.join(p.trim_start_matches("./"))));
    if options.rewrites_may_drop
        || planned.is_empty()
        || file.kind() != crate::paths::Kind::Missing
        || planned.iter().any(is_planned)
        || started
    {
        return Ok(());
    }
    let files: Vec<String> = planned.iter().map(|p| format!("`{p}`")).collect();
    Err(ToolError::refused(format!(
        "`{rel}` would be a new file, and your unit is planned to change {}: put the code there first \
         (`insert` adds to a file). A new file can be made once a planned file holds your change.",
        files.join(", ")
    )))
}

/// For a write that would create folders to hold a new file whose path, less its leading folders,
/// names a file that exists: that file. The 1.5B wrote `calc_mul/calc.py` (its unit's name, then
/// the file it was told to change); the copy passed every check that did not import it, and was
/// merged while `calc.py` stayed as it was. None once this session was warned about the path.
fn misplaced_copy(
    root: &Root,
    file: &crate::paths::Resolved,
    seen: &Seen,
    not_folders: &[String],
) -> Option<(String, Option<String>)> {
    if file.kind() != crate::paths::Kind::Missing {
        return None;
    }
    if file.abs.parent().is_none_or(|parent| parent.exists()) {
        return None;
    }
    // The folders that exist stay; the path is tried without the first missing one and after it.
    let parts: Vec<&str> = file.rel.split('/').filter(|p| !p.is_empty()).collect();
    let first_missing = (1..=parts.len()).find(|&n| !root.canonical.join(parts[..n].join("/")).exists())? - 1;
    let named = not_folders
        .iter()
        .find(|name| *name == parts[first_missing])
        .cloned();
    if seen.contains(&file.abs) && named.is_none() {
        return None;
    }
    let existing = without_folders(&parts, first_missing).find(|c| root.canonical.join(c).is_file())?;
    Some((existing, named))
}

/// `parts` joined with `/`, its first `keep` kept and one or more of the folders after them left
/// out, fewest first: the paths a model may have meant when it put folders in front of one.
fn without_folders<'a>(parts: &'a [&'a str], keep: usize) -> impl Iterator<Item = String> + 'a {
    (keep + 1..parts.len()).map(move |start| [&parts[..keep], &parts[start..]].concat().join("/"))
}

fn edit(root: &Root, options: &ToolOptions, seen: &Seen, arguments: &Value) -> Result<String, ToolError> {
    let args = Args::parse("edit", arguments, EDIT_ARGS)?;
    let path = args.required_str("path")?;
    let request = EditRequest {
        old: args.required_str("old_string")?,
        new: args.required_str("new_string")?,
        replace_all: args.optional_bool("replace_all")?.unwrap_or(false),
        file: root.resolve_for_write(path)?,
        may_replace_definitions: options.rewrites_may_drop,
    };
    let done = crate::edit::edit(&request)?;
    seen.add(&request.file.abs);
    seen.changed(&request.file.abs);
    Ok(done)
}

/// Adding lines tells the session nothing about the rest of the file, so it does not count as
/// having seen it (a later `write` that would delete most of it is still refused unread).
fn insert(root: &Root, options: &ToolOptions, seen: &Seen, arguments: &Value) -> Result<String, ToolError> {
    let args = Args::parse("insert", arguments, INSERT_ARGS)?;
    let path = args.required_str("path")?;
    let request = InsertRequest {
        text: args.required_str("text")?,
        after_line: args.optional_count("after_line")?,
        file: root.resolve_for_write(path)?,
    };
    refuse_unplanned(root, options, seen, &request.file)?;
    let done = crate::insert::insert(&request)?;
    seen.changed(&request.file.abs);
    Ok(done)
}

/// Checks `bash`'s arguments and works out the timeout.
pub(crate) fn bash_request<'a>(
    options: &ToolOptions,
    arguments: &'a Value,
) -> Result<BashRequest<'a>, ToolError> {
    let args = Args::parse("bash", arguments, BASH_ARGS)?;
    let command = args.required_str("command")?;
    if command.trim().is_empty() {
        return Err(ToolError::refused("`command` must not be empty"));
    }
    let max = options.max_bash_timeout;
    let (timeout, clamped_from) = match args.optional_positive_number("timeout")? {
        None => (options.bash_timeout.min(max), None),
        Some(secs) if secs > max.as_secs_f64() => (max, Some(secs)),
        Some(secs) => (Duration::try_from_secs_f64(secs).unwrap_or(max), None),
    };
    Ok(BashRequest {
        command,
        timeout,
        clamped_from,
        max_chars: options.max_output_chars,
    })
}
