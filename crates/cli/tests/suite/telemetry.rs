//! `--otlp-endpoint`: the real binary runs a fake-model mission and sends its spans to an OTLP/HTTP
//! collector stub on 127.0.0.1, which decodes the protobuf the way a real collector does.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use super::support::*;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode as SpanStatus;
use opentelemetry_proto::tonic::trace::v1::Span;
use orchestrator_fake_model::script::{PlanUnit, Script};
use prost::Message;

/// The OpenTelemetry variables a developer's shell may have set; every test here says what it wants.
const OTEL_VARS: [&str; 6] = [
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    "OTEL_SDK_DISABLED",
    "OTEL_SERVICE_NAME",
];

#[derive(Default)]
struct Received {
    spans: Vec<Span>,
    services: Vec<String>,
    headers: Vec<HeaderMap>,
}

/// An OTLP/HTTP collector: POST /v1/traces with a protobuf `ExportTraceServiceRequest`.
struct Collector {
    addr: SocketAddr,
    received: Arc<Mutex<Received>>,
}

impl Collector {
    async fn start() -> Collector {
        let received = Arc::new(Mutex::new(Received::default()));
        let app = axum::Router::new()
            .route("/v1/traces", post(receive))
            .with_state(received.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the collector");
        let addr = listener.local_addr().expect("collector address");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Collector { addr, received }
    }

    fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn spans(&self) -> Vec<Span> {
        self.received.lock().map(|r| r.spans.clone()).unwrap_or_default()
    }
}

async fn receive(
    State(received): State<Arc<Mutex<Received>>>,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    if headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) != Some("application/x-protobuf") {
        return (StatusCode::UNSUPPORTED_MEDIA_TYPE, Vec::new());
    }
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return (StatusCode::BAD_REQUEST, Vec::new());
    };
    if let Ok(mut received) = received.lock() {
        received.headers.push(headers);
        for resource_spans in request.resource_spans {
            if let Some(resource) = &resource_spans.resource {
                if let Some(name) = string_attr(&resource.attributes, "service.name") {
                    received.services.push(name);
                }
            }
            for scope_spans in resource_spans.scope_spans {
                received.spans.extend(scope_spans.spans);
            }
        }
    }
    (
        StatusCode::OK,
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
}

fn attr<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

fn string_attr(attributes: &[KeyValue], key: &str) -> Option<String> {
    match attr(attributes, key) {
        Some(Value::StringValue(s)) => Some(s.clone()),
        _ => None,
    }
}

fn int_attr(span: &Span, key: &str) -> Option<i64> {
    match attr(&span.attributes, key) {
        Some(Value::IntValue(n)) => Some(*n),
        _ => None,
    }
}

fn is_error(span: &Span) -> bool {
    span.status
        .as_ref()
        .is_some_and(|s| s.code == SpanStatus::Error as i32)
}

/// One unit that writes a file and one that spawns a child: units, a nested unit, sessions, tools.
fn script() -> Script {
    Script {
        plan: vec![
            PlanUnit::file("a", "a.txt", "alpha"),
            PlanUnit::new(
                "top",
                "Top",
                "SPAWN child :: FILE child.txt := c\nFILE top.txt := t",
                &[],
            ),
        ],
        ..Script::default()
    }
}

fn run(objective: &str) -> Run {
    OTEL_VARS
        .iter()
        .fold(Run::task(objective).arg("--json"), |run, var| {
            run.without_env(var)
        })
}

/// How long the binary took to exit after the mission's last event: the cost of the final flush.
fn time_after_mission(done: &Finished, exited: SystemTime) -> Duration {
    let finished = done.events_of("mission_finished");
    let at = finished
        .first()
        .and_then(|e| e["at"].as_str())
        .and_then(|at| chrono::DateTime::parse_from_rfc3339(at).ok())
        .expect("a mission_finished event with its time");
    exited.duration_since(SystemTime::from(at)).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mission_is_exported_as_one_span_tree() {
    let repo = TestRepo::new(&[]);
    let server = fake(script()).await;
    let collector = Collector::start().await;
    let done = run("Traced work")
        .arg("--otlp-endpoint")
        .arg(&collector.base_url())
        .env("OTEL_EXPORTER_OTLP_HEADERS", "x-collector-token=secret%20one")
        .openai(&server)
        .run(&repo)
        .await;
    done.assert_code(0);
    assert_eq!(
        repo.read("child.txt").as_deref(),
        Some("c"),
        "the mission still sealed"
    );
    assert!(
        !done.stderr.contains("traces not fully exported"),
        "{}",
        done.stderr
    );

    let spans = collector.spans();
    let by_id: HashMap<&[u8], &Span> = spans.iter().map(|s| (s.span_id.as_slice(), s)).collect();
    assert_eq!(by_id.len(), spans.len(), "span ids are unique");
    let named = |name: &str| -> Vec<&Span> { spans.iter().filter(|s| s.name == name).collect() };
    let parent = |span: &Span| by_id.get(span.parent_span_id.as_slice()).copied();

    // One root, the mission, and every other span hangs from a span that was sent too.
    let roots: Vec<&Span> = spans.iter().filter(|s| s.parent_span_id.is_empty()).collect();
    assert_eq!(
        roots.len(),
        1,
        "{:?}",
        spans.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    let root = roots[0];
    assert_eq!(root.name, "mission");
    assert_eq!(
        string_attr(&root.attributes, "orchestrator.outcome").as_deref(),
        Some("sealed")
    );
    assert!(!is_error(root));
    assert!(spans.iter().all(|s| s.trace_id == root.trace_id));
    for span in &spans {
        if !span.parent_span_id.is_empty() {
            assert!(
                parent(span).is_some(),
                "{} has its parent in the trace",
                span.name
            );
        }
        assert!(
            span.start_time_unix_nano <= span.end_time_unix_nano,
            "{}",
            span.name
        );
    }

    // Phases under the mission.
    for phase in ["discovery", "planning", "execution round 1", "integration"] {
        let found = named(phase);
        assert_eq!(found.len(), 1, "{phase}");
        assert_eq!(
            parent(found[0]).map(|p| p.name.as_str()),
            Some("mission"),
            "{phase}"
        );
    }
    // Units under execution; the spawned unit under its parent.
    for unit in ["unit a", "unit top"] {
        let found = named(unit);
        assert_eq!(found.len(), 1, "{unit}");
        assert_eq!(
            parent(found[0]).map(|p| p.name.as_str()),
            Some("execution round 1"),
            "{unit}"
        );
        assert_eq!(
            string_attr(&found[0].attributes, "orchestrator.unit.state").as_deref(),
            Some("passed")
        );
    }
    let child = named("unit top.1");
    assert_eq!(child.len(), 1);
    assert_eq!(parent(child[0]).map(|p| p.name.as_str()), Some("unit top"));

    // Every worker session is under its unit; scouts under discovery.
    let workers = named("invoke_agent worker");
    assert!(workers.len() >= 3, "{}", workers.len());
    for worker in &workers {
        let unit = parent(worker).expect("worker's parent");
        assert!(unit.name.starts_with("unit "), "worker under {}", unit.name);
        assert_eq!(
            string_attr(&worker.attributes, "gen_ai.operation.name").as_deref(),
            Some("invoke_agent")
        );
    }
    let scouts = named("invoke_agent scout");
    assert_eq!(scouts.len(), 1, "a tiny repository gets one scout");
    assert!(scouts
        .iter()
        .all(|s| parent(s).map(|p| p.name.as_str()) == Some("discovery")));

    // Model calls under sessions, with the GenAI token attributes; their sum is the mission's.
    let chats: Vec<&Span> = spans.iter().filter(|s| s.name.starts_with("chat ")).collect();
    assert!(!chats.is_empty());
    for chat in &chats {
        assert!(
            parent(chat).is_some_and(|p| p.name.starts_with("invoke_agent ")),
            "{} under a session",
            chat.name
        );
        assert_eq!(chat.name, format!("chat {MODEL}"));
        assert_eq!(
            string_attr(&chat.attributes, "gen_ai.request.model").as_deref(),
            Some(MODEL)
        );
        assert!(int_attr(chat, "gen_ai.usage.input_tokens").is_some_and(|n| n > 0));
        assert!(int_attr(chat, "gen_ai.usage.output_tokens").is_some());
    }
    assert!(workers
        .iter()
        .all(|w| chats.iter().any(|c| c.parent_span_id == w.span_id)));
    let input: i64 = chats
        .iter()
        .filter_map(|c| int_attr(c, "gen_ai.usage.input_tokens"))
        .sum();
    assert_eq!(int_attr(root, "gen_ai.usage.input_tokens"), Some(input));
    // The conventions' input is every input token: plain, read from and written to the cache.
    let usage = &done.events_of("mission_finished")[0]["usage"];
    let reported: i64 = ["input_tokens", "cache_read_tokens", "cache_write_tokens"]
        .iter()
        .filter_map(|kind| usage[kind].as_i64())
        .sum();
    assert_eq!(reported, input, "the trace's tokens are the mission's");
    let read = usage["cache_read_tokens"].as_i64();
    assert!(read.is_some_and(|n| n > 0), "the fake's cache was read: {usage}");
    assert_eq!(int_attr(root, "gen_ai.usage.cache_read.input_tokens"), read);

    // Tool calls under sessions.
    let writes = named("execute_tool write");
    assert!(!writes.is_empty());
    assert!(writes
        .iter()
        .all(|w| parent(w).is_some_and(|p| p.name.starts_with("invoke_agent "))));

    // The standard environment is honoured: headers, and the service name.
    let received = collector.received.lock().expect("collector state");
    assert!(received
        .headers
        .iter()
        .all(|h| h.get("x-collector-token").and_then(|v| v.to_str().ok()) == Some("secret one")));
    assert!(
        received.services.iter().all(|s| s == "orchestrator"),
        "{:?}",
        received.services
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_collector_changes_nothing_but_a_notice() {
    // A port that was just free: nothing listens, so every export is refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let repo = TestRepo::new(&[]);
    let server = fake(script()).await;
    let done = run("Traced work, nobody listening")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &format!("http://{closed}"))
        .openai(&server)
        .run(&repo)
        .await;
    let exited = SystemTime::now();
    done.assert_code(0);
    assert_eq!(repo.read("top.txt").as_deref(), Some("t"));
    assert!(done.stdout.contains("\"outcome\":\"sealed\""), "{}", done.stdout);
    let notices: Vec<&str> = done
        .stderr
        .lines()
        .filter(|l| l.starts_with("notice: traces not fully exported"))
        .collect();
    assert_eq!(notices.len(), 1, "{}", done.stderr);
    assert!(notices[0].contains("connection refused"), "{}", notices[0]);
    // Well under the 5 s flush timeout: a refused connection is given up at once.
    let after = time_after_mission(&done, exited);
    assert!(
        after < Duration::from_secs(4),
        "exit took {after:?} after the mission ended"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_never_answers_costs_at_most_the_flush_timeout() {
    // Accepts connections and reads, never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let repo = TestRepo::new(&[]);
    let server = fake(script()).await;
    let done = run("Traced work, silent collector")
        .arg("--otlp-endpoint")
        .arg(&format!("http://{addr}"))
        .openai(&server)
        .run(&repo)
        .await;
    let exited = SystemTime::now();
    done.assert_code(0);
    assert!(done.stdout.contains("\"outcome\":\"sealed\""), "{}", done.stdout);
    assert!(
        done.stderr.contains("notice: traces not fully exported"),
        "{}",
        done.stderr
    );
    // The 5 s flush timeout, not the exporter's 10 s per request (let alone one per batch).
    let after = time_after_mission(&done, exited);
    assert!(
        after < Duration::from_secs(9),
        "exit took {after:?} after the mission ended"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_endpoint_flag_is_a_usage_error_before_anything_starts() {
    let repo = TestRepo::new(&[]);
    let server = fake(script()).await;
    let done = run("Bad flag")
        .arg("--otlp-endpoint")
        .arg("localhost:4317")
        .openai(&server)
        .run(&repo)
        .await;
    done.assert_code(2);
    assert!(done.stderr.contains("--otlp-endpoint"), "{}", done.stderr);
    assert!(server.requests().is_empty(), "no model call was made");
    assert!(!repo.path().join(".orchestrator").exists(), "nothing was started");
}

/// `orchestrator serve --otlp-endpoint`: missions started over the HTTP API are traced too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missions_started_through_serve_are_traced() {
    let repo = TestRepo::new(&[]);
    let server = fake(script()).await;
    let collector = Collector::start().await;
    let serve = OTEL_VARS.iter().fold(
        Run::cmd(&["serve", "--bind", "127.0.0.1:0", "--otlp-endpoint"])
            .arg(&collector.base_url())
            .without_env("ORCHESTRATOR_TOKEN"),
        |run, var| run.without_env(var),
    );
    let Serving {
        mut child,
        base,
        token,
        mut lines,
        ..
    } = spawn_serve(&repo, serve.openai(&server)).await;
    let token = token.expect("serve printed the token it made");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

    let http = reqwest::Client::new();
    let started: serde_json::Value = http
        .post(format!("{base}/api/missions"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"repo": repo.path(), "objective": "Traced over HTTP"}))
        .send()
        .await
        .expect("POST answers")
        .json()
        .await
        .expect("JSON answer");
    let id = started["id"].as_str().expect("the mission id").to_string();

    // The exporter sends the mission span once the mission ends.
    let mut mission_span = None;
    for _ in 0..600 {
        mission_span = collector.spans().into_iter().find(|s| s.name == "mission");
        if mission_span.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mission_span = mission_span.expect("the mission span reached the collector within 60 s");
    assert_eq!(
        string_attr(&mission_span.attributes, "orchestrator.outcome").as_deref(),
        Some("sealed")
    );
    assert_eq!(
        string_attr(&mission_span.attributes, "orchestrator.mission.id").as_deref(),
        Some(id.as_str())
    );
    assert!(collector.spans().iter().any(|s| s.name == "unit top.1"));
    if let Some(pid) = child.id() {
        // SAFETY: signals the server process this test started.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    }
    let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
}
