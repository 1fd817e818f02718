//! `glob {pattern}`: files whose root-relative path matches a glob, honouring .gitignore.

use std::path::Path;

use globset::{GlobBuilder, GlobMatcher};
use tokio_util::sync::CancellationToken;

use crate::error::ToolError;
use crate::paths::{display_relative, Root};
use crate::walk::{is_readable_file, walk};

pub(crate) const MAX_RESULTS: usize = 1000;

pub(crate) fn glob(root: &Root, pattern: &str, cancel: &CancellationToken) -> Result<String, ToolError> {
    let matcher = compile(&relative_pattern(root, pattern)?)?;
    let base = &root.canonical;
    let mut found = Vec::new();
    for entry in walk(base, base).flatten() {
        if cancel.is_cancelled() {
            return Err(ToolError::Cancelled);
        }
        let rel = display_relative(base, entry.path());
        if is_readable_file(&entry, base) && matcher.is_match(&rel) {
            found.push(rel);
        }
    }
    Ok(render(found, pattern))
}

/// The pattern relative to the root: models often echo the absolute path they were shown, or `./`.
fn relative_pattern(root: &Root, pattern: &str) -> Result<String, ToolError> {
    if pattern.is_empty() {
        return Err(ToolError::refused("`pattern` must not be empty"));
    }
    let mut rel = pattern;
    if Path::new(pattern).is_absolute() {
        rel = [&root.canonical, &root.given]
            .into_iter()
            .find_map(|r| {
                let rest = pattern.strip_prefix(r.to_str()?)?;
                (rest.is_empty() || rest.starts_with('/')).then_some(rest)
            })
            .ok_or_else(|| ToolError::OutsideRoot(pattern.to_string()))?;
    }
    let rel = rel.trim_start_matches('/');
    let rel = rel.strip_prefix("./").unwrap_or(rel);
    if rel.split('/').any(|part| part == "..") {
        return Err(ToolError::OutsideRoot(pattern.to_string()));
    }
    Ok(rel.to_string())
}

fn compile(pattern: &str) -> Result<GlobMatcher, ToolError> {
    // `*` stops at `/` as in a shell, so `src/*.rs` does not reach into subdirectories; `**` crosses.
    GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .map(|g| g.compile_matcher())
        .map_err(|e| ToolError::refused(format!("invalid glob `{pattern}`: {e}")))
}

fn render(mut found: Vec<String>, pattern: &str) -> String {
    if found.is_empty() {
        let hint = if pattern.contains('/') {
            ""
        } else {
            " (`*` does not cross directories: try `**/` in front to search subdirectories)"
        };
        return format!("no files match `{pattern}`{hint}");
    }
    found.sort();
    let total = found.len();
    found.truncate(MAX_RESULTS);
    let mut out = found.join("\n") + "\n";
    if total > MAX_RESULTS {
        out.push_str(&format!(
            "(showing the first {MAX_RESULTS} of {total} matches; use a narrower pattern)\n"
        ));
    }
    out
}
