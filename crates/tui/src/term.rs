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

use crate::app::{App, Exit};

/// Mission events are drawn at most this often (~10 frames a second); keys are drawn at once.
const FRAME: Duration = Duration::from_millis(100);
/// The clock in the header moves even when nothing happens.
const CLOCK_TICK: Duration = Duration::from_secs(1);

static ACTIVE: AtomicBool = AtomicBool::new(false);

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
                    session.terminal.clear()?;
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

fn draw(terminal: &mut DefaultTerminal, app: &mut App) -> io::Result<()> {
    app.now = Utc::now();
    terminal.draw(|frame| crate::render(frame, app))?;
    Ok(())
}
