//! Phase 0's cheap deterministic pre-scan: the file tree, the manifests and the build and test
//! commands, found without a model so the scouts spend their tokens on judgement, not on `ls`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

/// What the pre-scan found.
#[derive(Debug, Clone, Default)]
pub struct PreScan {
    pub file_count: usize,
    /// Files and folders to depth two, capped.
    pub tree: Vec<String>,
    pub manifests: Vec<String>,
    /// File extension → number of files.
    pub languages: BTreeMap<String, usize>,
    pub build: Option<String>,
    pub test: Option<String>,
}

const TREE_CAP: usize = 200;

pub fn scan(root: &Path) -> PreScan {
    let mut scan = PreScan::default();
    let walker = ignore::WalkBuilder::new(root)
        .hidden(false)
        .filter_entry(|e| !matches!(e.file_name().to_str(), Some(".git" | ".orchestrator")))
        .build();
    for entry in walker.flatten() {
        let Ok(rel) = entry.path().strip_prefix(root) else {
            continue;
        };
        if rel.as_os_str().is_empty() {
            continue;
        }
        let is_dir = entry.file_type().is_some_and(|t| t.is_dir());
        if !is_dir {
            scan.file_count += 1;
            if let Some(ext) = rel.extension().and_then(|e| e.to_str()) {
                *scan.languages.entry(ext.to_string()).or_default() += 1;
            }
        }
        if entry.depth() <= 2 && scan.tree.len() < TREE_CAP {
            let suffix = if is_dir { "/" } else { "" };
            scan.tree.push(format!("{}{suffix}", rel.display()));
        }
        if entry.depth() <= 2 && !is_dir && is_manifest(rel) {
            scan.manifests.push(rel.display().to_string());
        }
    }
    scan.tree.sort();
    scan.manifests.sort();
    let (build, test) = detect_commands(root);
    scan.build = build;
    scan.test = test;
    scan
}

fn is_manifest(rel: &Path) -> bool {
    const NAMES: &[&str] = &[
        "Cargo.toml",
        "package.json",
        "go.mod",
        "pyproject.toml",
        "setup.py",
        "requirements.txt",
        "Makefile",
        "CMakeLists.txt",
        "pom.xml",
        "build.gradle",
        "Gemfile",
        "Dockerfile",
        "docker-compose.yml",
        "orchestrator.toml",
    ];
    rel.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| NAMES.contains(&n))
}

/// The build and test commands a developer of this repository would run, from its root manifests.
pub fn detect_commands(root: &Path) -> (Option<String>, Option<String>) {
    let has = |name: &str| root.join(name).is_file();
    if has("Cargo.toml") {
        return (
            Some("cargo build --all-targets".into()),
            Some("cargo test".into()),
        );
    }
    if has("go.mod") {
        return (Some("go build ./...".into()), Some("go test ./...".into()));
    }
    if has("package.json") {
        return node_commands(root);
    }
    if let Some(found) = make_commands(root) {
        return found;
    }
    if has("pyproject.toml") || has("setup.py") || has("pytest.ini") || has("tox.ini") {
        return (None, Some("python3 -m pytest".into()));
    }
    (None, ci_test_command(root))
}

/// The build-output folders a unit's worktree may start from, per ecosystem found at the root: Cargo's
/// `target` (its fingerprints rebuild what a unit changed) and Node's `node_modules` (installed once).
/// Go keeps its cache outside the repository and needs nothing here.
pub fn cache_dirs(root: &Path) -> Vec<&'static str> {
    let mut dirs = Vec::new();
    if root.join("Cargo.toml").is_file() {
        dirs.push("target");
    }
    if root.join("package.json").is_file() {
        dirs.push("node_modules");
    }
    dirs
}

/// Root files a dependency install reads: a unit that changes one of them installs again, since
/// the baseline's `node_modules` no longer matches what it asks for.
pub const INSTALL_INPUTS: &[&str] = &[
    "package.json",
    "package-lock.json",
    "npm-shrinkwrap.json",
    "pnpm-lock.yaml",
    "yarn.lock",
    ".npmrc",
    ".yarnrc",
    ".yarnrc.yml",
];

/// The command that fetches a Node project's dependencies into `node_modules`, from its lockfile:
/// the frozen form where there is one (it installs exactly what was locked and fails, rather than
/// rewrites the lockfile, when package.json asks for something else). None without dependencies.
pub fn install_command(root: &Path) -> Option<String> {
    let manifest = std::fs::read_to_string(root.join("package.json")).ok()?;
    let manifest: serde_json::Value = serde_json::from_str(&manifest).ok()?;
    let declares = |key: &str| {
        manifest
            .get(key)
            .and_then(|d| d.as_object())
            .is_some_and(|d| !d.is_empty())
    };
    if !declares("dependencies") && !declares("devDependencies") && !declares("optionalDependencies") {
        return None;
    }
    let has = |name: &str| root.join(name).is_file();
    let command = if has("pnpm-lock.yaml") {
        "pnpm install --frozen-lockfile"
    } else if has("yarn.lock") {
        "yarn install --frozen-lockfile"
    } else if has("package-lock.json") || has("npm-shrinkwrap.json") {
        "npm ci"
    } else {
        "npm install"
    };
    Some(command.into())
}

/// Test invocations a CI file may run, as the start of a command.
const CI_TEST_COMMANDS: &[&str] = &[
    "cargo test",
    "go test",
    "npm test",
    "npm run test",
    "pnpm test",
    "yarn test",
    "pytest",
    "python -m pytest",
    "python3 -m pytest",
    "python -m unittest",
    "python3 -m unittest",
    "make test",
    "make check",
    "tox",
    "bundle exec rspec",
    "mvn test",
    "./gradlew test",
    "ctest",
];

/// The first single-line test command in the repository's CI files (GitHub Actions `run:` steps,
/// GitLab `script:` items), when the manifests said nothing: what the project's own CI trusts.
fn ci_test_command(root: &Path) -> Option<String> {
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(root.join(".github/workflows"))
        .map(|dir| {
            dir.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "yml" || x == "yaml"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files.push(root.join(".gitlab-ci.yml"));
    files.iter().find_map(|path| {
        let text = std::fs::read_to_string(path).ok()?;
        text.lines().find_map(ci_line_command)
    })
}

fn ci_line_command(line: &str) -> Option<String> {
    let line = line.trim();
    let line = line.strip_prefix("- ").unwrap_or(line).trim();
    let command = line.strip_prefix("run:").unwrap_or(line).trim();
    let command = command.trim_matches(|c| c == '"' || c == '\'');
    CI_TEST_COMMANDS
        .iter()
        .any(|known| command == *known || command.starts_with(&format!("{known} ")))
        .then(|| command.to_string())
}

fn node_commands(root: &Path) -> (Option<String>, Option<String>) {
    let runner = if root.join("pnpm-lock.yaml").is_file() {
        "pnpm"
    } else if root.join("yarn.lock").is_file() {
        "yarn"
    } else {
        "npm"
    };
    let scripts = std::fs::read_to_string(root.join("package.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v.get("scripts").cloned())
        .unwrap_or_default();
    let script = |name: &str| scripts.get(name).and_then(|s| s.as_str()).map(str::to_string);
    let build = script("build").map(|_| format!("{runner} run build"));
    // npm init's placeholder test script always fails; it is not a test suite.
    let test = script("test")
        .filter(|s| !s.contains("no test specified"))
        .map(|_| format!("{runner} test"));
    (build, test)
}

fn make_commands(root: &Path) -> Option<(Option<String>, Option<String>)> {
    let text = std::fs::read_to_string(root.join("Makefile")).ok()?;
    let has_target = |t: &str| text.lines().any(|l| l.starts_with(&format!("{t}:")));
    let build = (has_target("build") || has_target("all")).then(|| {
        if has_target("build") {
            "make build".to_string()
        } else {
            "make".to_string()
        }
    });
    let test = has_target("test").then(|| "make test".to_string());
    (build.is_some() || test.is_some()).then_some((build, test))
}

impl PreScan {
    /// The pre-scan as Markdown, for the scouts' and every later session's context.
    pub fn to_markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "Files: {}", self.file_count);
        let mut langs: Vec<_> = self.languages.iter().collect();
        langs.sort_by(|a, b| b.1.cmp(a.1));
        let langs: Vec<String> = langs
            .iter()
            .take(8)
            .map(|(ext, n)| format!(".{ext} ×{n}"))
            .collect();
        let _ = writeln!(
            out,
            "File types: {}",
            if langs.is_empty() {
                "none".into()
            } else {
                langs.join(", ")
            }
        );
        let _ = writeln!(
            out,
            "Manifests: {}",
            if self.manifests.is_empty() {
                "none".into()
            } else {
                self.manifests.join(", ")
            }
        );
        let _ = writeln!(
            out,
            "Build command: {}",
            self.build.as_deref().unwrap_or("none found")
        );
        let _ = writeln!(
            out,
            "Test command: {}",
            self.test.as_deref().unwrap_or("none found")
        );
        let _ = writeln!(out, "Tree (depth 2):");
        for line in &self.tree {
            let _ = writeln!(out, "  {line}");
        }
        if self.tree.len() >= TREE_CAP {
            let _ = writeln!(out, "  … (more not shown)");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ci_workflow_names_the_test_command_when_no_manifest_does() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(".github/workflows")).unwrap();
        std::fs::write(
            dir.path().join(".github/workflows/ci.yml"),
            "jobs:\n  test:\n    steps:\n      - uses: actions/checkout@v4\n      - run: echo hi\n      - run: python3 -m unittest discover -v\n",
        )
        .unwrap();
        assert_eq!(
            detect_commands(dir.path()),
            (None, Some("python3 -m unittest discover -v".into()))
        );
        let bare = tempfile::tempdir().unwrap();
        std::fs::write(bare.path().join("notes.txt"), "x").unwrap();
        assert_eq!(detect_commands(bare.path()), (None, None));
    }

    #[test]
    fn finds_manifests_and_commands() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("Makefile"), "build:\n\tcc a.c\ntest:\n\t./t.sh\n").unwrap();
        std::fs::create_dir(dir.path().join("src")).unwrap();
        std::fs::write(dir.path().join("src/a.c"), "int main(){}").unwrap();
        let scan = scan(dir.path());
        assert_eq!(scan.file_count, 2);
        assert_eq!(scan.manifests, vec!["Makefile"]);
        assert_eq!(scan.build.as_deref(), Some("make build"));
        assert_eq!(scan.test.as_deref(), Some("make test"));
        assert!(scan.tree.contains(&"src/".to_string()));
        assert!(scan.to_markdown().contains("Test command: make test"));
    }

    #[test]
    fn the_install_follows_the_lockfile_and_only_when_there_are_dependencies() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
        assert_eq!(install_command(dir.path()), None, "no package.json");
        write("package.json", r#"{"scripts":{"test":"node t.js"}}"#);
        assert_eq!(install_command(dir.path()), None, "nothing to install");
        write("package.json", r#"{"devDependencies":{}, "dependencies":{}}"#);
        assert_eq!(install_command(dir.path()), None, "empty lists");
        write("package.json", r#"{"devDependencies":{"left-pad":"1.3.0"}}"#);
        assert_eq!(install_command(dir.path()).as_deref(), Some("npm install"));
        write("package-lock.json", "{}");
        assert_eq!(install_command(dir.path()).as_deref(), Some("npm ci"));
        write("yarn.lock", "");
        assert_eq!(
            install_command(dir.path()).as_deref(),
            Some("yarn install --frozen-lockfile")
        );
        write("pnpm-lock.yaml", "");
        assert_eq!(
            install_command(dir.path()).as_deref(),
            Some("pnpm install --frozen-lockfile")
        );
        // A manifest that is not JSON (or not an object) installs nothing rather than guess.
        write("package.json", "{ broken");
        assert_eq!(install_command(dir.path()), None);
        write("package.json", r#"["dependencies"]"#);
        assert_eq!(install_command(dir.path()), None);
    }

    #[test]
    fn npm_placeholder_test_script_is_not_a_test() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("package.json"),
            r#"{"scripts":{"test":"echo \"Error: no test specified\" && exit 1","build":"tsc"}}"#,
        )
        .unwrap();
        assert_eq!(detect_commands(dir.path()), (Some("npm run build".into()), None));
    }
}
