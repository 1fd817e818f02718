//! A mission's notices through a real webhook receiver on 127.0.0.1 and a stand-in for
//! `notify-send`: delivered when it obeys, retried a bounded number of times when it fails,
//! given up without holding the mission when it hangs.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use orchestrator_notify::{DesktopMode, MissionContext, Notifier, NotifySettings};
use orchestrator_protocol::{Event, EventEnvelope, Outcome, TokenUsage, UnitState};
use serde_json::Value;
use tokio::sync::mpsc;

/// How the receiver answers: a status per request, in order (the last one repeats), and whether
/// it answers at all.
#[derive(Clone)]
struct Receiver {
    got: Arc<Mutex<Vec<Value>>>,
    answers: Arc<Mutex<Vec<StatusCode>>>,
    hang: bool,
}

async fn receive(State(receiver): State<Receiver>, Json(body): Json<Value>) -> StatusCode {
    receiver.got.lock().expect("lock").push(body);
    if receiver.hang {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    let mut answers = receiver.answers.lock().expect("lock");
    if answers.len() > 1 {
        answers.remove(0)
    } else {
        answers.first().copied().unwrap_or(StatusCode::OK)
    }
}

async fn start_receiver(answers: &[StatusCode], hang: bool) -> (String, Receiver) {
    let receiver = Receiver {
        got: Arc::default(),
        answers: Arc::new(Mutex::new(answers.to_vec())),
        hang,
    };
    let app = Router::new()
        .route("/hooks/secret-token", post(receive))
        .with_state(receiver.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!(
        "http://{}/hooks/secret-token",
        listener.local_addr().expect("addr")
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, receiver)
}

fn envelope(seq: u64, event: Event) -> Arc<EventEnvelope> {
    Arc::new(EventEnvelope {
        seq,
        at: chrono::Utc::now(),
        mission: "m20261203-1".into(),
        event,
    })
}

fn finished(outcome: Outcome) -> Event {
    Event::MissionFinished {
        outcome,
        summary: "all 3 units merged and verified".into(),
        usage: TokenUsage::default(),
        result_commit: Some("abc123".into()),
        unverified: false,
    }
}

fn context() -> MissionContext {
    MissionContext {
        repo: "/work/app".into(),
        objective: "Add a --verbose flag".into(),
    }
}

fn webhook_only(url: &str) -> NotifySettings {
    NotifySettings {
        desktop: DesktopMode::Off,
        webhook: Some(url.to_string()),
        ..NotifySettings::default()
    }
}

/// Sends `events` through a notifier and finishes it, as a mission's end does.
async fn run(settings: &NotifySettings, events: Vec<Event>, limit: Duration) {
    let (tx, rx) = mpsc::unbounded_channel();
    let notifier = Notifier::start(settings, context(), rx);
    for (seq, event) in events.into_iter().enumerate() {
        let _ = tx.send(envelope(seq as u64, event));
    }
    notifier.finish(limit).await;
}

#[tokio::test]
async fn a_mission_end_and_a_failed_unit_reach_the_webhook_and_progress_does_not() {
    let (url, receiver) = start_receiver(&[StatusCode::OK], false).await;
    let events = vec![
        Event::UnitState {
            unit: "t1".into(),
            state: UnitState::Running,
            attempt: 1,
            detail: None,
        },
        Event::UnitState {
            unit: "t2".into(),
            state: UnitState::Failed,
            attempt: 3,
            detail: Some("did not pass after 3 attempts".into()),
        },
        Event::Notice {
            message: "for the views only".into(),
        },
        finished(Outcome::Sealed),
    ];
    run(&webhook_only(&url), events, Duration::from_secs(30)).await;
    let got = receiver.got.lock().expect("lock").clone();
    let kinds: Vec<&str> = got.iter().filter_map(|n| n["kind"].as_str()).collect();
    assert_eq!(kinds, ["unit_failed", "mission_finished"], "{got:#?}");
    assert_eq!(got[0]["unit"], "t2");
    assert_eq!(got[1]["mission"], "m20261203-1");
    assert_eq!(got[1]["outcome"], "sealed");
    assert_eq!(got[1]["objective"], "Add a --verbose flag");
    assert_eq!(got[1]["needs_attention"], false);
    assert_eq!(got[1]["message"], "all 3 units merged and verified");
}

#[tokio::test]
async fn a_receiver_that_fails_twice_gets_the_notice_on_the_third_attempt() {
    let answers = [
        StatusCode::SERVICE_UNAVAILABLE,
        StatusCode::TOO_MANY_REQUESTS,
        StatusCode::OK,
    ];
    let (url, receiver) = start_receiver(&answers, false).await;
    run(
        &webhook_only(&url),
        vec![finished(Outcome::Unsealed)],
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(receiver.got.lock().expect("lock").len(), 3);
}

#[tokio::test]
async fn attempts_are_bounded_and_a_refusal_is_not_retried() {
    let (url, receiver) = start_receiver(&[StatusCode::INTERNAL_SERVER_ERROR], false).await;
    run(
        &webhook_only(&url),
        vec![finished(Outcome::Unsealed)],
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(
        receiver.got.lock().expect("lock").len(),
        3,
        "three attempts, then given up"
    );

    let (url, receiver) = start_receiver(&[StatusCode::NOT_FOUND], false).await;
    run(
        &webhook_only(&url),
        vec![finished(Outcome::Unsealed)],
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(
        receiver.got.lock().expect("lock").len(),
        1,
        "a 404 will not change on retry"
    );
}

#[tokio::test]
async fn a_hanging_receiver_does_not_hold_the_mission_past_the_limit() {
    let (url, receiver) = start_receiver(&[StatusCode::OK], true).await;
    // Bounded by the test's own timeout: finish returns after its limit although the receiver
    // never answers.
    tokio::time::timeout(
        Duration::from_secs(60),
        run(
            &webhook_only(&url),
            vec![finished(Outcome::Sealed)],
            Duration::from_millis(500),
        ),
    )
    .await
    .expect("finish returned");
    assert_eq!(receiver.got.lock().expect("lock").len(), 1);
}

#[tokio::test]
async fn an_unreachable_webhook_is_given_up_after_its_attempts() {
    // A port nothing listens on (bound, then closed).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    drop(listener);
    tokio::time::timeout(
        Duration::from_secs(60),
        run(
            &webhook_only(&url),
            vec![finished(Outcome::Sealed)],
            Duration::from_secs(30),
        ),
    )
    .await
    .expect("finish returned");
}

#[tokio::test]
async fn the_desktop_command_gets_the_title_and_message_after_a_double_dash() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("args.txt");
    let script = dir.path().join("notify-send");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\" >> '{}'; done\n",
            out.display()
        ),
    )
    .expect("write");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let settings = NotifySettings {
        desktop: DesktopMode::On,
        desktop_command: Some(script),
        webhook: None,
    };
    let hostile = Event::MissionFinished {
        outcome: Outcome::Unsealed,
        summary: "--help; $(touch /tmp/owned)".into(),
        usage: TokenUsage::default(),
        result_commit: None,
        unverified: false,
    };
    run(&settings, vec![hostile], Duration::from_secs(30)).await;
    let args = std::fs::read_to_string(&out).expect("the command ran");
    let args: Vec<&str> = args.lines().collect();
    assert_eq!(
        args,
        [
            "--app-name=orchestrator",
            "--urgency=critical",
            "--",
            "Mission not sealed: Add a --verbose flag",
            "--help; $(touch /tmp/owned)",
        ]
    );
}
