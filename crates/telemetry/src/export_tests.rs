use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use orchestrator_protocol::{Event, EventEnvelope, Outcome, Phase, Role, TokenUsage};
use tokio::sync::mpsc;

use super::{one_line, Exporter, Settings};
use crate::TelemetryError;

/// What an exporter does with each batch.
#[derive(Debug, Clone, Copy)]
enum Behaviour {
    Keep,
    Fail,
    Hang,
}

#[derive(Debug, Clone)]
struct TestExporter {
    behaviour: Behaviour,
    batches: Arc<Mutex<Vec<Vec<SpanData>>>>,
}

impl TestExporter {
    fn new(behaviour: Behaviour) -> Self {
        TestExporter {
            behaviour,
            batches: Arc::default(),
        }
    }

    fn spans(&self) -> Vec<SpanData> {
        self.batches
            .lock()
            .map(|b| b.iter().flatten().cloned().collect())
            .unwrap_or_default()
    }
}

impl SpanExporter for TestExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        match self.behaviour {
            Behaviour::Keep => {
                if let Ok(mut batches) = self.batches.lock() {
                    batches.push(batch);
                }
                Ok(())
            }
            Behaviour::Fail => Err(OTelSdkError::InternalFailure(
                "reqwest::Error { kind: Request, source: ConnectError(\"tcp connect error\", Os { code: 111, kind: ConnectionRefused }) }".into(),
            )),
            Behaviour::Hang => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok(())
            }
        }
    }
}

fn envelope(seq: u64, event: Event) -> Arc<EventEnvelope> {
    Arc::new(EventEnvelope {
        seq,
        at: Utc::now(),
        mission: "m1".into(),
        event,
    })
}

/// A short mission: root, one phase, one session, one model call.
fn send_mission(tx: &mpsc::UnboundedSender<Arc<EventEnvelope>>) {
    let events = [
        Event::PhaseChanged {
            phase: Phase::Discovery,
            round: 0,
        },
        Event::SessionStarted {
            session: "s1".into(),
            role: Role::Scout,
            unit: None,
            model: "m".into(),
            sandbox: None,
        },
        Event::ModelCall {
            session: "s1".into(),
            role: Role::Scout,
            model: "m".into(),
            usage: TokenUsage::default(),
            cost_usd: None,
            duration_ms: 5,
            constraint: None,
        },
        Event::SessionFinished {
            session: "s1".into(),
            role: Role::Scout,
            ok: true,
            turns: 1,
            usage: TokenUsage::default(),
        },
        Event::MissionFinished {
            outcome: Outcome::Sealed,
            summary: "sealed".into(),
            usage: TokenUsage::default(),
            result_commit: None,
            unverified: false,
        },
    ];
    for (seq, event) in events.into_iter().enumerate() {
        let _ = tx.send(envelope(seq as u64, event));
    }
}

fn settings(flush_ms: u64) -> Settings {
    Settings {
        flush_timeout: Duration::from_millis(flush_ms),
        max_batch: 2,
        ..Settings::default()
    }
}

#[tokio::test]
async fn every_span_is_sent_by_the_time_finish_returns() {
    let sink = TestExporter::new(Behaviour::Keep);
    let (tx, rx) = mpsc::unbounded_channel();
    let exporter = Exporter::start(sink.clone(), "test".into(), settings(5_000), rx);
    send_mission(&tx);
    drop(tx);
    let stats = exporter.finish().await.expect("all sent");
    assert_eq!(stats.exported, 4);
    assert_eq!(stats.dropped, 0);
    let mut names: Vec<String> = sink.spans().iter().map(|s| s.name.to_string()).collect();
    names.sort();
    assert_eq!(names, ["chat m", "discovery", "invoke_agent scout", "mission"]);
    let batches = sink.batches.lock().map(|b| b.len()).unwrap_or_default();
    assert!(
        batches >= 2,
        "batches hold at most max_batch spans ({batches} sent)"
    );
}

#[tokio::test]
async fn a_stream_that_ends_without_the_mission_finishing_still_sends_its_spans() {
    let sink = TestExporter::new(Behaviour::Keep);
    let (tx, rx) = mpsc::unbounded_channel();
    let exporter = Exporter::start(sink.clone(), "test".into(), settings(5_000), rx);
    let _ = tx.send(envelope(
        0,
        Event::PhaseChanged {
            phase: Phase::Planning,
            round: 1,
        },
    ));
    drop(tx);
    let stats = exporter.finish().await.expect("sent");
    assert_eq!(stats.exported, 2, "the phase and the root");
}

#[tokio::test]
async fn a_failing_collector_is_reported_in_one_line_and_quickly() {
    let (tx, rx) = mpsc::unbounded_channel();
    let exporter = Exporter::start(
        TestExporter::new(Behaviour::Fail),
        "http://127.0.0.1:9/v1/traces".into(),
        settings(5_000),
        rx,
    );
    send_mission(&tx);
    drop(tx);
    let started = Instant::now();
    match exporter.finish().await {
        Err(TelemetryError::Export { dropped, reason, .. }) => {
            assert_eq!(dropped, 4);
            assert_eq!(reason, "connection refused");
        }
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn a_hanging_collector_costs_at_most_the_flush_timeout() {
    let (tx, rx) = mpsc::unbounded_channel();
    let exporter = Exporter::start(
        TestExporter::new(Behaviour::Hang),
        "slow".into(),
        settings(300),
        rx,
    );
    send_mission(&tx);
    drop(tx);
    let started = Instant::now();
    let result = exporter.finish().await;
    assert!(
        matches!(result, Err(TelemetryError::FlushTimeout { .. })),
        "{result:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn finished_spans_are_sent_while_the_mission_runs() {
    let sink = TestExporter::new(Behaviour::Keep);
    let (tx, rx) = mpsc::unbounded_channel();
    let settings = Settings {
        export_every: Duration::from_millis(50),
        ..Settings::default()
    };
    let exporter = Exporter::start(sink.clone(), "test".into(), settings, rx);
    let _ = tx.send(envelope(
        0,
        Event::ToolCalled {
            session: "s".into(),
            tool: "read".into(),
            summary: "read a".into(),
            ok: true,
            duration_ms: 1,
        },
    ));
    let deadline = Instant::now() + Duration::from_secs(5);
    while sink.spans().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        sink.spans().len(),
        1,
        "the tool span went out before the stream ended"
    );
    drop(tx);
    exporter.finish().await.expect("sent");
    assert_eq!(sink.spans().len(), 2);
}

#[test]
fn export_errors_are_summarised() {
    assert_eq!(
        one_line(
            "OpenTelemetry trace export failed. Url: http://x/v1/traces, Status Code: 503, Response: b\"\""
        ),
        "the collector answered HTTP 503"
    );
    assert_eq!(one_line("operation timed out"), "timed out");
    assert_eq!(one_line("something\nelse"), "something else");
}

#[tokio::test]
async fn the_otlp_exporter_refuses_a_url_it_cannot_use() {
    let (_tx, rx) = mpsc::unbounded_channel();
    let result = Exporter::otlp("http://bad host:1/v1/traces", Settings::default(), rx);
    assert!(
        matches!(result, Err(TelemetryError::InvalidEndpoint { .. })),
        "{:?}",
        result.err()
    );
}
