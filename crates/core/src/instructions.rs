//! Project instructions: the repository's `AGENTS.md` (and `CLAUDE.md`) files, read from the mission's
//! base worktree (what the agents see, never the user's uncommitted files) and given to every session
//! as one "Project instructions" block at the end of its system prompt. The block is the same text
//! for every session of a mission, so a prompt cache can keep it.
//!
//! Everything here is bounded: files per mission, bytes per file and in all, the walk itself. Files a
//! person cannot have meant for an agent (binary, not UTF-8, a symlink out of the repository, one under
//! a dependency or build folder) are passed over with a note.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use orchestrator_protocol::ProjectFile;

/// The names read, in this order within one folder (Codex and OpenCode read `AGENTS.md`, Claude
/// Code `CLAUDE.md`).
pub const INSTRUCTION_FILES: [&str; 2] = ["AGENTS.md", "CLAUDE.md"];
/// The most of one file the sessions are given.
pub const MAX_FILE_BYTES: usize = 16 * 1024;
/// The most of all files together: the block rides on every model call of every session.
pub const MAX_TOTAL_BYTES: usize = 32 * 1024;
/// Instruction files read at most; further ones are named in a note.
pub const MAX_FILES: usize = 16;
/// Folders deeper than this are not searched.
const MAX_DEPTH: usize = 12;
/// Directory entries the search looks at, at most: a huge checkout must not hold up the start.
const MAX_ENTRIES: usize = 200_000;
/// Folders of dependencies, build output and tool state: their instruction files belong to other
/// projects. Skipped even where no .gitignore says so.
const SKIPPED_DIRS: &[&str] = &[
    ".git",
    ".orchestrator",
    "node_modules",
    "target",
    "vendor",
    ".venv",
    "venv",
    "__pycache__",
];

/// What was found: the block every session is given, and the record of what went into it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProjectInstructions {
    /// The "Project instructions" block, empty when there are none.
    pub block: String,
    pub files: Vec<ProjectFile>,
    /// Files passed over or cut, and why.
    pub notes: Vec<String>,
}

/// One instruction file's text as given.
struct Found {
    rel: PathBuf,
    text: String,
    /// Bytes left out to the limits.
    cut: usize,
}

/// Reads the instruction files under `root` (a worktree of the mission's base commit).
pub fn load(root: &Path) -> ProjectInstructions {
    load_leaving_out(root, None)
}

/// The file OpenCode gives its sessions itself when they work at the top of a checkout: it reads
/// the first of `AGENTS.md` and `CLAUDE.md` that the folder has (and no nested ones up front).
pub fn read_by_opencode(root: &Path) -> Option<PathBuf> {
    INSTRUCTION_FILES
        .iter()
        .map(PathBuf::from)
        .find(|name| root.join(name).is_file())
}

/// As [`load`], without the file an agent runtime already gives every session (`(file, runtime)`),
/// so its text is not sent twice; a note says so.
pub fn load_leaving_out(root: &Path, given: Option<(&Path, &str)>) -> ProjectInstructions {
    let mut notes = Vec::new();
    let mut candidates = find(root, &mut notes);
    if let Some((file, runtime)) = given {
        if let Some(at) = candidates.iter().position(|rel| rel == file) {
            candidates.remove(at);
            notes.push(format!(
                "{} is not repeated here: {runtime} gives it to every session itself",
                shown(file)
            ));
        }
    }
    if candidates.len() > MAX_FILES {
        let left: Vec<String> = candidates[MAX_FILES..].iter().map(|p| shown(p)).collect();
        notes.push(format!(
            "{} instruction file(s) not read (at most {MAX_FILES} are): {}",
            left.len(),
            left.join(", ")
        ));
        candidates.truncate(MAX_FILES);
    }
    let canonical_root = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    let mut found: Vec<Found> = Vec::new();
    let mut budget = MAX_TOTAL_BYTES;
    for rel in candidates {
        let (text, whole) = match read_text(root, &canonical_root, &rel) {
            Ok(read) => read,
            Err(why) => {
                notes.push(format!("{} skipped: {why}", shown(&rel)));
                continue;
            }
        };
        if text.trim().is_empty() {
            continue;
        }
        if let Some(twin) = found
            .iter()
            .find(|f| f.rel.parent() == rel.parent() && f.text == text && f.cut == 0)
        {
            notes.push(format!(
                "{} skipped: the same as {}",
                shown(&rel),
                shown(&twin.rel)
            ));
            continue;
        }
        if budget == 0 {
            notes.push(format!(
                "{} not given: the {MAX_TOTAL_BYTES} bytes for all instruction files are used up",
                shown(&rel)
            ));
            continue;
        }
        let kept = prefix(&text, MAX_FILE_BYTES.min(budget));
        budget -= kept.len();
        let cut = whole.saturating_sub(kept.len());
        if cut > 0 {
            notes.push(format!(
                "{} cut to {} of its {whole} bytes",
                shown(&rel),
                kept.len()
            ));
        }
        found.push(Found {
            text: kept.to_string(),
            rel,
            cut,
        });
    }
    ProjectInstructions {
        block: render(&found),
        files: found
            .iter()
            .map(|f| ProjectFile {
                path: shown(&f.rel),
                bytes: f.text.len() as u64,
                cut: f.cut > 0,
            })
            .collect(),
        notes,
    }
}

/// The instruction files under `root`, root first, then folder by folder outwards (nearer files after
/// the ones they refine), `AGENTS.md` before `CLAUDE.md` within a folder. Paths relative to `root`.
fn find(root: &Path, notes: &mut Vec<String>) -> Vec<PathBuf> {
    // The walk the agents' `glob` and `grep` use (crates/tools/src/walk.rs): .gitignore honoured,
    // hidden files seen, symlinks not followed.
    let walker = ignore::WalkBuilder::new(root)
        .hidden(false)
        .parents(false)
        .require_git(false)
        .follow_links(false)
        .max_depth(Some(MAX_DEPTH))
        .filter_entry(|entry| {
            let is_dir = entry.file_type().is_some_and(|t| t.is_dir());
            !(is_dir
                && entry
                    .file_name()
                    .to_str()
                    .is_some_and(|n| SKIPPED_DIRS.contains(&n)))
        })
        .build();
    let mut found = Vec::new();
    for (seen, entry) in walker.flatten().enumerate() {
        if seen >= MAX_ENTRIES {
            notes.push(format!(
                "the search for instruction files stopped after {MAX_ENTRIES} entries; files further on were not read"
            ));
            break;
        }
        let name = entry.file_name().to_str().unwrap_or_default();
        if !INSTRUCTION_FILES.contains(&name) || entry.file_type().is_some_and(|t| t.is_dir()) {
            continue;
        }
        if let Ok(rel) = entry.path().strip_prefix(root) {
            found.push(rel.to_path_buf());
        }
    }
    found.sort_by_key(|rel| {
        let dir = rel.parent().map(Path::to_path_buf).unwrap_or_default();
        let name = rel.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let order = INSTRUCTION_FILES
            .iter()
            .position(|n| *n == name)
            .unwrap_or(usize::MAX);
        (dir.components().count(), dir, order)
    });
    found
}

/// The file's text (at most what the limits can take, plus a little to see where UTF-8 ends) and its
/// whole size; or why it is not read.
fn read_text(root: &Path, canonical_root: &Path, rel: &Path) -> Result<(String, usize), String> {
    let path = root.join(rel);
    let real = std::fs::canonicalize(&path).map_err(|e| format!("cannot be resolved ({e})"))?;
    if !real.starts_with(canonical_root) {
        return Err("a symlink to outside the repository".into());
    }
    let meta = std::fs::metadata(&real).map_err(|e| format!("cannot be read ({e})"))?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    let whole = usize::try_from(meta.len()).unwrap_or(usize::MAX);
    let mut bytes = Vec::new();
    std::fs::File::open(&real)
        .and_then(|f| f.take(MAX_FILE_BYTES as u64 + 4).read_to_end(&mut bytes))
        .map_err(|e| format!("cannot be read ({e})"))?;
    if bytes.contains(&0) {
        return Err("binary (it holds NUL bytes)".into());
    }
    let text = match std::str::from_utf8(&bytes) {
        Ok(text) => text.to_string(),
        // Cut inside a character by the read limit: keep what came before it.
        Err(e) if e.error_len().is_none() => String::from_utf8_lossy(&bytes[..e.valid_up_to()]).into_owned(),
        Err(e) => return Err(format!("not UTF-8 text (byte {})", e.valid_up_to())),
    };
    Ok((text, whole.max(bytes.len())))
}

/// At most `max` bytes of `text`, ending on a character boundary.
fn prefix(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// A path as the block and the event log show it: `/`-separated, lossy for odd bytes.
fn shown(rel: &Path) -> String {
    rel.to_string_lossy().replace('\\', "/")
}

/// The block the sessions are given; empty when no file had anything to say.
fn render(found: &[Found]) -> String {
    if found.is_empty() {
        return String::new();
    }
    let mut block = String::from(
        "# Project instructions\n\nThe repository's own instructions for agents, from its files, root first. \
         Each applies to the files under its folder; where two disagree, the one nearer to the file \
         you work on wins.\n",
    );
    for file in found {
        let scope = match file.rel.parent().filter(|p| !p.as_os_str().is_empty()) {
            Some(dir) => format!("for files under {}/", shown(dir)),
            None => "for the whole repository".to_string(),
        };
        block.push_str(&format!("\n## {} ({scope})\n\n", shown(&file.rel)));
        block.push_str(file.text.trim_end());
        block.push('\n');
        if file.cut > 0 {
            block.push_str(&format!(
                "[… {} more bytes of {} cut: instruction files are given up to {MAX_FILE_BYTES} bytes each and \
                 {MAX_TOTAL_BYTES} in all; read the file for the rest]\n",
                file.cut,
                shown(&file.rel)
            ));
        }
    }
    block
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[(&str, &[u8])]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("temp dir");
        for (path, content) in files {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("dirs");
            std::fs::write(path, content).expect("write");
        }
        dir
    }

    #[test]
    fn nothing_to_say_is_an_empty_block() {
        let dir = tree(&[("README.md", b"# hi\n"), ("AGENTS.md", b"  \n")]);
        let found = load(dir.path());
        assert_eq!(found, ProjectInstructions::default());
    }

    #[test]
    fn nested_files_come_after_the_root_and_name_their_folder() {
        let dir = tree(&[
            ("crates/x/AGENTS.md", b"x rule\n"),
            ("AGENTS.md", b"root rule\n"),
            ("CLAUDE.md", b"claude rule\n"),
            ("crates/AGENTS.md", b"crates rule\n"),
            ("docs/AGENTS.md", b"docs rule\n"),
        ]);
        let found = load(dir.path());
        let paths: Vec<&str> = found.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "AGENTS.md",
                "CLAUDE.md",
                "crates/AGENTS.md",
                "docs/AGENTS.md",
                "crates/x/AGENTS.md"
            ]
        );
        let block = &found.block;
        assert!(block.starts_with("# Project instructions\n"), "{block}");
        assert!(
            block.contains("## AGENTS.md (for the whole repository)\n\nroot rule\n"),
            "{block}"
        );
        assert!(
            block.contains("## crates/x/AGENTS.md (for files under crates/x/)\n\nx rule\n"),
            "{block}"
        );
        let at = |text: &str| block.find(text).expect(text);
        assert!(at("root rule") < at("claude rule") && at("claude rule") < at("crates rule"));
        assert!(at("crates rule") < at("x rule"), "nearer after");
        assert!(found.notes.is_empty(), "{:?}", found.notes);
    }

    #[test]
    fn a_claude_md_that_repeats_agents_md_is_given_once() {
        let dir = tree(&[("AGENTS.md", b"same\n"), ("CLAUDE.md", b"same\n")]);
        let found = load(dir.path());
        assert_eq!(found.files.len(), 1);
        assert_eq!(found.block.matches("same").count(), 1);
        assert!(found.notes[0].contains("CLAUDE.md skipped: the same as AGENTS.md"));
    }

    #[test]
    fn a_huge_file_is_cut_to_the_limit_and_says_so() {
        let huge = "rule line\n".repeat(1_000_000); // 10 MB
        let dir = tree(&[("AGENTS.md", huge.as_bytes()), ("sub/AGENTS.md", b"sub rule\n")]);
        let found = load(dir.path());
        assert_eq!(found.files[0].bytes, MAX_FILE_BYTES as u64);
        assert!(found.files[0].cut);
        assert!(
            found.block.len() < MAX_TOTAL_BYTES + 2048,
            "{}",
            found.block.len()
        );
        assert!(
            found
                .block
                .contains("more bytes of AGENTS.md cut: instruction files are given up to 16384 bytes each"),
            "the model is told of the cut"
        );
        assert!(found.block.contains("sub rule"), "a nested file still fits");
        assert!(
            found.notes[0].contains("AGENTS.md cut to 16384 of its 10000000 bytes"),
            "{:?}",
            found.notes
        );
    }

    #[test]
    fn the_total_is_bounded_and_later_files_are_named_when_left_out() {
        let big = "x".repeat(MAX_FILE_BYTES * 2);
        let dir = tree(&[
            ("AGENTS.md", big.as_bytes()),
            ("a/AGENTS.md", big.as_bytes()),
            ("b/AGENTS.md", b"b rule\n"),
        ]);
        let found = load(dir.path());
        let given: u64 = found.files.iter().map(|f| f.bytes).sum();
        assert_eq!(given, MAX_TOTAL_BYTES as u64);
        assert!(!found.block.contains("b rule"));
        assert!(
            found
                .notes
                .iter()
                .any(|n| n.starts_with("b/AGENTS.md not given: the 32768 bytes")),
            "{:?}",
            found.notes
        );
    }

    #[test]
    fn multibyte_text_is_cut_on_a_character_boundary() {
        let text = "é".repeat(MAX_FILE_BYTES); // two bytes each
        let dir = tree(&[("AGENTS.md", text.as_bytes())]);
        let found = load(dir.path());
        assert!(found.files[0].cut);
        assert_eq!(found.files[0].bytes, MAX_FILE_BYTES as u64);
    }

    #[test]
    fn dependency_and_build_folders_binary_and_broken_files_are_passed_over() {
        let dir = tree(&[
            ("AGENTS.md", b"root rule\n"),
            ("node_modules/pkg/AGENTS.md", b"npm package rule\n"),
            ("target/debug/AGENTS.md", b"build output rule\n"),
            ("ignored/AGENTS.md", b"gitignored rule\n"),
            (".gitignore", b"ignored/\n"),
            ("bin/AGENTS.md", b"\x00\x01binary"),
            ("latin/AGENTS.md", b"caf\xe9 rule\n"),
        ]);
        std::fs::create_dir_all(dir.path().join(".git/sub")).expect("dirs");
        std::fs::write(dir.path().join(".git/sub/AGENTS.md"), "git rule").expect("write");
        let found = load(dir.path());
        let paths: Vec<&str> = found.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["AGENTS.md"]);
        for unwanted in [
            "npm package",
            "build output",
            "gitignored",
            "git rule",
            "binary",
            "caf",
        ] {
            assert!(!found.block.contains(unwanted), "{unwanted}: {}", found.block);
        }
        let notes = found.notes.join("\n");
        assert!(notes.contains("bin/AGENTS.md skipped: binary"), "{notes}");
        assert!(
            notes.contains("latin/AGENTS.md skipped: not UTF-8 text"),
            "{notes}"
        );
    }

    #[test]
    fn a_symlink_out_of_the_repository_is_not_followed() {
        let outside = tree(&[("secret.txt", b"the secret\n")]);
        let dir = tree(&[("AGENTS.md", b"root rule\n"), ("docs/rules.md", b"linked rule\n")]);
        std::fs::create_dir_all(dir.path().join("leak")).expect("dirs");
        std::os::unix::fs::symlink(
            outside.path().join("secret.txt"),
            dir.path().join("leak/AGENTS.md"),
        )
        .expect("symlink");
        std::os::unix::fs::symlink("../docs/rules.md", dir.path().join("docs/CLAUDE.md")).expect("symlink");
        let found = load(dir.path());
        assert!(!found.block.contains("the secret"), "{}", found.block);
        assert!(
            found.block.contains("linked rule"),
            "a link inside the repository is read"
        );
        assert!(
            found
                .notes
                .iter()
                .any(|n| n == "leak/AGENTS.md skipped: a symlink to outside the repository"),
            "{:?}",
            found.notes
        );
    }

    #[test]
    fn too_many_files_are_named_not_read() {
        let files: Vec<(String, Vec<u8>)> = (0..MAX_FILES + 3)
            .map(|i| (format!("d{i:02}/AGENTS.md"), format!("rule {i}\n").into_bytes()))
            .collect();
        let refs: Vec<(&str, &[u8])> = files.iter().map(|(p, c)| (p.as_str(), c.as_slice())).collect();
        let dir = tree(&refs);
        let found = load(dir.path());
        assert_eq!(found.files.len(), MAX_FILES);
        assert!(
            found.notes[0].starts_with("3 instruction file(s) not read"),
            "{:?}",
            found.notes
        );
    }

    #[test]
    fn the_file_opencode_reads_itself_is_not_repeated_and_nested_ones_stay() {
        let dir = tree(&[
            ("AGENTS.md", b"root rule\n"),
            ("CLAUDE.md", b"claude rule\n"),
            ("crates/AGENTS.md", b"crates rule\n"),
        ]);
        let read = read_by_opencode(dir.path());
        assert_eq!(
            read.as_deref(),
            Some(Path::new("AGENTS.md")),
            "AGENTS.md before CLAUDE.md"
        );
        let found = load_leaving_out(dir.path(), read.as_deref().map(|f| (f, "OpenCode")));
        assert!(!found.block.contains("root rule"), "{}", found.block);
        assert!(found.block.contains("claude rule") && found.block.contains("crates rule"));
        assert_eq!(
            found.notes,
            vec!["AGENTS.md is not repeated here: OpenCode gives it to every session itself".to_string()]
        );

        let only_claude = tree(&[
            ("CLAUDE.md", b"claude rule\n"),
            ("docs/AGENTS.md", b"docs rule\n"),
        ]);
        assert_eq!(
            read_by_opencode(only_claude.path()).as_deref(),
            Some(Path::new("CLAUDE.md")),
            "a nested AGENTS.md is not what OpenCode reads up front"
        );
        assert_eq!(read_by_opencode(tree(&[("README.md", b"x\n")]).path()), None);
    }
}
