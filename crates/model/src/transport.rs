//! The HTTP machinery both clients share: timeouts, retries, cancellation, error classification and
//! reading replies (whole or as server-sent events).

use std::future::Future;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderValue, CONTENT_TYPE};
use reqwest::{RequestBuilder, Response};
use tokio_util::sync::CancellationToken;

use crate::backoff::{backoff, server_wait};
use crate::constrain::Constraints;
use crate::loops::{loop_at_end, without_loop, Loop};
use crate::redact::{redact_with_key, summarize_body, truncate, BODY_QUOTE_CHARS};
use crate::sse::{Decoder, Event};
use crate::{
    ChatResponse, ClientConfig, Constraint, ModelError, StopReason, TokenUsage, WIRE_BYTES_PER_REPLY_BYTE,
};

/// How much of an error body is read: enough for any error message, and an endpoint that answers an
/// error with an endless body cannot hold the call.
const ERROR_BODY_BYTES: usize = 64 * 1024;
/// How much of an unreadable reply is looked at to quote it in an error (the quote itself is shorter).
const QUOTED_BODY_BYTES: usize = 64 * 1024;
/// What each tool call (or content block) of a reply counts for toward
/// [`ClientConfig::max_reply_bytes`] besides its text: a reply of countless empty calls costs memory
/// all the same.
pub(crate) const PER_CALL_BYTES: usize = 64;
/// A server asking to be left alone for longer than this is not waited for: the error is returned
/// so the engine can tell the user instead of silently stalling a mission.
const MAX_HONOURED_RETRY_AFTER: Duration = Duration::from_secs(600);

/// Why one attempt failed, and whether another attempt may succeed.
#[derive(Debug)]
pub(crate) struct Failure {
    /// What the caller gets if no retry is left (or allowed).
    pub error: ModelError,
    pub retry: bool,
    /// Set when the server said how long to wait.
    pub retry_after: Option<Duration>,
}

impl Failure {
    pub(crate) fn fatal(error: ModelError) -> Self {
        Failure {
            error,
            retry: false,
            retry_after: None,
        }
    }

    pub(crate) fn transient(error: ModelError) -> Self {
        Failure {
            error,
            retry: true,
            retry_after: None,
        }
    }

    pub(crate) fn protocol(problem: impl Into<String>) -> Self {
        Failure::fatal(ModelError::Protocol(problem.into()))
    }

    /// Classifies an HTTP error status. `body` must already be redacted and truncated.
    pub(crate) fn from_status(status: u16, body: String, retry_after: Option<Duration>) -> Self {
        let failure = match status {
            401 | 403 => Failure::fatal(ModelError::Auth { status, body }),
            429 => Failure::transient(ModelError::RateLimited { body, retry_after }),
            // A server without the endpoint (501) or the protocol (505) answers the same way forever:
            // retrying it for `max_wait_secs` only hides a wrong OPENAI_BASE_URL.
            501 | 505 => Failure::fatal(ModelError::BadRequest { status, body }),
            // 408 is the server giving up on a slow request, 409 a conflict that a later attempt may not
            // meet; 5xx (529 = overloaded) are transient. Every other 4xx will not heal by itself.
            408 | 409 | 500..=599 => Failure::transient(ModelError::Server {
                status,
                body,
                retry_after,
            }),
            _ => Failure::fatal(ModelError::BadRequest { status, body }),
        };
        Failure {
            retry_after,
            ..failure
        }
    }
}

/// One configured HTTP client plus the policy around it.
pub(crate) struct Transport {
    http: reqwest::Client,
    config: ClientConfig,
    /// Which constraint requests go out with, and what this endpoint refused.
    constraints: Constraints,
}

impl Transport {
    /// `headers` (auth, API version) go on every request; mark secret ones sensitive.
    pub(crate) fn new(config: ClientConfig, headers: HeaderMap) -> Result<Self, ModelError> {
        let url =
            reqwest::Url::parse(&config.base_url).map_err(|e| invalid_base_url(&config, &e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid_base_url(
                &config,
                "only http and https URLs are supported",
            ));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .default_headers(headers)
            .build()
            .map_err(|e| ModelError::Unreachable {
                url: redact_with_key(&config.base_url, config.api_key.as_deref()),
                reason: format!("cannot build an HTTP client: {}", error_chain(&e)),
            })?;
        Ok(Transport {
            http,
            constraints: Constraints::new(config.output),
            config,
        })
    }

    /// Sends `request` with the strongest constraint this endpoint takes (see [`Constraints`]),
    /// asking again with a weaker one after each refusal: at most three sends, since every refusal
    /// drops one constraint for good. `send` builds and sends the request for a given constraint;
    /// the reply records the constraint it was answered under. `envelope_possible`: whether the
    /// client's API can carry the JSON-schema envelope.
    pub(crate) async fn constrained<S, Fut>(
        &self,
        request: &crate::ChatRequest,
        envelope_possible: bool,
        send: S,
    ) -> Result<ChatResponse, ModelError>
    where
        S: Fn(Option<Constraint>) -> Fut,
        Fut: Future<Output = Result<ChatResponse, ModelError>>,
    {
        let detect = || crate::preflight::grammar_server(self);
        let mut constraint = self.constraints.choose(request, envelope_possible, detect).await;
        let mut sends = 0;
        loop {
            sends += 1;
            match send(constraint).await {
                Err(e) if sends < 3 && constraint.is_some_and(|c| self.constraints.refused(c, &e)) => {
                    constraint = self.constraints.choose(request, envelope_possible, detect).await;
                }
                outcome => {
                    return outcome.map(|mut reply| {
                        reply.constraint = constraint;
                        reply
                    })
                }
            }
        }
    }

    pub(crate) fn config(&self) -> &ClientConfig {
        &self.config
    }

    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// `base_url` joined with `path`, without doubling the slash.
    pub(crate) fn url(&self, path: &str) -> String {
        format!(
            "{}/{}",
            self.config.base_url.trim_end_matches('/'),
            path.trim_start_matches('/')
        )
    }

    /// Scrubs the key (and anything key-shaped) from text bound for an error or a log.
    pub(crate) fn redact(&self, text: &str) -> String {
        redact_with_key(text, self.config.api_key.as_deref())
    }

    /// Runs `attempt` until it succeeds, fails for good, runs out of retries or is cancelled.
    pub(crate) async fn with_retries<T, F, Fut>(
        &self,
        what: &str,
        cancel: &CancellationToken,
        mut attempt: F,
    ) -> Result<T, ModelError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let mut retries = 0;
        loop {
            let started = Instant::now();
            let outcome = tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(ModelError::Cancelled),
                outcome = attempt() => outcome,
            };
            let failure = match outcome {
                Ok(value) => {
                    tracing::debug!(
                        what,
                        retries,
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "model call done"
                    );
                    return Ok(value);
                }
                Err(failure) => failure,
            };
            let wait = self.retry_wait(&failure, retries).ok_or(failure.error)?;
            tracing::warn!(
                what,
                retry = retries + 1,
                wait_ms = wait.as_millis() as u64,
                "model call failed, retrying"
            );
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(ModelError::Cancelled),
                _ = tokio::time::sleep(wait) => {}
            }
            retries += 1;
        }
    }

    /// How long to wait before the next attempt, or `None` if there must be none.
    fn retry_wait(&self, failure: &Failure, retries: u32) -> Option<Duration> {
        if !failure.retry || retries >= self.config.max_retries {
            return None;
        }
        let asked = failure.retry_after.unwrap_or(Duration::ZERO);
        if asked > MAX_HONOURED_RETRY_AFTER {
            return None;
        }
        tracing::debug!(error = %failure.error, "transient model error");
        Some(backoff(retries, self.config.max_backoff).max(asked))
    }

    /// Sends a request and waits for the response headers (bounded by `first_byte_timeout`).
    /// HTTP error statuses are returned as responses; see [`Transport::send`].
    pub(crate) async fn send_raw(&self, url: &str, request: RequestBuilder) -> Result<Response, Failure> {
        let limit = self.config.first_byte_timeout;
        match tokio::time::timeout(limit, request.send()).await {
            Err(_) => Err(Failure::transient(ModelError::Timeout(format!(
                "no response from {url} within {}",
                crate::types::human_duration(limit)
            )))),
            Ok(Err(e)) => Err(self.request_failure(url, &e)),
            Ok(Ok(response)) => Ok(response),
        }
    }

    /// Like [`Transport::send_raw`], but an HTTP error status becomes a classified [`Failure`].
    pub(crate) async fn send(&self, url: &str, request: RequestBuilder) -> Result<Response, Failure> {
        let response = self.send_raw(url, request).await?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let wait = server_wait(status.as_u16(), response.headers());
        let body = match self.read_up_to(response, ERROR_BODY_BYTES).await {
            Ok((bytes, _)) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(failure) => format!("(the error body could not be read: {})", failure.error),
        };
        tracing::debug!(
            url,
            status = status.as_u16(),
            "model endpoint answered with an error"
        );
        Err(Failure::from_status(status.as_u16(), self.quote(&body), wait))
    }

    /// A body fit to quote in an error: one line, redacted and cut short.
    pub(crate) fn quote(&self, body: &str) -> String {
        truncate(&self.redact(&summarize_body(body)), BODY_QUOTE_CHARS)
    }

    /// A quote of a body that may be huge: only its start is looked at.
    pub(crate) fn quote_bytes(&self, body: &[u8]) -> String {
        self.quote(&String::from_utf8_lossy(
            &body[..body.len().min(QUOTED_BODY_BYTES)],
        ))
    }

    /// The most bytes one reply may bring over the wire, framing included.
    fn wire_limit(&self) -> usize {
        self.config
            .max_reply_bytes
            .saturating_mul(WIRE_BYTES_PER_REPLY_BYTE)
    }

    /// Reads a whole reply body, allowing at most `idle_timeout` of silence between chunks and
    /// failing (rather than buffering on) once it passes the wire limit.
    pub(crate) async fn read_body(&self, response: Response) -> Result<Vec<u8>, Failure> {
        match self.read_up_to(response, self.wire_limit()).await? {
            (body, true) => Ok(body),
            (_, false) => Err(self.too_large(true)),
        }
    }

    /// Reads a body until it ends or `limit` bytes are in; true if it ended. What lies past the limit
    /// is not read, and the connection is dropped with the response.
    async fn read_up_to(&self, mut response: Response, limit: usize) -> Result<(Vec<u8>, bool), Failure> {
        let url = response.url().to_string();
        let mut body = Vec::new();
        loop {
            let chunk = tokio::time::timeout(self.config.idle_timeout, response.chunk())
                .await
                .map_err(|_| self.idle_failure())?
                .map_err(|e| self.request_failure(&url, &e))?;
            let Some(chunk) = chunk else {
                return Ok((body, true));
            };
            let room = limit - body.len();
            if chunk.len() > room {
                body.extend_from_slice(&chunk[..room]);
                return Ok((body, false));
            }
            body.extend_from_slice(&chunk);
        }
    }

    /// Server-sent events of a streamed reply, each awaited at most `idle_timeout`.
    pub(crate) fn events(&self, response: Response) -> Events {
        Events {
            url: response.url().to_string(),
            response,
            decoder: Decoder::default(),
            received: 0,
            ended: false,
        }
    }

    /// Reads the next event; `Ok(None)` when the stream ends. Fails once the stream has brought more
    /// than the wire limit, so an endless stream of anything (text, pings, a line that never ends)
    /// stops there.
    pub(crate) async fn next_event(&self, events: &mut Events) -> Result<Option<Event>, Failure> {
        loop {
            let event = events
                .decoder
                .next_event()
                .map_err(|problem| Failure::protocol(format!("the event stream is malformed: {problem}")))?;
            if event.is_some() || events.ended {
                return Ok(event);
            }
            let chunk = tokio::time::timeout(self.config.idle_timeout, events.response.chunk())
                .await
                .map_err(|_| self.idle_failure())?
                .map_err(|e| self.request_failure(&events.url, &e))?;
            match chunk {
                None => events.ended = true,
                Some(chunk) => {
                    events.received = events.received.saturating_add(chunk.len());
                    if events.received > self.wire_limit() {
                        return Err(self.too_large(true));
                    }
                    events.decoder.feed(&chunk);
                }
            }
        }
    }

    /// The reply passed [`ClientConfig::max_reply_bytes`] (as text, or `on_the_wire`). Not retried:
    /// a reply that floods once would most likely flood again, and every attempt costs its tokens.
    pub(crate) fn too_large(&self, on_the_wire: bool) -> Failure {
        Failure::fatal(ModelError::ReplyTooLarge {
            max_reply_bytes: self.config.max_reply_bytes,
            on_the_wire,
        })
    }

    /// Runs one request to its end within [`ClientConfig::request_timeout`]. Not retried when it runs
    /// out: the same request would most likely take as long again.
    pub(crate) async fn within_deadline<T>(
        &self,
        request: impl Future<Output = Result<T, Failure>>,
    ) -> Result<T, Failure> {
        let limit = self.config.request_timeout;
        tokio::time::timeout(limit, request).await.unwrap_or_else(|_| {
            Err(Failure::fatal(ModelError::ReplyTooSlow {
                request_timeout: limit,
            }))
        })
    }

    fn idle_failure(&self) -> Failure {
        Failure::transient(ModelError::Timeout(format!(
            "the reply stalled: no data for {}",
            crate::types::human_duration(self.config.idle_timeout)
        )))
    }

    /// Classifies a transport error. Everything here is worth retrying: the connection failed, not
    /// the request.
    fn request_failure(&self, url: &str, error: &reqwest::Error) -> Failure {
        let chain = self.redact(&error_chain(error));
        let url = self.redact(url);
        if error.is_connect() {
            return Failure::transient(ModelError::Unreachable {
                url,
                reason: format!("{chain} (is the server running, and is the base URL right?)"),
            });
        }
        if error.is_timeout() {
            return Failure::transient(ModelError::Timeout(chain));
        }
        Failure::transient(ModelError::Unreachable {
            url,
            reason: format!("the connection failed mid-request: {chain}"),
        })
    }
}

/// How one provider assembles a streamed reply into a [`ChatResponse`]. Each event must cost time in
/// proportion to its own size, never to what was assembled before it.
pub(crate) trait ReplyAssembly: Default {
    /// Folds one server-sent event in; true once the stream says the reply is complete.
    fn apply(&mut self, transport: &Transport, event: &Event) -> Result<bool, Failure>;
    /// What the reply counts toward [`ClientConfig::max_reply_bytes`] so far: the bytes of its text,
    /// reasoning and tool-call arguments (kept or not), and [`PER_CALL_BYTES`] per call or block.
    fn size(&self) -> usize;
    /// The loop the reply's text (text, reasoning and arguments, in the order they came) has
    /// fallen into, if any; see [`crate::loops`].
    fn looped(&self) -> Option<&Loop>;
    /// The reply's text so far, for a reply cut off before it was complete.
    fn text_so_far(self) -> String;
    fn finish(self) -> Result<ChatResponse, Failure>;
}

/// What a reply cut off in a loop comes back as: its text without the loop (but two copies of the
/// piece, so the model sees what it did), no calls (the reply never completed, so none of it is
/// run), and the tokens estimated at four bytes each, as the server's own count never came: what
/// was asked (`request_bytes`) and what was generated (`generated_bytes`).
pub(crate) fn cut_at_loop(
    text: String,
    found: Loop,
    request_bytes: usize,
    generated_bytes: usize,
) -> ChatResponse {
    let content = match loop_at_end(text.as_bytes()) {
        Some(in_text) => without_loop(&text, &in_text, 2),
        None => text,
    };
    ChatResponse {
        content,
        tool_calls: Vec::new(),
        usage: TokenUsage {
            input_tokens: request_bytes.div_ceil(4) as u64,
            output_tokens: generated_bytes.div_ceil(4) as u64,
            ..Default::default()
        },
        stop: StopReason::Looped(found),
        constraint: None,
    }
}

/// What a whole reply counts toward [`ClientConfig::max_reply_bytes`], as [`ReplyAssembly::size`]
/// counts a streamed one (less the reasoning, which a whole reply's body holds but the response does
/// not keep; the wire limit bounds it).
pub(crate) fn reply_size(reply: &ChatResponse) -> usize {
    reply.tool_calls.iter().fold(reply.content.len(), |size, call| {
        size + PER_CALL_BYTES + call.id.len() + call.name.len() + call.arguments.len()
    })
}

impl Transport {
    /// One request and its whole reply, streamed (assembled by `A`) or plain JSON (read by `parse`),
    /// within the request deadline and the reply size limit: the step every provider's attempt has in
    /// common.
    pub(crate) async fn exchange<A: ReplyAssembly>(
        &self,
        url: &str,
        body: &serde_json::Value,
        parse: fn(&Transport, &[u8]) -> Result<ChatResponse, Failure>,
    ) -> Result<ChatResponse, Failure> {
        self.within_deadline(self.exchange_unbounded::<A>(url, body, parse))
            .await
    }

    async fn exchange_unbounded<A: ReplyAssembly>(
        &self,
        url: &str,
        body: &serde_json::Value,
        parse: fn(&Transport, &[u8]) -> Result<ChatResponse, Failure>,
    ) -> Result<ChatResponse, Failure> {
        let limit = self.config.max_reply_bytes;
        let request = self.http().post(url).json(body);
        let response = self.send(url, request).await?;
        if !is_event_stream(&response) {
            // Also the path for servers that ignore `stream: true` and answer with plain JSON.
            let bytes = self.read_body(response).await?;
            let reply = parse(self, &bytes)?;
            if reply_size(&reply) > limit {
                return Err(self.too_large(false));
            }
            return Ok(reply);
        }
        let mut events = self.events(response);
        let mut assembly = A::default();
        while let Some(event) = self.next_event(&mut events).await? {
            let complete = assembly.apply(self, &event)?;
            // Checked after every event, so what is held never grows past the limit by more than
            // one event (itself bounded by the wire limit).
            if assembly.size() > limit {
                return Err(self.too_large(false));
            }
            // Hanging up (dropping `events`) is what stops the server generating the rest.
            if let Some(found) = assembly.looped().filter(|_| self.config.cut_loops).cloned() {
                tracing::info!(piece = %found.piece, repeats = found.repeats, "reply cut off in a loop");
                // Measured only here: serialising the request again costs every call otherwise.
                let request_bytes = body.to_string().len();
                let generated = assembly.size();
                return Ok(cut_at_loop(
                    assembly.text_so_far(),
                    found,
                    request_bytes,
                    generated,
                ));
            }
            if complete {
                break;
            }
        }
        assembly.finish()
    }
}

/// A streamed reply being read event by event.
pub(crate) struct Events {
    response: Response,
    decoder: Decoder,
    /// Bytes received so far, against the wire limit.
    received: usize,
    /// The body ended; what the decoder still holds is all there is.
    ended: bool,
    url: String,
}

/// Whether a response is a server-sent event stream (some servers ignore `stream: true`).
pub(crate) fn is_event_stream(response: &Response) -> bool {
    response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("text/event-stream")
        })
}

/// An error and its sources on one line: reqwest's own message rarely says *why* ("error sending
/// request"), the cause (`Connection refused`) is in the chain.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// A header value carrying a secret, hidden from `Debug` output.
pub(crate) fn secret_header(value: &str) -> Result<HeaderValue, ModelError> {
    let mut header = HeaderValue::from_str(value).map_err(|_| ModelError::Auth {
        status: 0,
        body: "the API key contains characters that cannot be sent in an HTTP header".to_string(),
    })?;
    header.set_sensitive(true);
    Ok(header)
}

fn invalid_base_url(config: &ClientConfig, problem: &str) -> ModelError {
    ModelError::Unreachable {
        url: redact_with_key(&config.base_url, config.api_key.as_deref()),
        reason: format!("the base URL is not valid: {problem}"),
    }
}

/// Parses a JSON body, turning junk into a protocol error that quotes (a little of) the junk.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(
    transport: &Transport,
    body: &[u8],
) -> Result<T, Failure> {
    serde_json::from_slice(body).map_err(|e| {
        let quoted = transport.quote_bytes(body);
        Failure::protocol(format!("the reply is not the expected JSON ({e}): {quoted}"))
    })
}
