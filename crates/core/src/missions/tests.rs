use orchestrator_protocol::Outcome;

use super::*;
use crate::test_repo::{committed_repo, git};

/// A pid no process has: above every kernel's pid_max.
const DEAD: u32 = u32::MAX;

fn record(id: &str, status: MissionStatus, pid: Option<u32>) -> MissionRecord {
    MissionRecord {
        id: id.into(),
        objective: format!("objective of {id}"),
        base_commit: "0".repeat(40),
        user_branch: Some("main".into()),
        integration_branch: format!("orchestrator/{id}/integration"),
        options: serde_json::json!({}),
        status,
        pid,
        created_at: String::new(),
        updated_at: String::new(),
    }
}

/// A store in `dir` holding the given missions, created in order (the last is the newest).
fn store_with(dir: &Path, missions: &[MissionRecord]) -> Store {
    let store = Store::open(&dir.join("state.db")).unwrap();
    for m in missions {
        store.create_mission(m).unwrap();
        // create_mission records every mission as it is given; the status is set as a run would.
        store.set_status(&m.id, m.status, m.pid).unwrap();
    }
    store
}

fn usage_text(result: Result<MissionRecord>) -> String {
    match result {
        Err(EngineError::Usage(text)) => text,
        other => panic!("expected a usage error, got {other:?}"),
    }
}

#[test]
fn a_mission_is_named_by_its_id_or_a_unique_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with(
        dir.path(),
        &[
            record("m20250101-120000-aaaa", MissionStatus::Sealed, None),
            record("m20250101-120000-aabb", MissionStatus::Sealed, None),
            record("m20250102-090000-cccc", MissionStatus::Interrupted, None),
        ],
    );
    let id = |wanted| find_mission(&store, wanted).unwrap().id;
    assert_eq!(id(None), "m20250102-090000-cccc", "the latest by default");
    assert_eq!(id(Some("m20250101-120000-aaaa")), "m20250101-120000-aaaa");
    assert_eq!(id(Some("m20250102")), "m20250102-090000-cccc");
    assert_eq!(
        id(Some("  m20250101-120000-aab ")),
        "m20250101-120000-aabb",
        "trimmed"
    );

    let both = usage_text(find_mission(&store, Some("m20250101")));
    assert!(
        both.contains("m20250101-120000-aaaa") && both.contains("m20250101-120000-aabb"),
        "{both}"
    );
    assert!(both.contains("give more of the id"), "{both}");

    let empty = usage_text(find_mission(&store, Some(" ")));
    assert!(empty.contains("--mission needs a mission id"), "{empty}");

    let garbage = usage_text(find_mission(&store, Some("zz\u{1b}[31m%")));
    assert!(
        garbage.contains("no mission zz\\u{1b}[31m%"),
        "escaped: {garbage}"
    );
    assert!(
        garbage.contains("m20250102-090000-cccc"),
        "names the known ones: {garbage}"
    );
    assert!(garbage.contains("orchestrator missions"), "{garbage}");
}

#[test]
fn an_empty_store_names_no_mission() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with(dir.path(), &[]);
    assert!(usage_text(find_mission(&store, None)).contains("no mission has run"));
    assert!(usage_text(find_mission(&store, Some("m1"))).contains("no mission has run here yet"));
}

#[test]
fn a_mission_marked_running_without_its_process_is_interrupted() {
    let me = Some(std::process::id());
    let state = |status, pid| MissionState::of(&record("m", status, pid));
    assert_eq!(state(MissionStatus::Running, me), MissionState::Running);
    assert_eq!(
        state(MissionStatus::Running, Some(DEAD)),
        MissionState::Interrupted
    );
    assert_eq!(state(MissionStatus::Running, None), MissionState::Interrupted);
    assert_eq!(state(MissionStatus::Interrupted, None), MissionState::Interrupted);
    assert_eq!(state(MissionStatus::Unsealed, None), MissionState::Finished);
    assert_eq!(state(MissionStatus::Abandoned, None), MissionState::Abandoned);
}

#[test]
fn a_repository_lists_its_interrupted_missions_for_resume() {
    let dir = tempfile::tempdir().unwrap();
    assert!(interrupted(dir.path()).unwrap().is_empty(), "no store: none");
    let state = dir.path().join(crate::STATE_DIR);
    std::fs::create_dir(&state).unwrap();
    assert!(interrupted(dir.path()).unwrap().is_empty(), "no store yet: none");
    store_with(
        &state,
        &[
            record("killed", MissionStatus::Running, Some(DEAD)),
            record("live", MissionStatus::Running, Some(std::process::id())),
            record("done", MissionStatus::Sealed, None),
        ],
    );
    // A live mission's process holds the repository's lock.
    let _lock = crate::lock::RepoLock::acquire(&state, "live").unwrap();
    let ids: Vec<String> = interrupted(dir.path())
        .unwrap()
        .into_iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(ids, vec!["killed"], "neither the live nor the finished one");
}

#[test]
fn only_missions_without_a_live_process_block_a_new_one() {
    let dir = tempfile::tempdir().unwrap();
    // A process that is alive but not the mission's: a killed mission's pid, reused since.
    let mut bystander = std::process::Command::new("sleep").arg("30").spawn().unwrap();
    let store = store_with(
        dir.path(),
        &[
            record("reused", MissionStatus::Running, Some(bystander.id())),
            record("killed", MissionStatus::Running, Some(DEAD)),
            record("live", MissionStatus::Running, Some(std::process::id())),
            record("stopped", MissionStatus::Interrupted, None),
            record("done", MissionStatus::Sealed, None),
            record("gone", MissionStatus::Abandoned, None),
        ],
    );
    let ids = |lock_held| -> Vec<String> {
        interrupted_missions(&store, lock_held)
            .unwrap()
            .into_iter()
            .map(|m| m.id)
            .collect()
    };
    // The live mission's process holds the repository's lock.
    let lock = crate::lock::RepoLock::acquire(dir.path(), "live").unwrap();
    // Without the lock a live mission is the lock's to refuse (exit 4); with it, none is live.
    assert_eq!(ids(false), vec!["stopped", "killed", "reused"]);
    drop(lock);
    assert_eq!(ids(true), vec!["stopped", "live", "killed", "reused"]);
    let _ = bystander.kill();
    let _ = bystander.wait();

    let EngineError::Usage(text) = refuse_new_mission(&interrupted_missions(&store, false).unwrap()) else {
        panic!("a refusal is a usage error");
    };
    assert!(text.contains("stopped") && text.contains("killed"), "{text}");
    assert!(text.contains("orchestrator resume --mission stopped"), "{text}");
    assert!(text.contains("orchestrator task --abandon"), "{text}");
}

#[test]
fn nothing_to_resume_lists_what_exists() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with(
        dir.path(),
        &[
            record("m-old", MissionStatus::Abandoned, None),
            record("m-new", MissionStatus::Sealed, None),
        ],
    );
    let EngineError::Usage(text) = nothing_to_resume(&store, None) else {
        panic!("usage error");
    };
    assert!(text.contains("nothing to resume"), "{text}");
    assert!(
        text.contains("m-new  sealed") && text.contains("m-old  abandoned"),
        "{text}"
    );
    let old = store.mission("m-old").unwrap().unwrap();
    let EngineError::Usage(text) = nothing_to_resume(&store, Some(&old)) else {
        panic!("usage error");
    };
    assert!(text.contains("m-old was abandoned"), "{text}");
}

fn finished(mission: &str, seq: u64, outcome: Outcome) -> EventEnvelope {
    EventEnvelope {
        seq,
        at: Utc::now(),
        mission: mission.into(),
        event: Event::MissionFinished {
            outcome,
            summary: String::new(),
            usage: TokenUsage::default(),
            result_commit: None,
            unverified: false,
        },
    }
}

fn notice(mission: &str, seq: u64) -> EventEnvelope {
    EventEnvelope {
        seq,
        at: Utc::now(),
        mission: mission.into(),
        event: Event::Notice {
            message: "working".into(),
        },
    }
}

#[test]
fn the_list_says_how_each_last_run_ended() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join(crate::STATE_DIR);
    std::fs::create_dir(&state).unwrap();
    let store = store_with(
        &state,
        &[
            record("killed", MissionStatus::Running, Some(DEAD)),
            record("cancelled", MissionStatus::Interrupted, None),
            record("sealed", MissionStatus::Sealed, None),
        ],
    );
    store.append_event(&notice("killed", 0)).unwrap();
    store.append_event(&notice("cancelled", 0)).unwrap();
    store
        .append_event(&finished("cancelled", 1, Outcome::Interrupted))
        .unwrap();
    store
        .append_event(&finished("sealed", 0, Outcome::Sealed))
        .unwrap();

    let list = missions(dir.path()).unwrap();
    let row = |id: &str| list.iter().find(|m| m.id == id).unwrap().clone();
    assert_eq!(
        list.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(),
        ["sealed", "cancelled", "killed"]
    );
    assert_eq!(
        (row("killed").state, row("killed").outcome.as_deref()),
        (MissionState::Interrupted, Some("killed"))
    );
    assert_eq!(row("cancelled").outcome.as_deref(), Some("interrupted"));
    assert_eq!(row("cancelled").ended_at, None, "not over");
    assert_eq!(row("sealed").state, MissionState::Finished);
    assert_eq!(row("sealed").outcome.as_deref(), Some("sealed"));
    assert!(row("sealed").ended_at.is_some() && row("sealed").started_at.is_some());

    let none = tempfile::tempdir().unwrap();
    assert!(missions(none.path()).unwrap().is_empty(), "no store, no missions");
}

#[test]
fn long_objectives_are_shortened_on_a_character_boundary() {
    assert_eq!(shorten("short", 10), "short");
    assert_eq!(shorten("exactly10!", 10), "exactly10!");
    assert_eq!(shorten("ééééééééééé", 5), "éééé…");
}

#[tokio::test]
async fn abandoning_removes_only_that_missions_work_and_keeps_its_record() {
    let (dir, repo) = committed_repo().await;
    let root = dir.path();
    let worktrees = root.join(crate::STATE_DIR).join("worktrees");
    std::fs::create_dir_all(&worktrees).unwrap();
    for mission in ["m-old", "m-other"] {
        git(root, &["branch", &format!("orchestrator/{mission}/integration")]);
        let path = worktrees.join(mission).join("u1");
        let path = path.to_string_lossy();
        git(
            root,
            &[
                "worktree",
                "add",
                "-q",
                "-b",
                &format!("orchestrator/{mission}/u/u1"),
                &path,
            ],
        );
    }
    // A kill mid-write: uncommitted work in the worktree.
    std::fs::write(worktrees.join("m-old/u1/half.txt"), "half").unwrap();
    let store = store_with(
        &root.join(crate::STATE_DIR),
        &[
            record("m-old", MissionStatus::Running, Some(DEAD)),
            record("m-other", MissionStatus::Interrupted, None),
        ],
    );
    store.append_event(&notice("m-old", 0)).unwrap();

    let old = store.mission("m-old").unwrap().unwrap();
    let said = abandon(&repo, &store, &old).await.unwrap();
    assert!(said.contains("removed 1 worktree(s) and 2 branch(es)"), "{said}");

    let branches = repo.branches_with_prefix("orchestrator/").await.unwrap();
    assert_eq!(
        branches,
        ["orchestrator/m-other/integration", "orchestrator/m-other/u/u1"]
    );
    assert!(!worktrees.join("m-old").exists());
    assert!(
        worktrees.join("m-other/u1").is_dir(),
        "another mission's worktree stays"
    );
    let old = store.mission("m-old").unwrap().unwrap();
    assert_eq!(old.status, MissionStatus::Abandoned);
    assert_eq!(
        store.events_after("m-old", None).unwrap().len(),
        1,
        "its log stays"
    );
}

#[tokio::test]
async fn cancel_never_signals_a_process_that_only_inherited_a_killed_missions_pid() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join(crate::STATE_DIR);
    std::fs::create_dir(&state).unwrap();
    // After a kill -9 the record still says running, and its pid now names an unrelated process.
    let mut bystander = std::process::Command::new("sleep").arg("30").spawn().unwrap();
    store_with(
        &state,
        &[record(
            "m20250101-120000-dead",
            MissionStatus::Running,
            Some(bystander.id()),
        )],
    );
    std::fs::write(
        state.join("lock"),
        format!("mission m20250101-120000-dead, pid {}", bystander.id()),
    )
    .unwrap();
    let said = crate::status::cancel_mission(dir.path(), None, std::time::Duration::from_secs(1))
        .await
        .unwrap();
    assert!(said.contains("is not running"), "{said}");
    assert!(
        bystander.try_wait().unwrap().is_none(),
        "the bystander was not signalled"
    );
    let _ = bystander.kill();
    let _ = bystander.wait();
}
