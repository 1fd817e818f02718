//! `git diff --no-color --no-ext-diff --no-textconv <base> <head>` rendered in-process: what a
//! stage 1 reviewer reads, once per unit, when fifty units are reviewed at once.
//!
//! The output is git's: `diff --git` headers with `new file mode`/`deleted file mode` and `index`
//! lines (abbreviated as git abbreviates), Myers' algorithm with git's indent heuristic, three lines
//! of context, hunk headers with git's default function context (the nearest earlier line starting
//! with a letter, `_` or `$`), `\ No newline at end of file`, and `Binary files … differ` for content
//! with a NUL byte in its first 8000 bytes. Anything that git would render differently or that this
//! renderer does not do is left to git ([`Patch::UseGit`]): rename or copy detection (a change set
//! with both additions and deletions, `diff.renames=copies`), any `diff.*` configuration (context
//! size, algorithm, drivers), attributes files (diff drivers, `-diff`), mode changes, symlinks and
//! submodules, and paths git would quote or mark (anything but printable ASCII without spaces).

use std::fmt::Write as _;

use gix::bstr::{BStr, ByteSlice};
use gix::diff::blob::unified_diff::{ConsumeHunk, ContextSize, DiffLineKind, HunkHeader};
use gix::object::tree::diff::ChangeDetached as Change;
use gix::objs::tree::EntryKind;
use gix::prelude::ObjectIdExt;

/// The options of `git diff` whose output this module reproduces: what [`crate::Worktree::diff_since`]
/// passes when git renders the patch. External diff drivers and textconv filters are off: they run the
/// user's programs and change the text per machine.
pub(crate) const GIT_DIFF_OPTIONS: [&str; 5] = [
    "--no-color",
    "--no-ext-diff",
    "--no-textconv",
    "--src-prefix=a/",
    "--dst-prefix=b/",
];

/// A rendered patch, or why git is to render it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Patch {
    Text(String),
    UseGit(String),
}

/// git's limit for sniffing binary content (`buffer_is_binary`).
const BINARY_SNIFF_BYTES: usize = 8000;
/// git's limit for the function context in a hunk header (`struct func_line`).
const FUNC_CONTEXT_BYTES: usize = 80;

/// The patch from commit `base` to commit `head`.
pub(crate) fn between(
    repo: &gix::Repository,
    base: gix::ObjectId,
    head: gix::ObjectId,
) -> Result<Patch, String> {
    if let Some(why) = configured_differently(repo) {
        return Ok(Patch::UseGit(why));
    }
    let tree_of = |commit: gix::ObjectId| {
        repo.find_commit(commit)
            .map_err(|e| format!("reading {commit}: {e}"))?
            .tree()
            .map_err(|e| format!("reading the tree of {commit}: {e}"))
    };
    let (old, new) = (tree_of(base)?, tree_of(head)?);
    let mut changes: Vec<Change> = repo
        .diff_tree_to_tree(&old, &new, gix::diff::Options::default().with_rewrites(None))
        .map_err(|e| format!("tree diff: {e}"))?
        .into_iter()
        .filter(|change| !is_tree(change))
        .collect();
    if let Some(why) = rendered_differently(&changes, &new) {
        return Ok(Patch::UseGit(why));
    }
    // git's output order: full paths compared bytewise (a directory sorts as `name/`).
    changes.sort_by(|a, b| a.location().cmp(b.location()));
    let mut out = String::new();
    for change in &changes {
        render_file(repo, change, &mut out)?;
    }
    Ok(Patch::Text(out))
}

/// Configuration that changes what `git diff` prints, or where attributes may come from.
fn configured_differently(repo: &gix::Repository) -> Option<String> {
    let config = repo.config_snapshot();
    if config
        .plumbing()
        .sections_by_name("diff")
        .is_some_and(|mut sections| sections.next().is_some())
    {
        return Some("diff settings are configured".into());
    }
    if config.string("core.attributesFile").is_some() {
        return Some("core.attributesFile is set".into());
    }
    let user_attributes = std::env::var_os("XDG_CONFIG_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| std::path::Path::new(&home).join(".config")))
        .map(|config| config.join("git").join("attributes"));
    let info_attributes = repo.common_dir().join("info").join("attributes");
    if info_attributes.exists() || user_attributes.is_some_and(|p| p.exists()) {
        return Some("an attributes file is in use".into());
    }
    None
}

fn is_tree(change: &Change) -> bool {
    let mode = match change {
        Change::Addition { entry_mode, .. }
        | Change::Deletion { entry_mode, .. }
        | Change::Modification { entry_mode, .. } => entry_mode,
        Change::Rewrite { entry_mode, .. } => entry_mode,
    };
    mode.is_tree()
}

/// Changes that git would show in a way this renderer does not.
fn rendered_differently(changes: &[Change], new: &gix::Tree<'_>) -> Option<String> {
    let added = changes.iter().any(|c| matches!(c, Change::Addition { .. }));
    let deleted = changes.iter().any(|c| matches!(c, Change::Deletion { .. }));
    if added && deleted {
        return Some("additions and deletions together (git looks for renames)".into());
    }
    let mut checked_dirs = std::collections::HashSet::new();
    for change in changes {
        let path = change.location();
        if !plain_path(path) {
            return Some(format!("a path git would quote: {path}"));
        }
        match change {
            Change::Rewrite { .. } => return Some("a rename".into()),
            Change::Modification {
                previous_entry_mode,
                entry_mode,
                ..
            } if previous_entry_mode != entry_mode => return Some(format!("a mode change: {path}")),
            _ => {}
        }
        let (Change::Addition { entry_mode, .. }
        | Change::Deletion { entry_mode, .. }
        | Change::Modification { entry_mode, .. }
        | Change::Rewrite { entry_mode, .. }) = change;
        if !matches!(entry_mode.kind(), EntryKind::Blob | EntryKind::BlobExecutable) {
            return Some(format!("not a regular file: {path}"));
        }
        if path.ends_with(b".gitattributes") {
            return Some("an attributes file changed".into());
        }
        // An attributes file in any directory above the path may give it a diff driver.
        let mut dir: &[u8] = path.as_ref();
        while let Some(slash) = dir.rfind_byte(b'/') {
            dir = &dir[..slash];
            if !checked_dirs.insert(dir.to_vec()) {
                break; // this directory and those above it were looked at already
            }
            if has_attributes(new, &format!("{}/.gitattributes", dir.as_bstr())) {
                return Some(format!("attributes in {}", dir.as_bstr()));
            }
        }
    }
    if has_attributes(new, ".gitattributes") {
        return Some("attributes at the top".into());
    }
    None
}

fn has_attributes(tree: &gix::Tree<'_>, path: &str) -> bool {
    // A lookup that fails is taken as "maybe": git decides then.
    tree.lookup_entry_by_path(path)
        .map_or(true, |entry| entry.is_some())
}

/// Printable ASCII without spaces, quotes or backslashes: what git prints as it is, with no quoting
/// and no tab after the `---`/`+++` names.
fn plain_path(path: &BStr) -> bool {
    !path.is_empty()
        && path
            .iter()
            .all(|&b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
}

fn render_file(repo: &gix::Repository, change: &Change, out: &mut String) -> Result<(), String> {
    let path = change.location();
    let (old, new) = match change {
        Change::Addition { entry_mode, id, .. } => (None, Some((entry_mode.kind(), *id))),
        Change::Deletion { entry_mode, id, .. } => (Some((entry_mode.kind(), *id)), None),
        Change::Modification {
            previous_entry_mode,
            previous_id,
            entry_mode,
            id,
            ..
        } => (
            Some((previous_entry_mode.kind(), *previous_id)),
            Some((entry_mode.kind(), *id)),
        ),
        Change::Rewrite { .. } => return Err("renames are git's to render".into()),
    };
    let _ = writeln!(out, "diff --git a/{path} b/{path}");
    let short = |id: gix::ObjectId| -> Result<String, String> {
        if id.is_null() {
            return Ok("0000000".into());
        }
        id.attach(repo)
            .shorten()
            .map(|prefix| prefix.to_string())
            .map_err(|e| format!("abbreviating {id}: {e}"))
    };
    let null = repo.object_hash().null();
    let old_id = old.map_or(null, |(_, id)| id);
    let new_id = new.map_or(null, |(_, id)| id);
    match (old, new) {
        (None, Some((kind, _))) => {
            let _ = writeln!(out, "new file mode {}", mode_octal(kind));
            let _ = writeln!(out, "index {}..{}", short(old_id)?, short(new_id)?);
        }
        (Some((kind, _)), None) => {
            let _ = writeln!(out, "deleted file mode {}", mode_octal(kind));
            let _ = writeln!(out, "index {}..{}", short(old_id)?, short(new_id)?);
        }
        (Some((kind, _)), Some(_)) => {
            let _ = writeln!(
                out,
                "index {}..{} {}",
                short(old_id)?,
                short(new_id)?,
                mode_octal(kind)
            );
        }
        (None, None) => return Ok(()),
    }
    let read = |id: Option<gix::ObjectId>| -> Result<Vec<u8>, String> {
        match id {
            None => Ok(Vec::new()),
            Some(id) => Ok(repo
                .find_blob(id)
                .map_err(|e| format!("reading {id}: {e}"))?
                .take_data()),
        }
    };
    let before = read(old.map(|(_, id)| id))?;
    let after = read(new.map(|(_, id)| id))?;
    let (a, b) = (
        if old.is_some() {
            format!("a/{path}")
        } else {
            "/dev/null".into()
        },
        if new.is_some() {
            format!("b/{path}")
        } else {
            "/dev/null".into()
        },
    );
    if is_binary(&before) || is_binary(&after) {
        let _ = writeln!(out, "Binary files {a} and {b} differ");
        return Ok(());
    }
    // An empty file added or deleted has a header and nothing else, as in git.
    if before.is_empty() && after.is_empty() {
        return Ok(());
    }
    let _ = writeln!(out, "--- {a}");
    let _ = writeln!(out, "+++ {b}");
    render_hunks(&before, &after, out)
}

fn mode_octal(kind: EntryKind) -> &'static str {
    match kind {
        EntryKind::BlobExecutable => "100755",
        _ => "100644",
    }
}

fn is_binary(data: &[u8]) -> bool {
    data[..data.len().min(BINARY_SNIFF_BYTES)].contains(&0)
}

/// The hunks of one text file, with git's algorithm, heuristic, context and hunk headers.
fn render_hunks(before: &[u8], after: &[u8], out: &mut String) -> Result<(), String> {
    use gix::diff::blob::{diff_with_slider_heuristics, Algorithm, InternedInput, UnifiedDiff};
    let input = InternedInput::new(before, after);
    let diff = diff_with_slider_heuristics(Algorithm::Myers, &input);
    let hunks = GitHunks {
        old_lines: before.lines_with_terminator().collect(),
        out: String::new(),
    };
    let rendered = UnifiedDiff::new(&diff, &input, hunks, ContextSize::symmetrical(3))
        .consume()
        .map_err(|e| format!("rendering hunks: {e}"))?;
    out.push_str(&rendered);
    Ok(())
}

/// Writes hunks as git does; keeps the old file's lines to find each hunk's function context.
struct GitHunks<'a> {
    old_lines: Vec<&'a [u8]>,
    out: String,
}

impl ConsumeHunk for GitHunks<'_> {
    type Out = String;

    fn consume_hunk(&mut self, header: HunkHeader, lines: &[(DiffLineKind, &[u8])]) -> std::io::Result<()> {
        let range = |start: u32, len: u32| {
            // git prints the line before an empty range, and no length for a single line.
            let start = if len == 0 { start.saturating_sub(1) } else { start };
            if len == 1 {
                start.to_string()
            } else {
                format!("{start},{len}")
            }
        };
        let _ = write!(
            self.out,
            "@@ -{} +{} @@",
            range(header.before_hunk_start, header.before_hunk_len),
            range(header.after_hunk_start, header.after_hunk_len)
        );
        if let Some(context) = self.function_context(header.before_hunk_start) {
            self.out.push(' ');
            self.out.push_str(&context);
        }
        self.out.push('\n');
        for (kind, line) in lines {
            self.out.push(kind.to_prefix());
            self.out.push_str(&String::from_utf8_lossy(line));
            if !line.ends_with(b"\n") {
                self.out.push_str("\n\\ No newline at end of file\n");
            }
        }
        Ok(())
    }

    fn finish(self) -> String {
        self.out
    }
}

impl GitHunks<'_> {
    /// git's default `funcname`: the nearest line above the hunk (1-based `start`) that begins with a
    /// letter, `_` or `$`, without trailing white space, at most 80 bytes.
    fn function_context(&self, start: u32) -> Option<String> {
        let above = (start as usize).saturating_sub(1).min(self.old_lines.len());
        self.old_lines[..above].iter().rev().find_map(|line| {
            let first = *line.first()?;
            if !(first.is_ascii_alphabetic() || first == b'_' || first == b'$') {
                return None;
            }
            let line = &line[..line.len().min(FUNC_CONTEXT_BYTES)];
            let end = line
                .iter()
                .rposition(|b| !b.is_ascii_whitespace())
                .map_or(0, |i| i + 1);
            Some(String::from_utf8_lossy(&line[..end]).into_owned())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_repo::{make_executable, Scratch};

    impl Scratch {
        /// What `Worktree::diff_since` asks git for.
        fn git_diff(&self, base: gix::ObjectId, head: gix::ObjectId) -> String {
            let (base, head) = (base.to_string(), head.to_string());
            let mut args = vec!["diff"];
            args.extend(GIT_DIFF_OPTIONS);
            args.extend([base.as_str(), head.as_str(), "--"]);
            self.git(&args)
        }

        fn assert_same_as_git(&self, base: gix::ObjectId, head: gix::ObjectId) {
            match between(&self.open(), base, head).expect("patch") {
                Patch::Text(ours) => assert_eq!(ours, self.git_diff(base, head)),
                Patch::UseGit(why) => panic!("expected an in-process patch, got UseGit({why})"),
            }
        }

        fn assert_left_to_git(&self, base: gix::ObjectId, head: gix::ObjectId) {
            let outcome = between(&self.open(), base, head).expect("patch");
            assert!(matches!(outcome, Patch::UseGit(_)), "{outcome:?}");
        }
    }

    /// A source file with function-like lines for git's hunk-header context.
    fn program(functions: usize, marker: &str) -> String {
        let mut text = String::new();
        for f in 0..functions {
            let _ = writeln!(text, "fn function_{f}() {{");
            for line in 0..6 {
                let _ = writeln!(text, "    let value_{line} = {f} * {line}; // {marker}");
            }
            text.push_str("}\n\n");
        }
        text
    }

    #[test]
    fn additions_and_modifications_read_as_git_writes_them() {
        let repo = Scratch::new();
        repo.write("src/main.rs", program(8, "one"));
        repo.write("README", "hello\n");
        repo.write("no-newline.txt", "a\nb\nc");
        repo.write("deep/er/file.txt", "x\n".repeat(30));
        let base = repo.commit();

        let mut main = program(8, "one");
        main = main.replacen("value_2 = 1 * 2", "value_2 = 1 + 2", 1);
        main = main.replacen("value_5 = 6 * 5; // one\n", "", 1);
        main.push_str("fn added() {}\n");
        repo.write("src/main.rs", main);
        repo.write("no-newline.txt", "a\nB\nc");
        repo.write(
            "deep/er/file.txt",
            format!("{}y\n{}", "x\n".repeat(10), "x\n".repeat(20)),
        );
        repo.write("new.txt", "fresh\nlines\n");
        repo.write("empty.txt", "");
        repo.write("image.bin", [0u8, 1, 2, 3, 0, 255]);
        repo.write("tail-without-newline.txt", "only");
        repo.write("run.sh", "#!/bin/sh\n");
        make_executable(&repo.root.join("run.sh"));
        let head = repo.commit();
        repo.assert_same_as_git(base, head);
    }

    #[test]
    fn deletions_alone_read_as_git_writes_them() {
        let repo = Scratch::new();
        repo.write("a.txt", "one\ntwo\n");
        repo.write("gone/b.txt", "three\n");
        repo.write("empty", "");
        repo.write("kept.txt", "k\n");
        let base = repo.commit();
        std::fs::remove_file(repo.root.join("a.txt")).expect("rm");
        std::fs::remove_dir_all(repo.root.join("gone")).expect("rm");
        std::fs::remove_file(repo.root.join("empty")).expect("rm");
        repo.write("kept.txt", "k\nmore\n");
        let head = repo.commit();
        repo.assert_same_as_git(base, head);
        // Nothing changed: an empty patch, as git prints nothing.
        repo.assert_same_as_git(head, head);
    }

    #[test]
    fn many_random_edits_give_git_hunks_and_contexts() {
        let repo = Scratch::new();
        let original = program(30, "base");
        repo.write("lib.rs", &original);
        let base = repo.commit();
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move |bound: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % bound as u64) as usize
        };
        for round in 0..25 {
            let mut lines: Vec<String> = original.lines().map(str::to_string).collect();
            for edit in 0..(1 + next(12)) {
                let at = next(lines.len());
                match next(4) {
                    0 => lines.insert(at, format!("    inserted_{round}_{edit}();")),
                    1 => {
                        lines.remove(at);
                    }
                    2 => lines[at] = format!("{} // changed {round}", lines[at]),
                    _ => lines.insert(at, "}".to_string()),
                }
            }
            repo.write("lib.rs", lines.join("\n") + "\n");
            let head = repo.commit();
            repo.assert_same_as_git(base, head);
        }
    }

    #[test]
    fn what_git_renders_differently_is_left_to_git() {
        let repo = Scratch::new();
        repo.write("a.txt", "a\n");
        repo.write("mode.sh", "echo\n");
        let base = repo.commit();
        // A possible rename.
        std::fs::rename(repo.root.join("a.txt"), repo.root.join("b.txt")).expect("mv");
        let renamed = repo.commit();
        repo.assert_left_to_git(base, renamed);
        // A mode change.
        make_executable(&repo.root.join("mode.sh"));
        let chmod = repo.commit();
        repo.assert_left_to_git(renamed, chmod);
        // A path git quotes, or one with a space.
        repo.write("with space.txt", "s\n");
        let spaced = repo.commit();
        repo.assert_left_to_git(chmod, spaced);
        repo.write("caf\u{e9}.txt", "c\n");
        let accented = repo.commit();
        repo.assert_left_to_git(spaced, accented);
        // Attributes in a directory above a changed file.
        repo.write("sub/.gitattributes", "*.txt diff=custom\n");
        let with_attributes = repo.commit();
        repo.write("sub/x.txt", "x\n");
        let under_attributes = repo.commit();
        repo.assert_left_to_git(with_attributes, under_attributes);
        // Diff configuration (here the context size).
        repo.write("b.txt", "b\n");
        let plain = repo.commit();
        repo.write("b.txt", "bb\n");
        let changed = repo.commit();
        repo.assert_same_as_git(plain, changed);
        repo.git(&["config", "diff.context", "1"]);
        repo.assert_left_to_git(plain, changed);
    }

    #[test]
    fn function_context_is_gits_default() {
        let hunks = GitHunks {
            old_lines: vec![b"fn f() {\n", b"  body\n", b"\n", b"  more  \n"],
            out: String::new(),
        };
        assert_eq!(hunks.function_context(4).as_deref(), Some("fn f() {"));
        assert_eq!(hunks.function_context(1), None);
        let long = format!("{}\n", "x".repeat(100));
        let hunks = GitHunks {
            old_lines: vec![long.as_bytes(), b" indented\n"],
            out: String::new(),
        };
        assert_eq!(hunks.function_context(3).map(|c| c.len()), Some(80));
    }
}
