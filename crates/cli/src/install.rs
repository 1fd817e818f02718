//! `orchestrator install opencode` and `orchestrator uninstall opencode`: register (or remove) the
//! orchestrator MCP server and a `/task` command in one OpenCode config file.
//!
//! Only the one file asked for (and its backup beside it) is ever read or written. Refusals — a file
//! that cannot be parsed, an entry of the same name that is not ours — exit 2 with nothing written.

mod diff;
mod edit;
mod opencode;

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use thiserror::Error;

use crate::out::{errln, outln};

use edit::{EditError, Entry, Restored};
use opencode::ConfigEnv;

#[derive(Args)]
pub struct InstallArgs {
    #[command(subcommand)]
    pub target: Target,
}

#[derive(Subcommand)]
pub enum Target {
    /// OpenCode: the `orchestrator` MCP server and the `/task` command, in opencode.json(c).
    Opencode(OpencodeArgs),
}

#[derive(Args)]
pub struct OpencodeArgs {
    /// The project's config, opencode.json(c) in the repository's root (the default).
    #[arg(long, conflicts_with_all = ["global", "config"])]
    project: bool,
    /// Your own config: in $OPENCODE_CONFIG_DIR when set, else $XDG_CONFIG_HOME/opencode or
    /// ~/.config/opencode.
    #[arg(long, conflicts_with = "config")]
    global: bool,
    /// This config file, wherever it is (e.g. the one OPENCODE_CONFIG names).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The repository whose project config to use.
    #[arg(long, default_value = ".")]
    repo: PathBuf,
    /// Print the change and write nothing.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Debug, Error)]
enum InstallError {
    /// Nothing was written, and retrying as is would not help (exit 2).
    #[error("{0}")]
    Refused(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl InstallError {
    fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        InstallError::Io {
            context: context.into(),
            source,
        }
    }

    fn refused(file: &Path, why: EditError) -> Self {
        InstallError::Refused(format!("{} was left unchanged: {why}", file.display()))
    }

    fn exit_code(&self) -> u8 {
        match self {
            InstallError::Refused(_) => 2,
            InstallError::Io { .. } => 1,
        }
    }
}

pub async fn install(args: InstallArgs) -> u8 {
    let Target::Opencode(args) = args.target;
    finish(install_opencode(&args).await)
}

pub async fn uninstall(args: InstallArgs) -> u8 {
    let Target::Opencode(args) = args.target;
    finish(uninstall_opencode(&args).await)
}

fn finish(result: Result<String, InstallError>) -> u8 {
    match result {
        Ok(message) => {
            outln!("{message}");
            0
        }
        Err(e) => {
            errln!("error: {e}");
            e.exit_code()
        }
    }
}

/// The one config file the flags name.
async fn config_file(args: &OpencodeArgs) -> Result<PathBuf, InstallError> {
    if let Some(file) = &args.config {
        return Ok(file.clone());
    }
    if args.global {
        let dir = ConfigEnv::from_process().global_dir().ok_or_else(|| {
            InstallError::Refused(
                "cannot find your config folder: HOME is not set (use --config FILE)".into(),
            )
        })?;
        return Ok(opencode::config_in(&dir));
    }
    let root = orchestrator_core::repo_root(&args.repo).await.map_err(|e| {
        InstallError::Refused(format!(
            "{e} (use --global or --config FILE outside a repository)"
        ))
    })?;
    Ok(opencode::config_in(&root))
}

fn our_entries() -> Result<Vec<Entry>, InstallError> {
    let exe = std::env::current_exe().map_err(|e| InstallError::io("cannot tell where this binary is", e))?;
    Ok(opencode::entries(&exe))
}

async fn install_opencode(args: &OpencodeArgs) -> Result<String, InstallError> {
    let file = config_file(args).await?;
    let entries = our_entries()?;
    let before = read_optional(&file)?;
    let after = edit::install(before.as_deref(), &entries).map_err(|e| InstallError::refused(&file, e))?;
    let Some(after) = after else {
        return Ok(format!(
            "orchestrator is already installed in {}; nothing changed.",
            file.display()
        ));
    };
    if args.dry_run {
        let diff = diff::changed_lines(before.as_deref().unwrap_or(""), &after);
        return Ok(format!(
            "would change {}:\n{diff}(dry run: nothing written)",
            file.display()
        ));
    }
    let backup = write_backup(&file, before.as_deref(), &entries)?;
    write(&file, &after)?;
    let kept = backup.map_or(String::new(), |b| {
        format!(" The previous file is saved as {}.", b.display())
    });
    let mut message = format!(
        "Added the `{}` MCP server and the /{} command to {}.{kept}\nRestart OpenCode, then type: /task <objective>",
        opencode::SERVER,
        opencode::COMMAND,
        file.display()
    );
    if args.config.is_none() && !args.global {
        // A mission refuses a dirty tree, and this file (and its backup) just made it dirty.
        message.push_str(
            "\nMissions start only from a clean working tree: commit the config first, or install with --global.",
        );
    }
    Ok(message)
}

/// Saves the file as it was before our first install. A file that already holds our entries is not
/// that, so an existing backup is then kept as it is.
fn write_backup(
    file: &Path,
    before: Option<&str>,
    entries: &[Entry],
) -> Result<Option<PathBuf>, InstallError> {
    let Some(before) = before else { return Ok(None) };
    let backup = opencode::backup_of(file);
    if edit::installed(before, entries).map_err(|e| InstallError::refused(file, e))? {
        return Ok(backup.is_file().then_some(backup));
    }
    std::fs::write(&backup, before)
        .map_err(|e| InstallError::io(format!("cannot write the backup {}", backup.display()), e))?;
    Ok(Some(backup))
}

async fn uninstall_opencode(args: &OpencodeArgs) -> Result<String, InstallError> {
    let file = config_file(args).await?;
    let entries = our_entries()?;
    let Some(current) = read_optional(&file)? else {
        return Ok(format!("{} does not exist; nothing to remove.", file.display()));
    };
    let backup_file = opencode::backup_of(&file);
    let backup = read_optional(&backup_file)?;
    let restored = edit::uninstall(&current, backup.as_deref(), &entries)
        .map_err(|e| InstallError::refused(&file, e))?;
    if args.dry_run {
        return Ok(dry_run_removal(&file, &current, &restored));
    }
    apply_removal(&file, &backup_file, restored)
}

fn dry_run_removal(file: &Path, current: &str, restored: &Restored) -> String {
    let shown = file.display();
    match restored {
        Restored::NotInstalled => format!("orchestrator is not installed in {shown}; nothing to remove."),
        Restored::Delete => {
            format!("would delete {shown}, which install created\n(dry run: nothing written)")
        }
        Restored::Backup(text) | Restored::Stripped(text) => format!(
            "would change {shown}:\n{}(dry run: nothing written)",
            diff::changed_lines(current, text)
        ),
    }
}

fn apply_removal(file: &Path, backup_file: &Path, restored: Restored) -> Result<String, InstallError> {
    let shown = file.display();
    let what = format!(
        "the `{}` MCP server and the /{} command",
        opencode::SERVER,
        opencode::COMMAND
    );
    match restored {
        Restored::NotInstalled => Ok(format!(
            "orchestrator is not installed in {shown}; nothing to remove."
        )),
        Restored::Delete => {
            std::fs::remove_file(file).map_err(|e| InstallError::io(format!("cannot remove {shown}"), e))?;
            Ok(format!(
                "Removed {what}: deleted {shown}, which install had created."
            ))
        }
        Restored::Backup(text) => {
            write(file, &text)?;
            remove_backup(backup_file)?;
            Ok(format!(
                "Removed {what} from {shown}; it is again exactly as before install."
            ))
        }
        Restored::Stripped(text) => {
            write(file, &text)?;
            Ok(format!(
                "Removed {what} from {shown}; your other changes since install are kept. The file from \
before install is still in {}.",
                backup_file.display()
            ))
        }
    }
}

fn remove_backup(backup_file: &Path) -> Result<(), InstallError> {
    match std::fs::remove_file(backup_file) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(InstallError::io(
            format!("cannot remove the backup {}", backup_file.display()),
            e,
        )),
        _ => Ok(()),
    }
}

/// The file's text, or `None` when it does not exist.
fn read_optional(file: &Path) -> Result<Option<String>, InstallError> {
    match std::fs::read(file) {
        Ok(bytes) => String::from_utf8(bytes).map(Some).map_err(|_| {
            InstallError::Refused(format!(
                "{} was left unchanged: it is not UTF-8 text",
                file.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(InstallError::io(format!("cannot read {}", file.display()), e)),
    }
}

/// Writes in place rather than through a renamed temporary file: a config that is a symlink (into a
/// dotfiles repository, say) must stay one, and keep its permissions.
fn write(file: &Path, text: &str) -> Result<(), InstallError> {
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| InstallError::io(format!("cannot create {}", dir.display()), e))?;
    }
    std::fs::write(file, text).map_err(|e| InstallError::io(format!("cannot write {}", file.display()), e))
}
