//! The tool definitions offered to the model. Descriptions are short because they are sent with every
//! request of every session; the schemas are strict so providers that validate arguments can do so.

use orchestrator_model::ToolSpec;
use serde_json::{json, Value};

use crate::ToolOptions;

/// Argument names each tool accepts; the dispatcher rejects others.
pub(crate) const READ_ARGS: &[&str] = &["path", "offset", "limit"];
pub(crate) const LIST_ARGS: &[&str] = &["path"];
pub(crate) const GLOB_ARGS: &[&str] = &["pattern"];
pub(crate) const GREP_ARGS: &[&str] = &["pattern", "path", "include"];
pub(crate) const BASH_ARGS: &[&str] = &["command", "timeout"];
pub(crate) const WRITE_ARGS: &[&str] = &["path", "content"];
pub(crate) const EDIT_ARGS: &[&str] = &["path", "old_string", "new_string", "replace_all"];
pub(crate) const INSERT_ARGS: &[&str] = &["path", "text", "after_line"];

pub(crate) fn specs(options: &ToolOptions) -> Vec<ToolSpec> {
    let mut specs = vec![read(), list(), glob(), grep(), bash(options)];
    if options.allow_write {
        specs.extend([write(), edit(), insert()]);
    }
    specs
}

fn spec(name: &str, description: String, properties: Value, required: &[&str]) -> ToolSpec {
    ToolSpec {
        name: name.to_string(),
        description,
        parameters: json!({
            "type": "object",
            "properties": properties,
            "required": required,
            "additionalProperties": false,
        }),
    }
}

fn path_property(what: &str) -> Value {
    json!({"type": "string", "description": format!("{what}, relative to the worktree root")})
}

fn read() -> ToolSpec {
    spec(
        "read",
        "Read a text file, with line numbers like `cat -n`. Long files come in pages: use offset and \
         limit to read further."
            .into(),
        json!({
            "path": path_property("File to read"),
            "offset": {"type": "integer", "minimum": 0, "description": "1-based line to start at (default 1; 0 is taken as 1)"},
            "limit": {"type": "integer", "minimum": 1, "description": "Most lines to return (default 2000; at least 40 are)"},
        }),
        &["path"],
    )
}

fn list() -> ToolSpec {
    spec(
        "list",
        "List the entries of one directory, sorted; directories end with `/`.".into(),
        json!({"path": path_property("Directory to list (default: the root)")}),
        &[],
    )
}

fn glob() -> ToolSpec {
    spec(
        "glob",
        "Find files whose path matches a glob such as `**/*.rs` or `src/*.toml`. Files ignored by \
         .gitignore are skipped."
            .into(),
        json!({"pattern": {"type": "string", "description": "Glob matched against paths relative to the root"}}),
        &["pattern"],
    )
}

fn grep() -> ToolSpec {
    spec(
        "grep",
        "Search file contents with a regular expression (Rust regex syntax) and print `path:line: text` \
         for each matching line. Files ignored by .gitignore and binary files are skipped."
            .into(),
        json!({
            "pattern": {"type": "string", "description": "Regular expression, e.g. `fn \\w+_test` or `(?i)todo`"},
            "path": path_property("File or directory to search (default: the root)"),
            "include": {"type": "string", "description": "Only search files matching this glob, e.g. `*.rs` or `src/**/*.ts`"},
        }),
        &["pattern"],
    )
}

fn bash(options: &ToolOptions) -> ToolSpec {
    let default = options.bash_timeout.as_secs_f64();
    let max = options.max_bash_timeout.as_secs_f64();
    spec(
        "bash",
        format!(
            "Run a command with `bash -c` in the worktree root, without stdin, and return its exit code \
             and combined stdout and stderr. Processes it starts in the background are killed when it \
             ends; the default timeout is {default} s, the maximum {max} s."
        ),
        json!({
            "command": {"type": "string", "description": "The shell command"},
            "timeout": {"type": "number", "description": format!("Seconds before the command is killed (default {default})")},
        }),
        &["command"],
    )
}

fn write() -> ToolSpec {
    spec(
        "write",
        "Create a file or replace its whole content, creating parent directories as needed. What the \
         file held and `content` leaves out is deleted: to add to an existing file, include what it \
         holds, or use `edit`."
            .into(),
        json!({
            "path": path_property("File to write"),
            "content": {"type": "string", "description": "The complete new content of the file"},
        }),
        &["path", "content"],
    )
}

fn edit() -> ToolSpec {
    spec(
        "edit",
        "Replace an exact piece of text in a file. old_string must occur exactly once unless \
         replace_all is true."
            .into(),
        json!({
            "path": path_property("File to edit"),
            "old_string": {"type": "string", "description": "Text to replace, exactly as in the file"},
            "new_string": {"type": "string", "description": "Replacement text"},
            "replace_all": {"type": "boolean", "description": "Replace every occurrence (default false)"},
        }),
        &["path", "old_string", "new_string"],
    )
}

fn insert() -> ToolSpec {
    spec(
        "insert",
        "Add lines to a file without rewriting it: `text` goes after line `after_line` (0 puts it at \
         the start; without it, at the end of the file). Nothing already in the file changes. Creates \
         the file if it does not exist."
            .into(),
        json!({
            "path": path_property("File to add to"),
            "text": {"type": "string", "description": "The lines to add"},
            "after_line": {"type": "integer", "minimum": 0, "description": "Line number (as `read` shows it) the text goes after; default: the end"},
        }),
        &["path", "text"],
    )
}
