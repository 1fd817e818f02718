//! How `task` and `resume` show a mission: the live terminal view when a person watches a terminal,
//! else the progress lines or JSON lines of before (unchanged, byte for byte).

use std::io::{IsTerminal, Write};
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::FutureExt;
use orchestrator_core::{MissionControl, Steering};
use orchestrator_protocol::EventEnvelope;
use orchestrator_tui::{App, Exit};
use orchestrator_view::MissionView;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_util::sync::CancellationToken;

use crate::out::errln;
use crate::progress;

/// What a running mission prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Events as JSON lines on stdout (`--json`).
    Json,
    /// Progress lines on stderr.
    Plain,
    /// The live terminal view.
    Terminal,
}

impl Output {
    /// The terminal view only when both stdout and stderr are terminals (so nothing meant for a pipe or a
    /// log file gets escape codes) and nobody asked for lines (`--json`, `--plain`, ORCHESTRATOR_PLAIN).
    pub fn choose(json: bool, plain: bool) -> Output {
        let dumb = std::env::var("TERM").is_ok_and(|term| term == "dumb");
        if json {
            Output::Json
        } else if plain || dumb || !std::io::stdout().is_terminal() || !std::io::stderr().is_terminal() {
            Output::Plain
        } else {
            Output::Terminal
        }
    }
}

/// Shows the mission in the terminal view until its events end. Leaving the view (`q`), or the view
/// failing, goes on with progress lines from the same stream, so the mission never runs unwatched.
pub async fn show(
    mut events: UnboundedReceiver<Arc<EventEnvelope>>,
    repo: &Path,
    control: MissionControl,
    cancel: CancellationToken,
) {
    // Nothing is drawn before the mission's first event: a refused start prints its error plainly.
    let Some(first) = events.recv().await else { return };
    let history = progress::stored_events(repo, &first.mission);
    let mut view = MissionView::from_events(&history);
    view.apply(&first);
    let mut app = App::new(view, Arc::new(Steering::new(control, cancel)));
    let shown = AssertUnwindSafe(orchestrator_tui::run(&mut app, &mut events))
        .catch_unwind()
        .await;
    release_held_logs();
    let reason = match shown {
        Ok(Ok(Exit::MissionEnded)) => return,
        Ok(Ok(Exit::QuitNow)) => std::process::exit(3),
        Ok(Ok(Exit::Left)) => "left the terminal view".to_string(),
        Ok(Err(e)) => format!("the terminal view failed ({e})"),
        Err(_) => "the terminal view stopped on an internal error".to_string(),
    };
    errln!("{reason}; the mission goes on with progress lines (Ctrl-C stops it cleanly)");
    // `app.now` is the time of the view's last frame, close enough for the progress clock.
    let elapsed = app.view.elapsed(app.now).to_std().unwrap_or_default();
    let started = Instant::now().checked_sub(elapsed).unwrap_or_else(Instant::now);
    let history = progress::stored_events(repo, &first.mission);
    progress::follow(&history, events, started).await;
}

/// Log lines written while the view owns the terminal, printed once it is gone (capped, so a chatty
/// failure cannot fill memory).
static HELD_LOGS: Mutex<Vec<u8>> = Mutex::new(Vec::new());
const MAX_HELD_LOGS: usize = 1 << 20;

/// The `tracing` writer: stderr, except while the terminal view is up, when lines wait in memory
/// instead of scribbling over the screen.
pub struct LogWriter;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogSink;

    fn make_writer(&'a self) -> LogSink {
        LogSink
    }
}

pub struct LogSink;

impl Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if !orchestrator_tui::is_active() {
            return std::io::stderr().write(buf);
        }
        let mut held = HELD_LOGS.lock().unwrap_or_else(|p| p.into_inner());
        if held.len() + buf.len() <= MAX_HELD_LOGS {
            held.extend_from_slice(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Prints what was logged while the view was up.
pub fn release_held_logs() {
    let held = std::mem::take(&mut *HELD_LOGS.lock().unwrap_or_else(|p| p.into_inner()));
    if !held.is_empty() {
        let _ = std::io::stderr().write_all(&held);
    }
}
