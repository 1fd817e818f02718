//! The governor against the fake model server: shared Retry-After pauses, adaptive concurrency,
//! retries of 429s, 5xx, hung and dropped replies, the bounded total wait and cancellation.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::common::{base_url, client, config, for_each_api, for_each_variant, label, simple_request, start};
use async_trait::async_trait;
use orchestrator_fake_model::{
    Api, FakeOptions, FakeServer, FaultKind, FaultPlan, Faults, Reply, SeenRequest,
};
use orchestrator_model::{
    ChatRequest, ChatResponse, GovernedClient, GovernorConfig, ModelClient, ModelError,
};
use tokio_util::sync::CancellationToken;

/// Counts the inner client's calls in flight, as the governor sees them: exact, unlike the server's
/// count, which a finished response may leave raised for a moment after the client is done.
struct Recorder {
    inner: Box<dyn ModelClient>,
    now: AtomicUsize,
    peak: AtomicUsize,
}

#[async_trait]
impl ModelClient for Recorder {
    fn provider(&self) -> &'static str {
        self.inner.provider()
    }

    async fn chat(
        &self,
        request: &ChatRequest,
        cancel: &CancellationToken,
    ) -> Result<ChatResponse, ModelError> {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        let reply = self.inner.chat(request, cancel).await;
        self.now.fetch_sub(1, Ordering::SeqCst);
        reply
    }

    async fn preflight(&self, model: &str) -> Result<(), ModelError> {
        self.inner.preflight(model).await
    }
}

/// Waits short enough for tests; the total wait stays long so only the tests about it give up.
fn governor_config(max_concurrency: usize) -> GovernorConfig {
    GovernorConfig {
        max_concurrency,
        base_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        max_total_wait: Duration::from_secs(60),
        ..GovernorConfig::default()
    }
}

/// A client without its own retries, for a server and API.
fn inner(server: &FakeServer, api: Api, stream: bool) -> Box<dyn ModelClient> {
    client(api, config(base_url(server, api), stream).without_retries())
}

fn governed(server: &FakeServer, api: Api, stream: bool, governor: GovernorConfig) -> Arc<GovernedClient> {
    Arc::new(GovernedClient::new(
        Arc::from(inner(server, api, stream)),
        governor,
    ))
}

fn text(reply: Result<ChatResponse, ModelError>) -> String {
    match reply {
        Ok(reply) => reply.content,
        Err(e) => format!("error: {e}"),
    }
}

/// Runs `callers` concurrent calls through `client`, each with its own conversation.
async fn call_concurrently(client: Arc<GovernedClient>, callers: usize) -> Vec<String> {
    let calls = (0..callers).map(|i| {
        let client = client.clone();
        tokio::spawn(async move {
            let mut request = simple_request();
            request.messages = vec![orchestrator_model::Message::user(format!("caller {i}"))];
            text(client.chat(&request, &CancellationToken::new()).await)
        })
    });
    futures::future::join_all(calls)
        .await
        .into_iter()
        .map(|joined| joined.unwrap_or_else(|e| format!("error: the caller panicked: {e}")))
        .collect()
}

#[tokio::test]
async fn concurrent_callers_ride_out_rate_limits_within_the_limit() {
    for_each_api(|api| async move {
        let retry_after = Duration::from_millis(400);
        let plan = FaultPlan {
            rate_limited: 25,
            retry_after: Some(retry_after),
            ..FaultPlan::default()
        };
        let brain = Faults::new(|_: &SeenRequest| Reply::Text("fine".into()), plan);
        let faults = brain.log();
        let server = start(brain, FakeOptions::default()).await;
        let recorder = Arc::new(Recorder {
            inner: inner(&server, api, api == Api::OpenAi),
            now: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
        });
        let client = Arc::new(GovernedClient::new(recorder.clone(), governor_config(4)));
        let replies = call_concurrently(client.clone(), 16).await;
        assert!(replies.iter().all(|r| r == "fine"), "{api:?}: {replies:?}");
        assert!(
            recorder.peak.load(Ordering::SeqCst) <= 4,
            "{api:?}: more in flight than the limit"
        );
        assert!(
            faults.count(FaultKind::RateLimited) >= 1,
            "{api:?}: no 429 was injected"
        );
        // Requests the client had sent before it read a 429 may arrive just after it; anything
        // later must wait out the Retry-After.
        let early = faults.early_arrivals(&server.arrivals(), retry_after / 2);
        assert!(
            early.is_empty(),
            "{api:?}: requests came during a Retry-After: {early:?}"
        );
        let stats = client.governor("fake-model").stats();
        assert_eq!(stats.rate_limited as usize, faults.count(FaultKind::RateLimited));
        assert_eq!(
            stats.retries, stats.rate_limited,
            "{api:?}: every 429 is retried once"
        );
        assert_eq!((stats.in_flight, stats.waiting), (0, 0));
        assert!(
            stats.peak_in_flight <= 4 && stats.peak_in_flight >= 1,
            "{stats:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn no_request_reaches_the_server_during_a_retry_after() {
    // With one request in flight at a time, the 429's answer is the only thing in flight, so the
    // check is exact: every later arrival comes after the whole Retry-After.
    let retry_after = Duration::from_millis(250);
    let limited_at = Arc::new(Mutex::new(Vec::new()));
    let record = limited_at.clone();
    let server = start(
        move |request: &SeenRequest| {
            if request.seq.is_multiple_of(3) {
                record.lock().expect("lock").push(Instant::now());
                Reply::Error {
                    status: 429,
                    body: "slow down".into(),
                    retry_after: Some(retry_after),
                }
            } else {
                Reply::Text("fine".into())
            }
        },
        FakeOptions::default(),
    )
    .await;
    let client = governed(&server, Api::OpenAi, true, governor_config(1));
    let replies = call_concurrently(client, 6).await;
    assert!(replies.iter().all(|r| r == "fine"), "{replies:?}");
    let limited_at = limited_at.lock().expect("lock").clone();
    assert!(limited_at.len() >= 2, "only {} 429s", limited_at.len());
    let arrivals = server.arrivals();
    for limited in &limited_at {
        for arrived in arrivals.iter().filter(|a| *a > limited) {
            let after = *arrived - *limited;
            assert!(after >= retry_after, "a request came {after:?} after a 429");
        }
    }
}

#[tokio::test]
async fn server_errors_are_retried_until_success() {
    for_each_variant(|api, stream| async move {
        let server = start(
            |request: &SeenRequest| match request.seq {
                0..=2 => Reply::Error {
                    status: if request.seq == 1 { 529 } else { 500 },
                    body: "boom".into(),
                    retry_after: None,
                },
                _ => Reply::Text("recovered".into()),
            },
            FakeOptions::default(),
        )
        .await;
        let client = governed(&server, api, stream, governor_config(4));
        let reply = client.chat(&simple_request(), &CancellationToken::new()).await;
        assert_eq!(text(reply), "recovered", "{}", label(api, stream));
        assert_eq!(server.request_count(), 4);
        let stats = client.governor("fake-model").stats();
        assert_eq!(stats.retries, 3);
        assert_eq!(stats.limit, 2, "the 529 (overloaded) halves the limit");
    })
    .await;
}

#[tokio::test]
async fn a_hung_request_is_cut_by_the_timeout_and_retried() {
    for_each_variant(|api, stream| async move {
        let server = start(
            |request: &SeenRequest| match request.seq {
                0 => Reply::Hang,
                _ => Reply::Text("answered".into()),
            },
            FakeOptions::default(),
        )
        .await;
        let mut config = config(base_url(&server, api), stream).without_retries();
        config.first_byte_timeout = Duration::from_millis(200);
        let client = GovernedClient::new(Arc::from(client(api, config)), governor_config(4));
        let reply = client.chat(&simple_request(), &CancellationToken::new()).await;
        assert_eq!(text(reply), "answered", "{}", label(api, stream));
        assert_eq!(server.request_count(), 2);
    })
    .await;
}

#[tokio::test]
async fn a_dropped_stream_is_retried() {
    for_each_variant(|api, stream| async move {
        let server = start(
            |request: &SeenRequest| match request.seq {
                0 => Reply::DropStream {
                    text: "half of this reply never arrives".into(),
                },
                _ => Reply::Text("whole".into()),
            },
            FakeOptions::default(),
        )
        .await;
        let client = governed(&server, api, stream, governor_config(4));
        let reply = client.chat(&simple_request(), &CancellationToken::new()).await;
        assert_eq!(text(reply), "whole", "{}", label(api, stream));
        assert_eq!(server.request_count(), 2);
    })
    .await;
}

#[tokio::test]
async fn unreadable_replies_are_retried_a_bounded_number_of_times() {
    let server = start(
        |_: &SeenRequest| Reply::Raw {
            status: 200,
            content_type: "application/json".into(),
            body: "{\"half".into(),
        },
        FakeOptions::default(),
    )
    .await;
    let client = governed(&server, Api::OpenAi, false, governor_config(4));
    let error = client
        .chat(&simple_request(), &CancellationToken::new())
        .await
        .expect_err("junk forever");
    assert!(matches!(error, ModelError::Protocol(_)), "{error}");
    assert_eq!(
        server.request_count(),
        3,
        "one attempt and max_protocol_retries = 2"
    );
}

#[tokio::test]
async fn auth_and_bad_requests_are_not_retried() {
    for (status, body) in [(401, "bad key"), (400, "bad request")] {
        let server = start(
            move |_: &SeenRequest| Reply::Error {
                status,
                body: body.into(),
                retry_after: None,
            },
            FakeOptions::default(),
        )
        .await;
        let client = governed(&server, Api::OpenAi, true, governor_config(4));
        let error = client
            .chat(&simple_request(), &CancellationToken::new())
            .await
            .expect_err("fails");
        assert!(!error.is_transient(), "{error}");
        assert_eq!(server.request_count(), 1, "HTTP {status} is not retried");
    }
}

#[tokio::test]
async fn the_total_wait_is_bounded_with_a_clear_error() {
    let server = start(
        |_: &SeenRequest| Reply::Error {
            status: 500,
            body: "down".into(),
            retry_after: None,
        },
        FakeOptions::default(),
    )
    .await;
    let governor = GovernorConfig {
        max_total_wait: Duration::from_millis(300),
        ..governor_config(4)
    };
    let client = governed(&server, Api::Anthropic, false, governor);
    let started = Instant::now();
    let error = client
        .chat(&simple_request(), &CancellationToken::new())
        .await
        .expect_err("gives up");
    let text = error.to_string();
    match &error {
        ModelError::GaveUp { attempts, last, .. } => {
            assert!(*attempts >= 2, "{text}");
            assert!(matches!(**last, ModelError::Server { status: 500, .. }), "{text}");
        }
        other => panic!("expected GaveUp, got {other}"),
    }
    assert!(text.contains("the endpoint kept failing for") && text.contains("giving up on this call"));
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "gave up early: {text}"
    );
    assert_eq!(client.governor("fake-model").stats().gave_up, 1);
}

#[tokio::test]
async fn a_retry_after_past_the_allowance_gives_up_at_once() {
    let server = start(
        |_: &SeenRequest| Reply::Error {
            status: 429,
            body: "come back tomorrow".into(),
            retry_after: Some(Duration::from_secs(3600)),
        },
        FakeOptions::default(),
    )
    .await;
    let governor = GovernorConfig {
        max_total_wait: Duration::from_secs(60),
        ..governor_config(4)
    };
    let client = governed(&server, Api::OpenAi, false, governor);
    let error = client
        .chat(&simple_request(), &CancellationToken::new())
        .await
        .expect_err("gives up");
    let text = error.to_string();
    assert!(text.starts_with("rate limited for "), "{text}");
    assert!(text.contains("asks to wait another"), "{text}");
    assert_eq!(server.request_count(), 1);
}

#[tokio::test]
async fn cancel_interrupts_a_retry_after_wait_for_every_caller() {
    let server = start(
        |_: &SeenRequest| Reply::Error {
            status: 429,
            body: "later".into(),
            retry_after: Some(Duration::from_secs(30)),
        },
        FakeOptions::default(),
    )
    .await;
    let client = governed(&server, Api::OpenAi, true, governor_config(1));
    let cancel = CancellationToken::new();
    let first = {
        let (client, cancel) = (client.clone(), cancel.clone());
        tokio::spawn(async move { client.chat(&simple_request(), &cancel).await })
    };
    // The second caller queues behind the first, then behind the pause the 429 starts.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let second = {
        let (client, cancel) = (client.clone(), cancel.clone());
        tokio::spawn(async move { client.chat(&simple_request(), &cancel).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    cancel.cancel();
    for caller in [first, second] {
        let outcome = caller.await.expect("the caller finishes");
        assert!(matches!(outcome, Err(ModelError::Cancelled)), "{outcome:?}");
    }
    // Far below the 30 s pause; loose enough for a loaded machine.
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(server.request_count(), 1, "nothing was sent during the pause");
    let stats = client.governor("fake-model").stats();
    assert_eq!((stats.in_flight, stats.waiting), (0, 0));
    assert!(stats.paused_for.is_some());
}

#[tokio::test]
async fn each_model_has_its_own_governor() {
    let server = start(|_: &SeenRequest| Reply::Text("ok".into()), FakeOptions::default()).await;
    let client = GovernedClient::new(Arc::from(inner(&server, Api::OpenAi, true)), governor_config(4))
        .with_model_config("small-model", governor_config(2));
    let mut small = simple_request();
    small.model = "small-model".into();
    for request in [simple_request(), small] {
        assert_eq!(text(client.chat(&request, &CancellationToken::new()).await), "ok");
    }
    let stats = client.stats();
    let limits: Vec<(&str, usize)> = stats.iter().map(|(m, s)| (m.as_str(), s.max_limit)).collect();
    assert_eq!(limits, vec![("fake-model", 4), ("small-model", 2)]);
}
