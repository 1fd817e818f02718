//! Mission control (issue #17): every mission listed, an older one named with `--mission`, and an
//! interrupted mission never silently left behind by a new `task`.

use super::durability::{crash_then_resume, script};
use super::support::*;
use orchestrator_fake_model::script::{role_of, worker_unit, PlanUnit, Script};
use orchestrator_fake_model::{FakeServer, SeenRequest};

/// Kills `task "Crash and resume"` while unit b's worker is at work (worktrees and branches exist);
/// returns the fake server and the interrupted mission's id.
async fn interrupted_mission(repo: &TestRepo) -> (FakeServer, String) {
    let when = |r: &SeenRequest| {
        role_of(r) == "worker" && worker_unit(r).as_deref() == Some("b") && r.assistant_turns() >= 1
    };
    let (server, _) = crash_then_resume(Box::new(when), script(), repo).await;
    let listed = missions_json(repo).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["state"], "interrupted", "{listed:?}");
    assert_eq!(listed[0]["outcome"], "killed", "{listed:?}");
    assert_eq!(listed[0]["objective"], "Crash and resume");
    let id = listed[0]["id"].as_str().expect("an id").to_string();
    (server, id)
}

pub(super) async fn missions_json(repo: &TestRepo) -> Vec<serde_json::Value> {
    let listed = Run::cmd(&["missions", "--json"]).run(repo).await;
    listed.assert_code(0);
    serde_json::from_str(&listed.stdout).expect("missions --json is a JSON array")
}

fn mission_branches(repo: &TestRepo, id: &str) -> Vec<String> {
    let prefix = format!("orchestrator/{id}/");
    repo.branches()
        .into_iter()
        .filter(|b| b.starts_with(&prefix))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_mission_refuses_a_new_one_until_abandoned() {
    let repo = TestRepo::new(&[]);
    let (server, old) = interrupted_mission(&repo).await;
    let (branches, worktrees) = (repo.branches(), repo.worktrees());
    let main = repo.git(&["rev-parse", "main"]);
    assert!(!mission_branches(&repo, &old).is_empty() && worktrees.len() > 1);

    let refused = Run::task("Something else").openai(&server).run(&repo).await;
    refused.assert_code(2);
    for needed in [
        old.as_str(),
        "Crash and resume",
        "orchestrator resume",
        "orchestrator task --abandon",
    ] {
        assert!(refused.stderr.contains(needed), "{needed}: {}", refused.stderr);
    }
    assert_eq!(repo.branches(), branches, "branches untouched");
    assert_eq!(repo.worktrees(), worktrees, "worktrees untouched");
    assert_eq!(repo.git(&["rev-parse", "main"]), main);
    assert_eq!(missions_json(&repo).await.len(), 1, "no mission was recorded");

    let started = Run::task("Something else")
        .arg("--abandon")
        .arg("--json")
        .openai(&server)
        .run(&repo)
        .await;
    started.assert_code(0);
    assert!(
        started
            .notices()
            .iter()
            .any(|n| n.contains(&format!("abandoned mission {old}"))),
        "{:?}",
        started.notices()
    );
    assert_eq!(mission_branches(&repo, &old), Vec::<String>::new());
    assert_eq!(repo.worktrees().len(), 1, "{:?}", repo.worktrees());
    assert_eq!(
        repo.read("c.txt").as_deref(),
        Some("c\n"),
        "the new mission sealed and applied"
    );

    let listed = missions_json(&repo).await;
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert_eq!(
        (
            &listed[0]["objective"],
            &listed[0]["state"],
            &listed[0]["outcome"]
        ),
        (&"Something else".into(), &"finished".into(), &"sealed".into())
    );
    assert_eq!(
        (&listed[1]["id"], &listed[1]["objective"], &listed[1]["state"]),
        (
            &old.as_str().into(),
            &"Crash and resume".into(),
            &"abandoned".into()
        )
    );
    assert!(listed[1]["tokens"].as_u64() > Some(0), "{listed:?}");
    let table = Run::cmd(&["missions"]).run(&repo).await;
    table.assert_code(0);
    assert!(
        table.stdout.contains(&old) && table.stdout.contains("abandoned"),
        "{}",
        table.stdout
    );

    let kept = Run::cmd(&["status", "--mission", &old]).run(&repo).await;
    kept.assert_code(0);
    assert!(
        kept.stdout.contains("abandoned"),
        "its record stays: {}",
        kept.stdout
    );
    let log = Run::cmd(&["logs", "--mission", &old]).run(&repo).await;
    assert!(log.stdout.lines().count() > 5, "its log stays: {}", log.stdout);

    // An abandoned mission is never resumed; `resume` says what exists instead.
    let again = Run::cmd(&["resume"]).openai(&server).run(&repo).await;
    again.assert_code(2);
    assert!(again.stderr.contains("nothing to resume"), "{}", again.stderr);
    assert!(
        again.stderr.contains(&old) && again.stderr.contains("abandoned"),
        "{}",
        again.stderr
    );
    let named = Run::cmd(&["resume", "--mission", &old])
        .openai(&server)
        .run(&repo)
        .await;
    named.assert_code(2);
    assert!(named.stderr.contains("was abandoned"), "{}", named.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_mission_is_named_with_its_id_or_a_prefix() {
    let repo = TestRepo::new(&[]);
    let (server, old) = interrupted_mission(&repo).await;
    // The id's random tail dropped: still only this mission.
    let prefix = &old[..old.len() - 2];
    let resumed = Run::cmd(&["resume", "--mission", prefix, "--json"])
        .openai(&server)
        .run(&repo)
        .await;
    resumed.assert_code(0);
    // The first mission's files are on main now: the second one writes another.
    let second = fake(Script {
        plan: vec![PlanUnit::new("d", "D", "FILE d.txt := d\\n", &[])],
        ..Script::default()
    })
    .await;
    Run::task("Second objective")
        .openai(&second)
        .run(&repo)
        .await
        .assert_code(0);
    let listed = missions_json(&repo).await;
    let new = listed[0]["id"].as_str().expect("an id").to_string();
    assert_ne!(new, old);

    let status = Run::cmd(&["status", "--json", "--mission", &old])
        .run(&repo)
        .await;
    status.assert_code(0);
    let report: serde_json::Value = serde_json::from_str(&status.stdout).expect("status JSON");
    assert_eq!(
        (&report["mission"], &report["objective"]),
        (&old.as_str().into(), &"Crash and resume".into())
    );
    let latest = Run::cmd(&["status", "--json"]).run(&repo).await;
    assert!(
        latest.stdout.contains(&new),
        "the latest by default: {}",
        latest.stdout
    );

    let logs = Run::cmd(&["logs", "--json", "--mission", &old]).run(&repo).await;
    logs.assert_code(0);
    assert!(logs.stdout.lines().count() > 5);
    assert!(logs.stdout.lines().all(|l| l.contains(&old) && !l.contains(&new)));
    let report = Run::cmd(&["report", "--mission", prefix]).run(&repo).await;
    report.assert_code(0);
    assert!(report.stdout.contains("Crash and resume") && !report.stdout.contains("Second objective"));

    // Nothing interrupted: `resume` lists what exists.
    let nothing = Run::cmd(&["resume"]).openai(&server).run(&repo).await;
    nothing.assert_code(2);
    for needed in ["nothing to resume", old.as_str(), new.as_str(), "sealed"] {
        assert!(nothing.stderr.contains(needed), "{needed}: {}", nothing.stderr);
    }
    refused_ids(&repo, &old, &new).await;
}

/// Ids that name no mission, or more than one, are refused with exit 2 and the ids there are.
async fn refused_ids(repo: &TestRepo, old: &str, new: &str) {
    // Both ids start with "m" and the date.
    let both = Run::cmd(&["status", "--mission", "m"]).run(repo).await;
    both.assert_code(2);
    assert!(
        both.stderr.contains(old) && both.stderr.contains(new),
        "{}",
        both.stderr
    );
    for command in ["status", "logs", "report", "cancel", "resume"] {
        let unknown = Run::cmd(&[command, "--mission", "nope\u{7}"]).run(repo).await;
        unknown.assert_code(2);
        assert!(
            unknown.stderr.contains("no mission nope\\u{7}"),
            "{command}: {}",
            unknown.stderr
        );
        assert!(unknown.stderr.contains(new), "{command}: {}", unknown.stderr);
        assert!(unknown.stdout.is_empty(), "{command}: {}", unknown.stdout);
        let empty = Run::cmd(&[command, "--mission", ""]).run(repo).await;
        empty.assert_code(2);
        assert!(
            empty.stderr.contains("needs a mission id"),
            "{command}: {}",
            empty.stderr
        );
    }
}

#[tokio::test]
async fn a_repository_without_missions_lists_none() {
    let repo = TestRepo::new(&[]);
    let table = Run::cmd(&["missions"]).run(&repo).await;
    table.assert_code(0);
    assert!(table.stdout.contains("no mission has run"), "{}", table.stdout);
    assert_eq!(missions_json(&repo).await, Vec::<serde_json::Value>::new());

    let nothing = Run::cmd(&["resume"]).run(&repo).await;
    nothing.assert_code(2);
    assert!(
        nothing.stderr.contains("no mission has run"),
        "{}",
        nothing.stderr
    );

    let outside = tempfile::tempdir().expect("tempdir");
    let path = outside.path().to_string_lossy().to_string();
    let not_a_repo = Run::cmd(&["missions", "--repo", &path]).run(&repo).await;
    not_a_repo.assert_code(2);
    assert!(
        not_a_repo.stderr.contains("not inside a git repository"),
        "{}",
        not_a_repo.stderr
    );
}
