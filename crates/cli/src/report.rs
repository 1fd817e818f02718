//! `orchestrator report`: a mission as one Markdown document (or, `--html`, one HTML file) — on stdout, or in a file that is never
//! overwritten unless asked. The document comes from `orchestrator-report`; this module finds the
//! mission in the store and asks git what each merge changed.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use clap::Args;
use orchestrator_git::Repo;
use orchestrator_protocol::EventEnvelope;
use orchestrator_report::{Changes, Diff, FileChange};
use orchestrator_view::MissionView;

use crate::out::{errln, outln};

#[derive(Args)]
pub struct ReportArgs {
    /// The repository the mission ran in.
    #[arg(long, default_value = ".")]
    repo: PathBuf,
    /// The mission to report on: its id, or the start of one that names no other (default: the
    /// latest). `orchestrator missions` lists them.
    #[arg(long, value_name = "ID")]
    mission: Option<String>,
    /// Write the report to this file instead of stdout.
    #[arg(long, short, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Overwrite the --output file if it exists.
    #[arg(long, requires = "output")]
    force: bool,
    /// One self-contained HTML file (the pictures inline as SVG, nothing fetched or run) instead of
    /// Markdown.
    #[arg(long)]
    html: bool,
}

#[derive(Debug, thiserror::Error)]
enum ReportError {
    /// Wrong repository, mission or output path: exit 2, nothing written.
    #[error("{0}")]
    Usage(String),
    /// The report could not be made or written: exit 1.
    #[error("{0}")]
    Failed(String),
}

pub async fn run(args: ReportArgs) -> u8 {
    match report(&args).await {
        Ok(()) => 0,
        Err(e) => {
            errln!("error: {e}");
            match e {
                ReportError::Usage(_) => 2,
                ReportError::Failed(_) => 1,
            }
        }
    }
}

async fn report(args: &ReportArgs) -> Result<(), ReportError> {
    if let Some(path) = &args.output {
        refuse_overwrite(path, args.force)?;
    }
    let (mission, events) = load_events(&args.repo, args.mission.as_deref())?;
    let view = MissionView::from_events(&events);
    let repo = Repo::discover(&args.repo)
        .await
        .map_err(|e| ReportError::Failed(format!("git: {e}")))?;
    let changes = gather_changes(&repo, &view).await;
    let markdown = if args.html {
        orchestrator_report::render_html(&view, &events, &changes)
    } else {
        orchestrator_report::render(&view, &events, &changes)
    };
    match &args.output {
        Some(path) => {
            write_file(path, &markdown, args.force)?;
            outln!("wrote the report of mission {mission} to {}", path.display());
        }
        None => print_stdout(&markdown)?,
    }
    Ok(())
}

/// The mission's id and its whole event log, from the repository's store.
fn load_events(repo: &Path, wanted: Option<&str>) -> Result<(String, Vec<EventEnvelope>), ReportError> {
    let usage = |e: orchestrator_core::EngineError| ReportError::Usage(e.to_string());
    let store = orchestrator_core::open_store_in(repo).map_err(usage)?;
    let record = orchestrator_core::find_mission(&store, wanted).map_err(usage)?;
    let events = store.events_after(&record.id, None).map_err(failed)?;
    Ok((record.id, events))
}

fn failed(e: impl std::fmt::Display) -> ReportError {
    ReportError::Failed(e.to_string())
}

/// Per unit, what its merge brought in; for the mission, base → result (or the integration branch
/// as it stands). A commit git cannot read is reported in the document, not as a failure.
async fn gather_changes(repo: &Repo, view: &MissionView) -> Changes {
    let mut changes = Changes::default();
    for unit in &view.units {
        if let Some(commit) = &unit.merged_commit {
            let files = repo.first_parent_diff_stat(commit).await;
            changes.units.insert(unit.id.clone(), diff(commit, files));
        }
    }
    if let Some(end) = mission_end(repo, view).await {
        let files = repo.diff_stat(&view.base_commit, &end).await;
        changes.mission = Some(diff(&end, files));
    }
    changes
}

async fn mission_end(repo: &Repo, view: &MissionView) -> Option<String> {
    if view.base_commit.is_empty() {
        return None;
    }
    if let Some(result) = &view.result_commit {
        return Some(result.clone());
    }
    let branch = format!("refs/heads/{}", view.integration_branch);
    repo.rev_parse(&branch).await.ok()
}

fn diff(commit: &str, files: Result<Vec<orchestrator_git::FileStat>, orchestrator_git::GitError>) -> Diff {
    Diff {
        commit: commit.to_string(),
        files: files
            .map(|files| {
                files
                    .into_iter()
                    .map(|f| FileChange {
                        path: f.path,
                        added: f.added,
                        removed: f.removed,
                    })
                    .collect()
            })
            .map_err(|e| e.to_string()),
    }
}

/// Checked before any work, so a refused overwrite costs nothing.
fn refuse_overwrite(path: &Path, force: bool) -> Result<(), ReportError> {
    if path.exists() && !force {
        return Err(ReportError::Usage(format!(
            "{} already exists; pass --force to overwrite it, or choose another --output",
            path.display()
        )));
    }
    if path.is_dir() {
        return Err(ReportError::Usage(format!(
            "{} is a directory; --output needs a file path",
            path.display()
        )));
    }
    Ok(())
}

fn write_file(path: &Path, markdown: &str, force: bool) -> Result<(), ReportError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    if force {
        options.create(true).truncate(true);
    } else {
        // create_new: a file that appeared since the check is still not overwritten.
        options.create_new(true);
    }
    let cannot = |e: std::io::Error| ReportError::Failed(format!("cannot write {}: {e}", path.display()));
    let mut file = options.open(path).map_err(cannot)?;
    file.write_all(markdown.as_bytes()).map_err(cannot)
}

/// stdout closed early (`orchestrator report | head`) is not an error.
fn print_stdout(markdown: &str) -> Result<(), ReportError> {
    let mut out = std::io::stdout().lock();
    match out.write_all(markdown.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(ReportError::Failed(format!("cannot write the report: {e}")))
        }
        _ => Ok(()),
    }
}
