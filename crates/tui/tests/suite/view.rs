//! The terminal view rendered from the fixed fixture missions (snapshots), and what its keys do.

use chrono::Duration;
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use std::sync::{Arc, Mutex};

use orchestrator_protocol::{Op, Steer};
use orchestrator_tui::{App, Exit};
use orchestrator_view::fixture::{running_mission, running_on_workers, sealed_mission, start};
use orchestrator_view::MissionView;
use ratatui::backend::TestBackend;
use ratatui::Terminal;

/// Records the operations the view sends, as the engine would receive them.
#[derive(Default)]
struct Sent(Mutex<Vec<Op>>);

impl Steer for Sent {
    fn send(&self, op: Op) {
        self.0.lock().unwrap().push(op);
    }

    fn cancel_requested(&self) -> bool {
        self.0.lock().unwrap().contains(&Op::Cancel)
    }
}

impl Sent {
    /// Whether the last dispatch operation paused it.
    fn paused(&self) -> bool {
        let ops = self.0.lock().unwrap();
        let last = ops.iter().rev().find(|op| **op != Op::Cancel);
        last == Some(&Op::PauseDispatch)
    }
}

fn app_of(events: Vec<orchestrator_protocol::EventEnvelope>) -> App {
    let mut app = App::new(MissionView::from_events(&events), Arc::new(Sent::default()));
    app.now = start() + Duration::seconds(47);
    app
}

fn running() -> App {
    app_of(running_mission())
}

fn screen(app: &App, width: u16, height: u16) -> String {
    draw(app, width, height).backend().to_string()
}

fn draw(app: &App, width: u16, height: u16) -> Terminal<TestBackend> {
    let mut terminal = match Terminal::new(TestBackend::new(width, height)) {
        Ok(terminal) => terminal,
        Err(never) => match never {},
    };
    let drawn = terminal.draw(|frame| orchestrator_tui::render(frame, app));
    if let Err(never) = drawn {
        match never {}
    }
    terminal
}

fn key(code: KeyCode) -> KeyEvent {
    KeyEvent::new(code, KeyModifiers::NONE)
}

fn press(app: &mut App, keys: &str) -> Option<Exit> {
    keys.chars().find_map(|c| app.on_key(key(KeyCode::Char(c))))
}

fn ctrl_c() -> KeyEvent {
    KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)
}

#[test]
fn running_mission_with_paused_dispatch() {
    insta::assert_snapshot!("running_100x30", screen(&running(), 100, 30));
}

#[test]
fn running_mission_on_an_80x24_terminal() {
    insta::assert_snapshot!("running_80x24", screen(&running(), 80, 24));
}

#[test]
fn running_mission_on_a_tiny_terminal() {
    insta::assert_snapshot!("running_40x10", screen(&running(), 40, 10));
}

#[test]
fn a_unit_on_an_external_worker_names_its_host() {
    let app = app_of(running_on_workers());
    let screen = screen(&app, 100, 30);
    assert!(screen.contains("worker gpt-test on host-b"), "{screen}");
    insta::assert_snapshot!("running_on_workers_100x30", screen);
}

#[test]
fn unit_log_with_evidence_and_reviews() {
    let mut app = running();
    assert_eq!(press(&mut app, "g"), None);
    app.on_key(key(KeyCode::Enter));
    assert_eq!(app.log().map(|l| l.unit.as_str()), Some("t1"));
    insta::assert_snapshot!("running_t1_log_100x30", screen(&app, 100, 30));
    insta::assert_snapshot!("running_t1_log_40x10", screen(&app, 40, 10));
}

#[test]
fn a_sealed_mission() {
    let app = app_of(sealed_mission());
    insta::assert_snapshot!("sealed_100x30", screen(&app, 100, 30));
    insta::assert_snapshot!("sealed_40x10", screen(&app, 40, 10));
}

/// `t` puts each unit's life over the mission's time beside the tree (spawned units under their
/// parent, t2's replaced first attempt in red), and takes it away again.
#[test]
fn t_shows_the_timeline_beside_the_tree() {
    let mut app = running();
    press(&mut app, "t");
    assert!(app.timeline());
    insta::assert_snapshot!("running_timeline_100x30", screen(&app, 100, 30));
    insta::assert_snapshot!("running_timeline_40x10", screen(&app, 40, 10));
    let red_cells = draw(&app, 100, 30)
        .backend()
        .buffer()
        .content()
        .iter()
        .filter(|cell| cell.fg == ratatui::style::Color::Red && cell.symbol() != " ")
        .count();
    assert!(red_cells > 0, "a retried unit's first attempt is drawn in red");
    let mut sealed = app_of(sealed_mission());
    press(&mut sealed, "t");
    insta::assert_snapshot!("sealed_timeline_100x30", screen(&sealed, 100, 30));
    press(&mut app, "t");
    assert_eq!(screen(&app, 100, 30), screen(&running(), 100, 30));
    // Even on the smallest screens, with the timeline on.
    for (width, height) in [(1, 1), (10, 3), (20, 5), (0, 0), (200, 4)] {
        draw(&sealed, width, height);
    }
}

#[test]
fn a_mission_before_its_plan() {
    let events: Vec<_> = running_mission().into_iter().take(4).collect();
    insta::assert_snapshot!("discovery_100x30", screen(&app_of(events), 100, 30));
}

#[test]
fn no_size_is_too_small_to_draw() {
    let mut app = running();
    for (width, height) in [(1, 1), (10, 3), (20, 5), (0, 0), (200, 4)] {
        draw(&app, width, height);
    }
    app.on_key(key(KeyCode::Enter));
    for (width, height) in [(1, 1), (10, 3), (20, 5), (0, 0)] {
        draw(&app, width, height);
    }
}

#[test]
fn p_pauses_and_resumes_dispatch() {
    let control = Arc::new(Sent::default());
    let mut app = App::new(MissionView::new(), control.clone());
    assert_eq!(press(&mut app, "p"), None);
    assert!(control.paused());
    assert_eq!(
        app.pending_pause(),
        Some(true),
        "shown as pausing until the engine says so"
    );
    press(&mut app, "p");
    assert!(!control.paused());
}

#[test]
fn the_engine_confirms_a_pause() {
    let mut app = running();
    // The fixture ends paused; resuming is pending until the engine's event arrives.
    press(&mut app, "p");
    assert_eq!(app.pending_pause(), Some(false));
    let events = sealed_mission();
    let resumed = events.iter().find(|e| {
        matches!(
            e.event,
            orchestrator_protocol::Event::DispatchChanged { paused: false }
        )
    });
    app.apply(resumed.expect("the sealed fixture resumes dispatch"));
    assert_eq!(app.pending_pause(), None);
    assert!(!app.view.paused);
}

#[test]
fn c_then_y_cancels_the_mission() {
    let cancel = Arc::new(Sent::default());
    let mut app = App::new(MissionView::new(), cancel.clone());
    press(&mut app, "c");
    assert!(app.confirming_cancel());
    assert!(!cancel.cancel_requested(), "c alone only asks");
    assert_eq!(
        press(&mut app, "y"),
        None,
        "the view stays up while the mission stops"
    );
    assert!(cancel.cancel_requested());
    assert!(!app.confirming_cancel());
}

#[test]
fn c_then_n_or_esc_keeps_the_mission_running() {
    let cancel = Arc::new(Sent::default());
    let mut app = App::new(MissionView::new(), cancel.clone());
    press(&mut app, "cn");
    assert!(!cancel.cancel_requested());
    assert!(!app.confirming_cancel());
    press(&mut app, "c");
    app.on_key(key(KeyCode::Esc));
    assert!(!cancel.cancel_requested());
    // While asking, other keys do nothing (a stray `q` does not leave, `p` does not pause).
    let control = Arc::new(Sent::default());
    let mut app = App::new(MissionView::new(), control.clone());
    assert_eq!(press(&mut app, "cqp"), None);
    assert!(!control.paused());
    assert!(app.confirming_cancel());
}

#[test]
fn the_cancel_prompt_is_shown_in_the_footer() {
    let mut app = running();
    press(&mut app, "c");
    let screen = screen(&app, 100, 30);
    assert!(screen.contains("cancel the mission? y/n"), "{screen}");
}

#[test]
fn ctrl_c_stops_cleanly_and_a_second_quits() {
    let cancel = Arc::new(Sent::default());
    let mut app = App::new(MissionView::new(), cancel.clone());
    assert_eq!(app.on_key(ctrl_c()), None);
    assert!(cancel.cancel_requested());
    assert_eq!(app.on_key(ctrl_c()), Some(Exit::QuitNow));
}

#[test]
fn q_leaves_the_view_but_closes_a_log_first() {
    let mut app = running();
    app.on_key(key(KeyCode::Enter));
    assert_eq!(press(&mut app, "q"), None);
    assert!(app.log().is_none());
    assert_eq!(press(&mut app, "q"), Some(Exit::Left));
}

#[test]
fn arrows_and_jk_select_units_in_tree_order() {
    let mut app = running();
    assert_eq!(app.selected_unit(), Some("t1"));
    press(&mut app, "jj");
    assert_eq!(app.selected_unit(), Some("t2.1"));
    app.on_key(key(KeyCode::Down));
    app.on_key(key(KeyCode::Down));
    assert_eq!(app.selected_unit(), Some("t3"));
    press(&mut app, "j");
    assert_eq!(
        app.selected_unit(),
        Some("t3"),
        "the selection stops at the last unit"
    );
    press(&mut app, "k");
    app.on_key(key(KeyCode::Up));
    assert_eq!(app.selected_unit(), Some("t2.1"));
    press(&mut app, "l");
    assert_eq!(app.log().map(|l| l.unit.as_str()), Some("t2.1"));
    app.on_key(key(KeyCode::Esc));
    assert!(app.log().is_none());
}

#[test]
fn the_log_scrolls_no_further_than_its_last_page() {
    let mut app = running();
    app.on_key(key(KeyCode::Enter));
    screen(&app, 100, 12);
    app.on_key(key(KeyCode::End));
    let end = app.log().map(|l| l.scroll).unwrap_or_default();
    assert!(end > 0, "the t1 log is longer than 10 rows");
    app.on_key(key(KeyCode::Down));
    assert_eq!(app.log().map(|l| l.scroll), Some(end));
    app.on_key(key(KeyCode::Up));
    assert_eq!(app.log().map(|l| l.scroll), Some(end - 1));
    app.on_key(key(KeyCode::Home));
    assert_eq!(app.log().map(|l| l.scroll), Some(0));
    let bottom = screen(
        &{
            let mut app = running();
            app.on_key(key(KeyCode::Enter));
            screen(&app, 100, 12);
            app.on_key(key(KeyCode::End));
            app
        },
        100,
        12,
    );
    assert!(bottom.contains("merged into"), "{bottom}");
}

/// The mission right after planning with `--approve-plan`: the plan waits for an answer.
fn waiting_plan() -> (App, Arc<Sent>) {
    let mut events: Vec<_> = running_mission().into_iter().take(4).collect();
    let unit = |id: &str, title: &str, deps: &[&str]| orchestrator_protocol::UnitSpec {
        id: id.into(),
        title: title.into(),
        description: format!("{title}, with tests."),
        depends_on: deps.iter().map(|d| d.to_string()).collect(),
        files: vec![],
        attempts: None,
    };
    events.push(orchestrator_protocol::EventEnvelope {
        seq: events.len() as u64,
        at: start() + Duration::seconds(30),
        mission: events[0].mission.clone(),
        event: orchestrator_protocol::Event::PlanAwaitingApproval {
            attempt: 2,
            units: vec![
                unit("parser", "Add the expression parser", &[]),
                unit("eval", "Evaluate parsed expressions", &["parser"]),
            ],
        },
    });
    let sent = Arc::new(Sent::default());
    let mut app = App::new(MissionView::from_events(&events), sent.clone());
    app.now = start() + Duration::seconds(47);
    (app, sent)
}

#[test]
fn a_plan_waiting_for_approval() {
    let (mut app, _) = waiting_plan();
    insta::assert_snapshot!("waiting_plan_100x30", screen(&app, 100, 30));
    press(&mut app, "r");
    press(&mut app, "Smaller");
    insta::assert_snapshot!("waiting_plan_feedback_100x30", screen(&app, 100, 30));
}

#[test]
fn a_approves_and_r_rejects_the_waiting_plan() {
    let (mut app, sent) = waiting_plan();
    press(&mut app, "a");
    let approve = Op::AnswerPlan {
        attempt: 2,
        answer: orchestrator_protocol::PlanAnswer::Approve,
    };
    assert_eq!(sent.0.lock().unwrap().last(), Some(&approve));
    // Keys typed into the feedback are text, not commands (`c` does not ask to cancel).
    press(&mut app, "rcut");
    app.on_key(key(KeyCode::Backspace));
    assert!(!app.confirming_cancel());
    app.on_key(key(KeyCode::Enter));
    let reject = Op::AnswerPlan {
        attempt: 2,
        answer: orchestrator_protocol::PlanAnswer::Reject {
            feedback: "cu".into(),
        },
    };
    assert_eq!(sent.0.lock().unwrap().last(), Some(&reject));
    // Esc drops an input; an empty feedback or an unreadable file is refused where the user is.
    press(&mut app, "rx");
    app.on_key(key(KeyCode::Esc));
    assert!(app.input().is_none());
    press(&mut app, "r");
    app.on_key(key(KeyCode::Enter));
    assert!(app.plan_error().is_some_and(|e| e.contains("needs feedback")));
    press(&mut app, "e/no/such/plan.json");
    app.on_key(key(KeyCode::Enter));
    assert!(app.plan_error().is_some_and(|e| e.contains("cannot read")));
    assert_eq!(sent.0.lock().unwrap().len(), 2, "nothing more was sent");
}

#[test]
fn e_sends_the_plan_of_a_file() {
    let (mut app, sent) = waiting_plan();
    let dir = std::env::temp_dir().join(format!("tui-plan-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("plan.json");
    std::fs::write(
        &path,
        r#"{"tasks": [{"id": "x", "title": "X", "description": "d", "depends_on": []}]}"#,
    )
    .unwrap();
    press(&mut app, "e");
    press(&mut app, path.to_str().unwrap());
    app.on_key(key(KeyCode::Enter));
    let ops = sent.0.lock().unwrap();
    let Some(Op::AnswerPlan {
        attempt: 2,
        answer: orchestrator_protocol::PlanAnswer::Edit { units },
    }) = ops.last()
    else {
        panic!("no edit sent: {ops:?}");
    };
    assert_eq!(units[0].id, "x");
    let _ = std::fs::remove_dir_all(&dir);
}

/// With an editor set, `e` hands the plan out as text; what comes back is sent only when it is a
/// changed plan, and a failed, unchanged or broken edit keeps the plan waiting with the reason shown.
#[test]
fn e_with_an_editor_sends_what_the_editor_saved() {
    let (mut app, sent) = waiting_plan();
    app.set_editor(Some("vi".into()));
    assert!(screen(&app, 100, 30).contains("edit in $EDITOR"));
    press(&mut app, "e");
    assert!(app.input().is_none(), "no path is asked for");
    let request = app.take_edit_request().expect("the editor is asked for");
    assert_eq!(request.editor, "vi");
    assert!(app.take_edit_request().is_none(), "taken once");
    let shown: serde_json::Value = serde_json::from_str(&request.text).unwrap();
    assert_eq!(shown["tasks"][1]["depends_on"][0], "parser");

    app.plan_edited(Err("the editor (vi) ended with exit status: 1".into()));
    assert!(app.plan_error().is_some_and(|e| e.contains("ended with")));
    press(&mut app, "e");
    let request = app.take_edit_request().unwrap();
    app.plan_edited(Ok(format!("{}\n", request.text)));
    assert!(app.plan_error().is_some_and(|e| e.contains("unchanged")));
    press(&mut app, "e");
    app.take_edit_request().unwrap();
    app.plan_edited(Ok("{\"tasks\": [oops".into()));
    assert!(app.plan_error().is_some_and(|e| e.contains("is not a plan")));
    assert!(sent.0.lock().unwrap().is_empty(), "nothing was sent yet");

    press(&mut app, "e");
    let request = app.take_edit_request().unwrap();
    app.plan_edited(Ok(request.text.replace("Add the expression parser", "Parse")));
    let ops = sent.0.lock().unwrap();
    let Some(Op::AnswerPlan {
        attempt: 2,
        answer: orchestrator_protocol::PlanAnswer::Edit { units },
    }) = ops.last()
    else {
        panic!("no edit sent: {ops:?}");
    };
    assert_eq!(units[0].title, "Parse");
    assert_eq!(units.len(), 2);
}

#[test]
fn m_sends_the_selected_units_worker_a_message() {
    let sent = Arc::new(Sent::default());
    let mut app = App::new(MissionView::from_events(&running_mission()), sent.clone());
    app.on_key(key(KeyCode::Down));
    let unit = app.selected_unit().map(str::to_string);
    assert!(unit.is_some());
    // Keys typed into the message are text, not commands (`p` does not pause, `c` does not cancel).
    press(&mut app, "muse pcx");
    app.on_key(key(KeyCode::Backspace));
    assert!(!app.confirming_cancel());
    assert!(app.input().is_some_and(|i| i.unit == unit));
    app.on_key(key(KeyCode::Enter));
    let told = Op::Tell {
        unit: unit.clone(),
        message: "use pc".into(),
    };
    assert_eq!(sent.0.lock().unwrap().as_slice(), [told]);
    // An empty message is refused where the user is; a long one stops growing at the limit.
    press(&mut app, "m");
    app.on_key(key(KeyCode::Enter));
    assert!(app.plan_error().is_some_and(|e| e.contains("empty message")));
    press(&mut app, "m");
    for _ in 0..5000 {
        app.on_key(key(KeyCode::Char('x')));
    }
    assert_eq!(app.input().map(|i| i.text.len()), Some(4096));
    app.on_key(key(KeyCode::Esc));
    assert_eq!(sent.0.lock().unwrap().len(), 1, "nothing more was sent");
    // A finished mission has no worker to tell.
    let mut done = app_of(sealed_mission());
    press(&mut done, "m");
    assert!(done.input().is_none());
}

#[test]
fn the_totals_name_what_the_prompt_cache_served() {
    let mut events = running_mission();
    let Some(last) = events.last().cloned() else {
        panic!("the fixture has events")
    };
    events.push(orchestrator_protocol::EventEnvelope {
        seq: last.seq + 1,
        event: orchestrator_protocol::Event::ModelCall {
            session: "worker-1".into(),
            role: orchestrator_protocol::Role::Worker,
            model: "gpt-test".into(),
            usage: orchestrator_protocol::TokenUsage {
                input_tokens: 100,
                output_tokens: 10,
                cache_read_tokens: 12_000,
                cache_write_tokens: 0,
            },
            cost_usd: None,
            duration_ms: 10,
            constraint: None,
        },
        ..last
    });
    let wide = screen(&app_of(events.clone()), 100, 30);
    assert!(wide.contains("(12.0k cached)"), "{wide}");
    assert!(!screen(&running(), 100, 30).contains("cached"));
}
