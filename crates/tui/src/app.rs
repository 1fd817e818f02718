//! What the terminal view shows and how keys change it — no terminal involved, so every key is testable.

use std::cell::Cell;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use orchestrator_protocol::{EventEnvelope, Op, PlanAnswer, Steer, UnitSpec};
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
    /// The plan waiting for approval: run it.
    ApprovePlan,
    /// Start typing the feedback a rejected plan goes back to the planner with.
    AskFeedback,
    /// Start typing the path of a file with the edited plan (JSON, as `submit_plan` takes it).
    AskPlanFile,
    /// Open the waiting plan as text in the user's editor (`$VISUAL` or `$EDITOR`).
    EditPlan,
    /// Start typing a message to the selected unit's worker (`Op::Tell`).
    AskMessage,
    /// Show each unit's timeline beside the tree instead of its live session, or back.
    ToggleTimeline,
    /// A key typed into the open input.
    Type(char),
    Backspace,
    /// Enter in the input: send the rejection, the edited plan or the message.
    SubmitInput,
    /// Esc in the input: drop it, the plan keeps waiting.
    CloseInput,
}

/// What the one-line input at the bottom is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    Feedback,
    PlanFile,
    /// A message to the worker of the unit in [`Input::unit`].
    Message,
}

/// The longest message the input takes, in bytes (the engine refuses longer ones).
const MAX_MESSAGE_BYTES: usize = 4096;

/// The open input: what it is for and what was typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    pub kind: InputKind,
    pub text: String,
    /// The unit a message goes to.
    pub unit: Option<String>,
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

/// The waiting plan, written out for the user's editor: the terminal loop runs the editor and hands
/// the edited text back through [`App::plan_edited`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EditRequest {
    /// The editor command, run through `sh` as git runs `core.editor` (it may carry arguments).
    pub editor: String,
    /// The plan as pretty JSON, as `submit_plan` takes it.
    pub text: String,
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
    /// The feedback or plan-file input while the user types it.
    input: Option<Input>,
    /// Why the last answer could not be sent (an unreadable plan file), shown until the next key.
    plan_error: Option<String>,
    /// The editor `e` opens the plan in; without one, `e` asks for a file's path instead.
    editor: Option<String>,
    /// The plan waiting to be opened in the editor, and its text as written out (to tell an edit
    /// from a closed editor).
    edit_request: Option<EditRequest>,
    written_plan: Option<String>,
    /// Whether the tree's last column is the timeline (`t`) rather than the live session.
    timeline: bool,
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
            input: None,
            plan_error: None,
            editor: None,
            edit_request: None,
            written_plan: None,
            timeline: false,
        }
    }

    /// Sets the editor `e` opens the waiting plan in (`None`: `e` asks for a file instead).
    pub fn set_editor(&mut self, editor: Option<String>) {
        self.editor = editor.filter(|e| !e.trim().is_empty());
    }

    /// Whether `e` opens an editor (else it asks for a file's path).
    pub fn has_editor(&self) -> bool {
        self.editor.is_some()
    }

    /// The editor the last key asked for, taken once by the terminal loop.
    pub fn take_edit_request(&mut self) -> Option<EditRequest> {
        self.edit_request.take()
    }

    /// The editor closed: `Ok` with the file's text, or why nothing came back. An edit that parses is
    /// sent; the engine checks it as it checks a planner's plan and says so if it refuses it.
    pub fn plan_edited(&mut self, result: Result<String, String>) {
        let written = self.written_plan.take();
        let text = match result {
            Ok(text) => text,
            Err(why) => {
                self.plan_error = Some(why);
                return;
            }
        };
        if written.as_deref().map(str::trim) == Some(text.trim()) {
            self.plan_error = Some("the plan is unchanged; a approves it as it is".into());
            return;
        }
        match parse_plan_text(&text, "the edited plan") {
            Ok(units) => self.answer_plan(PlanAnswer::Edit { units }),
            Err(why) => self.plan_error = Some(why),
        }
    }

    /// Whether the tree shows each unit's timeline (toggled with `t`).
    pub fn timeline(&self) -> bool {
        self.timeline
    }

    /// The open input, if the user is typing feedback or a plan file's path.
    pub fn input(&self) -> Option<&Input> {
        self.input.as_ref()
    }

    /// Why the last plan answer could not be sent.
    pub fn plan_error(&self) -> Option<&str> {
        self.plan_error.as_deref()
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
        if self.input.is_some() {
            return match key.code {
                KeyCode::Enter => Some(Action::SubmitInput),
                KeyCode::Esc => Some(Action::CloseInput),
                KeyCode::Backspace => Some(Action::Backspace),
                KeyCode::Char(c) => Some(Action::Type(c)),
                _ => None,
            };
        }
        if self.confirming_cancel {
            return match key.code {
                KeyCode::Char('y') | KeyCode::Char('Y') => Some(Action::ConfirmCancel),
                KeyCode::Char('n') | KeyCode::Char('N') | KeyCode::Esc => Some(Action::KeepRunning),
                _ => None,
            };
        }
        if self.view.waiting_plan.is_some() {
            match key.code {
                KeyCode::Char('a') => return Some(Action::ApprovePlan),
                KeyCode::Char('r') => return Some(Action::AskFeedback),
                KeyCode::Char('e') if self.editor.is_some() => return Some(Action::EditPlan),
                KeyCode::Char('e') => return Some(Action::AskPlanFile),
                _ => {}
            }
        }
        match key.code {
            KeyCode::Char('m') if self.selected_unit().is_some() && self.view.outcome.is_none() => {
                return Some(Action::AskMessage)
            }
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
            KeyCode::Char('t') | KeyCode::Char('T') => Action::ToggleTimeline,
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
        self.plan_error = None;
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
            Action::ToggleTimeline => self.timeline = !self.timeline,
            Action::ApprovePlan => self.answer_plan(PlanAnswer::Approve),
            Action::AskFeedback => self.open_input(InputKind::Feedback),
            Action::AskPlanFile => self.open_input(InputKind::PlanFile),
            Action::EditPlan => self.request_edit(),
            Action::AskMessage => {
                self.open_input(InputKind::Message);
                let unit = self.selected_unit().map(str::to_string);
                self.input.iter_mut().for_each(|input| input.unit = unit.clone());
            }
            Action::Type(c) => self
                .input
                .iter_mut()
                .filter(|input| input.text.len() + c.len_utf8() <= MAX_MESSAGE_BYTES)
                .for_each(|input| input.text.push(c)),
            Action::Backspace => {
                self.input.iter_mut().for_each(|input| {
                    input.text.pop();
                });
            }
            Action::SubmitInput => self.submit_input(),
            Action::CloseInput => self.input = None,
        }
        None
    }

    fn open_input(&mut self, kind: InputKind) {
        self.input = Some(Input {
            kind,
            text: String::new(),
            unit: None,
        });
    }

    /// Answers the waiting plan; the engine confirms with `plan_answered` (or a notice for an edit
    /// that fails the planner's checks, when the plan keeps waiting).
    fn answer_plan(&mut self, answer: PlanAnswer) {
        if let Some(plan) = &self.view.waiting_plan {
            self.steer.send(Op::AnswerPlan {
                attempt: plan.attempt,
                answer,
            });
        }
    }

    fn request_edit(&mut self) {
        let (Some(editor), Some(plan)) = (&self.editor, &self.view.waiting_plan) else {
            return;
        };
        match serde_json::to_string_pretty(&serde_json::json!({ "tasks": plan.units })) {
            Ok(text) => {
                self.written_plan = Some(text.clone());
                self.edit_request = Some(EditRequest {
                    editor: editor.clone(),
                    text,
                });
            }
            Err(e) => self.plan_error = Some(format!("cannot write the plan out: {e}")),
        }
    }

    fn submit_input(&mut self) {
        let Some(input) = self.input.take() else { return };
        let text = input.text.trim().to_string();
        match input.kind {
            InputKind::Feedback if text.is_empty() => {
                self.plan_error = Some("a rejection needs feedback for the planner".into());
            }
            InputKind::Feedback => self.answer_plan(PlanAnswer::Reject { feedback: text }),
            InputKind::PlanFile => match read_plan_file(&text) {
                Ok(units) => self.answer_plan(PlanAnswer::Edit { units }),
                Err(why) => self.plan_error = Some(why),
            },
            InputKind::Message if text.is_empty() => {
                self.plan_error = Some("an empty message is not sent".into());
            }
            // The engine confirms with `user_message` when the worker takes it, or says why not.
            InputKind::Message => self.steer.send(Op::Tell {
                unit: input.unit,
                message: text,
            }),
        }
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

/// The units of an edited plan file: JSON as `submit_plan` takes it (`{"tasks": [...]}`, or the bare
/// list). The engine checks them as it checks a planner's plan before it takes them.
fn read_plan_file(path: &str) -> Result<Vec<UnitSpec>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    parse_plan_text(&text, path)
}

/// The units in a plan's text; `origin` names it in the error.
fn parse_plan_text(text: &str, origin: &str) -> Result<Vec<UnitSpec>, String> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum PlanFile {
        Tasks { tasks: Vec<UnitSpec> },
        List(Vec<UnitSpec>),
    }
    match serde_json::from_str::<PlanFile>(text) {
        Ok(PlanFile::Tasks { tasks } | PlanFile::List(tasks)) => Ok(tasks),
        Err(e) => Err(format!(
            "{origin} is not a plan ({e}); write it as {{\"tasks\": [{{\"id\", \"title\", \"description\", \"depends_on\"}}]}}"
        )),
    }
}
