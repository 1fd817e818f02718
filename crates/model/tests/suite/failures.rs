//! Failure handling, for both APIs: auth, rate limits, server errors, timeouts, cancellation,
//! unreachable endpoints and malformed replies.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::common::{
    base_url, client, client_for, config, for_each_api, for_each_variant, label, simple_request, start,
};
use orchestrator_fake_model::{Api, FakeOptions, Reply, SeenRequest};
use orchestrator_model::ModelError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn wrong_key_fails_fast_with_auth() {
    for_each_variant(|api, stream| async move {
        let options = FakeOptions {
            api_key: Some("sk-right-key-0000".into()),
            ..FakeOptions::default()
        };
        let server = start(|_: &SeenRequest| Reply::Text("never".into()), options).await;
        let mut config = config(base_url(&server, api), stream);
        config.api_key = Some("sk-wrong-key-1234".into());
        let error = client(api, config)
            .chat(&simple_request(), &CancellationToken::new())
            .await
            .expect_err("a wrong key fails");
        assert!(
            matches!(error, ModelError::Auth { status: 401, .. }),
            "{}: {error}",
            label(api, stream)
        );
        assert_eq!(server.request_count(), 1, "auth failures are not retried");
        assert!(!error.to_string().contains("sk-wrong-key-1234"));
    })
    .await;
}

#[tokio::test]
async fn the_right_key_is_sent() {
    for_each_api(|api| async move {
        let options = FakeOptions {
            api_key: Some("sk-right-key-0000".into()),
            ..FakeOptions::default()
        };
        let server = start(|_: &SeenRequest| Reply::Text("in".into()), options).await;
        let mut config = config(base_url(&server, api), true);
        config.api_key = Some("sk-right-key-0000".into());
        let reply = client(api, config)
            .chat(&simple_request(), &CancellationToken::new())
            .await;
        assert_eq!(reply.map(|r| r.content).ok().as_deref(), Some("in"), "{api:?}");
    })
    .await;
}

#[tokio::test]
async fn keys_echoed_by_the_server_are_redacted() {
    for_each_api(|api| async move {
        let server = start(
            |_: &SeenRequest| Reply::Error {
                status: 400,
                body: "you sent the key hunter2-is-my-key and Bearer sk-abcdefghijkl".into(),
                retry_after: None,
            },
            FakeOptions::default(),
        )
        .await;
        let mut config = config(base_url(&server, api), false);
        config.api_key = Some("hunter2-is-my-key".into());
        let error = client(api, config)
            .chat(&simple_request(), &CancellationToken::new())
            .await
            .expect_err("a 400 fails");
        let text = error.to_string();
        assert!(
            matches!(error, ModelError::BadRequest { status: 400, .. }),
            "{api:?}: {text}"
        );
        assert!(
            !text.contains("hunter2-is-my-key") && !text.contains("abcdefghijkl"),
            "{text}"
        );
        assert_eq!(server.request_count(), 1, "400 is not retried");
    })
    .await;
}

#[tokio::test]
async fn rate_limit_honours_retry_after_then_succeeds() {
    for_each_variant(|api, stream| async move {
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let seen = arrivals.clone();
        let server = start(
            move |request: &SeenRequest| {
                seen.lock().expect("lock").push(Instant::now());
                if request.seq == 0 {
                    Reply::Error {
                        status: 429,
                        body: "slow down".into(),
                        retry_after: Some(Duration::from_secs(1)),
                    }
                } else {
                    Reply::Text("made it".into())
                }
            },
            FakeOptions::default(),
        )
        .await;
        let reply = client_for(&server, api, stream)
            .chat(&simple_request(), &CancellationToken::new())
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", label(api, stream)));
        assert_eq!(reply.content, "made it");
        let arrivals = arrivals.lock().expect("lock").clone();
        assert_eq!(arrivals.len(), 2);
        let gap = arrivals[1] - arrivals[0];
        assert!(
            gap >= Duration::from_millis(950),
            "{}: retried after {gap:?}",
            label(api, stream)
        );
    })
    .await;
}

#[tokio::test]
async fn rate_limit_forever_becomes_rate_limited() {
    for_each_api(|api| async move {
        let server = start(
            |_: &SeenRequest| Reply::Error {
                status: 429,
                body: "slow down".into(),
                retry_after: None,
            },
            FakeOptions::default(),
        )
        .await;
        let error = client_for(&server, api, false)
            .chat(&simple_request(), &CancellationToken::new())
            .await
            .expect_err("fails");
        assert!(
            matches!(error, ModelError::RateLimited { .. }),
            "{api:?}: {error}"
        );
        assert_eq!(server.request_count(), 3);
    })
    .await;
}

#[tokio::test]
async fn server_errors_are_retried_exactly_max_retries_times() {
    for_each_variant(|api, stream| async move {
        let status = if api == Api::Anthropic { 529 } else { 500 };
        let server = start(
            move |_: &SeenRequest| Reply::Error {
                status,
                body: "boom".into(),
                retry_after: None,
            },
            FakeOptions::default(),
        )
        .await;
        let error = client_for(&server, api, stream)
            .chat(&simple_request(), &CancellationToken::new())
            .await
            .expect_err("fails");
        assert!(
            matches!(&error, ModelError::Server { status: s, body, .. } if *s == status && body.contains("boom")),
            "{error}"
        );
        assert_eq!(server.request_count(), 3, "max_retries = 2 means 3 attempts");
    })
    .await;
}

#[tokio::test]
async fn a_transient_error_then_success() {
    for_each_variant(|api, stream| async move {
        let server = start(
            |request: &SeenRequest| match request.seq {
                0 => Reply::Error {
                    status: 503,
                    body: "warming up".into(),
                    retry_after: None,
                },
                _ => Reply::Text("ready".into()),
            },
            FakeOptions::default(),
        )
        .await;
        let reply = client_for(&server, api, stream)
            .chat(&simple_request(), &CancellationToken::new())
            .await;
        assert_eq!(
            reply.map(|r| r.content).ok().as_deref(),
            Some("ready"),
            "{}",
            label(api, stream)
        );
    })
    .await;
}

/// A port nobody listens on: bind one, note it, let it go.
async fn refused_url(api: Api) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let addr = listener.local_addr().expect("has an address");
    drop(listener);
    match api {
        Api::OpenAi => format!("http://{addr}/v1"),
        Api::Anthropic => format!("http://{addr}"),
    }
}

#[tokio::test]
async fn connection_refused_becomes_unreachable() {
    for_each_api(|api| async move {
        let url = refused_url(api).await;
        let started = Instant::now();
        let error = client(api, config(url.clone(), true))
            .chat(&simple_request(), &CancellationToken::new())
            .await
            .expect_err("nobody listens");
        match &error {
            ModelError::Unreachable {
                url: reported,
                reason,
            } => {
                assert!(reported.starts_with(&url), "{reported}");
                assert!(reason.contains("base URL"), "the hint is missing: {reason}");
            }
            other => panic!("{api:?}: expected Unreachable, got {other}"),
        }
        assert!(started.elapsed() < Duration::from_secs(2));
    })
    .await;
}

#[tokio::test]
async fn hang_times_out_after_bounded_retries() {
    for_each_variant(|api, stream| async move {
        let server = start(|_: &SeenRequest| Reply::Hang, FakeOptions::default()).await;
        let mut config = config(base_url(&server, api), stream);
        config.first_byte_timeout = Duration::from_millis(200);
        config.max_retries = 1;
        let started = Instant::now();
        let error = client(api, config)
            .chat(&simple_request(), &CancellationToken::new())
            .await
            .expect_err("times out");
        assert!(
            matches!(error, ModelError::Timeout(_)),
            "{}: {error}",
            label(api, stream)
        );
        assert_eq!(server.request_count(), 2);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "took {:?}",
            started.elapsed()
        );
    })
    .await;
}

#[tokio::test]
async fn cancel_during_hang_is_prompt() {
    for_each_variant(|api, stream| async move {
        let server = start(|_: &SeenRequest| Reply::Hang, FakeOptions::default()).await;
        let mut config = config(base_url(&server, api), stream);
        config.first_byte_timeout = Duration::from_secs(60);
        let cancel = CancellationToken::new();
        let trigger = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(150)).await;
            trigger.cancel();
        });
        let started = Instant::now();
        let error = client(api, config)
            .chat(&simple_request(), &cancel)
            .await
            .expect_err("cancelled");
        assert!(
            matches!(error, ModelError::Cancelled),
            "{}: {error}",
            label(api, stream)
        );
        assert!(
            started.elapsed() < Duration::from_millis(700),
            "took {:?}",
            started.elapsed()
        );
    })
    .await;
}

#[tokio::test]
async fn cancel_during_backoff_is_prompt() {
    for_each_api(|api| async move {
        let server = start(
            |_: &SeenRequest| Reply::Error {
                status: 429,
                body: "later".into(),
                retry_after: Some(Duration::from_secs(30)),
            },
            FakeOptions::default(),
        )
        .await;
        let cancel = CancellationToken::new();
        let trigger = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(150)).await;
            trigger.cancel();
        });
        let started = Instant::now();
        let error = client_for(&server, api, false)
            .chat(&simple_request(), &cancel)
            .await
            .expect_err("cancelled");
        assert!(matches!(error, ModelError::Cancelled), "{api:?}: {error}");
        assert!(started.elapsed() < Duration::from_millis(700));
        assert_eq!(server.request_count(), 1);
    })
    .await;
}

#[tokio::test]
async fn malformed_replies_are_protocol_errors() {
    for_each_variant(|api, stream| async move {
        let server = start(
            move |_: &SeenRequest| {
                if stream {
                    Reply::Raw {
                        status: 200,
                        content_type: "text/event-stream".into(),
                        body: "data: {\"choices\": [oops\n\nevent: message_start\ndata: {nope\n\n".into(),
                    }
                } else {
                    Reply::Raw {
                        status: 200,
                        content_type: "application/json".into(),
                        body: "{\"id\": \"half a reply".into(),
                    }
                }
            },
            FakeOptions::default(),
        )
        .await;
        let error = client_for(&server, api, stream)
            .chat(&simple_request(), &CancellationToken::new())
            .await
            .expect_err("malformed");
        assert!(
            matches!(error, ModelError::Protocol(_)),
            "{}: {error}",
            label(api, stream)
        );
        assert_eq!(server.request_count(), 1, "malformed replies are not retried");
    })
    .await;
}

#[tokio::test]
async fn a_stream_cut_short_is_a_protocol_error() {
    for_each_api(|api| async move {
        let body = match api {
            Api::OpenAi => "data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\n",
            Api::Anthropic => "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":1}}}\n\n",
        };
        let server = start(
            move |_: &SeenRequest| Reply::Raw {
                status: 200,
                content_type: "text/event-stream".into(),
                body: body.into(),
            },
            FakeOptions::default(),
        )
        .await;
        let error = client_for(&server, api, true)
            .chat(&simple_request(), &CancellationToken::new())
            .await
            .expect_err("incomplete");
        assert!(matches!(error, ModelError::Protocol(_)), "{api:?}: {error}");
    })
    .await;
}

#[tokio::test]
async fn in_stream_error_events_are_classified() {
    let server = start(
        |request: &SeenRequest| match request.seq {
            0 => Reply::Raw {
                status: 200,
                content_type: "text/event-stream".into(),
                body: "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n".into(),
            },
            _ => Reply::Text("recovered".into()),
        },
        FakeOptions::default(),
    )
    .await;
    let reply = client_for(&server, Api::Anthropic, true)
        .chat(&simple_request(), &CancellationToken::new())
        .await;
    assert_eq!(reply.map(|r| r.content).ok().as_deref(), Some("recovered"));
    assert_eq!(server.request_count(), 2, "overloaded is retried");
}

/// A server that sends the response head and the first event, then goes silent: what a wedged
/// upstream looks like. Counts the connections it accepted.
async fn stalling_server(api: Api) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let addr = listener.local_addr().expect("has an address");
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buffer = [0u8; 8192];
                let _ = socket.read(&mut buffer).await;
                let event = "data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\n";
                let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
                let chunk = format!("{:x}\r\n{event}\r\n", event.len());
                let _ = socket.write_all(format!("{head}{chunk}").as_bytes()).await;
                tokio::time::sleep(Duration::from_secs(30)).await;
            });
        }
    });
    let url = match api {
        Api::OpenAi => format!("http://{addr}/v1"),
        Api::Anthropic => format!("http://{addr}"),
    };
    (url, accepted)
}

#[tokio::test]
async fn a_stalled_stream_times_out_and_is_retried() {
    for_each_api(|api| async move {
        let (url, accepted) = stalling_server(api).await;
        let mut config = config(url, true);
        config.idle_timeout = Duration::from_millis(200);
        config.max_retries = 1;
        let started = Instant::now();
        let error = client(api, config)
            .chat(&simple_request(), &CancellationToken::new())
            .await
            .expect_err("stalls");
        assert!(matches!(error, ModelError::Timeout(_)), "{api:?}: {error}");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        assert!(started.elapsed() < Duration::from_secs(2));
    })
    .await;
}

#[tokio::test]
async fn a_dropped_stream_is_retried() {
    for_each_variant(|api, stream| async move {
        let server = start(
            |request: &SeenRequest| match request.seq {
                0 => Reply::DropStream {
                    text: "this reply is cut off half way through".into(),
                },
                _ => Reply::Text("whole".into()),
            },
            FakeOptions::default(),
        )
        .await;
        let reply = client_for(&server, api, stream)
            .chat(&simple_request(), &CancellationToken::new())
            .await;
        assert_eq!(
            reply.map(|r| r.content).ok().as_deref(),
            Some("whole"),
            "{}",
            label(api, stream)
        );
        assert_eq!(server.request_count(), 2);
    })
    .await;
}

#[tokio::test]
async fn statuses_that_will_not_heal_fail_at_once_and_conflicts_are_retried() {
    // (status, attempts with max_retries = 2): 501/505 and 4xx other than 408/409/429 are answered
    // the same way forever, so retrying them only delays the error.
    let cases = [
        (501, 1),
        (505, 1),
        (404, 1),
        (400, 1),
        (422, 1),
        (405, 1),
        (408, 3),
        (409, 3),
    ];
    futures::future::join_all(cases.iter().map(|&(status, attempts)| async move {
        let server = start(
            move |_: &SeenRequest| Reply::Error {
                status,
                body: "no".into(),
                retry_after: None,
            },
            FakeOptions::default(),
        )
        .await;
        let error = client_for(&server, Api::OpenAi, false)
            .chat(&simple_request(), &CancellationToken::new())
            .await
            .expect_err("fails");
        assert_eq!(error.is_transient(), attempts > 1, "HTTP {status}: {error}");
        assert_eq!(server.request_count(), attempts, "HTTP {status}: {error}");
    }))
    .await;
}
