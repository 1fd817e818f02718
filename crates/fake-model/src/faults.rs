//! Fault injection: a [`Brain`] wrapper that answers a share of requests with the failures a real
//! endpoint produces under load (429 with `Retry-After`, 500, a stream dropped mid-reply, a request
//! that never answers) or with the mistakes a weak model makes, and hands the rest to the wrapped brain.
//!
//! Which requests fail is decided from the request's `seq` alone, so a run is reproducible. Two rules
//! keep a mission able to finish: the retry of a failed request always gets through (a request whose
//! conversation was faulted last time is never faulted the next time), and transport faults never
//! consult the inner brain, so its counters (reviews, plans) only see requests it really answers.

use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::{Brain, Reply, SeenMessage, SeenRequest};

/// How many requests out of every hundred get each fault. Shares adding up to more than 100 are cut
/// in this order; the rest of the requests go to the inner brain.
#[derive(Debug, Clone, Default)]
pub struct FaultPlan {
    /// Answered 429 with `retry_after` (if set) as `Retry-After`.
    pub rate_limited: u32,
    pub retry_after: Option<Duration>,
    /// Answered 500.
    pub server_error: u32,
    /// Answered with half a reply, then the connection is dropped.
    pub drop_stream: u32,
    /// Never answered (until the server shuts down): the client's timeout must cut it.
    pub hang: u32,
    /// When the inner brain calls tools: one extra call to the same tool, placed first, with arguments
    /// that are not valid JSON. The real calls still follow, so a scripted conversation stays on track
    /// while the engine has to answer the broken call with a correction.
    pub malformed_tool_call: u32,
    /// When the inner brain calls tools: the calls are written as JSON in the text instead of as native
    /// tool calls, the way small local models often do (forms rotate: `<tool_call>` tags, a fenced
    /// JSON block, a bare JSON object or array).
    pub tool_call_as_text: u32,
}

/// A kind of injected fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultKind {
    RateLimited,
    ServerError,
    DropStream,
    Hang,
    MalformedToolCall,
    ToolCallAsText,
}

/// One injected fault.
#[derive(Debug, Clone)]
pub struct Injection {
    pub seq: u64,
    pub kind: FaultKind,
    /// When the fault was decided, just before the server sends it.
    pub at: Instant,
    /// For [`FaultKind::RateLimited`], the `Retry-After` sent.
    pub retry_after: Option<Duration>,
}

/// A request that arrived while a `Retry-After` the server had sent was still running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EarlyArrival {
    /// The request answered 429.
    pub limited_seq: u64,
    /// The request that came too early.
    pub early_seq: u64,
    /// How long after the 429 it arrived.
    pub after: Duration,
    pub retry_after: Duration,
}

/// The record of what a [`Faults`] brain injected, shared with the test that owns the server.
#[derive(Debug, Clone, Default)]
pub struct FaultLog(Arc<Mutex<Vec<Injection>>>);

impl FaultLog {
    fn lock(&self) -> MutexGuard<'_, Vec<Injection>> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn injections(&self) -> Vec<Injection> {
        self.lock().clone()
    }

    pub fn count(&self, kind: FaultKind) -> usize {
        self.lock().iter().filter(|i| i.kind == kind).count()
    }

    /// Requests (by the server's arrival times, [`crate::FakeServer::arrivals`]) that arrived after a
    /// 429 but before its `Retry-After` ran out. Requests arriving within `grace` of the 429 are not
    /// counted: a client can only stop sending once it has *read* the 429, so requests it sent just
    /// before that may still arrive; `grace` bounds how long such a straggler may take.
    pub fn early_arrivals(&self, arrivals: &[Instant], grace: Duration) -> Vec<EarlyArrival> {
        let mut early = Vec::new();
        for injection in self.lock().iter() {
            let Some(retry_after) = injection.retry_after else {
                continue;
            };
            for (seq, &arrived) in arrivals.iter().enumerate() {
                let after = arrived.saturating_duration_since(injection.at);
                if arrived > injection.at && after > grace && after < retry_after {
                    early.push(EarlyArrival {
                        limited_seq: injection.seq,
                        early_seq: seq as u64,
                        after,
                        retry_after,
                    });
                }
            }
        }
        early
    }
}

/// The fault-injecting wrapper around a brain.
pub struct Faults<B: Brain> {
    inner: B,
    plan: FaultPlan,
    /// Conversations whose latest request was faulted: their next request goes through.
    faulted: Mutex<HashSet<u64>>,
    log: FaultLog,
}

impl<B: Brain> Faults<B> {
    pub fn new(inner: B, plan: FaultPlan) -> Self {
        Faults {
            inner,
            plan,
            faulted: Mutex::new(HashSet::new()),
            log: FaultLog::default(),
        }
    }

    /// A handle on the injection record; take it before handing the brain to the server.
    pub fn log(&self) -> FaultLog {
        self.log.clone()
    }

    /// The fault `seq` falls on, if any. `seq * 37 mod 100` visits every slot once per hundred
    /// requests, so each share is exact over any hundred consecutive requests and faults of one
    /// kind are spread out rather than bunched.
    fn planned(&self, seq: u64) -> Option<FaultKind> {
        let slot = (seq.wrapping_mul(37).wrapping_add(13) % 100) as u32;
        let shares = [
            (self.plan.rate_limited, FaultKind::RateLimited),
            (self.plan.server_error, FaultKind::ServerError),
            (self.plan.drop_stream, FaultKind::DropStream),
            (self.plan.hang, FaultKind::Hang),
            (self.plan.malformed_tool_call, FaultKind::MalformedToolCall),
            (self.plan.tool_call_as_text, FaultKind::ToolCallAsText),
        ];
        let mut upper = 0;
        for (share, kind) in shares {
            upper += share;
            if slot < upper {
                return Some(kind);
            }
        }
        None
    }

    /// Whether to fault this request: its slot says so and its conversation was not faulted last time.
    fn decide(&self, request: &SeenRequest) -> Option<FaultKind> {
        let fingerprint = fingerprint(request);
        let mut faulted = self
            .faulted
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if faulted.remove(&fingerprint) {
            return None;
        }
        let kind = self.planned(request.seq)?;
        faulted.insert(fingerprint);
        Some(kind)
    }

    fn record(&self, seq: u64, kind: FaultKind, retry_after: Option<Duration>) {
        self.log.lock().push(Injection {
            seq,
            kind,
            at: Instant::now(),
            retry_after,
        });
    }
}

impl<B: Brain> Brain for Faults<B> {
    fn respond(&self, request: &SeenRequest) -> Reply {
        let Some(kind) = self.decide(request) else {
            return self.inner.respond(request);
        };
        let reply = match kind {
            FaultKind::RateLimited => Reply::Error {
                status: 429,
                body: "Rate limit reached (injected by the fake model server).".into(),
                retry_after: self.plan.retry_after,
            },
            FaultKind::ServerError => Reply::Error {
                status: 500,
                body: "The server had an error (injected by the fake model server).".into(),
                retry_after: None,
            },
            FaultKind::DropStream => Reply::DropStream {
                text: "This reply will be cut off before it is complete.".into(),
            },
            FaultKind::Hang => Reply::Hang,
            FaultKind::MalformedToolCall | FaultKind::ToolCallAsText => {
                match disturb(kind, request.seq, self.inner.respond(request)) {
                    Ok(reply) => reply,
                    // Nothing to disturb (the inner brain answered in text): not a fault after all.
                    Err(reply) => return reply,
                }
            }
        };
        let retry_after = (kind == FaultKind::RateLimited)
            .then_some(self.plan.retry_after)
            .flatten();
        self.record(request.seq, kind, retry_after);
        reply
    }
}

/// Applies a model-mistake fault to the inner brain's reply; `Err` gives the reply back untouched
/// when it has no tool calls to spoil.
fn disturb(kind: FaultKind, seq: u64, reply: Reply) -> Result<Reply, Reply> {
    let Reply::ToolCalls { text, calls } = reply else {
        return Err(reply);
    };
    let Some((first_name, first_arguments)) = calls.first().cloned() else {
        return Err(Reply::ToolCalls { text, calls });
    };
    if kind == FaultKind::MalformedToolCall {
        let mut spoiled = vec![(first_name, truncated_json(&first_arguments))];
        spoiled.extend(calls);
        return Ok(Reply::ToolCalls { text, calls: spoiled });
    }
    let written = calls_as_text(&calls, seq);
    let text = if text.is_empty() {
        written
    } else {
        format!("{text}\n\n{written}")
    };
    Ok(Reply::Text(text))
}

/// The first half of the arguments, which is never valid JSON for an object of any content.
fn truncated_json(arguments: &str) -> String {
    let chars: Vec<char> = arguments.chars().collect();
    let half: String = chars[..chars.len() / 2].iter().collect();
    if half.trim().is_empty() {
        "{".to_string()
    } else {
        half
    }
}

/// Tool calls written into text in one of the forms local models use, chosen by `seq`.
fn calls_as_text(calls: &[(String, String)], seq: u64) -> String {
    let objects: Vec<String> = calls
        .iter()
        .map(|(name, arguments)| {
            let arguments = serde_json::from_str::<serde_json::Value>(arguments)
                .unwrap_or_else(|_| serde_json::Value::String(arguments.clone()));
            serde_json::json!({"name": name, "arguments": arguments}).to_string()
        })
        .collect();
    match seq % 3 {
        0 => objects
            .iter()
            .map(|o| format!("<tool_call>\n{o}\n</tool_call>"))
            .collect::<Vec<_>>()
            .join("\n"),
        1 => format!("```json\n[{}]\n```", objects.join(", ")),
        _ if objects.len() == 1 => objects.concat(),
        _ => format!("[{}]", objects.join(", ")),
    }
}

/// Identifies a conversation: the same request sent again hashes the same.
fn fingerprint(request: &SeenRequest) -> u64 {
    let mut hasher = DefaultHasher::new();
    request.model.hash(&mut hasher);
    request.system.hash(&mut hasher);
    request.tools.hash(&mut hasher);
    for message in &request.messages {
        match message {
            SeenMessage::User { text } => (0u8, text).hash(&mut hasher),
            SeenMessage::Assistant { text, tool_calls } => {
                (1u8, text).hash(&mut hasher);
                for call in tool_calls {
                    (&call.id, &call.name, &call.arguments).hash(&mut hasher);
                }
            }
            SeenMessage::Tool {
                call_id,
                content,
                is_error,
            } => (2u8, call_id, content, is_error).hash(&mut hasher),
        }
    }
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Api;

    fn request(seq: u64, text: &str) -> SeenRequest {
        SeenRequest {
            seq,
            api: Api::OpenAi,
            model: "m".into(),
            system: String::new(),
            messages: vec![SeenMessage::User { text: text.into() }],
            tools: vec!["read".into()],
            stream: true,
            max_tokens: None,
            tool_choice: None,
            response_format: None,
            temperature: None,
            prompt: Vec::new(),
            prompt_cache_key: None,
        }
    }

    fn calls_read(_: &SeenRequest) -> Reply {
        Reply::ToolCalls {
            text: String::new(),
            calls: vec![("read".into(), r#"{"path":"a.txt"}"#.into())],
        }
    }

    fn kind_of(reply: &Reply) -> &'static str {
        match reply {
            Reply::Error { status: 429, .. } => "429",
            Reply::Error { .. } => "error",
            Reply::DropStream { .. } => "drop",
            Reply::Hang => "hang",
            Reply::ToolCalls { calls, .. } if calls.len() > 1 => "malformed",
            Reply::ToolCalls { .. } => "ok",
            Reply::Text(_) => "text",
            Reply::Raw { .. } => "raw",
            Reply::Flood { .. } | Reply::Drip { .. } | Reply::Chunked { .. } => "other",
        }
    }

    #[test]
    fn shares_are_exact_over_a_hundred_distinct_requests() {
        let plan = FaultPlan {
            rate_limited: 10,
            retry_after: Some(Duration::from_millis(5)),
            server_error: 5,
            drop_stream: 5,
            hang: 2,
            malformed_tool_call: 3,
            tool_call_as_text: 4,
        };
        let brain = Faults::new(calls_read, plan);
        let mut counts = std::collections::HashMap::new();
        for seq in 0..100 {
            let reply = brain.respond(&request(seq, &format!("task {seq}")));
            *counts.entry(kind_of(&reply)).or_insert(0) += 1;
        }
        assert_eq!(counts.get("429"), Some(&10));
        assert_eq!(counts.get("error"), Some(&5));
        assert_eq!(counts.get("drop"), Some(&5));
        assert_eq!(counts.get("hang"), Some(&2));
        assert_eq!(counts.get("malformed"), Some(&3));
        assert_eq!(counts.get("text"), Some(&4));
        assert_eq!(counts.get("ok"), Some(&71));
        let log = brain.log();
        assert_eq!(log.count(FaultKind::RateLimited), 10);
        assert!(log
            .injections()
            .iter()
            .filter(|i| i.kind == FaultKind::RateLimited)
            .all(|i| i.retry_after == Some(Duration::from_millis(5))));
    }

    #[test]
    fn a_retry_always_gets_through() {
        // Every slot faults: still, the same request sent again is answered by the inner brain.
        let plan = FaultPlan {
            server_error: 100,
            ..FaultPlan::default()
        };
        let brain = Faults::new(calls_read, plan);
        for seq in 0..10 {
            let same = request(seq, "the same task");
            let expected = if seq % 2 == 0 { "error" } else { "ok" };
            assert_eq!(kind_of(&brain.respond(&same)), expected, "seq {seq}");
        }
    }

    #[test]
    fn malformed_calls_come_first_and_the_real_ones_follow() {
        let Ok(Reply::ToolCalls { calls, .. }) =
            disturb(FaultKind::MalformedToolCall, 0, calls_read(&request(0, "")))
        else {
            panic!("tool calls expected")
        };
        assert_eq!(calls.len(), 2);
        assert!(serde_json::from_str::<serde_json::Value>(&calls[0].1).is_err());
        assert_eq!(calls[1].1, r#"{"path":"a.txt"}"#);
        assert_eq!(truncated_json("{}"), "{");
        assert!(disturb(FaultKind::MalformedToolCall, 0, Reply::Text("hi".into())).is_err());
    }

    #[test]
    fn calls_as_text_rotates_forms() {
        let calls = vec![("read".to_string(), r#"{"path":"a"}"#.to_string())];
        assert!(calls_as_text(&calls, 0).starts_with("<tool_call>\n{"));
        assert!(calls_as_text(&calls, 1).starts_with("```json\n[{"));
        assert_eq!(
            calls_as_text(&calls, 2),
            r#"{"name":"read","arguments":{"path":"a"}}"#
        );
    }

    #[test]
    fn early_arrivals_skip_the_grace_period_and_respect_the_wait() {
        let log = FaultLog::default();
        let at = Instant::now();
        log.lock().push(Injection {
            seq: 0,
            kind: FaultKind::RateLimited,
            at,
            retry_after: Some(Duration::from_millis(500)),
        });
        let arrivals = [
            at,
            at + Duration::from_millis(10),
            at + Duration::from_millis(200),
            at + Duration::from_millis(600),
        ];
        let early = log.early_arrivals(&arrivals, Duration::from_millis(50));
        assert_eq!(early.len(), 1);
        assert_eq!(early[0].early_seq, 2);
    }
}
