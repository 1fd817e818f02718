//! The fake server over real HTTP on 127.0.0.1: routing, bookkeeping, errors and shutdown.

use std::time::{Duration, Instant};

use orchestrator_fake_model::{Api, FakeOptions, FakeServer, Reply, SeenMessage, SeenRequest};
use serde_json::{json, Value};

fn echo(request: &SeenRequest) -> Reply {
    Reply::Text(format!("you said: {}", request.first_user_text()))
}

async fn post(url: String, body: Value, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = reqwest::Client::new().post(url).json(&body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.expect("the fake answers")
}

fn openai_body(text: &str, stream: bool) -> Value {
    json!({"model": "m", "stream": stream, "stream_options": {"include_usage": true},
           "messages": [{"role": "user", "content": text}]})
}

fn anthropic_body(text: &str, stream: bool) -> Value {
    json!({"model": "m", "max_tokens": 10, "stream": stream, "messages": [{"role": "user", "content": text}]})
}

#[tokio::test]
async fn answers_both_apis_and_records_requests() {
    let server = FakeServer::start(echo, FakeOptions::default())
        .await
        .expect("starts");
    let openai: Value = post(
        format!("{}/chat/completions", server.openai_base_url()),
        openai_body("hi", false),
        &[],
    )
    .await
    .json()
    .await
    .expect("json");
    assert_eq!(openai["choices"][0]["message"]["content"], json!("you said: hi"));
    assert_eq!(openai["choices"][0]["finish_reason"], json!("stop"));
    assert!(openai["usage"]["prompt_tokens"].as_u64() >= Some(1));

    let anthropic: Value = post(
        format!("{}/v1/messages", server.anthropic_base_url()),
        anthropic_body("yo", false),
        &[],
    )
    .await
    .json()
    .await
    .expect("json");
    assert_eq!(anthropic["content"][0]["text"], json!("you said: yo"));
    assert_eq!(anthropic["stop_reason"], json!("end_turn"));

    let seen = server.requests();
    assert_eq!(server.request_count(), 2);
    assert_eq!((seen[0].seq, seen[0].api), (0, Api::OpenAi));
    assert_eq!(
        (seen[1].seq, seen[1].api, seen[1].max_tokens),
        (1, Api::Anthropic, Some(10))
    );
    assert!(matches!(&seen[1].messages[0], SeenMessage::User { text } if text == "yo"));
}

#[tokio::test]
async fn streams_in_each_api_format() {
    let server = FakeServer::start(
        |_: &SeenRequest| Reply::ToolCalls {
            text: "calling".into(),
            calls: vec![("read".into(), "{\"path\": \"src/lib.rs\"}".into())],
        },
        FakeOptions::default(),
    )
    .await
    .expect("starts");
    let response = post(
        format!("{}/chat/completions", server.openai_base_url()),
        openai_body("x", true),
        &[],
    )
    .await;
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let text = response.text().await.expect("body");
    assert!(text.ends_with("data: [DONE]\n\n"));
    assert!(text.contains("\"finish_reason\":\"tool_calls\"") && text.contains("\"id\":\"call_"));

    let text = post(
        format!("{}/v1/messages", server.anthropic_base_url()),
        anthropic_body("x", true),
        &[],
    )
    .await
    .text()
    .await
    .expect("body");
    assert!(text.starts_with("event: message_start\n"));
    assert!(text.contains("\"stop_reason\":\"tool_use\"") && text.contains("\"id\":\"toolu_"));
    assert!(text.ends_with("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"));
}

#[tokio::test]
async fn malformed_bodies_get_a_400_in_api_style() {
    let server = FakeServer::start(echo, FakeOptions::default())
        .await
        .expect("starts");
    let response = post(
        format!("{}/chat/completions", server.openai_base_url()),
        json!({"model": 1}),
        &[],
    )
    .await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.expect("json");
    assert!(body["error"]["message"].is_string());

    let response = reqwest::Client::new()
        .post(format!("{}/v1/messages", server.anthropic_base_url()))
        .body("{not json")
        .send()
        .await
        .expect("answers");
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"]["type"], json!("invalid_request_error"));
    assert_eq!(server.request_count(), 0);
}

#[tokio::test]
async fn wrong_keys_get_a_401_in_api_style() {
    let options = FakeOptions {
        api_key: Some("sk-right".into()),
        ..FakeOptions::default()
    };
    let server = FakeServer::start(echo, options).await.expect("starts");
    let url = format!("{}/chat/completions", server.openai_base_url());
    let wrong = post(
        url.clone(),
        openai_body("x", false),
        &[("authorization", "Bearer sk-wrong")],
    )
    .await;
    assert_eq!(wrong.status(), 401);
    let right = post(
        url,
        openai_body("x", false),
        &[("authorization", "Bearer sk-right")],
    )
    .await;
    assert_eq!(right.status(), 200);

    let url = format!("{}/v1/messages", server.anthropic_base_url());
    let wrong = post(url.clone(), anthropic_body("x", false), &[]).await;
    assert_eq!(wrong.status(), 401);
    let body: Value = wrong.json().await.expect("json");
    assert_eq!(body["error"]["type"], json!("authentication_error"));
    let right = post(url, anthropic_body("x", false), &[("x-api-key", "sk-right")]).await;
    assert_eq!(right.status(), 200);
    assert_eq!(server.request_count(), 4, "rejected requests are recorded too");

    let models = reqwest::Client::new()
        .get(format!("{}/models", server.openai_base_url()))
        .header("x-api-key", "sk-right")
        .send()
        .await
        .expect("answers");
    assert_eq!(models.status(), 200);
}

#[tokio::test]
async fn errors_carry_retry_after() {
    let server = FakeServer::start(
        |_: &SeenRequest| Reply::Error {
            status: 429,
            body: "slow down".into(),
            retry_after: Some(Duration::from_secs(2)),
        },
        FakeOptions::default(),
    )
    .await
    .expect("starts");
    let response = post(
        format!("{}/chat/completions", server.openai_base_url()),
        openai_body("x", false),
        &[],
    )
    .await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "2");
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"]["message"], json!("slow down"));
}

#[tokio::test]
async fn counts_requests_in_flight() {
    let options = FakeOptions {
        latency: Duration::from_millis(200),
        ..FakeOptions::default()
    };
    let server = FakeServer::start(echo, options).await.expect("starts");
    let url = format!("{}/chat/completions", server.openai_base_url());
    let calls = (0..3).map(|_| post(url.clone(), openai_body("x", true), &[]));
    let started = Instant::now();
    let (responses, peek) = tokio::join!(futures::future::join_all(calls), async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        server.in_flight()
    });
    for response in responses {
        response.text().await.expect("body");
    }
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(peek, 3);
    assert_eq!(server.max_in_flight(), 3);
    assert_eq!(server.in_flight(), 0);
}

#[tokio::test]
async fn shutdown_releases_hanging_requests_and_the_port() {
    let server = FakeServer::start(|_: &SeenRequest| Reply::Hang, FakeOptions::default())
        .await
        .expect("starts");
    let addr = server.addr();
    let url = format!("{}/chat/completions", server.openai_base_url());
    let hanging = tokio::spawn(post(url, openai_body("x", false), &[]));
    while server.in_flight() == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = Instant::now();
    server.shutdown().await;
    assert!(started.elapsed() < Duration::from_secs(1));
    let response = hanging.await.expect("joins");
    assert_eq!(response.status(), 503);
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still listening after shutdown"
    );
}

#[tokio::test]
async fn dropping_the_server_stops_it() {
    let server = FakeServer::start(echo, FakeOptions::default())
        .await
        .expect("starts");
    let addr = server.addr();
    drop(server);
    // The abort lands on the next scheduler turn.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still listening after drop"
    );
}

#[tokio::test]
async fn raw_replies_are_sent_verbatim() {
    let server = FakeServer::start(
        |_: &SeenRequest| Reply::Raw {
            status: 200,
            content_type: "application/json".into(),
            body: "{\"half\": ".into(),
        },
        FakeOptions::default(),
    )
    .await
    .expect("starts");
    let response = post(
        format!("{}/v1/messages", server.anthropic_base_url()),
        anthropic_body("x", false),
        &[],
    )
    .await;
    assert_eq!(response.text().await.expect("body"), "{\"half\": ");
}

#[tokio::test]
async fn drop_stream_cuts_the_connection_mid_reply() {
    let server = FakeServer::start(
        |_: &SeenRequest| Reply::DropStream {
            text: "a reply long enough to be sent in several pieces".into(),
        },
        FakeOptions::default(),
    )
    .await
    .expect("starts");
    for stream in [true, false] {
        let response = post(
            format!("{}/chat/completions", server.openai_base_url()),
            openai_body("x", stream),
            &[],
        )
        .await;
        assert_eq!(response.status(), 200, "the reply starts normally");
        let body = response.bytes().await;
        assert!(body.is_err(), "stream {stream}: the body must fail, got {body:?}");
    }
    let response = post(
        format!("{}/v1/messages", server.anthropic_base_url()),
        anthropic_body("x", true),
        &[],
    )
    .await;
    let mut partial = Vec::new();
    let mut response = response;
    let outcome = loop {
        match response.chunk().await {
            Ok(Some(chunk)) => partial.extend_from_slice(&chunk),
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    assert!(outcome.is_err(), "the stream must break");
    let partial = String::from_utf8_lossy(&partial);
    assert!(partial.starts_with("event: message_start"), "{partial}");
    assert!(!partial.contains("message_stop"), "{partial}");
}

#[tokio::test]
async fn records_arrival_times_in_order() {
    let server = FakeServer::start(echo, FakeOptions::default())
        .await
        .expect("starts");
    let before = Instant::now();
    for text in ["a", "b", "c"] {
        post(
            format!("{}/chat/completions", server.openai_base_url()),
            openai_body(text, false),
            &[],
        )
        .await;
    }
    let arrivals = server.arrivals();
    assert_eq!(arrivals.len(), server.request_count());
    assert!(arrivals[0] >= before);
    assert!(arrivals.windows(2).all(|w| w[0] <= w[1]));
}

#[tokio::test]
async fn a_hung_request_stops_counting_once_the_client_gives_up() {
    let server = FakeServer::start(|_: &SeenRequest| Reply::Hang, FakeOptions::default())
        .await
        .expect("starts");
    let request = reqwest::Client::new()
        .post(format!("{}/chat/completions", server.openai_base_url()))
        .json(&openai_body("x", false))
        .timeout(Duration::from_millis(100))
        .send();
    assert!(request.await.is_err(), "the client times out");
    // The server notices the closed connection and drops the hung handler; poll rather than
    // assume how soon.
    let mut waited = Duration::ZERO;
    while server.in_flight() > 0 && waited < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(10)).await;
        waited += Duration::from_millis(10);
    }
    assert_eq!(server.in_flight(), 0);
    assert_eq!(server.max_in_flight(), 1);
}

/// Reads at most `limit` bytes of a body; returns them and whether the body ended.
async fn read_up_to(mut response: reqwest::Response, limit: usize) -> (Vec<u8>, bool) {
    let mut body = Vec::new();
    while body.len() < limit {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) => return (body, true),
            Err(_) => return (body, false),
        }
    }
    (body, false)
}

#[tokio::test]
async fn a_flood_goes_on_until_the_client_hangs_up() {
    let server = FakeServer::start(
        |_: &SeenRequest| Reply::Flood {
            piece: "again and \"again\" ".into(),
        },
        FakeOptions::default(),
    )
    .await
    .expect("starts");
    for stream in [true, false] {
        let response = post(
            format!("{}/chat/completions", server.openai_base_url()),
            openai_body("x", stream),
            &[],
        )
        .await;
        let (body, ended) = read_up_to(response, 1 << 20).await;
        assert!(!ended, "stream {stream}: the flood ended");
        let text = String::from_utf8_lossy(&body);
        if stream {
            assert!(text.starts_with("data: {"), "{}", &text[..100]);
            assert!(text.contains(r#""delta":{"content":"again and \"again\" "}"#));
        } else {
            assert!(text.starts_with("{\"id\":"), "{}", &text[..100]);
            assert!(text.contains(r#""content":"again and \"again\" again and"#));
        }
        let response = post(
            format!("{}/v1/messages", server.anthropic_base_url()),
            anthropic_body("x", stream),
            &[],
        )
        .await;
        let (body, ended) = read_up_to(response, 1 << 20).await;
        assert!(!ended, "stream {stream}: the flood ended");
        let text = String::from_utf8_lossy(&body);
        if stream {
            assert!(text.starts_with("event: message_start\n"));
            assert!(text.contains(r#""delta":{"type":"text_delta","text":"again and \"again\" "}"#));
        } else {
            assert!(text.contains(r#""text":"again and \"again\" again and"#));
        }
    }
    // Every reader above hung up: the server stops sending and forgets the requests.
    let mut waited = Duration::ZERO;
    while server.in_flight() > 0 && waited < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(10)).await;
        waited += Duration::from_millis(10);
    }
    assert_eq!(server.in_flight(), 0);
}

#[tokio::test]
async fn a_drip_sends_a_whole_reply_one_piece_at_a_time() {
    let every = Duration::from_millis(30);
    let server = FakeServer::start(
        move |_: &SeenRequest| Reply::Drip {
            text: "twelve chars twelve chars".into(),
            every,
        },
        FakeOptions::default(),
    )
    .await
    .expect("starts");
    let started = Instant::now();
    let response = post(
        format!("{}/chat/completions", server.openai_base_url()),
        openai_body("x", true),
        &[],
    )
    .await;
    let text = response.text().await.expect("body");
    assert!(text.ends_with("data: [DONE]\n\n"));
    // Role, three text pieces, finish, usage and [DONE]: seven events, each after a pause.
    assert_eq!(text.matches("data: ").count(), 7);
    assert!(started.elapsed() >= every * 7);
    let body: Value = post(
        format!("{}/v1/messages", server.anthropic_base_url()),
        anthropic_body("x", false),
        &[],
    )
    .await
    .json()
    .await
    .expect("a whole JSON body");
    assert_eq!(body["content"][0]["text"], json!("twelve chars twelve chars"));
}

#[tokio::test]
async fn a_chunked_reply_arrives_in_small_chunks() {
    let server = FakeServer::start(
        |_: &SeenRequest| Reply::Chunked {
            reply: Box::new(Reply::ToolCalls {
                text: "é".repeat(300),
                calls: vec![(
                    "write".into(),
                    format!("{{\"content\":\"{}\"}}", "ü".repeat(2000)),
                )],
            }),
            bytes: 7,
        },
        FakeOptions::default(),
    )
    .await
    .expect("starts");
    let mut response = post(
        format!("{}/chat/completions", server.openai_base_url()),
        openai_body("x", true),
        &[],
    )
    .await;
    let mut body = Vec::new();
    let mut chunks = 0;
    while let Ok(Some(chunk)) = response.chunk().await {
        assert!(chunk.len() <= 7, "a chunk of {} bytes", chunk.len());
        body.extend_from_slice(&chunk);
        chunks += 1;
    }
    assert!(chunks > 100);
    let text = String::from_utf8(body).expect("the chunks add up to UTF-8");
    assert!(text.ends_with("data: [DONE]\n\n"));
    assert_eq!(text.matches('ü').count(), 2000);
}
