//! Specialist reviewers (issue #18): a role file named after no built-in role, with `kind: reviewer`
//! or `kind: master_reviewer`, named in `[review] extra` / `extra_master`, judges each unit or the
//! whole after the built-in reviewer passed it.

use super::support::*;
use orchestrator_fake_model::script::{specialist_of, PlanUnit, Script};

const SECURITY: &str = "---\nkind: reviewer\ndescription: looks for holes\nmax_tokens: 222\n---\n\
                        You audit for security holes. SECURITY-MARKER\nFAILS 1 Escape the shell argument\n";

fn reviews_by(done: &Finished, reviewer: Option<&str>) -> Vec<serde_json::Value> {
    done.events_of("review_finished")
        .into_iter()
        .filter(|e| e["reviewer"].as_str() == reviewer)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_specialist_sends_the_unit_back_and_the_second_attempt_merges() {
    let repo = TestRepo::new(&[
        ("orchestrator.toml", "[review]\nextra = [\"security-reviewer\"]\n"),
        (".orchestrator/roles/security-reviewer.md", SECURITY),
    ]);
    let server = fake(Script {
        plan: vec![PlanUnit::new(
            "a",
            "Alpha",
            "FILE a.txt := first\nFIX a.txt := second",
            &[],
        )],
        ..Script::default()
    })
    .await;
    let done = Run::task("Write a")
        .arg("--json")
        .openai(&server)
        .run(&repo)
        .await;
    done.assert_code(0);
    assert_eq!(repo.read("a.txt").as_deref(), Some("second"));

    // Attempt 1: the unit's own review passed, the specialist failed it; attempt 2 passed both.
    let own: Vec<(u64, String)> = reviews_by(&done, None)
        .iter()
        .filter(|e| e["unit"] == "a")
        .map(|e| {
            (
                e["attempt"].as_u64().unwrap_or(0),
                e["review"]["verdict"].to_string(),
            )
        })
        .collect();
    assert_eq!(own, [(1, "\"pass\"".to_string()), (2, "\"pass\"".to_string())]);
    let special: Vec<(u64, String)> = reviews_by(&done, Some("security-reviewer"))
        .iter()
        .map(|e| {
            (
                e["attempt"].as_u64().unwrap_or(0),
                e["review"]["verdict"].to_string(),
            )
        })
        .collect();
    assert_eq!(
        special,
        [(1, "\"fail\"".to_string()), (2, "\"pass\"".to_string())]
    );
    assert_eq!(done.events_of("merged").len(), 1);

    // The worker heard the specialist's issue, as from a failed review.
    assert!(requests_of(&server, "worker").iter().any(|r| {
        has_user_message(r, "Stage 1 review by the security-reviewer specialist failed")
            && has_user_message(r, "Escape the shell argument")
    }));
    // The specialist runs as a reviewer with its own prompt and settings; the unit's reviewer does not
    // get them.
    let reviewers = requests_of(&server, "reviewer");
    let (specialists, own): (Vec<_>, Vec<_>) = reviewers.iter().partition(|r| specialist_of(r).is_some());
    assert!(!specialists.is_empty() && !own.is_empty());
    for request in specialists {
        assert!(
            request.system.starts_with(
                "# Role: reviewer\n# Specialist: security-reviewer\nYou audit for security holes."
            ),
            "{}",
            request.system
        );
        assert_eq!(request.max_tokens, Some(222));
    }
    for request in own {
        assert!(!request.system.contains("SECURITY-MARKER"));
        assert_ne!(request.max_tokens, Some(222));
    }

    let listed = Run::cmd(&["roles", "list"]).run(&repo).await;
    listed.assert_code(0);
    assert!(
        listed.stdout.contains(
            "security-reviewer  .orchestrator/roles/security-reviewer.md (specialist, kind: reviewer)"
        ),
        "{}",
        listed.stdout
    );
    let shown = Run::cmd(&["roles", "show", "security-reviewer"]).run(&repo).await;
    shown.assert_code(0);
    assert!(
        shown
            .stdout
            .contains("role: security-reviewer (specialist reviewer, kind: reviewer)")
            && shown
                .stdout
                .contains("# Specialist: security-reviewer\nYou audit")
            && shown.stdout.contains(".orchestrator/roles/security-reviewer.md"),
        "{}",
        shown.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_master_specialist_becomes_follow_up_work() {
    let repo = TestRepo::new(&[
        (
            "orchestrator.toml",
            "[review]\nextra_master = [\"whole-audit\"]\n",
        ),
        (
            ".orchestrator/roles/whole-audit.md",
            "---\nkind: master_reviewer\n---\nAudit the whole.\nFAILS 1 FILE audit.txt := audited\n",
        ),
    ]);
    let server = fake(Script {
        plan: vec![PlanUnit::file("a", "a.txt", "alpha")],
        ..Script::default()
    })
    .await;
    let done = Run::task("Write a")
        .arg("--json")
        .openai(&server)
        .run(&repo)
        .await;
    done.assert_code(0);
    assert_eq!(
        repo.read("audit.txt").as_deref(),
        Some("audited"),
        "the follow-up unit ran"
    );
    let verdicts: Vec<(u64, String)> = reviews_by(&done, Some("whole-audit"))
        .iter()
        .map(|e| {
            assert!(e["unit"].is_null());
            (
                e["attempt"].as_u64().unwrap_or(0),
                e["review"]["verdict"].to_string(),
            )
        })
        .collect();
    assert_eq!(
        verdicts,
        [(1, "\"fail\"".to_string()), (2, "\"pass\"".to_string())]
    );
    // Each round, the master review ran first and passed.
    let masters: Vec<String> = reviews_by(&done, None)
        .iter()
        .filter(|e| e["unit"].is_null())
        .map(|e| e["review"]["verdict"].to_string())
        .collect();
    assert_eq!(masters, ["\"pass\"", "\"pass\""]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_or_kindless_specialist_is_refused_before_any_model_call() {
    let server = fake(Script::default()).await;
    /// The repository's files, and what the refusal must say.
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str]);
    let cases: &[Case] = &[
        (
            &[("orchestrator.toml", "[review]\nextra = [\"nope\"]\n")],
            &[
                "`[review] extra` names `nope`",
                ".orchestrator/roles/nope.md",
                "kind: reviewer",
            ],
        ),
        (
            &[
                ("orchestrator.toml", "[review]\nextra = [\"whole-audit\"]\n"),
                (
                    ".orchestrator/roles/whole-audit.md",
                    "---\nkind: master_reviewer\n---\nAudit.\n",
                ),
            ],
            &[
                "`[review] extra` names `whole-audit`",
                "`kind: master_reviewer`",
                "extra_master",
            ],
        ),
        (
            &[(
                ".orchestrator/roles/security-reviewer.md",
                "---\nmodel: m\n---\nAudit.\n",
            )],
            &[
                ".orchestrator/roles/security-reviewer.md is a specialist reviewer",
                "sets no `kind`",
            ],
        ),
        (
            &[(".orchestrator/roles/sec.md", "---\nkind: judge\n---\nAudit.\n")],
            &[".orchestrator/roles/sec.md sets `kind` to `judge`"],
        ),
    ];
    for (files, expected) in cases {
        let repo = TestRepo::new(files);
        let done = Run::task("Anything").openai(&server).run(&repo).await;
        done.assert_code(2);
        for text in *expected {
            assert!(done.stderr.contains(text), "{text}: {}", done.stderr);
        }
    }
    assert!(server.requests().is_empty(), "no model call");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_best_of_n_pick_is_judged_by_the_specialists_too() {
    let repo = TestRepo::new(&[
        ("orchestrator.toml", "[review]\nextra = [\"security-reviewer\"]\n"),
        (".orchestrator/roles/security-reviewer.md", SECURITY),
    ]);
    let server = fake(Script {
        plan: vec![PlanUnit::new(
            "a",
            "Alpha",
            "CANDIDATE 1: FILE a.txt := one\nCANDIDATE 2: FILE a.txt := two\nFIX a.txt := fixed\nPICK 2 two is better",
            &[],
        )],
        ..Script::default()
    })
    .await;
    let done = Run::task("Write a")
        .arg("--attempts")
        .arg("2")
        .arg("--json")
        .openai(&server)
        .run(&repo)
        .await;
    done.assert_code(0);
    assert_eq!(done.events_of("candidate_picked")[0]["candidate"], 2);
    // The pick passed the comparing review, the specialist failed it; its worker fixed it.
    assert_eq!(repo.read("a.txt").as_deref(), Some("fixed"));
    let special: Vec<(u64, String)> = reviews_by(&done, Some("security-reviewer"))
        .iter()
        .map(|e| {
            (
                e["attempt"].as_u64().unwrap_or(0),
                e["review"]["verdict"].to_string(),
            )
        })
        .collect();
    assert_eq!(
        special,
        [(1, "\"fail\"".to_string()), (2, "\"pass\"".to_string())]
    );
}

/// Killed when the specialist is first asked (the unit's own review of attempt 1 is logged, the
/// specialist's verdict is not): the resumed mission does not merge on the own review alone, and does
/// not ask the own reviewer again; the specialist fails the attempt and the fixed one merges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_mission_never_merges_past_a_missing_or_failed_specialist_verdict() {
    let repo = TestRepo::new(&[
        ("orchestrator.toml", "[review]\nextra = [\"security-reviewer\"]\n"),
        (".orchestrator/roles/security-reviewer.md", SECURITY),
    ]);
    let script = Script {
        plan: vec![PlanUnit::new(
            "a",
            "Alpha",
            "FILE a.txt := first\nFIX a.txt := second",
            &[],
        )],
        ..Script::default()
    };
    let when: super::durability::Trigger = Box::new(|r| specialist_of(r).is_some());
    let (server, _) = super::durability::crash_then_resume(when, script, &repo).await;
    let done = Run::cmd(&["resume", "--json"]).openai(&server).run(&repo).await;
    done.assert_code(0);
    assert_eq!(
        repo.read("a.txt").as_deref(),
        Some("second"),
        "the specialist's fail was acted on"
    );
    let reviewers = requests_of(&server, "reviewer");
    let (specialists, own): (Vec<_>, Vec<_>) = reviewers.iter().partition(|r| specialist_of(r).is_some());
    assert_eq!(own.len(), 2, "the own review of attempt 1 was not asked again");
    // Killed at one, then a fail sent back once (its quote, `first`, is too short to confirm), the
    // fail again, recorded, and the pass.
    assert_eq!(specialists.len(), 4, "killed at one, then fail, fail and pass");
}
