//! Bounded, whatever the model sends: a tool call with huge arguments is refused with the numbers and
//! never resent, and big arguments that are allowed run in full but stay short in the history that
//! every later turn resends.

mod support;

use orchestrator_fake_model::script::{PlanUnit, Script};
use orchestrator_fake_model::SeenMessage;
use support::*;

/// The largest tool-call arguments any worker request carried in its history.
fn largest_history_arguments(server: &orchestrator_fake_model::FakeServer) -> usize {
    requests_of(server, "worker")
        .iter()
        .flat_map(|r| r.messages.clone())
        .filter_map(|m| match m {
            SeenMessage::Assistant { tool_calls, .. } => tool_calls.iter().map(|c| c.arguments.len()).max(),
            _ => None,
        })
        .max()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_arguments_are_refused_and_big_ones_stay_out_of_the_history() {
    let repo = TestRepo::new(&[]);
    let script = Script {
        plan: vec![PlanUnit::new(
            "a",
            "Write files",
            "BIGFILE big.txt 200000\nBIGFILE huge.txt 3000000\nFILE a.txt := a",
            &[],
        )],
        ..Script::default()
    };
    let server = fake(script).await;
    let done = Run::task("Write files").openai(&server).run(&repo).await;
    done.assert_code(0);
    // Allowed: written whole.
    assert_eq!(repo.read("big.txt").map(|t| t.len()), Some(200_000));
    // Refused, with the numbers, and the unit went on.
    assert_eq!(repo.read("huge.txt"), None);
    let refusal = tool_results(&server)
        .into_iter()
        .find(|(name, output, _)| name == "write" && output.contains("Not run: the arguments"))
        .expect("the refusal went back to the model");
    assert!(
        refusal.1.contains("one call may carry at most 1048576 bytes"),
        "{}",
        refusal.1
    );
    assert_eq!(repo.read("a.txt").as_deref(), Some("a"));
    // Neither was resent turn after turn.
    let largest = largest_history_arguments(&server);
    assert!(largest < 4_000, "the history resent {largest} bytes of arguments");
}

/// A worker that "answers" with a call to a tool that does not exist is corrected (with the real
/// tools), never taken as done; one that keeps at it fails its unit instead of passing review.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_to_an_invented_tool_is_not_an_answer() {
    let config = "[verify]\ntest = \"true\"\n[limits]\nunit_attempts = 1\n";
    let repo = TestRepo::new(&[("orchestrator.toml", config)]);
    let script = Script {
        plan: vec![PlanUnit::new(
            "a",
            "Multiply",
            "FILE calc.py := def mul(a, b): return a * b\nANSWER {\"name\": \"mul\", \"arguments\": {\"a\": 2, \"b\": 3}}",
            &[],
        )],
        ..Script::default()
    };
    let server = fake(script).await;
    let done = Run::task("Multiply")
        .arg("--rounds")
        .arg("1")
        .openai(&server)
        .run(&repo)
        .await;
    done.assert_code(1);
    let corrected = requests_of(&server, "worker").iter().any(|r| {
        r.messages.iter().any(|m| {
            matches!(m, SeenMessage::User { text } if text.starts_with("There is no tool `mul`") && text.contains("write"))
        })
    });
    assert!(corrected, "the worker was told the real tools");
    assert!(
        requests_of(&server, "reviewer").is_empty(),
        "the invented call never reached a review"
    );
}
