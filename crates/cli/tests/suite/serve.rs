//! `orchestrator serve`: the real binary on a free loopback port, driven over HTTP like a browser or a
//! script would, with missions played by the scripted fake model.

use std::time::Duration;

use super::durability::{crash_playing, script};
use super::missions::missions_json;
use super::support::*;
use eventsource_stream::Eventsource;
use futures::StreamExt;
use orchestrator_fake_model::script::{role_of, worker_unit, PlanUnit, Script, ScriptedMission};
use orchestrator_fake_model::{Brain, FakeOptions, FakeServer, Reply, SeenRequest};
use reqwest::StatusCode;
use serde_json::{json, Value};

const TOKEN: &str = "t0ken-for-the-serve-test";

/// A running `orchestrator serve` and where it listens.
struct Served {
    child: tokio::process::Child,
    base: String,
    /// The token the server made and printed, sent with every request below; `None` when the test
    /// gave it one (then the requests below go without, and the test sends it itself).
    token: Option<String>,
    http: reqwest::Client,
    /// What the server printed on stdout so far.
    printed: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Served {
    /// Starts `orchestrator serve` as `run` says, in the repository, and waits for the address it prints.
    async fn start(repo: &TestRepo, run: Run) -> Served {
        let Serving {
            child,
            base,
            first_line,
            second_line,
            token,
            mut lines,
        } = spawn_serve(repo, run).await;
        let printed = std::sync::Arc::new(std::sync::Mutex::new(vec![first_line, second_line]));
        // Keep reading, so the server never blocks on a full pipe.
        let sink = printed.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                sink.lock().expect("printed lines").push(line);
            }
        });
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("HTTP client");
        Served {
            child,
            base,
            token,
            http,
            printed,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A request with the server's token, when the test knows it from what the server printed.
    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.http.request(method, self.url(path));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let response = self
            .request(reqwest::Method::GET, path)
            .send()
            .await
            .expect("GET answers");
        reply(response).await
    }

    async fn post(&self, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut request = self.request(reqwest::Method::POST, path);
        if let Some(body) = body {
            request = request.json(&body);
        }
        reply(request.send().await.expect("POST answers")).await
    }

    async fn start_mission(&self, repo: &TestRepo, objective: &str) -> (StatusCode, Value) {
        let body = json!({ "repo": repo.path(), "objective": objective });
        self.post("/api/missions", Some(body)).await
    }

    /// Every event of the mission's stream, until the server ends it.
    async fn follow(&self, mission: &str, limit: Duration) -> Vec<Value> {
        let response = self
            .request(reqwest::Method::GET, &format!("/api/missions/{mission}/events"))
            .send()
            .await
            .expect("the event stream opens");
        assert_eq!(response.status(), StatusCode::OK);
        let mut stream = response.bytes_stream().eventsource();
        let mut events = Vec::new();
        let read = async {
            while let Some(Ok(event)) = stream.next().await {
                let envelope: Value = serde_json::from_str(&event.data).expect("event data is JSON");
                assert_eq!(
                    event.id,
                    envelope["seq"].to_string(),
                    "the SSE id is the sequence number"
                );
                events.push(envelope);
            }
        };
        tokio::time::timeout(limit, read)
            .await
            .expect("the stream ends after the mission finished");
        events
    }

    /// SIGTERM, then the exit status.
    async fn stop(mut self) -> Option<i32> {
        if let Some(pid) = self.child.id() {
            // SAFETY: signals the server process this test started.
            unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        }
        let status = tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .expect("serve stops within 60 s of SIGTERM")
            .expect("serve is waited for");
        status.code()
    }
}

async fn reply(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

/// `serve` on a free loopback port for `repo`, making its own token (whatever the test's environment).
fn serve_args(repo: &TestRepo) -> Run {
    Run::cmd(&["serve", "--bind", "127.0.0.1:0", "--repo"])
        .arg(&repo.path().display().to_string())
        .without_env("ORCHESTRATOR_TOKEN")
}

fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

fn two_units() -> Script {
    Script {
        plan: vec![
            PlanUnit::file("a", "src/a.txt", "alpha"),
            PlanUnit::file("b", "src/b.txt", "beta"),
        ],
        ..Script::default()
    }
}

fn of_type<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == kind).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mission_started_over_http_streams_its_events_and_seals() {
    let repo = TestRepo::new(&[]);
    // Slow enough that the mission is still running for the conflict and pause checks below.
    let options = FakeOptions {
        latency: Duration::from_millis(300),
        ..FakeOptions::default()
    };
    let model = fake_with(two_units(), options).await;
    let served = Served::start(&repo, serve_args(&repo).openai(&model)).await;

    let (status, started) = served.start_mission(&repo, "Add two files").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{started}");
    let id = started["id"].as_str().expect("the mission's id").to_string();
    assert_eq!(started["url"], format!("/api/missions/{id}"));

    // One mission per repository: a second start while it runs is a conflict, in the engine's words.
    let (status, busy) = served.start_mission(&repo, "Another").await;
    assert_eq!(status, StatusCode::CONFLICT, "{busy}");
    assert!(busy["error"].as_str().unwrap_or_default().contains(&id), "{busy}");

    let (status, paused) = served.post(&format!("/api/missions/{id}/pause"), None).await;
    assert_eq!(
        (status, &paused["paused"]),
        (StatusCode::OK, &json!(true)),
        "{paused}"
    );
    let (status, resumed) = served.post(&format!("/api/missions/{id}/resume"), None).await;
    assert_eq!(
        (status, &resumed["paused"]),
        (StatusCode::OK, &json!(false)),
        "{resumed}"
    );

    let events = served.follow(&id, Duration::from_secs(180)).await;
    let seqs: Vec<u64> = events.iter().filter_map(|e| e["seq"].as_u64()).collect();
    assert_eq!(
        seqs,
        (0..seqs.len() as u64).collect::<Vec<_>>(),
        "every event once, in order"
    );
    assert_eq!(events[0]["type"], "mission_started");
    let last = events.last().expect("events");
    assert_eq!(
        (&last["type"], &last["outcome"]),
        (&json!("mission_finished"), &json!("sealed"))
    );
    assert!(
        !of_type(&events, "dispatch_changed").is_empty(),
        "pause and resume are in the stream"
    );

    let (status, detail) = served.get(&format!("/api/missions/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(detail["outcome"], "sealed");
    assert_eq!(detail["status"], "sealed");
    assert_eq!(detail["running"], false);
    assert_eq!(detail["counts"]["passed"], 2, "{}", detail["counts"]);
    assert_eq!(detail["tree"].as_array().map(Vec::len), Some(2));

    let (_, list) = served.get("/api/missions").await;
    let listed = &list["missions"][0];
    assert_eq!(
        (&listed["id"], &listed["outcome"]),
        (&json!(id), &json!("sealed"))
    );

    let (status, late) = served.post(&format!("/api/missions/{id}/cancel"), None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{late}");
    assert_eq!(repo.read("src/a.txt").as_deref(), Some("alpha"));
    assert_eq!(repo.read("src/b.txt").as_deref(), Some("beta"));

    // The mission's state is the user's alone: transcripts hold whatever the agents saw.
    let state = repo.path().join(".orchestrator");
    assert_eq!(mode(&state), 0o700, "the state folder");
    for file in ["state.db", "state.db-wal", "state.db-shm"] {
        let path = state.join(file);
        if path.exists() {
            assert_eq!(mode(&path), 0o600, "{file}");
        }
    }
    assert_eq!(mode(&state.join("state.db")), 0o600);
    assert_eq!(served.stop().await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_and_shutdown_stop_missions_resumably() {
    let repo = TestRepo::new(&[]);
    let options = FakeOptions {
        latency: Duration::from_millis(800),
        ..FakeOptions::default()
    };
    let model = fake_with(two_units(), options).await;
    let served = Served::start(&repo, serve_args(&repo).openai(&model)).await;

    let (status, started) = served.start_mission(&repo, "Add two files").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{started}");
    let first = started["id"].as_str().expect("id").to_string();
    let (status, cancelled) = served.post(&format!("/api/missions/{first}/cancel"), None).await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    let (_, detail) = served.get(&format!("/api/missions/{first}")).await;
    assert_eq!(
        (&detail["status"], &detail["running"]),
        (&json!("interrupted"), &json!(false))
    );
    assert_eq!(detail["outcome"], "interrupted");

    // No new mission beside the cancelled one: it is resumed instead. Still running when the server
    // is told to stop, it is cancelled cleanly too.
    let (status, refused) = served.start_mission(&repo, "Add two files again").await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    assert!(error_of(&refused).contains(&first), "{refused}");
    let (status, resumed) = served.post(&format!("/api/missions/{first}/resume"), None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{resumed}");
    let second = resumed["id"].as_str().expect("id").to_string();
    assert_eq!(second, first);
    assert_eq!(served.stop().await, Some(0));
    let status = Run::cmd(&["status", "--json"]).run(&repo).await;
    status.assert_code(0);
    let report: Value = serde_json::from_str(&status.stdout).expect("status JSON");
    assert_eq!(
        (&report["mission"], &report["status"]),
        (&json!(second), &json!("interrupted"))
    );
    assert_eq!(repo.worktrees().len(), 1, "no worktree left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mission_run_by_the_cli_is_watched_and_cancelled_from_the_server() {
    let repo = TestRepo::new(&[]);
    let options = FakeOptions {
        latency: Duration::from_millis(800),
        ..FakeOptions::default()
    };
    let model = fake_with(two_units(), options).await;
    let mut task = Run::task("Add two files")
        .openai(&model)
        .command(&repo)
        .spawn()
        .expect("orchestrator task starts");
    let served = Served::start(&repo, serve_args(&repo)).await;

    let mut listed = Value::Null;
    for _ in 0..300 {
        let (_, list) = served.get("/api/missions").await;
        if list["missions"][0]["running"] == true {
            listed = list["missions"][0].clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(listed["controllable"], false, "the CLI runs it: {listed}");
    let id = listed["id"]
        .as_str()
        .expect("the CLI's mission is listed")
        .to_string();

    let (status, refused) = served.post(&format!("/api/missions/{id}/pause"), None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    assert!(
        refused["error"]
            .as_str()
            .unwrap_or_default()
            .contains("another process"),
        "{refused}"
    );

    let (status, cancelled) = served.post(&format!("/api/missions/{id}/cancel"), None).await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    let exit = tokio::time::timeout(Duration::from_secs(60), task.wait())
        .await
        .expect("the CLI stops")
        .expect("the CLI is waited for");
    assert_eq!(exit.code(), Some(3), "cancelled like `orchestrator cancel`");

    // Its stored events replay to the end, then the stream closes.
    let events = served.follow(&id, Duration::from_secs(30)).await;
    assert_eq!(
        events.last().map(|e| e["outcome"].clone()),
        Some(json!("interrupted"))
    );
    assert_eq!(served.stop().await, Some(0));
}

#[tokio::test]
async fn a_token_guards_the_api_and_is_never_printed() {
    let repo = TestRepo::new(&[]);
    let served = Served::start(&repo, serve_args(&repo).env("ORCHESTRATOR_TOKEN", TOKEN)).await;
    assert_eq!(served.token, None, "a token given is not printed");
    let (status, refused) = served.get("/api/missions").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        refused["error"].as_str().unwrap_or_default().contains("Bearer"),
        "{refused}"
    );

    let allowed = served
        .http
        .get(served.url("/api/missions"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("answers");
    assert_eq!(allowed.status(), StatusCode::OK);

    let page = served
        .http
        .get(served.url(&format!("/?token={TOKEN}")))
        .send()
        .await
        .expect("answers");
    assert_eq!(page.status(), StatusCode::SEE_OTHER);
    let cookie = page.headers()["set-cookie"]
        .to_str()
        .unwrap_or_default()
        .to_string();
    let cookie = cookie.split(';').next().unwrap_or_default();
    let with_cookie = served
        .http
        .get(served.url("/api/missions"))
        .header("cookie", cookie)
        .send()
        .await
        .expect("answers");
    assert_eq!(with_cookie.status(), StatusCode::OK);

    // The token is named, never shown, in what the server prints.
    let printed = served.printed.lock().expect("printed lines").join("\n");
    assert!(printed.contains("?token=<your token>"), "{printed}");
    assert!(!printed.contains(TOKEN), "{printed}");
    assert_eq!(served.stop().await, Some(0));
}

#[tokio::test]
async fn without_a_token_given_the_server_makes_one_and_shows_it_in_the_dashboard_address() {
    let repo = TestRepo::new(&[]);
    let other = TestRepo::new(&[]);
    let served = Served::start(&repo, serve_args(&repo)).await;
    let token = served
        .token
        .clone()
        .expect("the second line is the dashboard's address with the token");
    assert_eq!(token.len(), 64, "32 random bytes in hex: {token}");
    assert!(token.chars().all(|c| c.is_ascii_hexdigit()), "{token}");

    // Another local user, or an agent's command, reaches the loopback port without the token.
    let start = json!({ "repo": repo.path(), "objective": "Add two files" });
    let refused = served
        .http
        .post(served.url("/api/missions"))
        .json(&start)
        .send()
        .await
        .expect("answers");
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert!(!repo.path().join(".orchestrator").exists(), "nothing was started");

    // The printed address opens the dashboard: the token becomes its cookie.
    let opened = served
        .http
        .get(served.url(&format!("/?token={token}")))
        .send()
        .await
        .expect("answers");
    assert_eq!(opened.status(), StatusCode::SEE_OTHER);
    let (status, _) = served.get("/api/missions").await;
    assert_eq!(status, StatusCode::OK);

    // Only the repositories it was given.
    let (status, body) = served.start_mission(&other, "Elsewhere").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["error"].as_str().unwrap_or_default().contains("--any-repo"),
        "{body}"
    );
    assert!(!other.path().join(".orchestrator").exists());
    let (status, body) = served
        .post(
            "/api/missions",
            Some(json!({ "repo": repo.path(), "objective": "x", "max_parallel": 100000 })),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("between 1 and 256"),
        "{body}"
    );
    assert_eq!(served.stop().await, Some(0));
}

#[tokio::test]
async fn any_repo_lets_requests_name_other_repositories() {
    let repo = TestRepo::new(&[]);
    let served = Served::start(&repo, serve_args(&repo).arg("--any-repo")).await;
    let plain = tempfile::tempdir().expect("tempdir");
    let (status, body) = served
        .post(
            "/api/missions",
            Some(json!({ "repo": plain.path(), "objective": "x" })),
        )
        .await;
    // Past the repository check, so the engine's own words: this folder is no repository.
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("not inside a git repository"),
        "{body}"
    );
    assert_eq!(served.stop().await, Some(0));
}

#[tokio::test]
async fn weak_tokens_and_tokens_on_the_command_line_are_refused() {
    let repo = TestRepo::new(&[]);
    let done = serve_args(&repo)
        .env("ORCHESTRATOR_TOKEN", "hunter2")
        .run(&repo)
        .await;
    done.assert_code(2);
    assert!(
        done.stderr.contains("ORCHESTRATOR_TOKEN") && done.stderr.contains("at least 16"),
        "{}",
        done.stderr
    );

    let done = serve_args(&repo)
        .arg("--token")
        .arg("a-long-enough-token-but-in-ps")
        .run(&repo)
        .await;
    done.assert_code(2);
    assert!(
        done.stderr.contains("`ps`") && done.stderr.contains("--token-file"),
        "{}",
        done.stderr
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let short = dir.path().join("short");
    std::fs::write(&short, "tiny\n").expect("write");
    let done = serve_args(&repo)
        .arg("--token-file")
        .arg(&short.display().to_string())
        .run(&repo)
        .await;
    done.assert_code(2);
    assert!(done.stderr.contains("at least 16"), "{}", done.stderr);
}

#[tokio::test]
async fn a_token_file_is_read_and_its_token_never_printed() {
    use std::os::unix::fs::PermissionsExt;
    let repo = TestRepo::new(&[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("token");
    std::fs::write(&file, format!("{TOKEN}\n")).expect("write");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let served = Served::start(
        &repo,
        serve_args(&repo)
            // The file wins over the variable.
            .env("ORCHESTRATOR_TOKEN", "another-token-that-is-long-enough")
            .arg("--token-file")
            .arg(&file.display().to_string()),
    )
    .await;
    let allowed = served
        .http
        .get(served.url("/api/missions"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("answers");
    assert_eq!(allowed.status(), StatusCode::OK);
    let printed = served.printed.lock().expect("printed lines").join("\n");
    assert!(!printed.contains(TOKEN), "{printed}");
    assert_eq!(served.stop().await, Some(0));
}

#[tokio::test]
async fn a_repo_outside_git_is_refused_at_start() {
    let repo = TestRepo::new(&[]);
    let plain = tempfile::tempdir().expect("tempdir");
    let done = Run::cmd(&["serve", "--bind", "127.0.0.1:0", "--repo"])
        .arg(&plain.path().display().to_string())
        .run(&repo)
        .await;
    done.assert_code(2);
    assert!(
        done.stderr.contains("not inside a git repository"),
        "{}",
        done.stderr
    );
}

impl Served {
    /// Polls the mission's detail (bounded) until its plan `attempt` waits for approval.
    async fn waiting_plan(&self, id: &str, attempt: u64) -> Value {
        for _ in 0..600 {
            let (_, detail) = self.get(&format!("/api/missions/{id}")).await;
            if detail["waiting_plan"]["attempt"] == attempt {
                return detail["waiting_plan"].clone();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("plan {attempt} of mission {id} never waited for approval");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_is_approved_rejected_and_refused_over_http() {
    let repo = TestRepo::new(&[]);
    let model = fake(two_units()).await;
    let served = Served::start(&repo, serve_args(&repo).openai(&model)).await;
    let body = json!({ "repo": repo.path(), "objective": "Add two files", "approve_plan": true });
    let (status, started) = served.post("/api/missions", Some(body)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{started}");
    let id = started["id"].as_str().expect("the mission's id").to_string();
    let plan = served.waiting_plan(&id, 1).await;
    assert_eq!(plan["units"][0]["id"], "a", "{plan}");
    assert!(
        requests_of(&model, "worker").is_empty(),
        "nothing runs while the plan waits"
    );

    let answer = format!("/api/missions/{id}/plan");
    let cycle = json!({"answer": "edit", "plan": {"tasks": [
        {"id": "x", "title": "X", "description": "d", "depends_on": ["x"]}]}});
    for (body, why) in [
        (json!({"answer": "reject"}), "needs `feedback`"),
        (cycle, "depends on itself"),
        (json!({"answer": "perhaps"}), "unknown answer"),
    ] {
        let (status, refused) = served.post(&answer, Some(body)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
        assert!(
            refused["error"].as_str().unwrap_or_default().contains(why),
            "{refused}"
        );
    }
    let feedback = json!({"answer": "reject", "feedback": "Name the files better"});
    let (status, rejected) = served.post(&answer, Some(feedback)).await;
    assert_eq!(
        (status, &rejected["answer"]),
        (StatusCode::OK, &json!("rejected")),
        "{rejected}"
    );
    served.waiting_plan(&id, 2).await;
    let planner = requests_of(&model, "planner");
    assert!(has_user_message(
        planner.last().expect("a planner"),
        "Name the files better"
    ));

    let (status, approved) = served.post(&answer, Some(json!({"answer": "approve"}))).await;
    assert_eq!(status, StatusCode::OK, "{approved}");
    let events = served.follow(&id, Duration::from_secs(180)).await;
    let answers: Vec<&Value> = of_type(&events, "plan_answered")
        .into_iter()
        .map(|e| &e["answer"])
        .collect();
    assert_eq!(answers, [&json!("reject"), &json!("approve")]);
    assert_eq!(events.last().map(|e| e["outcome"].clone()), Some(json!("sealed")));
    let (status, late) = served.post(&answer, Some(json!({"answer": "approve"}))).await;
    assert_eq!(status, StatusCode::CONFLICT, "{late}");

    // The dashboard offers the same.
    let script = served
        .request(reqwest::Method::GET, "/app.js")
        .send()
        .await
        .expect("the script")
        .text()
        .await
        .expect("text");
    assert!(script.contains("/plan`") && script.contains("approve-button"));
    assert_eq!(served.stop().await, Some(0));
}

// ---- interrupted missions (issue #17) ----

/// Plays the script; while `holding`, every request is taken and never answered (the mission stays
/// at work, its sessions waiting) and counted in `held`.
#[derive(Clone, Default)]
struct Hold {
    holding: std::sync::Arc<std::sync::atomic::AtomicBool>,
    held: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

struct Holding {
    inner: ScriptedMission,
    hold: Hold,
}

impl Brain for Holding {
    fn respond(&self, request: &SeenRequest) -> Reply {
        use std::sync::atomic::Ordering;
        if self.hold.holding.load(Ordering::SeqCst) {
            self.hold.held.fetch_add(1, Ordering::SeqCst);
            return Reply::Hang;
        }
        self.inner.respond(request)
    }
}

impl Hold {
    fn set(&self, holding: bool) {
        self.holding.store(holding, std::sync::atomic::Ordering::SeqCst);
    }

    fn held(&self) -> usize {
        self.held.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Kills `task "Crash and resume"` (SIGKILL) while unit b's worker is at work; returns the fake
/// model, which goes on serving the script, and the interrupted mission's id.
async fn killed_task(repo: &TestRepo, hold: &Hold) -> (FakeServer, String) {
    let when = |r: &SeenRequest| {
        role_of(r) == "worker" && worker_unit(r).as_deref() == Some("b") && r.assistant_turns() >= 1
    };
    let brain = Holding {
        inner: ScriptedMission::new(script()),
        hold: hold.clone(),
    };
    let (model, _) = crash_playing(Box::new(when), brain, repo).await;
    let listed = missions_json(repo).await;
    assert_eq!(listed[0]["state"], "interrupted", "{listed:?}");
    let id = listed[0]["id"].as_str().expect("an id").to_string();
    (model, id)
}

impl Served {
    /// The first line the server printed that contains `text`, waiting for it.
    async fn printed_line(&self, text: &str) -> String {
        for _ in 0..600 {
            let found = self
                .printed
                .lock()
                .expect("printed lines")
                .iter()
                .find(|line| line.contains(text))
                .cloned();
            if let Some(line) = found {
                return line;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "serve never printed `{text}`: {:?}",
            self.printed.lock().expect("printed lines")
        );
    }

    async fn resume(&self, id: &str) -> (StatusCode, Value) {
        self.post(&format!("/api/missions/{id}/resume"), None).await
    }

    /// Follows the mission to its end; its last event must be a sealed `mission_finished`.
    async fn follow_to_seal(&self, id: &str) {
        let events = self.follow(id, Duration::from_secs(240)).await;
        let last = events.last().expect("events");
        assert_eq!(
            (&last["type"], &last["outcome"]),
            (&json!("mission_finished"), &json!("sealed")),
            "{last}"
        );
        let (_, detail) = self.get(&format!("/api/missions/{id}")).await;
        assert_eq!(
            (&detail["status"], &detail["state"]),
            (&json!("sealed"), &json!("finished"))
        );
    }
}

fn error_of(body: &Value) -> &str {
    body["error"].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_mission_is_offered_and_resumed_over_http_once() {
    let repo = TestRepo::new(&[]);
    let hold = Hold::default();
    let (model, id) = killed_task(&repo, &hold).await;
    hold.set(true);
    let served = Served::start(&repo, serve_args(&repo).openai(&model)).await;
    let named = served.printed_line(&format!("interrupted mission {id}")).await;
    assert!(
        named.contains(&format!("POST /api/missions/{id}/resume")) && named.contains("--resume-interrupted"),
        "{named}"
    );

    let (_, list) = served.get("/api/missions").await;
    let listed = &list["missions"][0];
    assert_eq!(
        (&listed["id"], &listed["state"], &listed["running"]),
        (&json!(id), &json!("interrupted"), &json!(false)),
        "{listed}"
    );

    // Two resume requests at once: one runs it, the other is told it is taken.
    let (first, second) = tokio::join!(served.resume(&id), served.resume(&id));
    let mut statuses = [first.0, second.0];
    statuses.sort();
    assert_eq!(
        statuses,
        [StatusCode::ACCEPTED, StatusCode::CONFLICT],
        "{} / {}",
        first.1,
        second.1
    );
    let resumed = if first.0 == StatusCode::ACCEPTED {
        &first.1
    } else {
        &second.1
    };
    assert_eq!((&resumed["id"], &resumed["resumed"]), (&json!(id), &json!(true)));

    // While the model holds it, it runs here: another resume is refused, and so is a new mission.
    for _ in 0..600 {
        if hold.held() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(hold.held() > 0, "the resumed mission reached the model");
    let (status, again) = served.resume(&id).await;
    assert_eq!(status, StatusCode::CONFLICT, "{again}");
    assert!(error_of(&again).contains("already running"), "{again}");
    let (_, detail) = served.get(&format!("/api/missions/{id}")).await;
    assert_eq!(
        (&detail["state"], &detail["controllable"]),
        (&json!("running"), &json!(true))
    );
    let (status, busy) = served.start_mission(&repo, "Something else").await;
    assert_eq!(status, StatusCode::CONFLICT, "{busy}");

    // Cancelled, it is interrupted again, and resumed again to its seal.
    let (status, cancelled) = served.post(&format!("/api/missions/{id}/cancel"), None).await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    hold.set(false);
    let (status, resumed) = served.resume(&id).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{resumed}");
    served.follow_to_seal(&id).await;
    assert_eq!(repo.read("c.txt").as_deref(), Some("c\n"), "applied");
    assert_eq!(repo.read("b2.txt").as_deref(), Some("b2\n"), "applied");
    let (status, late) = served.resume(&id).await;
    assert_eq!(status, StatusCode::CONFLICT, "{late}");
    assert!(error_of(&late).contains("cannot be resumed"), "{late}");
    assert_eq!(served.stop().await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_beside_a_killed_mission_is_refused_until_it_is_abandoned() {
    let repo = TestRepo::new(&[]);
    let (model, old) = killed_task(&repo, &Hold::default()).await;
    let served = Served::start(&repo, serve_args(&repo).openai(&model)).await;

    let (status, refused) = served.start_mission(&repo, "Something else").await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    for needed in [
        old.as_str(),
        "Crash and resume",
        &format!("POST /api/missions/{old}/resume"),
        "\"abandon_interrupted\": true",
    ] {
        assert!(error_of(&refused).contains(needed), "{needed}: {refused}");
    }
    assert_eq!(refused["interrupted"][0]["id"], json!(old), "{refused}");
    assert_eq!(missions_json(&repo).await.len(), 1, "nothing was started");

    let body = json!({ "repo": repo.path(), "objective": "Something else", "abandon_interrupted": true });
    let (status, started) = served.post("/api/missions", Some(body)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{started}");
    let new = started["id"].as_str().expect("the new mission's id").to_string();
    assert_ne!(new, old);
    served.follow_to_seal(&new).await;
    let (_, list) = served.get("/api/missions").await;
    let state_of = |id: &str| {
        list["missions"]
            .as_array()
            .and_then(|all| all.iter().find(|m| m["id"] == id))
            .map(|m| m["state"].clone())
    };
    assert_eq!(state_of(&old), Some(json!("abandoned")), "{list}");
    assert_eq!(state_of(&new), Some(json!("finished")), "{list}");
    let (status, refused) = served.resume(&old).await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    assert!(error_of(&refused).contains("abandoned"), "{refused}");
    assert_eq!(served.stop().await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_resume_interrupted_continues_a_killed_mission_at_start() {
    let repo = TestRepo::new(&[]);
    let (model, id) = killed_task(&repo, &Hold::default()).await;
    let run = serve_args(&repo).arg("--resume-interrupted").openai(&model);
    let served = Served::start(&repo, run).await;
    let said = served
        .printed_line(&format!("resumed interrupted mission {id}"))
        .await;
    assert!(said.contains("Crash and resume"), "{said}");
    // No request asked for it: the server runs it to its seal.
    served.follow_to_seal(&id).await;
    assert_eq!(repo.read("c.txt").as_deref(), Some("c\n"), "applied");
    assert_eq!(served.stop().await, Some(0));
    let listed = missions_json(&repo).await;
    assert_eq!(
        (listed.len(), &listed[0]["state"], &listed[0]["outcome"]),
        (1, &json!("finished"), &json!("sealed")),
        "{listed:?}"
    );
}

/// `serve --store postgres://…`: a mission started through the API runs on the PostgreSQL store, and
/// the API and the CLI read it from there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    pg_missing,
    ignore = "needs PostgreSQL: set ORCHESTRATOR_TEST_PG_URL (scripts/pg-test-server)"
)]
async fn a_mission_served_on_the_postgres_store_is_read_back_from_it() {
    let schema = orchestrator_test_support::pg::fresh_schema();
    let repo = TestRepo::new(&[("orchestrator.toml", "[verify]\ntest = \"true\"\n")]);
    let model = fake(two_units()).await;
    let served = Served::start(
        &repo,
        serve_args(&repo).arg("--store").arg(&schema.url).openai(&model),
    )
    .await;
    let (status, started) = served.start_mission(&repo, "Add two files").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{started}");
    let id = started["id"].as_str().expect("the mission's id").to_string();
    let events = served.follow(&id, Duration::from_secs(180)).await;
    let last = events.last().expect("events");
    assert_eq!(last["outcome"], "sealed", "{last}");
    let (status, detail) = served.get(&format!("/api/missions/{id}")).await;
    assert_eq!((status, &detail["status"]), (StatusCode::OK, &json!("sealed")));
    served.stop().await;

    assert!(!repo.path().join(".orchestrator/state.db").exists());
    let status = Run::cmd(&["status", "--json"])
        .arg("--store")
        .arg(&schema.url)
        .run(&repo)
        .await;
    status.assert_code(0);
    let report: Value = serde_json::from_str(&status.stdout).expect("status JSON");
    assert_eq!(report["mission"], json!(id));
}
