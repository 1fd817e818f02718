//! A repository's settings as a mission will use them: the config files and the role files merged
//! (`load_config`), and each role shown with where every setting came from (`orchestrator roles`).

use std::path::Path;

use orchestrator_protocol::Role;

use crate::config::{self, Config, FileConfig, MissionSettings};
use crate::error::{EngineError, Result};
use crate::instructions::{self, ProjectInstructions};
use crate::prompts::Prompts;
use crate::role_files::{self, RoleFiles, ROLES_DIR};

/// Names the model in `roles show` when none is configured (a mission would refuse to start).
const NO_MODEL: &str = "(none: set ORCHESTRATOR_MODEL, --model or `model` in orchestrator.toml)";

/// The layers under the flags, lowest first: the user's config, the repository's `orchestrator.toml`,
/// the role files (see role_files.rs for why they lie over the config files).
fn layers(root: &Path) -> Result<(Vec<FileConfig>, RoleFiles)> {
    let mut layers = Vec::new();
    if let Some(path) = config::user_config_path() {
        layers.push(config::load_file(&path)?);
    }
    layers.push(config::load_file(&root.join("orchestrator.toml"))?);
    let role_files = RoleFiles::load(root)?;
    layers.push(role_files.layer());
    Ok((layers, role_files))
}

fn env_model() -> Option<String> {
    std::env::var("ORCHESTRATOR_MODEL")
        .ok()
        .filter(|m| !m.trim().is_empty())
}

/// The configuration a mission in `root` runs with under `settings` (its flags).
pub fn load_config(root: &Path, settings: &MissionSettings) -> Result<Config> {
    let (layers, role_files) = layers(root)?;
    let mut config = config::resolve(&layers, settings, env_model())?;
    config.role_prompts = role_files.prompts();
    Ok(config)
}

/// What `roles show` reads: the layers, the role files, the model from the environment and the
/// config they resolve to (with a placeholder model, so a missing one is shown, not refused).
struct Shown {
    layers: Vec<FileConfig>,
    role_files: RoleFiles,
    model: Option<String>,
    config: Config,
}

fn shown(root: &Path) -> Result<Shown> {
    let (layers, role_files) = layers(root)?;
    let model = env_model();
    let config = config::resolve(
        &layers,
        &MissionSettings::default(),
        model.clone().or(Some(NO_MODEL.into())),
    )?;
    Ok(Shown {
        layers,
        role_files,
        model,
        config,
    })
}

/// One role as `orchestrator roles show` prints it.
#[derive(Debug, Clone)]
pub struct RoleShow {
    /// The built-in role, or a specialist's kind.
    pub role: Role,
    /// The specialist reviewer shown, when it is one (`role` is then its kind).
    pub specialist: Option<String>,
    /// Where the prompt comes from: its role file, or `built in`.
    pub prompt_source: String,
    /// Each setting: key, value, where it was set.
    pub settings: Vec<(String, String, String)>,
    /// The project instructions found in the working tree.
    pub instructions: ProjectInstructions,
    /// The whole system prompt the role's sessions would get.
    pub system_prompt: String,
}

/// The role by name, or a usage error listing the roles.
pub fn role_named(name: &str) -> Result<Role> {
    Role::ALL.into_iter().find(|r| r.as_str() == name).ok_or_else(|| {
        let roles: Vec<&str> = Role::ALL.iter().map(|r| r.as_str()).collect();
        EngineError::Usage(format!("unknown role `{name}`; roles are: {}", roles.join(", ")))
    })
}

/// A built-in role or a specialist reviewer by name, as [`show_role`] / [`show_specialist`] show it.
pub fn show_named(root: &Path, name: &str) -> Result<RoleShow> {
    if let Ok(role) = role_named(name) {
        return show_role(root, role);
    }
    let (_, files) = layers(root)?;
    if files.specialists.contains_key(name) {
        return show_specialist(root, name);
    }
    let roles: Vec<&str> = Role::ALL.iter().map(|r| r.as_str()).collect();
    let specialists = match files.specialists.keys().map(String::as_str).collect::<Vec<_>>() {
        none if none.is_empty() => format!("none (a file in {ROLES_DIR}/ with `kind:` makes one)"),
        names => names.join(", "),
    };
    Err(EngineError::Usage(format!(
        "unknown role `{name}`; roles are: {}; specialist reviewers: {specialists}",
        roles.join(", ")
    )))
}

/// A specialist reviewer's effective prompt and settings: what its file sets, else its kind's.
pub fn show_specialist(root: &Path, name: &str) -> Result<RoleShow> {
    let Shown {
        layers,
        role_files,
        model,
        config,
    } = shown(root)?;
    let (Some(doc), Some(specialist)) = (role_files.specialists.get(name), config.specialists.get(name))
    else {
        return Err(EngineError::Usage(format!(
            "no specialist `{name}` in {ROLES_DIR}/"
        )));
    };
    let kind = specialist.kind;
    let own = &doc.doc.settings;
    let kind_file = role_files.roles.get(&kind).map(|f| f.path.as_str());
    let source = |key: &str, set_here: bool| {
        if set_here {
            return doc.doc.path.clone();
        }
        setting_source(&layers, kind, key, kind_file).map_or_else(
            || format!("default of {kind}"),
            |place| format!("{place}, as its kind"),
        )
    };
    let resolved = &specialist.settings;
    let optional = |v: Option<String>| v.unwrap_or_else(|| "unset".into());
    let model_source = if own.model.is_some() {
        doc.doc.path.clone()
    } else {
        setting_source(&layers, kind, "model", kind_file)
            .or_else(|| model.as_ref().map(|_| "ORCHESTRATOR_MODEL".to_string()))
            .or_else(|| top_level_model_source(&layers))
            .unwrap_or_else(|| "not set".into())
    };
    let settings = vec![
        ("model".to_string(), resolved.model.clone(), model_source),
        (
            "tools".into(),
            optional(resolved.tools.as_ref().map(|t| t.join(", "))),
            source("tools", own.tools.is_some()),
        ),
        (
            "max_turns".into(),
            resolved.max_turns.to_string(),
            source("max_turns", own.max_turns.is_some()),
        ),
        (
            "max_tokens".into(),
            resolved.max_tokens.to_string(),
            source("max_tokens", own.max_tokens.is_some()),
        ),
        (
            "temperature".into(),
            optional(resolved.temperature.map(|t| t.to_string())),
            source("temperature", own.temperature.is_some()),
        ),
        (
            "budget_tokens".into(),
            optional(resolved.budget_tokens.map(|b| b.to_string())),
            source("budget_tokens", own.budget_tokens.is_some()),
        ),
    ];
    let instructions = instructions::load(root);
    let bodies = role_files
        .specialists
        .iter()
        .map(|(name, s)| (name.clone(), s.doc.prompt.clone()))
        .collect();
    let system_prompt = Prompts::new(Default::default(), instructions.block.clone())
        .with_specialists(bodies)
        .specialist(kind, name);
    Ok(RoleShow {
        role: kind,
        specialist: Some(name.to_string()),
        prompt_source: doc.doc.path.clone(),
        settings,
        instructions,
        system_prompt,
    })
}

/// The role's effective prompt and settings in the repository at `root`, with their sources.
pub fn show_role(root: &Path, role: Role) -> Result<RoleShow> {
    let Shown {
        layers,
        role_files,
        model,
        config,
    } = shown(root)?;
    let resolved = config.role(role);
    let file = role_files.roles.get(&role);
    let source = |key: &str| setting_source(&layers, role, key, file.map(|f| f.path.as_str()));
    let model_source = match source("model") {
        Some(place) => place,
        None if model.is_some() => "ORCHESTRATOR_MODEL".into(),
        None => top_level_model_source(&layers).unwrap_or_else(|| "not set".into()),
    };
    let optional = |v: Option<String>| v.unwrap_or_else(|| "unset".into());
    let default = |key: &str| source(key).unwrap_or_else(|| "default".into());
    let settings = vec![
        ("model".to_string(), resolved.model.clone(), model_source),
        (
            "tools".into(),
            optional(resolved.tools.as_ref().map(|t| t.join(", "))),
            default("tools"),
        ),
        (
            "max_turns".into(),
            resolved.max_turns.to_string(),
            default("max_turns"),
        ),
        (
            "max_tokens".into(),
            resolved.max_tokens.to_string(),
            default("max_tokens"),
        ),
        (
            "temperature".into(),
            optional(resolved.temperature.map(|t| t.to_string())),
            default("temperature"),
        ),
        (
            "budget_tokens".into(),
            optional(resolved.budget_tokens.map(|b| b.to_string())),
            default("budget_tokens"),
        ),
    ];
    let instructions = instructions::load(root);
    let bodies = role_files
        .prompts()
        .into_iter()
        .map(|(role, file)| (role, file.prompt))
        .collect();
    let system_prompt = Prompts::new(bodies, instructions.block.clone()).system(role);
    Ok(RoleShow {
        role,
        specialist: None,
        prompt_source: file.map_or_else(|| "built in".to_string(), |f| f.path.clone()),
        settings,
        instructions,
        system_prompt,
    })
}

/// Where the role's `key` was last set: the role file, a config file's `[roles.<role>]`, or the
/// profile under them.
fn setting_source(layers: &[FileConfig], role: Role, key: &str, role_file: Option<&str>) -> Option<String> {
    let sets = |layer: &FileConfig| {
        layer.roles.get(role.as_str()).is_some_and(|r| match key {
            "model" => r.model.is_some(),
            "tools" => r.tools.is_some(),
            "max_turns" => r.max_turns.is_some(),
            "max_tokens" => r.max_tokens.is_some(),
            "temperature" => r.temperature.is_some(),
            "budget_tokens" => r.budget_tokens.is_some(),
            _ => false,
        })
    };
    if let Some(layer) = layers.iter().rev().find(|l| sets(l)) {
        let place = match layer.source.as_deref() {
            Some(path) if path == Path::new(ROLES_DIR) => role_file.unwrap_or(ROLES_DIR).to_string(),
            Some(path) => format!("[roles.{role}] in {}", path.display()),
            None => format!("[roles.{role}] in the config"),
        };
        return Some(place);
    }
    let profile = layers.iter().rev().find_map(|l| l.profile.clone())?;
    config::profile_layer(&profile)
        .ok()
        .filter(sets)
        .map(|_| format!("profile `{profile}`"))
}

fn top_level_model_source(layers: &[FileConfig]) -> Option<String> {
    let layer = layers.iter().rev().find(|l| l.model.is_some())?;
    Some(match layer.source.as_deref() {
        Some(path) => format!("`model` in {}", path.display()),
        None => "`model` in the config".into(),
    })
}

/// `orchestrator roles init`: writes every built-in role to `.orchestrator/roles/<role>.md`. Without
/// `force`, refuses (writing nothing) when any of those files exists. Returns the files written.
pub fn init_roles(root: &Path, force: bool) -> Result<Vec<String>> {
    let dir = root.join(ROLES_DIR);
    let existing: Vec<String> = Role::ALL
        .iter()
        .filter(|role| dir.join(format!("{role}.md")).exists())
        .map(|role| format!("{ROLES_DIR}/{role}.md"))
        .collect();
    if !existing.is_empty() && !force {
        return Err(EngineError::Usage(format!(
            "{} already exist(s); nothing was written. Pass --force to overwrite them with the built-in roles.",
            existing.join(", ")
        )));
    }
    // The state folder (the roles folder's parent) is private to its user, as a mission makes it.
    let state = dir.parent().unwrap_or(root);
    orchestrator_store::private_dir(state)
        .map_err(|e| EngineError::io(format!("cannot create {}", state.display()), e))?;
    std::fs::create_dir_all(&dir).map_err(|e| EngineError::io(format!("cannot create {ROLES_DIR}/"), e))?;
    let mut written = Vec::new();
    for role in Role::ALL {
        let path = dir.join(format!("{role}.md"));
        std::fs::write(&path, role_files::builtin_file(role))
            .map_err(|e| EngineError::io(format!("cannot write {}", path.display()), e))?;
        written.push(format!("{ROLES_DIR}/{role}.md"));
    }
    Ok(written)
}

/// `orchestrator roles list`: every role and where its prompt comes from, then each specialist
/// reviewer with its kind.
pub fn list_roles(root: &Path) -> Result<Vec<(String, String)>> {
    let files = RoleFiles::load(root)?;
    let roles = Role::ALL.into_iter().map(|role| {
        let source = files
            .roles
            .get(&role)
            .map_or_else(|| "built in".to_string(), |f| f.path.clone());
        (role.to_string(), source)
    });
    let specialists = files.specialists.iter().map(|(name, s)| {
        let source = format!("{} (specialist, kind: {})", s.doc.path, s.kind);
        (name.clone(), source)
    });
    Ok(roles.chain(specialists).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("temp dir");
        for (path, text) in files {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("dirs");
            std::fs::write(path, text).expect("write");
        }
        dir
    }

    #[test]
    fn show_names_where_each_setting_came_from() {
        let dir = repo(&[
            (
                "orchestrator.toml",
                "model = \"base\"\n[roles.worker]\nmax_turns = 9\nmax_tokens = 77\n",
            ),
            (
                ".orchestrator/roles/worker.md",
                "---\nmax_turns: 5\n---\nWork carefully.",
            ),
            ("AGENTS.md", "Use tabs.\n"),
        ]);
        let shown = show_role(dir.path(), Role::Worker).expect("shows");
        assert_eq!(shown.prompt_source, ".orchestrator/roles/worker.md");
        let get = |key: &str| shown.settings.iter().find(|s| s.0 == key).cloned().expect(key);
        assert_eq!(get("max_turns").1, "5");
        assert_eq!(get("max_turns").2, ".orchestrator/roles/worker.md");
        assert_eq!(get("max_tokens").1, "77");
        assert!(
            get("max_tokens").2.starts_with("[roles.worker] in "),
            "{:?}",
            get("max_tokens")
        );
        assert_eq!(get("temperature").2, "default");
        assert!(shown
            .system_prompt
            .starts_with("# Role: worker\nWork carefully.\n\n# Project instructions"));
        assert!(shown.system_prompt.contains("Use tabs."));
        let planner = show_role(dir.path(), Role::Planner).expect("shows");
        assert_eq!(planner.prompt_source, "built in");
    }

    #[test]
    fn init_writes_every_role_once_and_force_overwrites() {
        let dir = repo(&[]);
        let written = init_roles(dir.path(), false).expect("writes");
        assert_eq!(written.len(), Role::ALL.len());
        let files = RoleFiles::load(dir.path()).expect("the files it wrote load");
        assert_eq!(files.roles.len(), Role::ALL.len());
        std::fs::write(dir.path().join(".orchestrator/roles/worker.md"), "Mine.").expect("write");
        let err = init_roles(dir.path(), false).expect_err("refused").to_string();
        assert!(
            err.contains(".orchestrator/roles/worker.md") && err.contains("--force"),
            "{err}"
        );
        let mine = std::fs::read_to_string(dir.path().join(".orchestrator/roles/worker.md")).expect("read");
        assert_eq!(mine, "Mine.", "nothing was overwritten");
        init_roles(dir.path(), true).expect("overwrites");
        assert!(list_roles(dir.path())
            .expect("lists")
            .iter()
            .all(|(role, source)| *source == format!(".orchestrator/roles/{role}.md")));
    }

    #[test]
    fn an_unknown_role_is_named_with_the_roles_there_are() {
        let err = role_named("wizard").expect_err("refused").to_string();
        assert!(
            err.contains("unknown role `wizard`") && err.contains("master_reviewer"),
            "{err}"
        );
    }
}
