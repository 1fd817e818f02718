//! Which mission store a command uses: the repository's SQLite file, or a PostgreSQL server named by
//! `--store URL`, ORCHESTRATOR_STORE_URL or `store = "postgres://…"` in the user's config.toml, in that
//! order.

use std::path::Path;
use std::sync::RwLock;

use crate::config;
use crate::error::{EngineError, Result};

/// The variable that names the store, as `--store` does.
pub const STORE_URL_VAR: &str = "ORCHESTRATOR_STORE_URL";

static OVERRIDE: RwLock<Option<String>> = RwLock::new(None);

/// What `--store` gave, for every store this process opens from now on (none: the environment
/// and the config decide).
pub fn set_store_url(url: Option<String>) {
    *OVERRIDE.write().unwrap_or_else(|p| p.into_inner()) = url.filter(|u| !u.trim().is_empty());
}

/// The PostgreSQL URL the repository at `root` keeps its missions at, or none for SQLite.
pub(crate) fn store_url(root: &Path) -> Result<Option<String>> {
    let given = OVERRIDE.read().unwrap_or_else(|p| p.into_inner()).clone();
    let url = match given {
        Some(url) => Some((url, "--store".to_string())),
        None => match std::env::var(STORE_URL_VAR).ok().filter(|u| !u.trim().is_empty()) {
            Some(url) => Some((url, STORE_URL_VAR.to_string())),
            None => from_config(root)?,
        },
    };
    let Some((url, source)) = url else {
        return Ok(None);
    };
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(EngineError::Usage(format!(
            "{source} must be a PostgreSQL URL (postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE), not {}",
            orchestrator_store::masked_url(&url)
        )));
    }
    Ok(Some(url))
}

/// `store` from the user's config. A repository's `orchestrator.toml` may not name it: a cloned
/// repository could otherwise send every transcript to a server of its author's choosing.
fn from_config(root: &Path) -> Result<Option<(String, String)>> {
    let repo_file = root.join("orchestrator.toml");
    if config::load_file(&repo_file)?.store.is_some() {
        return Err(EngineError::Usage(format!(
            "`store` in {} is not taken: a repository's file may not say where your missions and \
             transcripts go. Put it in your own config.toml, or pass --store / {STORE_URL_VAR}",
            repo_file.display()
        )));
    }
    let Some(user_file) = config::user_config_path() else {
        return Ok(None);
    };
    let store = config::load_file(&user_file)?.store;
    Ok(store.map(|url| (url, format!("`store` in {}", user_file.display()))))
}

/// The name the repository's missions go under in a shared database: its top folder, made absolute
/// and without symlinks, so that every command run in it (from any subfolder) finds them.
pub(crate) fn repo_scope(root: &Path) -> String {
    std::fs::canonicalize(root)
        .unwrap_or_else(|_| root.to_path_buf())
        .display()
        .to_string()
}
