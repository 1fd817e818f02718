//! `orchestrator roles`: the roles as a mission in this repository would run them — `show` one with
//! its effective prompt and where each setting came from, `list` them, `init` writes the built-in
//! ones to `.orchestrator/roles/` for editing.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use orchestrator_core::{EngineError, RoleShow};

use crate::out::{self, errln};

#[derive(Args)]
pub struct RolesArgs {
    /// The repository to work in.
    #[arg(long, default_value = ".", global = true)]
    repo: PathBuf,
    #[command(subcommand)]
    command: RolesCommand,
}

#[derive(Subcommand)]
enum RolesCommand {
    /// Every role and where its prompt comes from (built in, or its role file), then the specialist
    /// reviewers with their kind.
    List,
    /// The role's effective system prompt and settings, with where each came from.
    Show {
        /// scout, planner, worker, reviewer, master_reviewer, conflict_resolver, or a specialist
        /// reviewer's name.
        role: String,
    },
    /// Write the built-in roles to .orchestrator/roles/<role>.md for editing.
    Init {
        /// Overwrite role files that exist.
        #[arg(long)]
        force: bool,
    },
}

pub async fn run(args: RolesArgs) -> u8 {
    let done = match orchestrator_core::repo_root(&args.repo).await {
        Ok(root) => match args.command {
            RolesCommand::List => list(&root),
            RolesCommand::Show { role } => show(&root, &role),
            RolesCommand::Init { force } => init(&root, force),
        },
        Err(e) => Err(e),
    };
    match done {
        Ok(text) => {
            if let Err(e) = out::text(&text) {
                out::stdout_failed(e);
            }
            0
        }
        Err(e) => {
            errln!("error: {e}");
            e.exit_code() as u8
        }
    }
}

fn list(root: &std::path::Path) -> Result<String, EngineError> {
    let mut text = String::new();
    for (role, source) in orchestrator_core::list_roles(root)? {
        text.push_str(&format!("{role:<18} {source}\n"));
    }
    Ok(text)
}

fn show(root: &std::path::Path, name: &str) -> Result<String, EngineError> {
    Ok(render(&orchestrator_core::show_named(root, name)?))
}

fn init(root: &std::path::Path, force: bool) -> Result<String, EngineError> {
    let written = orchestrator_core::init_roles(root, force)?;
    let mut text = String::new();
    for path in written {
        text.push_str(&format!("wrote {path}\n"));
    }
    text.push_str("Edit a file to change its role; delete it to go back to the built-in one.\n");
    Ok(text)
}

fn render(shown: &RoleShow) -> String {
    let role = match &shown.specialist {
        Some(name) => format!("{name} (specialist reviewer, kind: {})", shown.role),
        None => shown.role.to_string(),
    };
    let mut text = format!("role: {role}\nprompt: {}\n\nsettings:\n", shown.prompt_source);
    for (key, value, source) in &shown.settings {
        text.push_str(&format!("  {key:<14} {value:<24} ({source})\n"));
    }
    text.push_str("  (flags such as --model still win over all of these for one run)\n\n");
    let files: Vec<String> = shown
        .instructions
        .files
        .iter()
        .map(|f| format!("{}{}", f.path, if f.cut { " (cut)" } else { "" }))
        .collect();
    if files.is_empty() {
        text.push_str("project instructions: none (no AGENTS.md or CLAUDE.md)\n");
    } else {
        text.push_str(&format!(
            "project instructions: {} (from your working tree; a mission reads them from the commit it starts at)\n",
            files.join(", ")
        ));
    }
    for note in &shown.instructions.notes {
        text.push_str(&format!("  {note}\n"));
    }
    text.push_str("\n--- system prompt ---\n");
    text.push_str(&shown.system_prompt);
    text.push('\n');
    text
}
