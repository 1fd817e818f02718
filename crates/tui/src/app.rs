//! What the terminal view shows and how keys change it — no terminal involved, so every key is testable.

use std::cell::Cell;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use orchestrator_protocol::{EventEnvelope, Op, Steer};
use orchestrator_view::MissionView;

/// Lines one PageUp/PageDown moves the log.
const PAGE: u16 = 10;

/// What a key asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    SelectPrevious,
    SelectNext,
    SelectFirst,
    SelectLast,
    OpenLog,
    CloseLog,
    ScrollLog(i32),
    ScrollLogToEnd,
    /// Pause or resume the dispatch of new units; running sessions go on either way.
    TogglePause,
    /// Ask "cancel the mission? y/n".
    AskCancel,
    ConfirmCancel,
    KeepRunning,
    /// Ctrl-C: what SIGINT does without the view (raw mode turns the key into a key press).
    Interrupt,
    /// Close the view; the mission goes on with progress lines.
    Leave,
}

/// Why the view closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The mission's event stream ended: the mission is over.
    MissionEnded,
    /// The user left the view (`q`); the mission still runs.
    Left,
    /// A second Ctrl-C: quit at once, as without the view.
    QuitNow,
}

/// The open log panel of one unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogPanel {
    pub unit: String,
    pub scroll: u16,
}

/// The terminal view's state: the folded mission plus what the user is looking at.
pub struct App {
    pub view: MissionView,
    /// The clock elapsed times are measured against; injected so a render is reproducible.
    pub now: DateTime<Utc>,
    /// The selected unit's id; an id (not a row number) so spawned units do not move the selection.
    selected: Option<String>,
    log: Option<LogPanel>,
    confirming_cancel: bool,
    /// The pause state asked for and not yet confirmed by a `dispatch_changed` event.
    requested_pause: Option<bool>,
    /// Where pause, resume and cancel go: the view needs no handle into the engine.
    steer: Arc<dyn Steer>,
    /// The log panel's last full page at the last render (it depends on the panel's size), so
    /// scrolling stops where the end of the log is in view.
    log_last_page: Cell<u16>,
}

impl App {
    pub fn new(view: MissionView, steer: Arc<dyn Steer>) -> Self {
        let now = view.last_event_at.unwrap_or_else(Utc::now);
        App {
            view,
            now,
            selected: None,
            log: None,
            confirming_cancel: false,
            requested_pause: None,
            steer,
            log_last_page: Cell::new(0),
        }
    }

    /// Folds one event of the live stream in.
    pub fn apply(&mut self, event: &EventEnvelope) {
        self.view.apply(event);
        if self.requested_pause == Some(self.view.paused) {
            self.requested_pause = None;
        }
    }

    /// Index of the selected unit in `view.tree()`.
    pub fn selected_row(&self) -> usize {
        let Some(id) = &self.selected else { return 0 };
        self.view
            .tree()
            .iter()
            .position(|row| &row.unit.id == id)
            .unwrap_or(0)
    }

    pub fn selected_unit(&self) -> Option<&str> {
        let tree = self.view.tree();
        tree.get(self.selected_row()).map(|row| row.unit.id.as_str())
    }

    /// Called by the renderer: the scroll offset that shows the log's last page.
    pub(crate) fn remember_log_last_page(&self, offset: u16) {
        self.log_last_page.set(offset);
    }

    pub fn log(&self) -> Option<&LogPanel> {
        self.log.as_ref()
    }

    pub fn confirming_cancel(&self) -> bool {
        self.confirming_cancel
    }

    pub fn cancelled(&self) -> bool {
        self.steer.cancel_requested()
    }

    /// A pause or resume asked for that the engine has not confirmed yet.
    pub fn pending_pause(&self) -> Option<bool> {
        self.requested_pause
    }

    /// Maps a key to what it asks for in the current state; `None` for keys that do nothing here.
    pub fn action_for(&self, key: KeyEvent) -> Option<Action> {
        if key.kind == KeyEventKind::Release {
            return None;
        }
        if key.modifiers.contains(KeyModifiers::CONTROL) {
            return matches!(key.code, KeyCode::Char('c') | KeyCode::Char('C')).then_some(Action::Interrupt);
        }
        if self.confirming_cancel {
            return match key.code {
                KeyCode::Char('y') | KeyCode::Char('Y') => Some(Action::ConfirmCancel),
                KeyCode::Char('n') | KeyCode::Char('N') | KeyCode::Esc => Some(Action::KeepRunning),
                _ => None,
            };
        }
        match key.code {
            KeyCode::Char('p') | KeyCode::Char('P') => return Some(Action::TogglePause),
            KeyCode::Char('c') | KeyCode::Char('C') => return Some(Action::AskCancel),
            _ => {}
        }
        if self.log.is_some() {
            self.log_action(key.code)
        } else {
            self.tree_action(key.code)
        }
    }

    fn log_action(&self, code: KeyCode) -> Option<Action> {
        Some(match code {
            KeyCode::Esc | KeyCode::Char('q') | KeyCode::Char('h') | KeyCode::Left => Action::CloseLog,
            KeyCode::Up | KeyCode::Char('k') => Action::ScrollLog(-1),
            KeyCode::Down | KeyCode::Char('j') => Action::ScrollLog(1),
            KeyCode::PageUp => Action::ScrollLog(-i32::from(PAGE)),
            KeyCode::PageDown | KeyCode::Char(' ') => Action::ScrollLog(i32::from(PAGE)),
            KeyCode::Home | KeyCode::Char('g') => Action::ScrollLog(i32::MIN),
            KeyCode::End | KeyCode::Char('G') => Action::ScrollLogToEnd,
            _ => return None,
        })
    }

    fn tree_action(&self, code: KeyCode) -> Option<Action> {
        Some(match code {
            KeyCode::Up | KeyCode::Char('k') => Action::SelectPrevious,
            KeyCode::Down | KeyCode::Char('j') => Action::SelectNext,
            KeyCode::Home | KeyCode::Char('g') => Action::SelectFirst,
            KeyCode::End | KeyCode::Char('G') => Action::SelectLast,
            KeyCode::Enter | KeyCode::Char('l') | KeyCode::Right => Action::OpenLog,
            KeyCode::Char('q') => Action::Leave,
            _ => return None,
        })
    }

    /// A key press: maps it and carries it out. `Some` when the view should close.
    pub fn on_key(&mut self, key: KeyEvent) -> Option<Exit> {
        self.action_for(key).and_then(|action| self.perform(action))
    }

    /// Carries an action out; `Some` when the view should close.
    pub fn perform(&mut self, action: Action) -> Option<Exit> {
        match action {
            Action::SelectPrevious => self.select_by(-1),
            Action::SelectNext => self.select_by(1),
            Action::SelectFirst => self.select_at(0),
            Action::SelectLast => self.select_at(usize::MAX),
            Action::OpenLog => self.open_log(),
            Action::CloseLog => self.log = None,
            Action::ScrollLog(lines) => self.scroll_log(lines),
            Action::ScrollLogToEnd => self.scroll_log(i32::MAX),
            Action::TogglePause => self.toggle_pause(),
            Action::AskCancel => self.confirming_cancel = !self.cancelled(),
            Action::ConfirmCancel => {
                self.confirming_cancel = false;
                self.steer.send(Op::Cancel);
            }
            Action::KeepRunning => self.confirming_cancel = false,
            Action::Interrupt => {
                if self.cancelled() {
                    return Some(Exit::QuitNow);
                }
                self.confirming_cancel = false;
                self.steer.send(Op::Cancel);
            }
            Action::Leave => return Some(Exit::Left),
        }
        None
    }

    /// Flips what the user sees (not the handle's own flag), so `p` always does what the screen suggests.
    fn toggle_pause(&mut self) {
        let pause = !self.requested_pause.unwrap_or(self.view.paused);
        self.steer.send(match pause {
            true => Op::PauseDispatch,
            false => Op::ResumeDispatch,
        });
        self.requested_pause = (pause != self.view.paused).then_some(pause);
    }

    fn select_by(&mut self, step: isize) {
        let row = self.selected_row().saturating_add_signed(step);
        self.select_at(row);
    }

    fn select_at(&mut self, row: usize) {
        let tree = self.view.tree();
        let Some(last) = tree.len().checked_sub(1) else {
            return;
        };
        self.selected = Some(tree[row.min(last)].unit.id.clone());
    }

    fn open_log(&mut self) {
        if let Some(unit) = self.selected_unit() {
            self.log = Some(LogPanel {
                unit: unit.to_string(),
                scroll: 0,
            });
        }
    }

    fn scroll_log(&mut self, lines: i32) {
        let last = self.log_last_page.get();
        if let Some(log) = self.log.as_mut() {
            let moved = i64::from(log.scroll) + i64::from(lines);
            log.scroll = u16::try_from(moved.clamp(0, i64::from(last))).unwrap_or(last);
        }
    }
}
