//! Prompt caching across the sessions of a mission: every worker's request begins with the same
//! bytes (tools, system prompt, the mission's objective and context), each turn's request begins
//! with the whole of the turn before, and the fake's prompt cache reports the reads that earns.

use std::collections::BTreeMap;

use super::support::*;
use orchestrator_fake_model::cache::PromptPiece;
use orchestrator_fake_model::script::{PlanUnit, Script};
use orchestrator_fake_model::{FakeServer, SeenRequest};

const UNITS: usize = 10;

fn script() -> Script {
    Script {
        plan: (1..=UNITS)
            .map(|i| PlanUnit::file(&format!("u{i}"), &format!("out/{i}.txt"), &format!("{i}")))
            .collect(),
        ..Script::default()
    }
}

fn joined(pieces: &[PromptPiece]) -> String {
    pieces
        .iter()
        .map(|p| p.text.as_str())
        .collect::<Vec<_>>()
        .join("\u{1}")
}

fn common_prefix<'a>(a: &'a str, b: &str) -> &'a str {
    let mut end = 0;
    for ((i, x), y) in a.char_indices().zip(b.chars()) {
        if x != y {
            break;
        }
        end = i + x.len_utf8();
    }
    &a[..end]
}

/// Worker requests by session (told by the task it was given), each in arrival order.
fn sessions(server: &FakeServer) -> BTreeMap<String, Vec<SeenRequest>> {
    let mut by_task: BTreeMap<String, Vec<SeenRequest>> = BTreeMap::new();
    for request in requests_of(server, "worker") {
        by_task
            .entry(request.first_user_text().to_string())
            .or_default()
            .push(request);
    }
    by_task
}

fn check_layout(server: &FakeServer, done: &Finished, api: &str) {
    let sessions = sessions(server);
    assert_eq!(sessions.len(), UNITS, "{api}: one worker per unit");
    // Across workers: the same tools and system prompt, and the task starts with the same text.
    let firsts: Vec<String> = sessions.values().map(|turns| joined(&turns[0].prompt)).collect();
    let shared = firsts
        .iter()
        .skip(1)
        .fold(firsts[0].as_str(), |prefix, other| common_prefix(prefix, other));
    assert!(
        shared.contains("# Objective of the mission") && shared.contains("# Mission context"),
        "{api}: the workers' prompts part before the mission's context: …{}",
        &shared[shared.len().saturating_sub(300)..]
    );
    let tools = sessions.values().next().map_or(0, |turns| turns[0].tools.len());
    assert!(tools > 0);
    // Turn by turn: each request begins with every piece of the one before (breakpoints move, and
    // are no part of the text a cache compares).
    let texts = |r: &SeenRequest| r.prompt.iter().map(|p| p.text.clone()).collect::<Vec<_>>();
    for (task, turns) in &sessions {
        assert!(turns.len() >= 2, "{api}: a worker takes a few turns");
        for pair in turns.windows(2) {
            let (before, after) = (texts(&pair[0]), texts(&pair[1]));
            assert!(
                after.len() > before.len() && after[..before.len()] == before[..],
                "{api}: the prompt of {task:?} did not grow from the turn before"
            );
        }
    }
    // Reviewers too share their tools and system prompt, byte for byte, across units.
    let reviews = requests_of(server, "reviewer");
    assert_eq!(reviews.len(), UNITS, "{api}: one review per unit");
    let stable = reviews[0].tools.len() + 1;
    let heads: Vec<Vec<String>> = reviews
        .iter()
        .map(|r| r.prompt.iter().take(stable).map(|p| p.text.clone()).collect())
        .collect();
    assert!(
        heads.windows(2).all(|w| w[0] == w[1]),
        "{api}: reviewers' prefixes differ"
    );
    // The fake's cache saw it: every worker call but the mission's very first read from it.
    let calls = done.events_of("model_call");
    let worker: Vec<&serde_json::Value> = calls.iter().filter(|e| e["role"] == "worker").collect();
    let cold = worker
        .iter()
        .filter(|e| e["usage"]["cache_read_tokens"].as_u64().unwrap_or(0) == 0)
        .count();
    assert!(
        cold <= 1,
        "{api}: {cold} of {} worker calls read nothing cached",
        worker.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_share_one_prefix_that_grows_turn_by_turn_openai() {
    let repo = TestRepo::new(&[]);
    let server = fake(script()).await;
    let done = Run::task("Ten files")
        .arg("--json")
        .openai(&server)
        .run(&repo)
        .await;
    done.assert_code(0);
    check_layout(&server, &done, "openai");
    let keys: Vec<Option<String>> = requests_of(&server, "worker")
        .into_iter()
        .map(|r| r.prompt_cache_key)
        .collect();
    assert!(
        keys.iter()
            .all(|k| k.as_deref().is_some_and(|k| k.ends_with(":worker"))),
        "{keys:?}"
    );
    assert!(
        keys.windows(2).all(|w| w[0] == w[1]),
        "one key for every worker: {keys:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_share_one_prefix_that_grows_turn_by_turn_anthropic() {
    let repo = TestRepo::new(&[]);
    let server = fake(script()).await;
    let done = Run::task("Ten files")
        .arg("--json")
        .arg("--provider")
        .arg("anthropic")
        .env("ANTHROPIC_BASE_URL", &server.anthropic_base_url())
        .env("ANTHROPIC_API_KEY", "test-key")
        .run(&repo)
        .await;
    done.assert_code(0);
    check_layout(&server, &done, "anthropic");
    for request in server.requests() {
        let marks = request.prompt.iter().filter(|p| p.breakpoint).count();
        assert!((1..=4).contains(&marks), "{marks} breakpoints");
    }
    // Each worker's task opens with the mission's objective and context as a marked block of its
    // own, the same for all: the cache serves it to every worker after the first.
    let heads: Vec<PromptPiece> = requests_of(&server, "worker")
        .iter()
        .filter_map(|r| r.prompt.iter().find(|p| p.text.starts_with("user:")).cloned())
        .collect();
    assert!(heads
        .iter()
        .all(|h| h.breakpoint && h.text.contains("# Mission context")));
    assert!(
        heads.iter().all(|h| !h.text.contains("# Your unit")),
        "{:?}",
        heads[0]
    );
    assert!(heads.windows(2).all(|w| w[0] == w[1]));
}
