//! `grep {pattern, path?, include?}`: regex search over file contents, honouring .gitignore.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use globset::{GlobBuilder, GlobMatcher};
use regex::Regex;
use tokio_util::sync::CancellationToken;

use crate::error::ToolError;
use crate::paths::{display_relative, Resolved, Root};
use crate::text::{cut_line, looks_binary};
use crate::walk::{is_readable_file, walk};

pub(crate) const MAX_MATCHES: usize = 500;
/// Matching lines are shorter than file lines in `read`: a search shows where, `read` shows what.
const MAX_LINE_CHARS: usize = 500;

pub(crate) struct GrepRequest<'a> {
    pub pattern: &'a str,
    pub start: Resolved,
    pub include: Option<&'a str>,
}

pub(crate) fn grep(
    root: &Root,
    req: &GrepRequest<'_>,
    cancel: &CancellationToken,
) -> Result<String, ToolError> {
    let regex = Regex::new(req.pattern)
        .map_err(|e| ToolError::refused(format!("invalid regex `{}`: {e}", req.pattern)))?;
    let include = req.include.map(Include::new).transpose()?;
    let base = &root.canonical;
    let mut hits = Vec::new();
    if req.start.abs.is_file() {
        if looks_binary_file(&req.start.abs) {
            return Err(ToolError::refused(format!(
                "{} is a binary file; grep searches text only",
                req.start.rel
            )));
        }
        search_file(&regex, &req.start.abs, &req.start.rel, &mut hits)?;
    } else {
        for entry in walk(base, &req.start.abs).flatten() {
            if cancel.is_cancelled() {
                return Err(ToolError::Cancelled);
            }
            if hits.len() > MAX_MATCHES {
                break;
            }
            let rel = display_relative(base, entry.path());
            let wanted = include.as_ref().is_none_or(|i| i.matches(&rel));
            if wanted && is_readable_file(&entry, base) && !looks_binary_file(entry.path()) {
                search_file(&regex, entry.path(), &rel, &mut hits)?;
            }
        }
    }
    Ok(render(hits, req))
}

/// The `include` filter: a pattern with a `/` is matched against the root-relative path, one without
/// against the file name alone, so both `*.rs` and `src/**/*.rs` do what they look like.
struct Include {
    matcher: GlobMatcher,
    whole_path: bool,
}

impl Include {
    fn new(pattern: &str) -> Result<Self, ToolError> {
        let matcher = GlobBuilder::new(pattern)
            .literal_separator(true)
            .build()
            .map_err(|e| ToolError::refused(format!("invalid include glob `{pattern}`: {e}")))?
            .compile_matcher();
        Ok(Include {
            matcher,
            whole_path: pattern.contains('/'),
        })
    }

    fn matches(&self, rel: &str) -> bool {
        if self.whole_path {
            return self.matcher.is_match(rel);
        }
        let name = rel.rsplit('/').next().unwrap_or(rel);
        self.matcher.is_match(name)
    }
}

fn looks_binary_file(path: &Path) -> bool {
    let Ok(file) = File::open(path) else {
        return false;
    };
    let mut reader = BufReader::new(file);
    reader.fill_buf().is_ok_and(looks_binary)
}

/// Appends `rel:line: text` for each matching line, stopping one past the cap so the caller can tell
/// that results were cut.
fn search_file(regex: &Regex, path: &Path, rel: &str, hits: &mut Vec<String>) -> Result<(), ToolError> {
    let file = File::open(path).map_err(|e| ToolError::io(rel, e))?;
    let mut reader = BufReader::new(file);
    let mut raw = Vec::new();
    let mut number = 0u64;
    while hits.len() <= MAX_MATCHES {
        raw.clear();
        if reader
            .read_until(b'\n', &mut raw)
            .map_err(|e| ToolError::io(rel, e))?
            == 0
        {
            break;
        }
        number += 1;
        let line = String::from_utf8_lossy(&raw);
        let line = line.trim_end_matches(['\n', '\r']);
        if regex.is_match(line) {
            hits.push(format!("{rel}:{number}: {}", cut_line(line, MAX_LINE_CHARS)));
        }
    }
    Ok(())
}

fn render(mut hits: Vec<String>, req: &GrepRequest<'_>) -> String {
    if hits.is_empty() {
        let filter = req
            .include
            .map(|i| format!(" (files matching `{i}`)"))
            .unwrap_or_default();
        return format!("no matches for `{}` in {}{filter}", req.pattern, req.start.rel);
    }
    let cut = hits.len() > MAX_MATCHES;
    hits.truncate(MAX_MATCHES);
    let mut out = hits.join("\n") + "\n";
    if cut {
        out.push_str(&format!(
            "(stopped after {MAX_MATCHES} matching lines; narrow the pattern, path or include)\n"
        ));
    }
    out
}
