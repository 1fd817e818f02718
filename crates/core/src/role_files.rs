//! Roles as files: `.orchestrator/roles/<role>.md` replaces a built-in role's prompt (the body) and
//! may set its model settings (YAML front matter between `---` lines, as Claude Code's and OpenCode's
//! agent files have it).
//!
//! Precedence, lowest first: the built-in role, `[roles.<role>]` in the config files, the role file,
//! then the command line (`--model` names one model for every role). A role file in the repository
//! is the project's policy; what a person passes for this one run still wins.
//!
//! A file whose name is no built-in role is a specialist reviewer (`security-reviewer.md`): its front
//! matter must say `kind: reviewer` or `kind: master_reviewer`, and `[review] extra` /
//! `extra_master` name it to judge each unit or the whole after the built-in reviewer passed.
//!
//! Every problem (an unknown role or key, a bad value, an unknown tool, an empty body) is a usage
//! error naming the file and the key, found before any token is spent.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use orchestrator_protocol::{ProjectFile, Role};
use serde::Deserialize;

use crate::config::{FileConfig, RoleFile, RolePrompt, SpecialistFile, ROLE_TOOLS};
use crate::error::{EngineError, Result};

/// Where role files live, relative to the repository's root.
pub const ROLES_DIR: &str = ".orchestrator/roles";
/// The folder of [`ROLES_DIR`] inside `.orchestrator/`: the one part of it git does not exclude.
pub const ROLES_SUBDIR: &str = "roles";
/// A role file larger than this is refused: a prompt rides on every model call of its sessions.
pub const MAX_ROLE_FILE_BYTES: u64 = 64 * 1024;
/// `.md` files in the folder looked at, at most (there are six roles).
const MAX_ENTRIES: usize = 64;

/// Longest specialist name (the file's stem).
const MAX_SPECIALIST_NAME: usize = 40;

/// The repository's role files, by role, and its specialist reviewers, by name.
#[derive(Debug, Clone, Default)]
pub struct RoleFiles {
    pub roles: BTreeMap<Role, RoleDoc>,
    pub specialists: BTreeMap<String, SpecialistDoc>,
}

/// A specialist reviewer's file, checked.
#[derive(Debug, Clone)]
pub struct SpecialistDoc {
    /// `Reviewer` or `MasterReviewer`: the built-in reviewer whose place, tools and defaults it takes.
    pub kind: Role,
    pub doc: RoleDoc,
}

/// One role file, checked.
#[derive(Debug, Clone)]
pub struct RoleDoc {
    /// Relative to the repository's root (`.orchestrator/roles/worker.md`).
    pub path: String,
    /// The settings its front matter sets.
    pub settings: RoleFile,
    /// The body: the role's prompt, under the `# Role: <name>` line the runtime writes.
    pub prompt: String,
}

/// The front matter as written. `name` and `description` are what Claude Code's and OpenCode's agent
/// files carry: `name` must agree with the file's name, `description` is for people.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FrontMatter {
    name: Option<String>,
    #[allow(dead_code)]
    description: Option<String>,
    /// A specialist's kind: `reviewer` or `master_reviewer` (required for a name that is no role).
    kind: Option<String>,
    model: Option<String>,
    tools: Option<ToolList>,
    max_turns: Option<u32>,
    max_tokens: Option<u32>,
    temperature: Option<f32>,
    /// Claude Code's spelling of `budget_tokens`.
    budget: Option<u64>,
    budget_tokens: Option<u64>,
    /// The `[mcp.<name>]` servers whose tools the role is offered (checked with the config).
    mcp: Option<Vec<String>>,
}

/// `tools: [read, grep]`, or Claude Code's `tools: Read, Grep`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ToolList {
    List(Vec<String>),
    Line(String),
}

impl ToolList {
    fn names(self) -> Vec<String> {
        let names = match self {
            ToolList::List(names) => names,
            ToolList::Line(line) => line.split(',').map(str::to_string).collect(),
        };
        names
            .into_iter()
            .map(|n| n.trim().to_ascii_lowercase())
            .filter(|n| !n.is_empty())
            .collect()
    }
}

impl RoleFiles {
    /// Reads `<root>/.orchestrator/roles/*.md`; no folder is no role files.
    pub fn load(root: &Path) -> Result<RoleFiles> {
        let dir = root.join(ROLES_DIR);
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(RoleFiles::default()),
            Err(e) => return Err(EngineError::Usage(format!("cannot read {ROLES_DIR}/: {e}"))),
        };
        let mut paths: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "md"))
            .take(MAX_ENTRIES + 1)
            .collect();
        if paths.len() > MAX_ENTRIES {
            return Err(EngineError::Usage(format!(
                "{ROLES_DIR}/ holds more than {MAX_ENTRIES} .md files; keep one file per role there"
            )));
        }
        paths.sort();
        let canonical_root = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
        let mut files = RoleFiles::default();
        for path in paths {
            let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
            let shown = format!(
                "{ROLES_DIR}/{}",
                path.file_name().unwrap_or_default().to_string_lossy()
            );
            let role = role_named(stem);
            if role.is_none() && !is_specialist_name(stem) {
                return Err(usage(
                    &shown,
                    &format!(
                        "names no role; a role file is named after a built-in role ({}) or is a specialist \
                         reviewer named with lowercase letters, digits, `-` and `_` (at most \
                         {MAX_SPECIALIST_NAME}, starting with a letter or digit)",
                        role_list()
                    ),
                ));
            }
            let text = read_bounded(&path, &canonical_root).map_err(|why| usage(&shown, &why))?;
            let (doc, kind) = parse(&shown, stem, role, &text)?;
            match (role, kind) {
                (Some(role), _) => {
                    files.roles.insert(role, doc);
                }
                (None, Some(kind)) => {
                    files
                        .specialists
                        .insert(stem.to_string(), SpecialistDoc { kind, doc });
                }
                (None, None) => return Err(no_kind(&shown)),
            }
        }
        Ok(files)
    }

    /// The config layer the files' front matter makes: it lies over the config files.
    pub fn layer(&self) -> FileConfig {
        FileConfig {
            roles: self
                .roles
                .iter()
                .map(|(role, doc)| (role.as_str().to_string(), doc.settings.clone()))
                .collect(),
            specialists: self
                .specialists
                .iter()
                .map(|(name, s)| {
                    let file = SpecialistFile {
                        kind: s.kind,
                        settings: s.doc.settings.clone(),
                        prompt: RolePrompt {
                            path: s.doc.path.clone(),
                            prompt: s.doc.prompt.clone(),
                        },
                    };
                    (name.clone(), file)
                })
                .collect(),
            source: Some(PathBuf::from(ROLES_DIR)),
            ..FileConfig::default()
        }
    }

    /// Each role's prompt from its file, for the roles that have one.
    pub fn prompts(&self) -> BTreeMap<Role, RolePrompt> {
        self.roles
            .iter()
            .map(|(role, doc)| {
                let prompt = RolePrompt {
                    path: doc.path.clone(),
                    prompt: doc.prompt.clone(),
                };
                (*role, prompt)
            })
            .collect()
    }
}

/// What the event log records of the role files a mission uses.
pub fn used(prompts: &BTreeMap<Role, RolePrompt>) -> Vec<ProjectFile> {
    prompts
        .values()
        .map(|p| ProjectFile {
            path: p.path.clone(),
            bytes: p.prompt.len() as u64,
            cut: false,
        })
        .collect()
}

/// `[a-z0-9][a-z0-9_-]{0,39}`: safe in a file name, a session key and a log line.
pub fn is_specialist_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name.len() <= MAX_SPECIALIST_NAME
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

fn no_kind(file: &str) -> EngineError {
    usage(
        file,
        "is a specialist reviewer (its name is no built-in role) but sets no `kind`; add `kind: reviewer` \
         (judges each unit) or `kind: master_reviewer` (judges the whole) to its front matter, or name the \
         file after a built-in role",
    )
}

fn role_named(name: &str) -> Option<Role> {
    Role::ALL.into_iter().find(|r| r.as_str() == name)
}

fn role_list() -> String {
    Role::ALL
        .iter()
        .map(|r| r.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn usage(file: &str, problem: &str) -> EngineError {
    EngineError::Usage(format!(
        "{file} {problem}. Fix the file or move it aside (README.md, section \"Roles as files\")."
    ))
}

/// The file's text: a regular file inside the repository, at most [`MAX_ROLE_FILE_BYTES`], UTF-8.
fn read_bounded(path: &Path, canonical_root: &Path) -> std::result::Result<String, String> {
    let real = std::fs::canonicalize(path).map_err(|e| format!("cannot be read ({e})"))?;
    if !real.starts_with(canonical_root) {
        return Err("is a symlink to outside the repository; copy the file in instead".into());
    }
    if !real.is_file() {
        return Err("is not a regular file".into());
    }
    let mut bytes = Vec::new();
    std::fs::File::open(&real)
        .and_then(|f| f.take(MAX_ROLE_FILE_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|e| format!("cannot be read ({e})"))?;
    if bytes.len() as u64 > MAX_ROLE_FILE_BYTES {
        return Err(format!(
            "is larger than {MAX_ROLE_FILE_BYTES} bytes; a role's prompt must be shorter"
        ));
    }
    String::from_utf8(bytes).map_err(|e| format!("is not UTF-8 text (byte {})", e.utf8_error().valid_up_to()))
}

/// One role file's front matter and body, checked; with a specialist's kind. `role`: the built-in
/// role the file is named after, if any.
fn parse(file: &str, name: &str, role: Option<Role>, text: &str) -> Result<(RoleDoc, Option<Role>)> {
    let (yaml, body) = split_front_matter(text).map_err(|why| usage(file, &why))?;
    let front: FrontMatter = if yaml
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
    {
        FrontMatter::default()
    } else {
        serde_yaml_ng::from_str(yaml).map_err(|e| {
            usage(
                file,
                &format!("has bad front matter: {}", e.to_string().trim_end()),
            )
        })?
    };
    let kind = kind(file, role, front.kind.as_deref())?;
    let settings = settings(file, name, front)?;
    let prompt = prompt_body(body);
    if prompt.is_empty() {
        return Err(usage(
            file,
            "has no prompt: write the role's instructions below the front matter",
        ));
    }
    let doc = RoleDoc {
        path: file.to_string(),
        settings,
        prompt,
    };
    Ok((doc, kind))
}

/// A specialist's `kind`; a built-in role's file may only repeat its own role there.
fn kind(file: &str, role: Option<Role>, kind: Option<&str>) -> Result<Option<Role>> {
    let bad = |why: String| Err(usage(file, &format!("sets `kind` {why}")));
    match (role, kind) {
        (_, None) => Ok(None),
        (Some(role), Some(kind)) if kind == role.as_str() => Ok(None),
        (Some(role), Some(kind)) => bad(format!(
            "to `{kind}`, but the file is the built-in {role} role's; `kind` is for specialist reviewers \
             (files named after no role): leave it out"
        )),
        (None, Some("reviewer")) => Ok(Some(Role::Reviewer)),
        (None, Some("master_reviewer")) => Ok(Some(Role::MasterReviewer)),
        (None, Some(other)) => bad(format!(
            "to `{}`; a specialist is `kind: reviewer` (judges each unit) or `kind: master_reviewer` \
             (judges the whole)",
            crate::prompts::cut(other, 40)
        )),
    }
}

/// The YAML between a first line `---` and the next `---` line, and the rest. A file that does not
/// begin with `---` is all body.
fn split_front_matter(text: &str) -> std::result::Result<(&str, &str), String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let Some(rest) = text
        .strip_prefix("---\n")
        .or_else(|| text.strip_prefix("---\r\n"))
    else {
        return Ok(("", text));
    };
    let mut offset = 0;
    for line in rest.split_inclusive('\n') {
        if line.trim_end() == "---" {
            return Ok((&rest[..offset], &rest[offset + line.len()..]));
        }
        offset += line.len();
    }
    Err("opens its front matter with `---` on line 1 but never closes it with a `---` line".into())
}

/// The prompt as the sessions get it: trimmed, without a `# Role:` line of its own (the runtime
/// writes that line, and only once).
fn prompt_body(body: &str) -> String {
    let body = body.trim();
    let body = match body.split_once('\n') {
        Some((first, rest)) if first.starts_with("# Role:") => rest,
        None if body.starts_with("# Role:") => "",
        _ => body,
    };
    body.trim().to_string()
}

fn settings(file: &str, role: &str, front: FrontMatter) -> Result<RoleFile> {
    let bad = |key: &str, why: &str| usage(file, &format!("sets `{key}` {why}"));
    if let Some(name) = front.name.as_deref().filter(|n| *n != role) {
        return Err(bad(
            "name",
            &format!("to `{name}`, but the file is the {role} role's; leave `name` out or make it `{role}`"),
        ));
    }
    if front.model.as_deref().is_some_and(|m| m.trim().is_empty()) {
        return Err(bad("model", "to nothing; name a model or leave the key out"));
    }
    if front.budget.is_some() && front.budget_tokens.is_some() {
        return Err(bad("budget", "and `budget_tokens` both; keep one"));
    }
    let budget_tokens = front.budget.or(front.budget_tokens);
    if budget_tokens == Some(0) {
        return Err(bad(
            "budget_tokens",
            "to 0; a role's budget must be at least 1 (leave it out for no cap)",
        ));
    }
    if let Some(turns) = front.max_turns.filter(|t| !(1..=10_000).contains(t)) {
        return Err(bad(
            "max_turns",
            &format!("to {turns}; it must be between 1 and 10000"),
        ));
    }
    if front.max_tokens == Some(0) {
        return Err(bad("max_tokens", "to 0; it must be at least 1"));
    }
    if let Some(t) = front.temperature.filter(|t| !(0.0..=2.0).contains(t)) {
        return Err(bad("temperature", &format!("to {t}; it must be between 0 and 2")));
    }
    let tools = front.tools.map(ToolList::names);
    if let Some(unknown) = tools.iter().flatten().find(|t| !ROLE_TOOLS.contains(&t.as_str())) {
        return Err(bad(
            "tools",
            &format!(
                "with an unknown tool `{unknown}`; tools are: {}",
                ROLE_TOOLS.join(", ")
            ),
        ));
    }
    Ok(RoleFile {
        model: front.model.map(|m| m.trim().to_string()),
        max_turns: front.max_turns,
        max_tokens: front.max_tokens,
        temperature: front.temperature,
        budget_tokens,
        tools,
        mcp: front.mcp,
    })
}

/// A built-in role written out as a role file (`orchestrator roles init`): its prompt, and its front
/// matter's keys commented out, so the file changes nothing until a person edits it.
pub fn builtin_file(role: Role) -> String {
    format!(
        "---\n\
         # The {role} role. Uncomment a key to set it; unset keys keep what orchestrator.toml's\n\
         # [roles.{role}] (or the default) says. `--model` on the command line still wins.\n\
         # model: gpt-4.1\n\
         # tools: [{tools}]\n\
         # max_turns: 20\n\
         # max_tokens: 4096\n\
         # temperature: 0.2\n\
         # budget_tokens: 500000\n\
         # mcp: [docs]            # [mcp.<name>] servers whose tools the role gets\n\
         ---\n\
         {body}\n",
        tools = ROLE_TOOLS.join(", "),
        body = crate::prompts::builtin_body(role),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir_all(dir.path().join(ROLES_DIR)).expect("dirs");
        for (name, text) in files {
            std::fs::write(dir.path().join(ROLES_DIR).join(name), text).expect("write");
        }
        dir
    }

    fn error(files: &[(&str, &str)]) -> String {
        let dir = repo(files);
        RoleFiles::load(dir.path()).expect_err("refused").to_string()
    }

    #[test]
    fn front_matter_and_body_set_the_role() {
        let dir = repo(&[(
            "reviewer.md",
            "---\nname: reviewer\ndescription: strict\nmodel: big-model\ntools: Read, Grep\nmax_turns: 5\n\
             temperature: 0.5\nbudget: 9000\nmax_tokens: 100\n---\n\nReview hard.\nThen submit.\n",
        )]);
        let files = RoleFiles::load(dir.path()).expect("loads");
        let doc = &files.roles[&Role::Reviewer];
        assert_eq!(doc.path, ".orchestrator/roles/reviewer.md");
        assert_eq!(doc.prompt, "Review hard.\nThen submit.");
        assert_eq!(doc.settings.model.as_deref(), Some("big-model"));
        assert_eq!(doc.settings.tools, Some(vec!["read".to_string(), "grep".into()]));
        assert_eq!(doc.settings.max_turns, Some(5));
        assert_eq!(doc.settings.budget_tokens, Some(9000));
        assert_eq!(doc.settings.max_tokens, Some(100));
        assert_eq!(doc.settings.temperature, Some(0.5));
    }

    #[test]
    fn a_file_without_front_matter_is_all_prompt_and_a_role_line_is_not_doubled() {
        let dir = repo(&[
            ("worker.md", "# Role: worker\nBuild it.\n"),
            ("notes.txt", "ignored"),
        ]);
        let files = RoleFiles::load(dir.path()).expect("loads");
        assert_eq!(files.roles.len(), 1);
        assert_eq!(files.roles[&Role::Worker].prompt, "Build it.");
        assert!(files.roles[&Role::Worker].settings.model.is_none());
    }

    #[test]
    fn no_folder_is_no_role_files() {
        let dir = tempfile::tempdir().expect("temp dir");
        assert!(RoleFiles::load(dir.path()).expect("loads").roles.is_empty());
    }

    #[test]
    fn the_built_in_files_read_back_as_the_built_in_roles() {
        for role in Role::ALL {
            let name = format!("{role}.md");
            let dir = repo(&[(name.as_str(), &builtin_file(role))]);
            let files = RoleFiles::load(dir.path()).expect("loads");
            let doc = &files.roles[&role];
            assert_eq!(doc.prompt, crate::prompts::builtin_body(role));
            assert!(
                doc.settings.model.is_none() && doc.settings.tools.is_none(),
                "{role}: changes nothing"
            );
        }
    }

    #[test]
    fn every_problem_names_the_file_and_the_key() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "wizard.md",
                "Do magic.",
                "wizard.md is a specialist reviewer (its name is no built-in role) but sets no `kind`",
            ),
            ("Wizard!.md", "Do magic.", "Wizard!.md names no role"),
            (
                "sec.md",
                "---\nkind: planner\n---\nX",
                "sec.md sets `kind` to `planner`",
            ),
            (
                "worker.md",
                "---\nkind: reviewer\n---\nX",
                "the built-in worker role's",
            ),
            (
                "sec.md",
                "---\nkind: reviewer\nname: other\n---\nX",
                "sets `name` to `other`",
            ),
            ("worker.md", "---\nmodle: x\n---\nBody", "unknown field `modle`"),
            ("worker.md", "---\nmax_turns: lots\n---\nBody", "max_turns"),
            (
                "worker.md",
                "---\nmax_turns: 0\n---\nBody",
                "sets `max_turns` to 0",
            ),
            (
                "worker.md",
                "---\ntemperature: 7\n---\nBody",
                "sets `temperature` to 7",
            ),
            (
                "worker.md",
                "---\nbudget: 0\n---\nBody",
                "sets `budget_tokens` to 0",
            ),
            (
                "worker.md",
                "---\nbudget: 5\nbudget_tokens: 6\n---\nBody",
                "`budget` and `budget_tokens` both",
            ),
            (
                "worker.md",
                "---\ntools: [read, shell]\n---\nBody",
                "unknown tool `shell`",
            ),
            ("worker.md", "---\nmodel: x\n---\n\n  \n", "has no prompt"),
            ("worker.md", "---\nmodel: x\nBody", "never closes it"),
            (
                "worker.md",
                "---\nname: planner\n---\nBody",
                "sets `name` to `planner`",
            ),
            ("worker.md", "---\n- a\n- b\n---\nBody", "bad front matter"),
            (
                "worker.md",
                "---\nmodel: \"\"\n---\nBody",
                "sets `model` to nothing",
            ),
        ];
        for (name, text, expected) in cases {
            let err = error(&[(name, text)]);
            assert!(err.contains(&format!(".orchestrator/roles/{name}")), "{err}");
            assert!(err.contains(expected), "{name} {text:?}: {err}");
        }
    }

    #[test]
    fn hostile_files_are_refused_not_read() {
        let huge = format!("---\nmodel: m\n---\n{}", "x".repeat(10 << 20));
        assert!(error(&[("worker.md", &huge)]).contains("larger than 65536 bytes"));
        let dir = repo(&[]);
        std::fs::write(dir.path().join(ROLES_DIR).join("planner.md"), b"\xff\xfe plan").expect("write");
        let err = RoleFiles::load(dir.path()).expect_err("refused").to_string();
        assert!(err.contains("planner.md is not UTF-8 text"), "{err}");
        let outside = tempfile::tempdir().expect("temp dir");
        std::fs::write(outside.path().join("secret.md"), "secret").expect("write");
        let dir = repo(&[]);
        std::os::unix::fs::symlink(
            outside.path().join("secret.md"),
            dir.path().join(ROLES_DIR).join("scout.md"),
        )
        .expect("symlink");
        let err = RoleFiles::load(dir.path()).expect_err("refused").to_string();
        assert!(
            err.contains("scout.md is a symlink to outside the repository"),
            "{err}"
        );
        // An alias bomb is refused at its first key, before anything is expanded.
        let bomb = "---\na: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n\
                    c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n\
                    e: [*d, *d, *d, *d, *d, *d, *d, *d, *d]\n---\nBody";
        assert!(error(&[("worker.md", bomb)]).contains("bad front matter"));
    }

    #[test]
    fn a_role_file_lies_over_the_config_files_and_under_the_model_flag() {
        use crate::config::{resolve, MissionSettings};
        let dir = repo(&[("worker.md", "---\nmodel: from-file\nmax_turns: 7\n---\nWork.")]);
        let files = RoleFiles::load(dir.path()).expect("loads");
        let toml = |text: &str| -> FileConfig { toml::from_str(text).expect("toml") };
        let repo_config = toml("model = \"m\"\n[roles.worker]\nmodel = \"from-toml\"\nmax_tokens = 99\n");
        let layers = [repo_config, files.layer()];
        let config = resolve(&layers, &MissionSettings::default(), None).expect("resolves");
        let worker = config.role(Role::Worker);
        assert_eq!(worker.model, "from-file");
        assert_eq!(worker.max_turns, 7);
        assert_eq!(
            worker.max_tokens, 99,
            "what the file leaves out, the config still sets"
        );
        assert_eq!(config.role(Role::Planner).model, "m");
        let flag = MissionSettings {
            model: Some("from-flag".into()),
            ..Default::default()
        };
        let config = resolve(&layers, &flag, None).expect("resolves");
        assert_eq!(config.role(Role::Worker).model, "from-flag");
    }

    /// A role file's `mcp` list gives the role the config's servers, and is checked like the config's.
    #[test]
    fn a_role_files_mcp_list_names_config_servers() {
        use crate::config::{resolve, MissionSettings};
        let toml = |text: &str| -> FileConfig { toml::from_str(text).expect("toml") };
        let repo_config = toml("model = \"m\"\n[mcp.docs]\ncommand = [\"docs-mcp\"]\n");
        let dir = repo(&[("worker.md", "---\nmcp: [docs]\n---\nWork.")]);
        let layers = [
            repo_config.clone(),
            RoleFiles::load(dir.path()).expect("loads").layer(),
        ];
        let config = resolve(&layers, &MissionSettings::default(), None).expect("resolves");
        assert_eq!(config.role(Role::Worker).mcp, vec!["docs".to_string()]);
        assert!(config.role(Role::Reviewer).mcp.is_empty());
        let dir = repo(&[("worker.md", "---\nmcp: [nope]\n---\nWork.")]);
        let layers = [repo_config, RoleFiles::load(dir.path()).expect("loads").layer()];
        let refused = resolve(&layers, &MissionSettings::default(), None).expect_err("unknown server");
        assert!(refused.to_string().contains("`nope`"), "{refused}");
    }

    /// A specialist takes its kind's `[roles.<kind>]` settings, with its own front matter over them,
    /// and `[review] extra` must name one of the right kind.
    #[test]
    fn a_specialist_file_is_a_reviewer_of_its_kind_named_in_review_extra() {
        use crate::config::{resolve, MissionSettings};
        let toml = |text: &str| -> FileConfig { toml::from_str(text).expect("toml") };
        let dir = repo(&[
            (
                "security-reviewer.md",
                "---\nkind: reviewer\nmodel: sec-model\nmax_turns: 4\n---\n# Role: reviewer\nLook for injections.",
            ),
            ("whole-audit.md", "---\nkind: master_reviewer\n---\nAudit the whole."),
        ]);
        let files = RoleFiles::load(dir.path()).expect("loads");
        assert!(files.roles.is_empty());
        let security = &files.specialists["security-reviewer"];
        assert_eq!(security.kind, Role::Reviewer);
        assert_eq!(security.doc.prompt, "Look for injections.");
        let repo_config = toml(
            "model = \"m\"\n[roles.reviewer]\nmax_tokens = 99\nmax_turns = 9\n\
             [review]\nextra = [\"security-reviewer\"]\nextra_master = [\"whole-audit\"]\n",
        );
        let layers = [repo_config, files.layer()];
        let config = resolve(&layers, &MissionSettings::default(), None).expect("resolves");
        let resolved = &config.specialists["security-reviewer"];
        assert_eq!(resolved.settings.model, "sec-model");
        assert_eq!(resolved.settings.max_turns, 4, "its file wins");
        assert_eq!(resolved.settings.max_tokens, 99, "its kind's config under it");
        assert_eq!(
            config.specialists["whole-audit"].settings.max_turns, 24,
            "the kind's default"
        );
        assert_eq!(config.review_extra, vec!["security-reviewer".to_string()]);
        assert_eq!(config.review_extra_master, vec!["whole-audit".to_string()]);

        let refused = |review: &str| {
            let layers = [
                toml(&format!("model = \"m\"\n[review]\n{review}\n")),
                files.layer(),
            ];
            resolve(&layers, &MissionSettings::default(), None)
                .expect_err("refused")
                .to_string()
        };
        let unknown = refused("extra = [\"nope\"]");
        assert!(
            unknown.contains("`[review] extra` names `nope`")
                && unknown.contains(".orchestrator/roles/nope.md"),
            "{unknown}"
        );
        let wrong_kind = refused("extra = [\"whole-audit\"]");
        assert!(wrong_kind.contains("`kind: master_reviewer`"), "{wrong_kind}");
        let twice = refused("extra_master = [\"whole-audit\", \"whole-audit\"]");
        assert!(twice.contains("twice"), "{twice}");
        let flood = format!("extra = [{}]", ["\"security-reviewer\""; 9].join(", "));
        assert!(refused(&flood).contains("at most 8"));
    }

    #[test]
    fn the_layer_carries_the_settings_under_the_role_name() {
        let dir = repo(&[("planner.md", "---\nmodel: p\n---\nPlan.")]);
        let layer = RoleFiles::load(dir.path()).expect("loads").layer();
        assert_eq!(layer.roles["planner"].model.as_deref(), Some("p"));
        assert_eq!(layer.source.as_deref(), Some(Path::new(ROLES_DIR)));
    }
}
