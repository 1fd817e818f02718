//! Every endpoint of the API, called through the router (no socket): good requests, bad input,
//! unknown missions, the token and the repositories missions may start in. Missions come from real stores in temporary git repositories,
//! filled with the view crate's fixed event sequences.

use std::path::{Path, PathBuf};

use axum::body::Body;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use orchestrator_core::{MissionStatus, STATE_DIR};
use orchestrator_server::{Server, ServerConfig, Token};
use orchestrator_store::{MissionRecord, Store};
use orchestrator_test_support::git::ScratchRepo;
use orchestrator_view::fixture::{running_mission, sealed_mission, MISSION};
use serde_json::{json, Value};
use tower::ServiceExt;

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    fn error(&self) -> String {
        self.json()["error"].as_str().unwrap_or_default().to_string()
    }

    fn assert(&self, status: StatusCode) -> &Self {
        assert_eq!(self.status, status, "body: {}", self.body);
        self
    }
}

async fn call(router: &Router, request: Request<Body>) -> Reply {
    let response = router.clone().oneshot(request).await.expect("the router answers");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.expect("a body").to_bytes();
    Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

/// The token of every test server.
const TOKEN: &str = "s3cret-token-of-the-tests";

/// A request from a client that has the token, as every one must.
fn request(method: Method, uri: &str) -> axum::http::request::Builder {
    bare_request(method, uri).header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
}

/// A request without the token.
fn bare_request(method: Method, uri: &str) -> axum::http::request::Builder {
    Request::builder()
        .method(method)
        .uri(uri)
        .header(header::HOST, "127.0.0.1:7700")
}

async fn get(router: &Router, uri: &str) -> Reply {
    call(
        router,
        request(Method::GET, uri).body(Body::empty()).expect("request"),
    )
    .await
}

async fn post(router: &Router, uri: &str) -> Reply {
    call(
        router,
        request(Method::POST, uri).body(Body::empty()).expect("request"),
    )
    .await
}

async fn post_json(router: &Router, uri: &str, body: &str) -> Reply {
    let request = request(Method::POST, uri)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .expect("request");
    call(router, request).await
}

/// A git repository with one commit.
struct Repo(ScratchRepo);

impl Repo {
    fn new() -> Self {
        let repo = ScratchRepo::init();
        repo.write("README.md", "# test\n");
        repo.git(&["add", "-A"]);
        repo.git(&[
            "-c",
            "user.email=dev@example.com",
            "-c",
            "user.name=Dev",
            "commit",
            "-q",
            "-m",
            "initial",
        ]);
        Repo(repo)
    }

    fn path(&self) -> PathBuf {
        self.0.root.clone()
    }

    /// Stores the fixture mission's events under `status`, run by `pid`.
    fn store(
        &self,
        events: &[orchestrator_protocol::EventEnvelope],
        status: MissionStatus,
        pid: Option<u32>,
    ) {
        let dir = self.path().join(STATE_DIR);
        std::fs::create_dir_all(&dir).expect("state dir");
        let store = Store::open(&dir.join("state.db")).expect("store opens");
        store
            .create_mission(&MissionRecord {
                id: MISSION.into(),
                objective: "Add a tokenizer, a parser and a pretty-printer".into(),
                base_commit: "0123456789abcdef0123456789abcdef01234567".into(),
                user_branch: Some("main".into()),
                integration_branch: format!("orchestrator/{MISSION}/integration"),
                options: json!({}),
                status,
                pid,
                created_at: String::new(),
                updated_at: String::new(),
            })
            .expect("mission stored");
        for event in events {
            store.append_event(event).expect("event stored");
        }
    }
}

fn config(repos: Vec<PathBuf>) -> ServerConfig {
    ServerConfig {
        token: Token::new(TOKEN).expect("a strong token"),
        repos,
        any_repo: false,
        otlp_endpoint: None,
    }
}

/// A server that knows `repos` and starts missions only in them.
fn server(repos: Vec<PathBuf>) -> Router {
    Server::new(config(repos)).router()
}

/// A server started with --any-repo.
fn any_repo_server() -> Router {
    Server::new(ServerConfig {
        any_repo: true,
        ..config(Vec::new())
    })
    .router()
}

fn sealed_repo() -> (Repo, Router) {
    let repo = Repo::new();
    repo.store(&sealed_mission(), MissionStatus::Sealed, None);
    let router = server(vec![repo.path()]);
    (repo, router)
}

fn mission_url(tail: &str) -> String {
    format!("/api/missions/{MISSION}{tail}")
}

#[tokio::test]
async fn the_dashboard_is_one_page_with_its_script_and_style() {
    let router = server(Vec::new());
    let page = get(&router, "/").await;
    page.assert(StatusCode::OK);
    assert!(page.headers[header::CONTENT_TYPE]
        .to_str()
        .unwrap_or_default()
        .starts_with("text/html"));
    for id in [
        "start-form",
        "mission-list",
        "unit-tree",
        "mission-outcome",
        "pause-button",
        "cancel-button",
        "tell-form",
    ] {
        assert!(
            page.body.contains(&format!("data-testid=\"{id}\"")),
            "{id} missing"
        );
    }
    assert!(
        !page.body.contains("http://") && !page.body.contains("https://"),
        "no external resources"
    );
    let script = get(&router, "/app.js").await;
    script.assert(StatusCode::OK);
    assert!(script.body.contains("EventSource"));
    assert!(script.body.contains("/tell`") && script.body.contains("tell-unit-button"));
    get(&router, "/style.css").await.assert(StatusCode::OK);
}

#[tokio::test]
async fn missions_in_known_stores_are_listed() {
    let (repo, router) = sealed_repo();
    let empty = Repo::new();
    let router_two = server(vec![repo.path(), empty.path()]);
    for router in [&router, &router_two] {
        let reply = get(router, "/api/missions").await;
        reply.assert(StatusCode::OK);
        let body = reply.json();
        let mission = &body["missions"][0];
        assert_eq!(mission["id"], MISSION);
        assert_eq!(mission["status"], "sealed");
        assert_eq!(mission["outcome"], "sealed");
        assert_eq!(mission["running"], false);
        assert_eq!(mission["controllable"], false);
        assert_eq!(mission["repo"], repo.path().display().to_string());
        assert_eq!(body["repos"][0]["path"], repo.path().display().to_string());
    }
    let body = get(&router_two, "/api/missions").await.json();
    assert_eq!(body["missions"].as_array().map(Vec::len), Some(1));
    let note = body["repos"][1]["note"].as_str().unwrap_or_default();
    assert!(note.contains("no mission has run"), "{note}");
}

#[tokio::test]
async fn a_mission_is_its_folded_view_with_tree_and_running_flag() {
    let (repo, router) = sealed_repo();
    let reply = get(&router, &mission_url("")).await;
    reply.assert(StatusCode::OK);
    let mut body = reply.json();
    assert_eq!(body["repo"], repo.path().display().to_string());
    body["repo"] = json!("[repo]");
    let pretty = serde_json::to_string_pretty(&body).expect("JSON");
    insta::assert_snapshot!("sealed_mission_detail", pretty);
}

#[tokio::test]
async fn pictures_are_svg_drawn_from_the_same_fold_as_the_detail() {
    let (_repo, router) = sealed_repo();
    let detail = get(&router, &mission_url("")).await.json();
    let reply = get(&router, &mission_url("/pictures")).await;
    reply.assert(StatusCode::OK);
    let body = reply.json();
    assert_eq!(body["last_seq"], detail["last_seq"]);
    for key in ["graph", "timeline", "usage"] {
        let svg = body[key].as_str().unwrap_or_default();
        assert!(svg.starts_with("<svg"), "{key}: {svg}");
        assert!(svg.trim_end().ends_with("</svg>"), "{key}");
    }
    // Every unit of the table is a node of the graph and a lane of the timeline, in the same state.
    let units = detail["units"].as_array().expect("units");
    assert!(!units.is_empty());
    for unit in units {
        let id = unit["id"].as_str().expect("id");
        let state = unit["state"].as_str().expect("state");
        let marker = format!("data-unit=\"{id}\" data-state=\"{state}\"");
        assert!(
            body["graph"].as_str().unwrap_or_default().contains(&marker),
            "graph lacks {marker}"
        );
        assert!(
            body["timeline"].as_str().unwrap_or_default().contains(&marker),
            "timeline lacks {marker}"
        );
    }

    let missing = get(&router, "/api/missions/m-nope/pictures").await;
    missing.assert(StatusCode::NOT_FOUND);
    assert!(missing.error().contains("m-nope"));
}

#[tokio::test]
async fn unknown_missions_are_404_with_their_id() {
    let (_repo, router) = sealed_repo();
    for (method, tail) in [
        (Method::GET, ""),
        (Method::GET, "/events"),
        (Method::POST, "/cancel"),
        (Method::POST, "/pause"),
        (Method::POST, "/resume"),
    ] {
        let uri = format!("/api/missions/m-nope{tail}");
        let reply = call(
            &router,
            request(method.clone(), &uri)
                .body(Body::empty())
                .expect("request"),
        )
        .await;
        reply.assert(StatusCode::NOT_FOUND);
        assert!(
            reply.error().contains("m-nope"),
            "{method} {uri}: {}",
            reply.error()
        );
    }
}

#[tokio::test]
async fn events_replay_the_stored_log_as_server_sent_events() {
    let (_repo, router) = sealed_repo();
    let all = sealed_mission();
    let reply = get(&router, &mission_url("/events")).await;
    reply.assert(StatusCode::OK);
    assert!(reply.headers[header::CONTENT_TYPE]
        .to_str()
        .unwrap_or_default()
        .starts_with("text/event-stream"));
    let sent = sse_events(&reply.body);
    assert_eq!(sent.len(), all.len(), "every stored event, then the stream ends");
    assert_eq!(sent[0].0, "0");
    assert_eq!(sent[0].1["type"], "mission_started");
    assert_eq!(
        sent.last().map(|e| e.1["type"].clone()),
        Some(json!("mission_finished"))
    );

    let later = sse_events(&get(&router, &mission_url("/events?after=40")).await.body);
    assert_eq!(later.first().map(|e| e.0.as_str()), Some("41"));
    assert_eq!(later.len(), all.len() - 41);

    let resumed = call(
        &router,
        request(Method::GET, &mission_url("/events"))
            .header("last-event-id", "50")
            .body(Body::empty())
            .expect("request"),
    )
    .await;
    assert_eq!(
        sse_events(&resumed.body).first().map(|e| e.0.as_str()),
        Some("51")
    );

    // Nothing after the last event of a finished mission: 204, so EventSource stops reconnecting.
    let last = all.len() - 1;
    get(&router, &mission_url(&format!("/events?after={last}")))
        .await
        .assert(StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn bad_event_positions_are_400() {
    let (_repo, router) = sealed_repo();
    let reply = get(&router, &mission_url("/events?after=yesterday")).await;
    reply.assert(StatusCode::BAD_REQUEST);
    assert!(reply.error().contains("after"), "{}", reply.error());
    let reply = call(
        &router,
        request(Method::GET, &mission_url("/events"))
            .header("last-event-id", "abc")
            .body(Body::empty())
            .expect("request"),
    )
    .await;
    reply.assert(StatusCode::BAD_REQUEST);
    assert!(reply.error().contains("Last-Event-ID"), "{}", reply.error());
}

/// (id, data) of each event in an SSE body.
fn sse_events(body: &str) -> Vec<(String, Value)> {
    body.split("\n\n")
        .filter_map(|block| {
            let field = |name: &str| {
                block
                    .lines()
                    .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
            };
            let data = field("data:")?;
            Some((
                field("id:").unwrap_or_default(),
                serde_json::from_str(&data).ok()?,
            ))
        })
        .collect()
}

#[tokio::test]
async fn finished_missions_cannot_be_cancelled_or_paused() {
    let (_repo, router) = sealed_repo();
    for action in ["/cancel", "/pause", "/resume"] {
        let reply = post(&router, &mission_url(action)).await;
        reply.assert(StatusCode::CONFLICT);
        assert!(
            reply.error().contains("is not running (status: sealed)"),
            "{}",
            reply.error()
        );
    }
}

/// A stand-in for another `orchestrator` process running the mission, reaped when it exits.
fn owner_process() -> u32 {
    let mut child = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .expect("sleep runs");
    let pid = child.id();
    std::thread::spawn(move || child.wait());
    pid
}

/// Like [`owner_process`], but holding the repository's mission lock with its pid in the lock's note,
/// as a real mission process does: only such a process is sent a signal (a recorded pid alone may
/// have been reused by an unrelated process since a kill -9).
fn lock_holding_owner(repo: &Repo) -> u32 {
    let lock = repo.path().join(STATE_DIR).join("lock");
    std::fs::create_dir_all(repo.path().join(STATE_DIR)).expect("state dir");
    let mut child = std::process::Command::new("flock")
        .arg("--exclusive")
        .arg(&lock)
        .args(["sleep", "60"])
        .spawn()
        .expect("flock (util-linux) runs");
    let pid = child.id();
    std::thread::spawn(move || child.wait());
    std::fs::write(&lock, format!("mission {MISSION}, pid {pid}")).expect("lock note");
    let file = std::fs::File::open(&lock).expect("lock file");
    for _ in 0..200 {
        match file.try_lock_shared() {
            Ok(()) => {
                let _ = file.unlock();
                std::thread::sleep(std::time::Duration::from_millis(25));
            }
            Err(_) => return pid,
        }
    }
    panic!("flock did not take {} within 5 s", lock.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mission_run_by_another_process_is_followed_and_cancelled_through_it() {
    let repo = Repo::new();
    let owner = lock_holding_owner(&repo);
    repo.store(&running_mission(), MissionStatus::Running, Some(owner));
    let router = server(vec![repo.path()]);

    let detail = get(&router, &mission_url("")).await.json();
    assert_eq!(detail["running"], true);
    assert_eq!(detail["controllable"], false);
    assert_eq!(detail["paused"], true, "the fold saw dispatch paused");

    let reply = post(&router, &mission_url("/pause")).await;
    reply.assert(StatusCode::CONFLICT);
    assert!(reply.error().contains("another process"), "{}", reply.error());

    let reply = post(&router, &mission_url("/cancel")).await;
    reply.assert(StatusCode::OK);
    assert!(reply.json()["message"]
        .as_str()
        .unwrap_or_default()
        .contains("stopped"));
    assert!(!orchestrator_core::process_alive(owner), "the owner got SIGTERM");
    assert_eq!(get(&router, &mission_url("")).await.json()["running"], false);
}

#[tokio::test]
async fn malformed_start_requests_say_what_is_wrong() {
    let repo = Repo::new();
    let router = server(vec![repo.path()]);
    let path = repo.path().display().to_string();
    let cases: Vec<(String, StatusCode, &str)> = vec![
        (
            "{not json".into(),
            StatusCode::BAD_REQUEST,
            "Failed to parse the request body as JSON",
        ),
        (
            json!({"repo": path}).to_string(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "missing field `objective`",
        ),
        (
            json!({"repo": path, "objective": "x", "max_parallel": "many"}).to_string(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "max_parallel",
        ),
        (
            json!({"repo": path, "objective": "x", "paralel": 3}).to_string(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown field `paralel`",
        ),
        (
            "[]".into(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "the body is an array, not a JSON object",
        ),
        (
            json!({"repo": "relative/dir", "objective": "x"}).to_string(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "absolute path",
        ),
        (
            json!({"repo": "/definitely/not/here", "objective": "x"}).to_string(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "not a directory",
        ),
        (
            json!({"repo": path, "objective": "x", "provider": "skynet"}).to_string(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown provider `skynet`",
        ),
        (
            json!({"repo": path, "objective": "   "}).to_string(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "the objective is empty",
        ),
        (
            json!({"repo": path, "objective": "x", "sandbox": false}).to_string(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "sandbox cannot be set in a request",
        ),
        // A request may not send the repository's commits to a remote of its choosing.
        (
            json!({"repo": path, "objective": "x", "workers": "external", "remote": "https://attacker.example/r.git"})
                .to_string(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "cannot be set in a request",
        ),
        (
            json!({"repo": path, "objective": "x", "remote": "/tmp/r.git"}).to_string(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "remote cannot be set in a request",
        ),
    ];
    for (body, status, words) in cases {
        let reply = post_json(&router, "/api/missions", &body).await;
        assert_eq!(reply.status, status, "{body}: {}", reply.body);
        assert!(reply.error().contains(words), "{body}: {}", reply.error());
    }
    let no_type = post(&router, "/api/missions").await;
    no_type.assert(StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(no_type.error().contains("Content-Type"), "{}", no_type.error());
}

#[tokio::test]
async fn a_folder_outside_git_is_refused_with_the_engines_words() {
    let plain = tempfile::tempdir().expect("tempdir");
    let router = any_repo_server();
    let body = json!({"repo": plain.path(), "objective": "Add a file"}).to_string();
    let reply = post_json(&router, "/api/missions", &body).await;
    reply.assert(StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        reply.error().contains("is not inside a git repository"),
        "{}",
        reply.error()
    );
    assert!(no_state_dir(plain.path()));
}

fn no_state_dir(path: &Path) -> bool {
    !path.join(STATE_DIR).exists()
}

#[tokio::test]
async fn missions_start_only_in_the_given_repositories() {
    let listed = Repo::new();
    let other = Repo::new();
    let router = server(vec![listed.path()]);
    let start = |repo: &Path| json!({"repo": repo, "objective": "Add a file"}).to_string();

    let reply = post_json(&router, "/api/missions", &start(&other.path())).await;
    reply.assert(StatusCode::FORBIDDEN);
    let error = reply.error();
    assert!(
        error.contains(&other.path().display().to_string())
            && error.contains(&listed.path().display().to_string())
            && error.contains("--repo")
            && error.contains("--any-repo"),
        "{error}"
    );
    assert!(no_state_dir(&other.path()), "nothing was started there");

    // A repository inside a listed one is another repository.
    let nested = listed.path().join("vendor/lib");
    std::fs::create_dir_all(&nested).expect("mkdir");
    let out = std::process::Command::new("git")
        .args(["init", "-q"])
        .current_dir(&nested)
        .output()
        .expect("git runs");
    assert!(out.status.success());
    let reply = post_json(&router, "/api/missions", &start(&nested)).await;
    reply.assert(StatusCode::FORBIDDEN);
    assert!(reply.error().contains("vendor/lib"), "{}", reply.error());

    // Outside a repository, without --repo, no start is allowed, and the answer says what to do.
    let reply = post_json(&server(Vec::new()), "/api/missions", &start(&other.path())).await;
    reply.assert(StatusCode::FORBIDDEN);
    assert!(reply.error().contains("no repository"), "{}", reply.error());
    assert!(no_state_dir(&other.path()));
}

#[tokio::test]
async fn numbers_beyond_the_configs_bounds_are_refused_naming_the_field() {
    let repo = Repo::new();
    let router = server(vec![repo.path()]);
    let path = repo.path().display().to_string();
    let cases = [
        (
            "max_parallel",
            json!(100_000),
            "max_parallel is 100000",
            "between 1 and 256",
        ),
        ("max_parallel", json!(0), "max_parallel is 0", "between 1 and 256"),
        ("max_depth", json!(9), "max_depth is 9", "between 0 and 8"),
        ("rounds", json!(0), "rounds is 0", "between 1 and 50"),
        ("rounds", json!(51), "rounds is 51", "between 1 and 50"),
        ("budget_tokens", json!(10), "budget_tokens is 10", "at least 1000"),
        ("attempts", json!(6), "attempts is 6", "between 1 and 5"),
        ("attempts", json!(0), "attempts is 0", "between 1 and 5"),
        ("attempts", json!(-3), "attempts", "between 1 and 5"),
        // Not a whole number that fits: serde's words, then the range.
        ("max_parallel", json!(-1), "max_parallel", "between 1 and 256"),
        ("rounds", json!(1e12), "rounds", "between 1 and 50"),
        ("budget_tokens", json!(1.5), "budget_tokens", "at least 1000"),
    ];
    for (field, value, names, range) in cases {
        let body = json!({"repo": path, "objective": "x", field: value}).to_string();
        let reply = post_json(&router, "/api/missions", &body).await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {}",
            reply.body
        );
        let error = reply.error();
        assert!(error.contains(names) && error.contains(range), "{body}: {error}");
    }
    assert!(no_state_dir(&repo.path()), "refused before the engine ran");
}

#[tokio::test]
async fn unknown_endpoints_and_methods_answer_in_json() {
    let router = server(Vec::new());
    let reply = get(&router, "/api/nothing").await;
    reply.assert(StatusCode::NOT_FOUND);
    assert!(reply.error().contains("GET /api/nothing"), "{}", reply.error());
    let reply = call(
        &router,
        request(Method::DELETE, "/api/missions")
            .body(Body::empty())
            .expect("request"),
    )
    .await;
    reply.assert(StatusCode::METHOD_NOT_ALLOWED);
    assert!(reply.error().contains("DELETE"), "{}", reply.error());
}

/// GET without the token.
async fn get_bare(router: &Router, uri: &str) -> Reply {
    call(
        router,
        bare_request(Method::GET, uri)
            .body(Body::empty())
            .expect("request"),
    )
    .await
}

#[tokio::test]
async fn every_api_request_needs_the_token() {
    let router = server(Vec::new());
    let reply = get_bare(&router, "/api/missions").await;
    reply.assert(StatusCode::UNAUTHORIZED);
    assert_eq!(reply.headers[header::WWW_AUTHENTICATE], "Bearer");
    assert!(
        reply.error().contains("Authorization: Bearer"),
        "{}",
        reply.error()
    );
    for (name, value) in [
        (header::AUTHORIZATION, "Bearer wrong"),
        (header::COOKIE, "orchestrator_token=wrong"),
    ] {
        let reply = call(
            &router,
            bare_request(Method::GET, "/api/missions")
                .header(name, value)
                .body(Body::empty())
                .expect("request"),
        )
        .await;
        reply.assert(StatusCode::UNAUTHORIZED);
        assert!(reply.error().contains("the token is wrong"), "{}", reply.error());
    }
    for (name, value) in [
        (header::AUTHORIZATION, "Bearer s3cret-token-of-the-tests"),
        (
            header::COOKIE,
            "theme=dark; orchestrator_token=s3cret-token-of-the-tests",
        ),
    ] {
        let reply = call(
            &router,
            bare_request(Method::GET, "/api/missions")
                .header(name, value)
                .body(Body::empty())
                .expect("request"),
        )
        .await;
        reply.assert(StatusCode::OK);
    }
    // The page itself holds nothing secret.
    get_bare(&router, "/").await.assert(StatusCode::OK);
}

#[tokio::test]
async fn the_token_in_the_address_becomes_an_http_only_cookie() {
    let router = server(Vec::new());
    let reply = get_bare(&router, &format!("/?token={TOKEN}")).await;
    reply.assert(StatusCode::SEE_OTHER);
    assert_eq!(reply.headers[header::LOCATION], "/");
    let cookie = reply.headers[header::SET_COOKIE].to_str().unwrap_or_default();
    assert!(
        cookie.starts_with(&format!("orchestrator_token={TOKEN};")),
        "{cookie}"
    );
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let wrong = get_bare(&router, "/?token=guess").await;
    wrong.assert(StatusCode::OK);
    assert!(!wrong.headers.contains_key(header::SET_COOKIE));
}

#[tokio::test]
async fn a_loopback_request_without_the_token_starts_nothing() {
    // What another user of the machine (or an agent's command) can send to a loopback port.
    let repo = Repo::new();
    let router = server(vec![repo.path()]);
    let body = json!({"repo": repo.path(), "objective": "Add a file"}).to_string();
    let reply = call(
        &router,
        bare_request(Method::POST, "/api/missions")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .expect("request"),
    )
    .await;
    reply.assert(StatusCode::UNAUTHORIZED);
    assert!(no_state_dir(&repo.path()), "nothing was started");
}

#[tokio::test]
async fn changes_from_another_origin_are_refused_even_with_the_cookie() {
    let router = server(Vec::new());
    let cross_site = call(
        &router,
        bare_request(Method::POST, "/api/missions")
            .header(header::ORIGIN, "http://127.0.0.1:3000")
            .header(header::COOKIE, format!("orchestrator_token={TOKEN}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from("{}"))
            .expect("request"),
    )
    .await;
    cross_site.assert(StatusCode::FORBIDDEN);
    assert!(
        cross_site.error().contains("cross-origin"),
        "{}",
        cross_site.error()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tell_stores_a_message_for_a_worker_and_refuses_misuse() {
    // The running fixture, interrupted: the message waits in the store for `resume`.
    let repo = Repo::new();
    repo.store(&running_mission(), MissionStatus::Interrupted, None);
    let router = server(vec![repo.path()]);
    let url = mission_url("/tell");

    let reply = post_json(
        &router,
        &url,
        r#"{"unit": "t2.2", "message": "Use the existing lexer."}"#,
    )
    .await;
    reply.assert(StatusCode::OK);
    let said = reply.json()["message"].as_str().unwrap_or_default().to_string();
    assert!(
        said.contains("message for t2.2") && said.contains("orchestrator resume"),
        "{said}"
    );
    let reply = post_json(&router, &url, r#"{"all": true, "message": "Keep it small."}"#).await;
    reply.assert(StatusCode::OK);
    let said = reply.json()["message"].as_str().unwrap_or_default().to_string();
    assert!(said.contains("for t2, t2.2 of"), "every running worker: {said}");
    let store = Store::open_existing(&repo.path().join(STATE_DIR).join("state.db")).expect("store");
    let waiting = store.waiting_inbox(MISSION).expect("inbox");
    assert_eq!(waiting.len(), 3, "{waiting:?}");
    assert_eq!(waiting[0].message, "Use the existing lexer.");

    let reply = post_json(&router, &url, r#"{"unit": "t1", "message": "x"}"#).await;
    reply.assert(StatusCode::CONFLICT);
    assert!(reply.error().contains("finished (passed)"), "{}", reply.error());
    let reply = post_json(&router, &url, r#"{"unit": "zz", "message": "x"}"#).await;
    reply.assert(StatusCode::UNPROCESSABLE_ENTITY);
    assert!(reply.error().contains("no unit `zz`"), "{}", reply.error());
    let long = json!({"unit": "t1", "message": "x".repeat(5000)}).to_string();
    let reply = post_json(&router, &url, &long).await;
    reply.assert(StatusCode::UNPROCESSABLE_ENTITY);
    assert!(reply.error().contains("at most 4096 bytes"), "{}", reply.error());
    for body in [
        r#"{"message": "to whom?"}"#,
        r#"{"unit": "t1", "all": true, "message": "both"}"#,
        r#"{"unit": "t1"}"#,
        r#"{"unit": "t1", "message": "x", "shout": true}"#,
    ] {
        post_json(&router, &url, body)
            .await
            .assert(StatusCode::UNPROCESSABLE_ENTITY);
    }
    assert_eq!(
        store.waiting_inbox(MISSION).expect("inbox").len(),
        3,
        "nothing more stored"
    );

    let (_sealed, router) = sealed_repo();
    let reply = post_json(&router, &url, r#"{"unit": "t1", "message": "too late"}"#).await;
    reply.assert(StatusCode::CONFLICT);
    assert!(reply.error().contains("is sealed"), "{}", reply.error());
}

/// A pid no process has: above every kernel's pid_max.
const DEAD: u32 = u32::MAX;

/// A repository whose mission was killed mid-run: recorded as running, its process gone.
fn killed_repo() -> (Repo, Router) {
    let repo = Repo::new();
    repo.store(&running_mission(), MissionStatus::Running, Some(DEAD));
    let router = server(vec![repo.path()]);
    (repo, router)
}

#[tokio::test]
async fn a_killed_mission_is_listed_as_interrupted() {
    let (_repo, router) = killed_repo();
    let body = get(&router, "/api/missions").await.json();
    let mission = &body["missions"][0];
    assert_eq!(
        (&mission["id"], &mission["state"], &mission["running"]),
        (&json!(MISSION), &json!("interrupted"), &json!(false)),
        "{mission}"
    );
    let detail = get(&router, &mission_url("")).await.json();
    assert_eq!(detail["state"], "interrupted");
    // Only a mission this server runs can have its dispatch resumed; this one is not running.
    post(&router, &mission_url("/pause"))
        .await
        .assert(StatusCode::CONFLICT);

    // Its pid given since to an unrelated live process (not holding the repository's lock): still
    // interrupted, not "run by another process".
    let repo = Repo::new();
    repo.store(&running_mission(), MissionStatus::Running, Some(owner_process()));
    let router = server(vec![repo.path()]);
    let detail = get(&router, &mission_url("")).await.json();
    assert_eq!(
        (&detail["state"], &detail["running"]),
        (&json!("interrupted"), &json!(false)),
        "{detail}"
    );
}

#[tokio::test]
async fn a_start_beside_an_interrupted_mission_is_refused_naming_it_and_the_ways_on() {
    let (repo, router) = killed_repo();
    let path = repo.path().display().to_string();
    let reply = post_json(
        &router,
        "/api/missions",
        &json!({"repo": path, "objective": "Something else"}).to_string(),
    )
    .await;
    reply.assert(StatusCode::CONFLICT);
    let error = reply.error();
    for needed in [
        MISSION,
        "Add a tokenizer",
        &format!("POST /api/missions/{MISSION}/resume"),
        "\"abandon_interrupted\": true",
    ] {
        assert!(error.contains(needed), "{needed}: {error}");
    }
    let listed = &reply.json()["interrupted"];
    assert_eq!(listed[0]["id"], MISSION, "{listed}");
    assert_eq!(listed[0]["resume"], mission_url("/resume"), "{listed}");
    assert_eq!(
        get(&router, "/api/missions").await.json()["missions"]
            .as_array()
            .map(Vec::len),
        Some(1),
        "nothing was started"
    );

    // A flag that is not a boolean is named, not taken for a yes.
    let reply = post_json(
        &router,
        "/api/missions",
        &json!({"repo": path, "objective": "x", "abandon_interrupted": "yes"}).to_string(),
    )
    .await;
    reply.assert(StatusCode::UNPROCESSABLE_ENTITY);
    assert!(reply.error().contains("abandon_interrupted"), "{}", reply.error());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_an_interrupted_mission_is_resumed() {
    // Run by another live process: not interrupted, whatever this server thinks of it.
    let repo = Repo::new();
    let owner = lock_holding_owner(&repo);
    repo.store(&running_mission(), MissionStatus::Running, Some(owner));
    let router = server(vec![repo.path()]);
    let reply = post(&router, &mission_url("/resume")).await;
    reply.assert(StatusCode::CONFLICT);
    assert!(
        reply
            .error()
            .contains(&format!("run by another process (pid {owner})")),
        "{}",
        reply.error()
    );

    // Finished or abandoned: nothing to resume.
    for status in [MissionStatus::Sealed, MissionStatus::Abandoned] {
        let repo = Repo::new();
        repo.store(&sealed_mission(), status, None);
        let router = server(vec![repo.path()]);
        let reply = post(&router, &mission_url("/resume")).await;
        reply.assert(StatusCode::CONFLICT);
        assert!(reply.error().contains("cannot be resumed"), "{}", reply.error());
    }
}
