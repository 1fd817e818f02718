//! The terminal view end to end: the real binary on a pseudo-terminal against the scripted fake model,
//! driven by key presses, its screen read back with a terminal emulator (vt100).

use std::io::{Read, Write};
use std::num::NonZeroU16;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::support::*;
use orchestrator_fake_model::script::{PlanUnit, Script};
use orchestrator_fake_model::{FakeOptions, FakeServer};
use portable_pty::{native_pty_system, Child, CommandBuilder, MasterPty, PtySize};

const ROWS: NonZeroU16 = NonZeroU16::new(30).unwrap();
const COLS: NonZeroU16 = NonZeroU16::new(100).unwrap();
const ENTER_ALTERNATE_SCREEN: &str = "\x1b[?1049h";
const LEAVE_ALTERNATE_SCREEN: &str = "\x1b[?1049l";

/// The orchestrator running on a pseudo-terminal, as a person at a terminal would run it.
struct Terminal {
    child: Box<dyn Child + Send + Sync>,
    master: Box<dyn MasterPty + Send>,
    keys: Box<dyn Write + Send>,
    output: Arc<Mutex<Vec<u8>>>,
}

impl Terminal {
    fn run(repo: &TestRepo, server: &FakeServer, args: &[&str]) -> Terminal {
        Terminal::run_with(repo, server, args, &[])
    }

    /// As [`Terminal::run`], with more environment (`EDITOR`); `VISUAL` and `EDITOR` are unset otherwise.
    fn run_with(repo: &TestRepo, server: &FakeServer, args: &[&str], env: &[(&str, &str)]) -> Terminal {
        let pair = native_pty_system()
            .openpty(PtySize {
                rows: ROWS.get(),
                cols: COLS.get(),
                pixel_width: 0,
                pixel_height: 0,
            })
            .expect("a pseudo-terminal opens");
        let mut cmd = CommandBuilder::new(binary());
        cmd.args(args);
        cmd.cwd(repo.path());
        for (key, value) in [
            ("HOME", repo.home().to_string_lossy().into_owned()),
            (
                "XDG_CONFIG_HOME",
                repo.home().join(".config").to_string_lossy().into_owned(),
            ),
            ("ORCHESTRATOR_MODEL", MODEL.to_string()),
            ("OPENAI_BASE_URL", server.openai_base_url()),
            ("OPENAI_API_KEY", "test-key".to_string()),
            ("TERM", "xterm-256color".to_string()),
        ] {
            cmd.env(key, value);
        }
        for key in [
            "ANTHROPIC_BASE_URL",
            "ANTHROPIC_API_KEY",
            "ORCHESTRATOR_PLAIN",
            "ORCHESTRATOR_LOG",
            "VISUAL",
            "EDITOR",
        ] {
            cmd.env_remove(key);
        }
        for (key, value) in env {
            cmd.env(key, value);
        }
        let child = pair.slave.spawn_command(cmd).expect("the orchestrator starts");
        // Only the child holds the terminal's other end now, so reading ends when it exits.
        drop(pair.slave);
        let output = Arc::new(Mutex::new(Vec::new()));
        let mut reader = pair.master.try_clone_reader().expect("pty reader");
        let sink = output.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend_from_slice(&buf[..n]);
            }
        });
        let keys = pair.master.take_writer().expect("pty writer");
        Terminal {
            child,
            master: pair.master,
            keys,
            output,
        }
    }

    fn output(&self) -> Vec<u8> {
        self.output.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn emulated(&self) -> vt100::Parser {
        let mut parser = vt100::Parser::new(ROWS, COLS, 0);
        parser.process(&self.output());
        parser
    }

    /// What a person sees now.
    fn screen(&self) -> String {
        self.emulated().screen().contents()
    }

    async fn wait_for(&self, text: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let screen = self.screen();
            if screen.contains(text) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "{text:?} did not appear within {within:?}; the screen:\n{screen}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn press(&mut self, key: &str) {
        self.keys.write_all(key.as_bytes()).expect("key press");
        self.keys.flush().expect("key press");
    }

    async fn exit_code(&mut self, within: Duration) -> u32 {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("child status") {
                return status.exit_code();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "the orchestrator did not exit within {within:?}; the screen:\n{}",
                    self.screen()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The program's output after it exits (the reader drains what is left).
    async fn final_output(&self) -> String {
        tokio::time::sleep(Duration::from_millis(300)).await;
        String::from_utf8_lossy(&self.output()).into_owned()
    }

    /// Whether the terminal is back in cooked mode (line editing and echo), as a shell needs it.
    fn cooked(&self) -> bool {
        let fd = self.master.as_raw_fd().expect("a unix pty");
        // SAFETY: `termios` is plain data, and tcgetattr only writes into it.
        let mut termios: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: fd is the open pty master; termios is a valid, writable struct.
        let read = unsafe { libc::tcgetattr(fd, &mut termios) };
        read == 0 && termios.c_lflag & libc::ICANON != 0 && termios.c_lflag & libc::ECHO != 0
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

/// Units that run one at a time against a model that takes a moment per reply: seconds to act in.
async fn slow_mission() -> FakeServer {
    let plan = (1..=4)
        .map(|n| PlanUnit::file(&format!("u{n}"), &format!("src/u{n}.txt"), &format!("unit {n}")))
        .collect();
    fake_with(
        Script {
            plan,
            ..Script::default()
        },
        FakeOptions {
            latency: Duration::from_millis(250),
            ..FakeOptions::default()
        },
    )
    .await
}

fn assert_terminal_restored(terminal: &Terminal, output: &str) {
    let entered = output.rfind(ENTER_ALTERNATE_SCREEN).expect("the view was shown");
    let left = output.rfind(LEAVE_ALTERNATE_SCREEN).unwrap_or(0);
    assert!(left > entered, "the alternate screen was never left");
    assert!(!terminal.emulated().screen().alternate_screen());
    assert!(terminal.cooked(), "raw mode was left on");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p_pauses_dispatch_on_screen_and_in_the_store_then_the_mission_seals() {
    let repo = TestRepo::new(&[]);
    let server = slow_mission().await;
    let mut terminal = Terminal::run(
        &repo,
        &server,
        &["task", "Write four files", "--max-parallel", "1"],
    );
    terminal
        .wait_for("u4 Create src/u4.txt", Duration::from_secs(20))
        .await;
    terminal.press("p");
    let screen = terminal.wait_for("PAUSED", Duration::from_secs(5)).await;
    assert!(screen.contains("p resume "), "{screen}");
    let logs = Run::cmd(&["logs", "--json"]).run(&repo).await;
    logs.assert_code(0);
    let paused = logs.events_of("dispatch_changed");
    assert_eq!(
        paused.first().map(|e| e["paused"].clone()),
        Some(serde_json::json!(true)),
        "{}",
        logs.stdout
    );
    terminal.press("p");
    let code = terminal.exit_code(Duration::from_secs(30)).await;
    let output = terminal.final_output().await;
    assert_eq!(code, 0, "{}", terminal.screen());
    assert_terminal_restored(&terminal, &output);
    let after_view = &output[output.rfind(LEAVE_ALTERNATE_SCREEN).unwrap_or(0)..];
    assert!(
        after_view.contains("SEALED — mission"),
        "the report follows the view: {after_view:?}"
    );
    let logs = Run::cmd(&["logs", "--json"]).run(&repo).await;
    let changes: Vec<_> = logs
        .events_of("dispatch_changed")
        .iter()
        .map(|e| e["paused"].clone())
        .collect();
    assert_eq!(changes, vec![serde_json::json!(true), serde_json::json!(false)]);
    assert_eq!(repo.read("src/u4.txt").as_deref(), Some("unit 4"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_then_y_stops_the_mission_resumably() {
    let repo = TestRepo::new(&[]);
    let server = slow_mission().await;
    let mut terminal = Terminal::run(
        &repo,
        &server,
        &["task", "Write four files", "--max-parallel", "1"],
    );
    terminal
        .wait_for("u4 Create src/u4.txt", Duration::from_secs(20))
        .await;
    terminal.press("c");
    terminal
        .wait_for("cancel the mission? y/n", Duration::from_secs(5))
        .await;
    terminal.press("y");
    let code = terminal.exit_code(Duration::from_secs(30)).await;
    let output = terminal.final_output().await;
    assert_eq!(code, 3, "{}", terminal.screen());
    assert_terminal_restored(&terminal, &output);
    assert!(output.contains("INTERRUPTED — mission"), "{output:?}");
    let status = Run::cmd(&["status", "--json"]).run(&repo).await;
    assert!(status.stdout.contains("interrupted"), "{}", status.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_lines_when_asked_for_even_on_a_terminal() {
    let repo = TestRepo::new(&[]);
    let server = fake(Script {
        plan: vec![PlanUnit::file("a", "a.txt", "alpha")],
        ..Script::default()
    })
    .await;
    let mut terminal = Terminal::run(&repo, &server, &["task", "Write a file", "--plain"]);
    let code = terminal.exit_code(Duration::from_secs(30)).await;
    let output = terminal.final_output().await;
    assert_eq!(code, 0, "{output}");
    assert!(!output.contains(ENTER_ALTERNATE_SCREEN), "{output:?}");
    assert!(output.contains("phase: execution"), "{output:?}");
}

/// Plan approval at the terminal (issue #17): the plan waits on screen, `r` sends it back with typed
/// feedback that reaches the planner, and `a` approves the new plan, which then runs to a seal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_rejects_with_feedback_and_a_approves_the_waiting_plan() {
    let repo = TestRepo::new(&[]);
    let server = slow_mission().await;
    let mut terminal = Terminal::run(
        &repo,
        &server,
        &[
            "task",
            "Write four files",
            "--approve-plan",
            "--max-parallel",
            "1",
        ],
    );
    let screen = terminal
        .wait_for("PLAN WAITS FOR YOUR APPROVAL", Duration::from_secs(20))
        .await;
    assert!(screen.contains("plan 1 · 4 unit(s)"), "{screen}");
    assert!(screen.contains("a approve plan"), "{screen}");
    assert!(
        requests_of(&server, "worker").is_empty(),
        "no worker runs while the plan waits"
    );
    let planners = requests_of(&server, "planner").len();
    // Typed feedback is text: its `c` and `a` do not cancel or approve.
    terminal.press("r");
    terminal.press("Fewer units, cat");
    terminal.press("\r");
    terminal
        .wait_for("plan 2 · 4 unit(s)", Duration::from_secs(20))
        .await;
    let replans = requests_of(&server, "planner");
    assert!(replans.len() > planners, "the planner ran again");
    assert!(
        replans
            .last()
            .is_some_and(|r| has_user_message(r, "Fewer units, cat")),
        "the feedback reached the planner"
    );
    assert!(requests_of(&server, "worker").is_empty(), "still nothing runs");
    terminal.press("a");
    let code = terminal.exit_code(Duration::from_secs(60)).await;
    let output = terminal.final_output().await;
    assert_eq!(code, 0, "{}", terminal.screen());
    assert_terminal_restored(&terminal, &output);
    assert_eq!(repo.read("src/u4.txt").as_deref(), Some("unit 4"));
    let logs = Run::cmd(&["logs", "--json"]).run(&repo).await;
    let answers: Vec<_> = logs
        .events_of("plan_answered")
        .iter()
        .map(|e| e["answer"].clone())
        .collect();
    assert_eq!(
        answers,
        vec![serde_json::json!("reject"), serde_json::json!("approve")],
        "{}",
        logs.stdout
    );
}

/// Editing the waiting plan as text (issue #17): `e` opens it in `$EDITOR` and the saved text is the
/// plan that runs. An editor that fails leaves the plan waiting, and the view comes back whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e_edits_the_waiting_plan_in_the_editor_and_the_edit_runs() {
    let repo = TestRepo::new(&[]);
    let server = slow_mission().await;
    // A stand-in for a person at an editor: the first time it gives up (exit 1), the second time it
    // keeps a copy of what it was shown and changes what unit 1 writes.
    let seen = repo.home().join("seen-plan.json");
    let editor = repo.home().join("edit-plan.sh");
    std::fs::write(
        &editor,
        format!(
            "#!/bin/sh\nif [ ! -e '{tried}' ]; then touch '{tried}'; exit 1; fi\ncp \"$1\" '{seen}'\nsed -i 's/:= unit 1/:= edited by hand/' \"$1\"\n",
            tried = repo.home().join("tried").display(),
            seen = seen.display(),
        ),
    )
    .expect("the editor script is written");
    let mut terminal = Terminal::run_with(
        &repo,
        &server,
        &[
            "task",
            "Write four files",
            "--approve-plan",
            "--max-parallel",
            "1",
        ],
        &[("EDITOR", &format!("sh {}", editor.display()))],
    );
    let screen = terminal
        .wait_for("PLAN WAITS FOR YOUR APPROVAL", Duration::from_secs(20))
        .await;
    assert!(screen.contains("e edit in $EDITOR"), "{screen}");
    terminal.press("e");
    terminal.wait_for("ended with", Duration::from_secs(20)).await;
    assert!(requests_of(&server, "worker").is_empty(), "the plan still waits");
    terminal.press("e");
    let code = terminal.exit_code(Duration::from_secs(60)).await;
    let output = terminal.final_output().await;
    assert_eq!(code, 0, "{}", terminal.screen());
    assert_terminal_restored(&terminal, &output);
    let shown = std::fs::read_to_string(&seen).expect("the editor was given the plan");
    let shown: serde_json::Value = serde_json::from_str(&shown).expect("the plan is JSON");
    assert_eq!(shown["tasks"].as_array().map(Vec::len), Some(4), "{shown}");
    assert_eq!(repo.read("src/u1.txt").as_deref(), Some("edited by hand"));
    assert_eq!(repo.read("src/u4.txt").as_deref(), Some("unit 4"));
    let logs = Run::cmd(&["logs", "--json"]).run(&repo).await;
    let answers: Vec<_> = logs
        .events_of("plan_answered")
        .iter()
        .map(|e| e["answer"].clone())
        .collect();
    assert_eq!(answers, vec![serde_json::json!("edit")], "{}", logs.stdout);
}
