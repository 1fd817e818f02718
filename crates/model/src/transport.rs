//! The HTTP machinery both clients share: timeouts, retries, cancellation, error classification and
//! reading replies (whole or as server-sent events).

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use eventsource_stream::{Event, EventStreamError, Eventsource};
use futures::{Stream, StreamExt};
use reqwest::header::{HeaderMap, HeaderValue, CONTENT_TYPE};
use reqwest::{RequestBuilder, Response};
use tokio_util::sync::CancellationToken;

use crate::backoff::{backoff, server_wait};
use crate::redact::{redact_with_key, summarize_body, truncate, BODY_QUOTE_CHARS};
use crate::{ChatResponse, ClientConfig, ModelError};

/// A successful body larger than this is refused rather than buffered: no chat reply is that big.
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;
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
        Ok(Transport { http, config })
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
        let body = match self.read_body(response).await {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
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

    /// Reads a whole body, allowing at most `idle_timeout` of silence between chunks.
    pub(crate) async fn read_body(&self, mut response: Response) -> Result<Vec<u8>, Failure> {
        let url = response.url().to_string();
        let mut body = Vec::new();
        loop {
            let chunk = tokio::time::timeout(self.config.idle_timeout, response.chunk())
                .await
                .map_err(|_| self.idle_failure())?
                .map_err(|e| self.request_failure(&url, &e))?;
            let Some(chunk) = chunk else {
                return Ok(body);
            };
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(Failure::protocol(format!(
                    "the reply is larger than {MAX_BODY_BYTES} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
    }

    /// Server-sent events of a streamed reply, each awaited at most `idle_timeout`.
    pub(crate) fn events(&self, response: Response) -> Events {
        let url = response.url().to_string();
        Events {
            inner: Box::pin(response.bytes_stream().eventsource()),
            url,
        }
    }

    /// Reads the next event; `Ok(None)` when the stream ends.
    pub(crate) async fn next_event(&self, events: &mut Events) -> Result<Option<Event>, Failure> {
        let next = tokio::time::timeout(self.config.idle_timeout, events.inner.next())
            .await
            .map_err(|_| self.idle_failure())?;
        match next {
            None => Ok(None),
            Some(Ok(event)) => Ok(Some(event)),
            Some(Err(EventStreamError::Transport(e))) => Err(self.request_failure(&events.url, &e)),
            Some(Err(e)) => Err(Failure::protocol(format!("the event stream is malformed: {e}"))),
        }
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

/// How one provider assembles a streamed reply into a [`ChatResponse`].
pub(crate) trait ReplyAssembly: Default {
    /// Folds one server-sent event in; true once the stream says the reply is complete.
    fn apply(&mut self, transport: &Transport, event: &Event) -> Result<bool, Failure>;
    fn finish(self) -> Result<ChatResponse, Failure>;
}

impl Transport {
    /// One request and its whole reply, streamed (assembled by `A`) or plain JSON (read by `parse`):
    /// the step every provider's attempt has in common.
    pub(crate) async fn exchange<A: ReplyAssembly>(
        &self,
        url: &str,
        body: &serde_json::Value,
        parse: fn(&Transport, &[u8]) -> Result<ChatResponse, Failure>,
    ) -> Result<ChatResponse, Failure> {
        let request = self.http().post(url).json(body);
        let response = self.send(url, request).await?;
        if !is_event_stream(&response) {
            // Also the path for servers that ignore `stream: true` and answer with plain JSON.
            let bytes = self.read_body(response).await?;
            return parse(self, &bytes);
        }
        let mut events = self.events(response);
        let mut assembly = A::default();
        while let Some(event) = self.next_event(&mut events).await? {
            if assembly.apply(self, &event)? {
                break;
            }
        }
        assembly.finish()
    }
}

/// A streamed reply being read event by event.
pub(crate) struct Events {
    inner: Pin<Box<dyn Stream<Item = Result<Event, EventStreamError<reqwest::Error>>> + Send>>,
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
        let quoted = transport.quote(&String::from_utf8_lossy(body));
        Failure::protocol(format!("the reply is not the expected JSON ({e}): {quoted}"))
    })
}
