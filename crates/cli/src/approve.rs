//! `orchestrator approve`: answers the plan a mission started with `--approve-plan` waits with —
//! approve it, reject it with feedback (the planner plans again), or replace it with an edited plan —
//! or shows it (`--show`) in the JSON shape an edit takes.

use std::path::PathBuf;

use clap::Args;
use orchestrator_core::{EngineError, WaitingPlan};
use orchestrator_protocol::PlanAnswer;

#[derive(Args)]
pub struct ApproveArgs {
    /// The repository to work in.
    #[arg(long, default_value = ".")]
    repo: PathBuf,
    /// The mission: its id, or the start of one that names no other (default: the latest).
    #[arg(long, value_name = "ID")]
    mission: Option<String>,
    /// Send the plan back to the planner with --feedback; its new plan waits for approval again.
    #[arg(long, requires = "feedback", conflicts_with_all = ["plan_file", "show"])]
    reject: bool,
    /// What the planner should change (with --reject).
    #[arg(long, value_name = "TEXT", requires = "reject")]
    feedback: Option<String>,
    /// Run this plan instead: JSON as the planner's submit_plan takes it, {"tasks": [{"id", "title",
    /// "description", "depends_on"}]}. It is checked as the planner's plan is; a plan that fails
    /// is refused and the waiting plan stays.
    #[arg(long, value_name = "FILE", conflicts_with = "show")]
    plan_file: Option<PathBuf>,
    /// Print the waiting plan as JSON (the shape --plan-file takes) and answer nothing.
    #[arg(long)]
    show: bool,
}

pub async fn run(args: ApproveArgs) -> u8 {
    let done = match orchestrator_core::repo_root(&args.repo).await {
        Ok(root) if args.show => show(&root, args.mission.as_deref()),
        Ok(root) => match answer_of(&args) {
            Ok(answer) => orchestrator_core::answer_plan(&root, args.mission.as_deref(), answer).await,
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    crate::out::sentence_or_error(done)
}

/// The answer the flags give; an edited plan that is not a valid plan is refused here, with the
/// planner's checks' words.
fn answer_of(args: &ApproveArgs) -> Result<PlanAnswer, EngineError> {
    if args.reject {
        return Ok(PlanAnswer::Reject {
            feedback: args.feedback.clone().unwrap_or_default(),
        });
    }
    let Some(path) = &args.plan_file else {
        return Ok(PlanAnswer::Approve);
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| EngineError::Usage(format!("cannot read {}: {e}", path.display())))?;
    orchestrator_core::plan::parse_plan_text(&text)
        .map(|units| PlanAnswer::Edit { units })
        .map_err(|problems| orchestrator_core::refused_edit(&problems))
}

/// The waiting plan as JSON, or why there is none (exit 2).
fn show(root: &std::path::Path, mission: Option<&str>) -> Result<String, EngineError> {
    match orchestrator_core::waiting_plan(root, mission)? {
        (_, Some(WaitingPlan { units, .. })) => {
            serde_json::to_string_pretty(&orchestrator_core::plan::plan_json(&units))
                .map_err(|e| EngineError::Other(e.to_string()))
        }
        (id, None) => Err(EngineError::Usage(format!(
            "mission {id} has no plan waiting for approval"
        ))),
    }
}
