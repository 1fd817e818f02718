//! `[notify]`: the end of a mission reaches a webhook and the desktop command; a bad webhook URL is
//! a configuration error before anything is spent.

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::Value;

use super::support::*;
use orchestrator_fake_model::script::{PlanUnit, Script};

async fn webhook_receiver() -> (String, Arc<Mutex<Vec<Value>>>) {
    let got: Arc<Mutex<Vec<Value>>> = Arc::default();
    let app = Router::new()
        .route(
            "/hook",
            post(
                |State(got): State<Arc<Mutex<Vec<Value>>>>, Json(body): Json<Value>| async move {
                    got.lock().expect("lock").push(body);
                    "ok"
                },
            ),
        )
        .with_state(got.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_end_of_a_mission_reaches_the_webhook_and_the_desktop() {
    let (url, got) = webhook_receiver().await;
    let repo = TestRepo::new(&[]);
    let shown = repo.home().join("shown.txt");
    let script = repo.home().join("notify-send");
    std::fs::write(
        &script,
        format!("#!/bin/sh\nprintf '%s\\n' \"$@\" >> '{}'\n", shown.display()),
    )
    .expect("write");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let config = format!(
        "[verify]\ntest = \"true\"\n[notify]\ndesktop = true\ndesktop_command = \"{}\"\nwebhook = \"{url}\"\n",
        script.display()
    );
    repo.write("orchestrator.toml", &config);
    repo.git(&["add", "."]);
    repo.git(&["commit", "-qm", "config"]);
    let server = fake(Script {
        plan: vec![PlanUnit::file("a", "a.txt", "a")],
        ..Script::default()
    })
    .await;
    let done = Run::task("Add a.txt")
        .arg("--json")
        .openai(&server)
        .run(&repo)
        .await;
    done.assert_code(0);
    let got = got.lock().expect("lock").clone();
    let finished: Vec<&Value> = got.iter().filter(|n| n["kind"] == "mission_finished").collect();
    assert_eq!(finished.len(), 1, "{got:#?}");
    let mission = done.events_of("mission_started")[0]["mission"].clone();
    assert_eq!(finished[0]["mission"], mission);
    assert_eq!(finished[0]["outcome"], "sealed");
    assert_eq!(finished[0]["objective"], "Add a.txt");
    let shown = std::fs::read_to_string(&shown).expect("the desktop command ran");
    assert!(shown.contains("Mission sealed: Add a.txt"), "{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_that_is_not_a_url_is_refused_before_anything_starts() {
    for bad in ["hooks.example.com/x", "file:///etc/passwd"] {
        let config = format!("[verify]\ntest = \"true\"\n[notify]\nwebhook = \"{bad}\"\n");
        let repo = TestRepo::new(&[("orchestrator.toml", &config)]);
        let server = fake(Script::default()).await;
        let done = Run::task("Anything").openai(&server).run(&repo).await;
        done.assert_code(2);
        assert!(
            done.stderr.contains("[notify] webhook: invalid webhook"),
            "{bad}: {}",
            done.stderr
        );
        assert!(server.requests().is_empty(), "no model call with a broken config");
    }
    let repo = TestRepo::new(&[("orchestrator.toml", "[notify]\ndesktop = \"sometimes\"\n")]);
    let server = fake(Script::default()).await;
    let done = Run::task("Anything").openai(&server).run(&repo).await;
    done.assert_code(2);
    assert!(
        done.stderr
            .contains("`desktop` is \"auto\", \"on\", \"off\", true or false"),
        "{}",
        done.stderr
    );
}
