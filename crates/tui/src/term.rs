//! The thin part: owns the terminal (raw mode, alternate screen), feeds keys and events to the [`App`]
//! and redraws. The terminal is restored on every way out: return, error, and panic (ratatui's hook).

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use crossterm::event::{Event as TermEvent, EventStream};
use futures::StreamExt;
use orchestrator_protocol::EventEnvelope;
use ratatui::DefaultTerminal;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::app::{App, EditRequest, Exit};

/// An edited plan longer than this is refused unread: a plan is a few kilobytes.
const MAX_EDITED_PLAN_BYTES: u64 = 1 << 20;

/// Mission events are drawn at most this often (~10 frames a second); keys are drawn at once.
const FRAME: Duration = Duration::from_millis(100);
/// The clock in the header moves even when nothing happens.
const CLOCK_TICK: Duration = Duration::from_secs(1);

static ACTIVE: AtomicBool = AtomicBool::new(false);
/// Whether the user's editor has the terminal (Ctrl-C there belongs to the editor, not the mission).
static EDITING: AtomicBool = AtomicBool::new(false);

/// Whether the user's editor runs in the foreground now: a SIGINT then came from a Ctrl-C meant for
/// the editor (the terminal is in cooked mode while it runs), so it must not stop the mission.
pub fn editor_open() -> bool {
    EDITING.load(Ordering::SeqCst)
}

/// Whether the view owns the terminal now (writes to stdout/stderr would scribble on it).
pub fn is_active() -> bool {
    ACTIVE.load(Ordering::SeqCst)
}

/// Gives the terminal back (cooked mode, main screen, cursor); for a caller about to exit the process.
pub fn restore() {
    if ACTIVE.swap(false, Ordering::SeqCst) {
        if let Err(e) = ratatui::try_restore() {
            tracing::warn!("cannot restore the terminal: {e}");
        }
    }
}

/// Restores the terminal when dropped, whatever way `run` ends.
struct Session {
    terminal: DefaultTerminal,
}

impl Session {
    fn start() -> io::Result<Self> {
        ACTIVE.store(true, Ordering::SeqCst);
        // try_init installs a panic hook that restores the terminal before the panic message prints.
        match ratatui::try_init() {
            Ok(terminal) => Ok(Session { terminal }),
            Err(e) => {
                restore();
                Err(e)
            }
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.terminal.show_cursor();
        restore();
    }
}

/// Shows the mission until its event stream ends, the user leaves (`q`) or quits (second Ctrl-C).
/// `events` stays with the caller, so a left view can go on as progress lines without losing any.
pub async fn run(app: &mut App, events: &mut UnboundedReceiver<Arc<EventEnvelope>>) -> io::Result<Exit> {
    let mut session = Session::start()?;
    app.set_editor(editor_from_env());
    let mut keys = EventStream::new();
    let mut keys_open = true;
    let mut frames = tokio::time::interval(FRAME);
    frames.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut dirty = true;
    let mut drawn_at = Instant::now();
    let mut saw_cancel = app.cancelled();
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Some(event) => {
                    app.apply(&event);
                    dirty = true;
                }
                None => return Ok(Exit::MissionEnded),
            },
            key = keys.next(), if keys_open => match key {
                Some(Ok(TermEvent::Key(key))) => {
                    if let Some(exit) = app.on_key(key) {
                        return Ok(exit);
                    }
                    if let Some(request) = app.take_edit_request() {
                        // crossterm's reader would take the editor's keys: it stops when dropped, and
                        // a new one starts after. Events meanwhile wait in `events`.
                        drop(keys);
                        let edited = edit_externally(&mut session.terminal, &request).await;
                        keys = EventStream::new();
                        keys_open = true;
                        app.plan_edited(edited);
                    }
                    draw(&mut session.terminal, app)?;
                    drawn_at = Instant::now();
                    dirty = false;
                }
                Some(Ok(TermEvent::Resize(..))) => dirty = true,
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    tracing::warn!("cannot read keys any more ({e}); the view goes on without them");
                    keys_open = false;
                }
                None => keys_open = false,
            },
            _ = frames.tick() => {
                if app.cancelled() && !saw_cancel {
                    // A SIGTERM's message may have been written over the view; draw it whole again.
                    saw_cancel = true;
                    forget_screen(&mut session.terminal)?;
                    dirty = true;
                }
                if dirty || drawn_at.elapsed() >= CLOCK_TICK {
                    draw(&mut session.terminal, app)?;
                    drawn_at = Instant::now();
                    dirty = false;
                }
            }
        }
    }
}

/// `$VISUAL`, else `$EDITOR`, as git and most terminal programs choose.
fn editor_from_env() -> Option<String> {
    ["VISUAL", "EDITOR"]
        .into_iter()
        .filter_map(|key| std::env::var(key).ok())
        .find(|value| !value.trim().is_empty())
}

/// Runs the editor on the plan written to a temporary file and returns what the user saved. The view
/// steps aside (main screen, cooked mode) while the editor owns the terminal, and comes back whole.
async fn edit_externally(terminal: &mut DefaultTerminal, request: &EditRequest) -> Result<String, String> {
    let file = write_plan_file(&request.text).map_err(|e| format!("cannot write the plan out: {e}"))?;
    step_aside().map_err(|e| format!("cannot hand the terminal to the editor: {e}"))?;
    EDITING.store(true, Ordering::SeqCst);
    // `sh -c '<editor> "$@"'` as git runs `core.editor`: the command may carry its own arguments.
    let status = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{} \"$@\"", request.editor))
        .arg(&request.editor)
        .arg(file.path())
        .status()
        .await;
    EDITING.store(false, Ordering::SeqCst);
    come_back(terminal).map_err(|e| format!("cannot take the terminal back from the editor: {e}"))?;
    match status {
        Ok(status) if status.success() => read_bounded(file.path()),
        Ok(status) => Err(format!(
            "the editor ({}) ended with {status}; the plan keeps waiting",
            request.editor
        )),
        Err(e) => Err(format!("cannot start the editor ({}): {e}", request.editor)),
    }
}

fn write_plan_file(text: &str) -> io::Result<tempfile::NamedTempFile> {
    let mut file = tempfile::Builder::new()
        .prefix("orchestrator-plan-")
        .suffix(".json")
        .tempfile()?;
    io::Write::write_all(&mut file, text.as_bytes())?;
    io::Write::write_all(&mut file, b"\n")?;
    Ok(file)
}

fn read_bounded(path: &std::path::Path) -> Result<String, String> {
    let size = std::fs::metadata(path)
        .map_err(|e| format!("cannot read the edited plan: {e}"))?
        .len();
    if size > MAX_EDITED_PLAN_BYTES {
        return Err(format!(
            "the edited plan is {size} bytes, over the {MAX_EDITED_PLAN_BYTES} a plan may have; the plan keeps waiting"
        ));
    }
    std::fs::read_to_string(path).map_err(|e| format!("cannot read the edited plan: {e}"))
}

fn step_aside() -> io::Result<()> {
    crossterm::terminal::disable_raw_mode()?;
    crossterm::execute!(
        io::stdout(),
        crossterm::terminal::LeaveAlternateScreen,
        crossterm::cursor::Show
    )
}

fn come_back(terminal: &mut DefaultTerminal) -> io::Result<()> {
    crossterm::terminal::enable_raw_mode()?;
    crossterm::execute!(io::stdout(), crossterm::terminal::EnterAlternateScreen)?;
    // The editor drew over everything; the next frame must draw every cell again.
    forget_screen(terminal)
}

/// Clears the screen and makes the next frame draw every cell: for when something else wrote on it.
/// Not `Terminal::clear`: it asks the terminal where its cursor is, and a terminal that does not
/// answer (or a pseudo-terminal with nobody reading) costs seconds and an error.
fn forget_screen(terminal: &mut DefaultTerminal) -> io::Result<()> {
    crossterm::execute!(
        io::stdout(),
        crossterm::terminal::Clear(crossterm::terminal::ClearType::All)
    )?;
    // A blank frame: ratatui's record of what is on screen becomes blank too, like the screen.
    terminal.draw(|frame| frame.render_widget(ratatui::widgets::Clear, frame.area()))?;
    Ok(())
}

fn draw(terminal: &mut DefaultTerminal, app: &mut App) -> io::Result<()> {
    app.now = Utc::now();
    terminal.draw(|frame| crate::render(frame, app))?;
    Ok(())
}
