//! Confinement of path arguments to the worktree.
//!
//! Paths are resolved one component at a time against the real file system, following each symlink as
//! the kernel would, so `..` after a symlinked directory, or a symlink to `/tmp` deep inside the tree,
//! cannot lead out. This guards against a model's mistakes, not against a hostile model: `bash` runs
//! arbitrary commands anyway, and a file could change between this check and its use.

use std::fs;
use std::io::ErrorKind;
use std::path::{Component, Path, PathBuf};

use crate::error::ToolError;

/// A path argument that was found to lie inside the root.
#[derive(Debug, Clone)]
pub(crate) struct Resolved {
    /// Absolute, with every symlink that exists resolved.
    pub abs: PathBuf,
    /// Relative to the root, `/`-separated, `.` for the root itself: what tool output shows.
    pub rel: String,
}

/// What a resolved path names, as far as the tools care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Missing,
    File,
    Dir,
    /// A FIFO, socket or device: opening one could block a tool forever, so none of them do.
    Special,
}

impl Resolved {
    pub(crate) fn kind(&self) -> Kind {
        match fs::metadata(&self.abs) {
            Err(_) => Kind::Missing,
            Ok(m) if m.is_file() => Kind::File,
            Ok(m) if m.is_dir() => Kind::Dir,
            Ok(_) => Kind::Special,
        }
    }

    /// Refuses directories and special files; a missing file is left for the open to report.
    pub(crate) fn check_not_dir_or_special(&self, dir_hint: &str) -> Result<(), ToolError> {
        match self.kind() {
            Kind::Dir => Err(ToolError::refused(format!(
                "{} is a directory{dir_hint}",
                self.rel
            ))),
            Kind::Special => Err(ToolError::refused(format!(
                "{} is not a regular file (a FIFO, socket or device)",
                self.rel
            ))),
            Kind::Missing | Kind::File => Ok(()),
        }
    }
}

/// Case-folded: on a case-insensitive file system (macOS by default) `.GIT` is the same folder.
fn goes_through_git(path: &Path) -> bool {
    path.components().any(|c| {
        c.as_os_str()
            .to_str()
            .is_some_and(|name| name.eq_ignore_ascii_case(".git"))
    })
}

/// The root a toolbox is confined to, in its canonical form and as the caller named it, since a model
/// may be told either spelling in its prompt.
#[derive(Debug, Clone)]
pub(crate) struct Root {
    pub canonical: PathBuf,
    pub given: PathBuf,
}

impl Root {
    pub(crate) fn new(given: PathBuf) -> std::io::Result<Self> {
        let canonical = fs::canonicalize(&given)?;
        if !canonical.is_dir() {
            return Err(std::io::Error::new(
                ErrorKind::NotADirectory,
                format!("tool root {} is not a directory", given.display()),
            ));
        }
        Ok(Root { canonical, given })
    }

    /// Resolves a path argument for reading.
    pub(crate) fn resolve(&self, input: &str) -> Result<Resolved, ToolError> {
        let relative = self.relative_part(input)?;
        let abs = self.walk(input, &relative)?;
        Ok(Resolved {
            rel: display_relative(&self.canonical, &abs),
            abs,
        })
    }

    /// Resolves a path argument for writing: like [`Root::resolve`], and also refuses `.git`, whose
    /// contents belong to git (a worktree's `.git` is a file pointing into the user's repository).
    pub(crate) fn resolve_for_write(&self, input: &str) -> Result<Resolved, ToolError> {
        // As written, before walking it: in a worktree `.git` is a file, and walking below it fails
        // with "Not a directory", which would hide the rule that was broken.
        if goes_through_git(&self.relative_part(input)?) {
            return Err(ToolError::InsideGitDir(input.to_string()));
        }
        let resolved = self.resolve(input)?;
        let rel = resolved
            .abs
            .strip_prefix(&self.canonical)
            .unwrap_or(Path::new(""));
        // And as resolved: a symlink may lead into `.git`.
        if goes_through_git(rel) {
            return Err(ToolError::InsideGitDir(input.to_string()));
        }
        Ok(resolved)
    }

    /// The part of `input` below the root: itself when relative, the remainder when absolute.
    fn relative_part(&self, input: &str) -> Result<PathBuf, ToolError> {
        let path = Path::new(input);
        if !path.is_absolute() {
            return Ok(path.to_path_buf());
        }
        [&self.canonical, &self.given]
            .into_iter()
            .find_map(|root| path.strip_prefix(root).ok())
            .map(Path::to_path_buf)
            .ok_or_else(|| ToolError::OutsideRoot(input.to_string()))
    }

    /// Follows `relative` from the root. `current` is always a real path inside the root, so `..` can
    /// be applied lexically to it; components past the first missing one are taken literally, as
    /// nothing exists there yet for a symlink to hide in.
    fn walk(&self, input: &str, relative: &Path) -> Result<PathBuf, ToolError> {
        let root = &self.canonical;
        let mut current = root.clone();
        let mut missing = false;
        for component in relative.components() {
            match component {
                Component::CurDir => {}
                Component::ParentDir => {
                    if current == *root {
                        return Err(ToolError::OutsideRoot(input.to_string()));
                    }
                    current.pop();
                }
                Component::Normal(name) if missing => current.push(name),
                Component::Normal(name) => {
                    let (next, exists) = step(&current.join(name), input)?;
                    if !next.starts_with(root) {
                        return Err(ToolError::OutsideRoot(input.to_string()));
                    }
                    missing = !exists;
                    current = next;
                }
                Component::RootDir | Component::Prefix(_) => {
                    return Err(ToolError::OutsideRoot(input.to_string()));
                }
            }
        }
        Ok(current)
    }
}

/// One step of the walk: the real location of `candidate` and whether it exists.
fn step(candidate: &Path, input: &str) -> Result<(PathBuf, bool), ToolError> {
    match fs::symlink_metadata(candidate) {
        Ok(meta) if meta.file_type().is_symlink() => fs::canonicalize(candidate)
            .map(|real| (real, true))
            .map_err(|_| ToolError::BrokenSymlink(input.to_string())),
        Ok(_) => Ok((candidate.to_path_buf(), true)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok((candidate.to_path_buf(), false)),
        Err(e) => Err(ToolError::io(input, e)),
    }
}

/// `path` relative to `root` with `/` separators, or `.` for the root itself.
pub(crate) fn display_relative(root: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(root).unwrap_or(path);
    let parts: Vec<_> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect();
    if parts.is_empty() {
        ".".to_string()
    } else {
        parts.join("/")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn setup() -> (tempfile::TempDir, Root) {
        let dir = tempfile::tempdir().expect("tempdir");
        let root_path = dir.path().join("root");
        fs::create_dir_all(root_path.join("src/sub")).expect("mkdir");
        fs::write(root_path.join("src/a.rs"), "fn a() {}\n").expect("write");
        let root = Root::new(root_path).expect("root");
        (dir, root)
    }

    #[test]
    fn relative_and_absolute_paths_inside_resolve() {
        let (_dir, root) = setup();
        assert_eq!(root.resolve("src/a.rs").expect("inside").rel, "src/a.rs");
        assert_eq!(root.resolve("./src/sub/../a.rs").expect("inside").rel, "src/a.rs");
        assert_eq!(root.resolve("").expect("root").rel, ".");
        let abs = root.canonical.join("src/a.rs");
        let abs = abs.to_str().expect("utf-8");
        assert_eq!(root.resolve(abs).expect("inside").rel, "src/a.rs");
        assert_eq!(
            root.resolve("src/new/file.rs").expect("missing ok").rel,
            "src/new/file.rs"
        );
    }

    #[test]
    fn escapes_are_refused() {
        let (dir, root) = setup();
        for bad in ["..", "../x", "src/../../x", "/etc/passwd"] {
            assert!(
                matches!(root.resolve(bad), Err(ToolError::OutsideRoot(_))),
                "{bad} should be refused"
            );
        }
        let sibling = dir.path().join("root-sibling/x");
        let sibling = sibling.to_str().expect("utf-8");
        assert!(matches!(root.resolve(sibling), Err(ToolError::OutsideRoot(_))));
    }

    #[test]
    fn symlinks_are_followed_and_checked() {
        let (dir, root) = setup();
        let outside = dir.path().join("outside");
        fs::create_dir(&outside).expect("mkdir");
        symlink(&outside, root.canonical.join("out")).expect("symlink");
        symlink("src", root.canonical.join("inner")).expect("symlink");
        symlink(dir.path().join("nowhere"), root.canonical.join("dangling")).expect("symlink");
        assert!(matches!(root.resolve("out/x"), Err(ToolError::OutsideRoot(_))));
        assert!(matches!(root.resolve("out"), Err(ToolError::OutsideRoot(_))));
        assert_eq!(root.resolve("inner/a.rs").expect("inside").rel, "src/a.rs");
        // `inner/..` is the root (the symlink's target's parent), not something lexical.
        assert_eq!(root.resolve("inner/../src").expect("inside").rel, "src");
        assert!(matches!(
            root.resolve("dangling"),
            Err(ToolError::BrokenSymlink(_))
        ));
    }

    #[test]
    fn writes_under_git_are_refused() {
        let (_dir, root) = setup();
        fs::create_dir(root.canonical.join(".git")).expect("mkdir");
        for bad in [
            ".git",
            ".git/config",
            "./.git/hooks/pre-commit",
            "sub/.git/x",
            ".GIT/config",
            "sub/.Git/hooks/post-commit",
        ] {
            assert!(
                matches!(root.resolve_for_write(bad), Err(ToolError::InsideGitDir(_))),
                "{bad} should be refused"
            );
        }
        assert!(root.resolve_for_write(".gitignore").is_ok());
        assert!(root.resolve(".git/config").is_ok(), "reading .git is allowed");
    }
}
