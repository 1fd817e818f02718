//! `orchestrator tell`: a message to a unit's worker while it works (or to every running worker with
//! `--all`), given to its session before its next model call.

use std::path::PathBuf;

use clap::Args;
use orchestrator_core::{EngineError, Recipient};

#[derive(Args)]
pub struct TellArgs {
    /// The repository to work in.
    #[arg(long, default_value = ".")]
    repo: PathBuf,
    /// The mission: its id, or the start of one that names no other (default: the latest).
    #[arg(long, value_name = "ID")]
    mission: Option<String>,
    /// Tell every unit whose worker is running now (then give only the message).
    #[arg(long)]
    all: bool,
    /// UNIT MESSAGE, or MESSAGE alone with --all. A message is at most 4096 bytes.
    #[arg(value_name = "UNIT MESSAGE", num_args = 1..=2, required = true)]
    words: Vec<String>,
}

pub async fn run(args: TellArgs) -> u8 {
    let done = match (recipient(&args), orchestrator_core::repo_root(&args.repo).await) {
        (Ok((to, message)), Ok(root)) => {
            orchestrator_core::tell(&root, args.mission.as_deref(), to, message).await
        }
        (Err(e), _) | (_, Err(e)) => Err(e),
    };
    crate::out::sentence_or_error(done)
}

/// Whom the words name and the message, or a usage error.
fn recipient(args: &TellArgs) -> Result<(Recipient, &str), EngineError> {
    match (args.all, args.words.as_slice()) {
        (true, [message]) => Ok((Recipient::All, message)),
        (false, [unit, message]) => Ok((Recipient::Unit(unit.clone()), message)),
        (true, _) => Err(EngineError::Usage(
            "with --all, give only the message: orchestrator tell --all \"MESSAGE\"".into(),
        )),
        (false, _) => Err(EngineError::Usage(
            "name the unit and the message: orchestrator tell UNIT \"MESSAGE\" (or --all \"MESSAGE\")".into(),
        )),
    }
}
