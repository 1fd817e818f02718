//! A model going round in circles is noticed and led out, whatever the endpoint: the same call again
//! is not run again, a session that must submit is left only its submit tool, a refused submission
//! sent again unchanged leaves the conversation, each repeat samples hotter, and a worker that keeps
//! repeating itself ends instead of spending its whole turn budget.

use super::support::*;
use orchestrator_fake_model::script::{role_of, PlanUnit, Script, ScriptedMission};
use orchestrator_fake_model::{Brain, FakeServer, Reply, SeenMessage, SeenRequest};

fn script() -> Script {
    Script {
        plan: vec![PlanUnit::file("a", "a.txt", "a")],
        ..Script::default()
    }
}

/// Plays the scripted mission, except where `stuck` answers first.
struct Looping<F>(ScriptedMission, F);

impl<F: Fn(&SeenRequest) -> Option<Reply> + Send + Sync + 'static> Brain for Looping<F> {
    fn respond(&self, request: &SeenRequest) -> Reply {
        (self.1)(request).unwrap_or_else(|| self.0.respond(request))
    }
}

async fn looping(stuck: impl Fn(&SeenRequest) -> Option<Reply> + Send + Sync + 'static) -> FakeServer {
    FakeServer::start(Looping(ScriptedMission::new(script()), stuck), Default::default())
        .await
        .expect("fake server")
}

fn call(name: &str, arguments: &str) -> Option<Reply> {
    Some(Reply::ToolCalls {
        text: String::new(),
        calls: vec![(name.into(), arguments.into())],
    })
}

/// How many model calls each worker session made.
fn worker_calls_per_session(done: &Finished) -> std::collections::BTreeMap<String, usize> {
    let mut calls = std::collections::BTreeMap::new();
    for call in done
        .events_of("model_call")
        .iter()
        .filter(|e| e["role"] == "worker")
    {
        *calls.entry(call["session"].to_string()).or_default() += 1;
    }
    calls
}

/// The summaries of `tool`'s calls in sessions whose id starts with `session`.
fn tool_summaries(done: &Finished, session: &str, tool: &str) -> Vec<String> {
    done.events_of("tool_called")
        .iter()
        .filter(|e| e["tool"] == tool && e["session"].as_str().is_some_and(|s| s.starts_with(session)))
        .filter_map(|e| e["summary"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planner_that_repeats_a_call_is_not_run_again_and_is_left_only_its_submit_tool() {
    let repo = TestRepo::new(&[]);
    // The planner lists the same folder for as long as it may; once only submit_plan is offered,
    // the script's plan goes in.
    let server = looping(|r| {
        (role_of(r) == "planner" && r.offers("list"))
            .then(|| call("list", r#"{"path": "."}"#))
            .flatten()
    })
    .await;
    let done = Run::task("Write a")
        .arg("--json")
        .openai(&server)
        .run(&repo)
        .await;
    done.assert_code(0);
    assert_eq!(repo.read("a.txt").as_deref(), Some("a"));
    let lists = tool_summaries(&done, "planner", "list");
    assert_eq!(lists.len(), 3, "{lists:?}");
    assert!(!lists[0].contains("not run"));
    assert!(
        lists[1..].iter().all(|s| s == "repeated call, not run"),
        "{lists:?}"
    );
    let planner = requests_of(&server, "planner");
    let last = planner.last().expect("planner requests");
    assert_eq!(last.tools, vec!["submit_plan".to_string()]);
    // Each repeat sampled hotter than the one before (the configured temperature is unset).
    let temperatures: Vec<Option<f64>> = planner.iter().map(|r| r.temperature).collect();
    // The turn after a repeat is the first to sample hotter.
    assert_eq!(temperatures[..2], [None, None]);
    assert!(
        temperatures[2].is_some_and(|t| (t - 0.3).abs() < 1e-6),
        "{temperatures:?}"
    );
    assert!(
        temperatures[3].is_some_and(|t| (t - 0.6).abs() < 1e-6),
        "{temperatures:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_plan_sent_again_unchanged_is_taken_out_of_the_conversation() {
    let repo = TestRepo::new(&[]);
    let bad = r#"{"tasks": [{"id": "a", "title": "A", "description": "a", "depends_on": ["a"]}]}"#;
    let server = looping(move |r| {
        let rewound = r.messages.iter().any(
            |m| matches!(m, SeenMessage::User { text } if text.contains("taken out of this conversation")),
        );
        (role_of(r) == "planner" && !rewound)
            .then(|| call("submit_plan", bad))
            .flatten()
    })
    .await;
    let done = Run::task("Write a")
        .arg("--json")
        .openai(&server)
        .run(&repo)
        .await;
    done.assert_code(0);
    assert_eq!(
        done.events_of("plan_rejected").len(),
        1,
        "the repeat was not judged again"
    );
    let after = requests_of(&server, "planner")
        .into_iter()
        .find(|r| {
            r.messages.iter().any(
                |m| matches!(m, SeenMessage::User { text } if text.contains("taken out of this conversation")),
            )
        })
        .expect("a planner request after the rewind");
    let bad_calls = after
        .messages
        .iter()
        .filter(|m| matches!(m, SeenMessage::Assistant { tool_calls, .. } if tool_calls.iter().any(|c| c.name == "submit_plan")))
        .count();
    assert_eq!(bad_calls, 0, "the refused plan is gone from the history");
    let note = after
        .messages
        .iter()
        .find_map(|m| match m {
            SeenMessage::User { text } if text.contains("taken out") => Some(text.clone()),
            _ => None,
        })
        .unwrap_or_default();
    assert!(note.contains("depends on itself"), "{note}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_keeps_repeating_one_call_ends_instead_of_spending_its_turns() {
    let config = "[verify]\ntest = \"true\"\n[limits]\nunit_attempts = 1\n[roles.worker]\nmax_turns = 30\n";
    let repo = TestRepo::new(&[("orchestrator.toml", config)]);
    let server = looping(|r| {
        (role_of(r) == "worker")
            .then(|| call("list", r#"{"path": "."}"#))
            .flatten()
    })
    .await;
    let done = Run::task("Write a")
        .arg("--json")
        .openai(&server)
        .run(&repo)
        .await;
    done.assert_code(1);
    // In each worker session: one real call, two repeats answered with a note, and the third
    // repeat ends the session, far inside its 30 turns.
    let calls_per_session = worker_calls_per_session(&done);
    assert!(!calls_per_session.is_empty());
    assert!(
        calls_per_session.values().all(|n| *n == 4),
        "{calls_per_session:?}"
    );
    let lists = tool_summaries(&done, "worker", "list");
    assert_eq!(
        lists.iter().filter(|s| !s.contains("not run")).count(),
        calls_per_session.len(),
        "{lists:?}"
    );
    assert!(repo.read("a.txt").is_none());
    // Having changed nothing, the worker is told to make its change, not invited to answer.
    let told = requests_of(&server, "worker")
        .iter()
        .flat_map(|r| r.messages.clone())
        .filter_map(|m| match m {
            SeenMessage::Tool { content, .. } if content.contains("Not run") => Some(content),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        told.contains("You have changed no file yet") && !told.contains("answer with a short summary"),
        "{told}"
    );
}

/// What the 1.5B did: `read calc.py`, a failing `edit`, `read calc.py`, the same failing `edit`, …
/// No turn repeats the one before, but nothing changed in between, so each repeat gets the result it
/// already has, and the loop ends far inside the turn budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_alternating_a_read_and_a_failing_edit_is_caught() {
    let config = "[verify]\ntest = \"true\"\n[limits]\nunit_attempts = 1\n[roles.worker]\nmax_turns = 30\n";
    let repo = TestRepo::new(&[
        ("orchestrator.toml", config),
        ("calc.py", "def add(a, b):\n    return a + b\n"),
    ]);
    let server = looping(|r| {
        if role_of(r) != "worker" {
            return None;
        }
        if r.assistant_turns() % 2 == 0 {
            call("read", r#"{"path": "calc.py"}"#)
        } else {
            call(
                "edit",
                r#"{"path": "calc.py", "old_string": "from calc import add", "new_string": "from calc import mul"}"#,
            )
        }
    })
    .await;
    let done = Run::task("Add mul")
        .arg("--json")
        .openai(&server)
        .run(&repo)
        .await;
    done.assert_code(1);
    // Each worker session (one per round): read, edit, two repeats answered with a note, and the
    // third ends it, far inside its 30 turns.
    let calls_per_session = worker_calls_per_session(&done);
    assert!(
        !calls_per_session.is_empty() && calls_per_session.values().all(|n| *n == 5),
        "{calls_per_session:?}"
    );
    let edits = tool_summaries(&done, "worker", "edit");
    assert_eq!(
        edits.iter().filter(|s| !s.contains("not run")).count(),
        calls_per_session.len(),
        "the failing edit ran once per session: {edits:?}"
    );
    let failed = done.events_of("unit_state");
    assert!(
        failed
            .iter()
            .any(|e| e["state"] == "failed" && e["detail"].to_string().contains("round in circles")),
        "{failed:?}"
    );
}

/// The obedient case beside it: the same `read` after an `edit` that took is a new look at a changed
/// file, and runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_after_a_change_is_not_a_repeat() {
    let config = "[verify]\ntest = \"true\"\n";
    let repo = TestRepo::new(&[
        ("orchestrator.toml", config),
        ("calc.py", "def add(a, b):\n    return a + b\n"),
    ]);
    let server = looping(|r| {
        if role_of(r) != "worker" {
            return None;
        }
        match r.assistant_turns() {
            0 => call("read", r#"{"path": "calc.py"}"#),
            1 => call(
                "edit",
                r#"{"path": "calc.py", "old_string": "return a + b", "new_string": "return b + a"}"#,
            ),
            2 => call("read", r#"{"path": "calc.py"}"#),
            _ => Some(Reply::Text("Swapped the operands.".into())),
        }
    })
    .await;
    let done = Run::task("Swap").arg("--json").openai(&server).run(&repo).await;
    done.assert_code(0);
    let reads = tool_summaries(&done, "worker", "read");
    assert!(reads.iter().all(|s| !s.contains("not run")), "{reads:?}");
    assert_eq!(reads.len(), 2);
    assert!(repo.read("calc.py").unwrap_or_default().contains("return b + a"));
}

/// What the 1.5B did in its second attempt: read two files, write the same content into a third,
/// and again, for twenty turns. The second identical write changes nothing and says so, so the
/// next round of the cycle repeats calls whose results the session has, and the session ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_writing_the_same_content_again_and_again_is_caught() {
    let config = "[verify]\ntest = \"true\"\n[limits]\nunit_attempts = 1\n[roles.worker]\nmax_turns = 30\n";
    let repo = TestRepo::new(&[("orchestrator.toml", config), ("x.txt", "x\n")]);
    let server = looping(|r| {
        (role_of(r) == "worker")
            .then(|| match r.assistant_turns() % 2 {
                0 => call("read", r#"{"path": "x.txt"}"#),
                _ => call("write", r#"{"path": "y.txt", "content": "NO CHANGE NEEDED"}"#),
            })
            .flatten()
    })
    .await;
    let done = Run::task("Write a")
        .arg("--json")
        .openai(&server)
        .run(&repo)
        .await;
    done.assert_code(1);
    let told = requests_of(&server, "worker").iter().any(|r| {
        r.messages.iter().any(
            |m| matches!(m, SeenMessage::Tool { content, .. } if content.contains("would change nothing")),
        )
    });
    assert!(told, "the model was told the second write changed nothing");
    let calls_per_session = worker_calls_per_session(&done);
    // read, write (took), read, write (changes nothing), then three repeats: far inside 30 turns.
    assert!(
        calls_per_session.values().all(|n| *n <= 8),
        "{calls_per_session:?}"
    );
}

/// A blind overwrite is refused; once the model has read the file, the very same write is a new
/// call (what it knows changed), and runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_write_after_reading_the_file_is_not_a_repeat() {
    let config = "[verify]\ntest = \"true\"\n";
    let old: String = (1..=9).map(|i| format!("line {i}\n")).collect();
    let repo = TestRepo::new(&[("orchestrator.toml", config), ("calc.py", old.as_str())]);
    let write = r#"{"path": "calc.py", "content": "def mul(a, b):\n    return a * b\n"}"#;
    let server = looping(move |r| {
        if role_of(r) != "worker" {
            return None;
        }
        match r.assistant_turns() {
            0 | 2 | 4 | 6 => call("write", write),
            1 | 3 | 5 => call("read", r#"{"path": "calc.py"}"#),
            _ => Some(Reply::Text("Replaced calc.py.".into())),
        }
    })
    .await;
    let done = Run::task("Replace")
        .arg("--json")
        .openai(&server)
        .run(&repo)
        .await;
    done.assert_code(0);
    let writes = tool_summaries(&done, "worker", "write");
    assert_eq!(writes.len(), 4, "{writes:?}");
    assert!(!writes[1].contains("not run"), "{writes:?}");
    // The third write (after another read) changes nothing and says so; the fourth, nothing having
    // changed since, is not run and quotes that answer (the latest), not the first refusal, which
    // no longer holds.
    assert!(
        !writes[2].contains("not run") && writes[3].contains("not run"),
        "{writes:?}"
    );
    let results: Vec<String> = requests_of(&server, "worker")
        .last()
        .map(|r| {
            r.messages
                .iter()
                .filter_map(|m| match m {
                    SeenMessage::Tool { content, .. } => Some(content.clone()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let last = results.last().cloned().unwrap_or_default();
    assert!(
        last.contains("already holds exactly this content") && !last.contains("not read in full"),
        "{last}"
    );
    assert_eq!(
        repo.read("calc.py").as_deref(),
        Some("def mul(a, b):\n    return a * b\n")
    );
}

/// Whether the conversation already holds the engine's note on a reply that fell into a loop.
fn told_of_a_loop(request: &SeenRequest) -> bool {
    request
        .messages
        .iter()
        .any(|m| matches!(m, SeenMessage::User { text } if text.contains("fell into a loop")))
}

/// What the 0.5B planner did under a grammar: two tasks, then the same two again and again until
/// its token limit (two minutes each on two cores). The reply is cut off a few copies in, the model
/// is told what it repeated, and the next reply (sampled hotter) is the plan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planner_reply_that_falls_into_a_loop_is_cut_off_and_the_planner_told() {
    let repo = TestRepo::new(&[]);
    let pair = r#"{"id":"add","title":"Add","description":"Add two numbers","depends_on":["sub"]},{"id":"sub","title":"Subtract","description":"Subtract them","depends_on":["add"]},"#;
    let server = looping(move |r| {
        (role_of(r) == "planner" && !told_of_a_loop(r)).then(|| Reply::Flood { piece: pair.into() })
    })
    .await;
    let done = Run::task("Write a")
        .arg("--json")
        .openai(&server)
        .run(&repo)
        .await;
    done.assert_code(0);
    assert_eq!(repo.read("a.txt").as_deref(), Some("a"));
    let planner = requests_of(&server, "planner");
    let after = planner
        .iter()
        .find(|r| told_of_a_loop(r))
        .expect("a planner request after the loop");
    let (cut, note) = after
        .messages
        .iter()
        .rev()
        .find_map(|m| match m {
            SeenMessage::User { text } if text.contains("fell into a loop") => Some(text.clone()),
            _ => None,
        })
        .map(|note| {
            let cut = after.messages.iter().find_map(|m| match m {
                SeenMessage::Assistant { text, .. } if !text.is_empty() => Some(text.clone()),
                _ => None,
            });
            (cut.unwrap_or_default(), note)
        })
        .unwrap_or_default();
    assert!(
        note.contains("times in a row") && note.contains("nothing in it was run"),
        "{note}"
    );
    assert!(note.len() < 400, "{note}");
    // The history keeps two copies of the piece, not the loop.
    assert!(cut.len() <= 2 * pair.len(), "{} bytes: {cut}", cut.len());
    // The next reply was sampled hotter, like any other bad reply repeated.
    assert!(
        after.temperature.is_some_and(|t| t > 0.0),
        "{:?}",
        after.temperature
    );
    // The cut reply's tokens count (estimated, as the server's own count never came).
    let first = done
        .events_of("model_call")
        .into_iter()
        .find(|e| e["role"] == "planner")
        .expect("a planner call");
    assert!(
        first["usage"]["output_tokens"].as_u64().unwrap_or(0) >= 256,
        "{first}"
    );
}

/// A worker whose every reply loops is corrected a bounded number of times, then its unit fails with
/// the reason; each reply is cut off after a few kilobytes, never read to a limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_only_loops_fails_its_unit_with_the_reason() {
    let config = "[verify]\ntest = \"true\"\n[limits]\nunit_attempts = 1\n";
    let repo = TestRepo::new(&[("orchestrator.toml", config)]);
    let server = looping(|r| {
        (role_of(r) == "worker").then(|| Reply::Flood {
            piece: "    return a * b\n".into(),
        })
    })
    .await;
    let done = Run::task("Write a")
        .arg("--json")
        .openai(&server)
        .run(&repo)
        .await;
    done.assert_code(1);
    let failed = done.events_of("unit_state");
    assert!(
        failed
            .iter()
            .any(|e| e["state"] == "failed" && e["detail"].to_string().contains("fell into a loop")),
        "{failed:?}"
    );
    let calls_per_session = worker_calls_per_session(&done);
    assert!(!calls_per_session.is_empty());
    assert!(
        calls_per_session.values().all(|n| *n == 4),
        "one reply and three corrections per session: {calls_per_session:?}"
    );
    assert!(repo.read("a.txt").is_none());
}

/// Learning a new file un-repeats only writes (whose blind-overwrite answer it can change), not
/// reads: the 1.5B planner read its three files twice over while each new file reset the watch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_a_new_file_does_not_make_an_old_read_new() {
    let repo = TestRepo::new(&[("x.txt", "x\n"), ("y.txt", "y\n")]);
    let server = looping(|r| {
        if role_of(r) != "planner" || !r.offers("read") {
            return None;
        }
        match r.assistant_turns() {
            0 | 2 => call("read", r#"{"path": "x.txt"}"#),
            1 => call("read", r#"{"path": "y.txt"}"#),
            _ => None,
        }
    })
    .await;
    let done = Run::task("Write a")
        .arg("--json")
        .openai(&server)
        .run(&repo)
        .await;
    done.assert_code(0);
    let reads = tool_summaries(&done, "planner", "read");
    assert_eq!(reads.len(), 3, "{reads:?}");
    assert_eq!(reads[2], "repeated call, not run", "{reads:?}");
}

/// A plan that leaves out what the objective names as code (the field's 1.5B planned "add(a, b)
/// function" for an objective asking for `mul`) is sent back once, naming it; a planner that sends
/// the same plan again gets it taken, so the rule cannot loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_that_leaves_out_what_the_objective_names_is_sent_back_once() {
    let repo = TestRepo::new(&[]);
    let wrong =
        r#"{"tasks": [{"id": "a", "title": "Add a", "description": "FILE a.txt := a", "depends_on": []}]}"#;
    let server = looping(move |r| {
        (role_of(r) == "planner")
            .then(|| call("submit_plan", wrong))
            .flatten()
    })
    .await;
    let done = Run::task("Write the function mul(a, b) in a.txt")
        .arg("--json")
        .openai(&server)
        .run(&repo)
        .await;
    done.assert_code(0);
    let rejected = done.events_of("plan_rejected");
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    let problems = rejected[0]["problems"].to_string();
    assert!(
        problems.contains("`mul`") && problems.contains("no task mentions"),
        "{problems}"
    );
    let accepted = done.events_of("plan_accepted");
    assert_eq!(
        accepted[0]["units"][0]["title"], "Add a",
        "the same plan, taken the second time"
    );
}
