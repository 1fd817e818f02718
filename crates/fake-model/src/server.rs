//! The HTTP side of the fake: routes, bookkeeping (request log, in-flight counts) and shutdown.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use futures::StreamExt;
use serde_json::json;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::cache::PromptCache;
use crate::parse::{openai_wants_stream_usage, parse_anthropic, parse_openai};
use crate::render::{self, Answer, OutCall};
use crate::{Api, Brain, FakeOptions, Reply, SeenRequest};

/// Conversations in long agent runs get big; the fake must not reject what a real API accepts.
const BODY_LIMIT: usize = 64 * 1024 * 1024;
/// How long [`FakeServer::shutdown`] lets open connections finish before cutting them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// How long a [`Reply::DropStream`] answer waits between its last piece and dropping the connection.
const DROP_PAUSE: Duration = Duration::from_millis(20);

/// Every chat request received, with its arrival time (index = `seq`). Arrival times live beside the
/// requests rather than in [`SeenRequest`], whose literal other code builds.
#[derive(Default)]
struct Log {
    requests: Vec<SeenRequest>,
    arrivals: Vec<Instant>,
}

/// State shared by every request handler.
struct Shared {
    brain: Box<dyn Brain>,
    options: FakeOptions,
    log: Mutex<Log>,
    next_id: AtomicU64,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    shutdown: CancellationToken,
    cache: PromptCache,
}

impl Shared {
    /// The log stays usable even if a brain panicked while a handler held the lock.
    fn log(&self) -> MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn record(&self, mut request: SeenRequest, arrived: Instant) -> SeenRequest {
        let mut log = self.log();
        request.seq = log.requests.len() as u64;
        log.requests.push(request.clone());
        log.arrivals.push(arrived);
        request
    }

    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Whether the server serves `model` (every name, without a configured list).
    fn serves(&self, model: &str) -> bool {
        self.options
            .models
            .as_ref()
            .is_none_or(|models| models.iter().any(|m| m == model))
    }

    /// Whether the request carries the configured key in its API's header (always true without one).
    fn authorised(&self, api: Option<Api>, headers: &HeaderMap) -> bool {
        let Some(key) = &self.options.api_key else {
            return true;
        };
        let header_is = |name: header::HeaderName, expected: &str| {
            headers.get(name).and_then(|v| v.to_str().ok()) == Some(expected)
        };
        let bearer = format!("Bearer {key}");
        match api {
            Some(Api::OpenAi) => header_is(header::AUTHORIZATION, &bearer),
            Some(Api::Anthropic) => header_is(header::HeaderName::from_static("x-api-key"), key),
            None => {
                header_is(header::AUTHORIZATION, &bearer)
                    || header_is(header::HeaderName::from_static("x-api-key"), key)
            }
        }
    }

    /// Waits `latency`; false if the server is shutting down meanwhile.
    async fn wait_latency(&self) -> bool {
        if self.options.latency.is_zero() {
            return true;
        }
        tokio::select! {
            _ = tokio::time::sleep(self.options.latency) => true,
            _ = self.shutdown.cancelled() => false,
        }
    }

    /// A panicking brain becomes a 500, so one bad test script cannot take the server down with it.
    fn ask_brain(&self, request: &SeenRequest) -> Result<Reply, String> {
        std::panic::catch_unwind(AssertUnwindSafe(|| self.brain.respond(request)))
            .map_err(|_| format!("the fake model's brain panicked on request {}", request.seq))
    }
}

/// Counts a request as in flight until its response body has been sent (or dropped).
struct InFlight(Arc<Shared>);

impl InFlight {
    fn enter(shared: &Arc<Shared>) -> Self {
        let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        shared.max_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight(shared.clone())
    }

    /// Moves the guard into the response body, so a streamed reply counts until its last event.
    fn hold_until_sent(self, response: Response) -> Response {
        let (parts, body) = response.into_parts();
        let stream = body.into_data_stream().map(move |chunk| {
            let _held = &self;
            chunk
        });
        Response::from_parts(parts, Body::from_stream(stream))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A running fake model server on `127.0.0.1`. Dropping it stops the server.
pub struct FakeServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: Option<JoinHandle<()>>,
}

impl FakeServer {
    /// Binds `127.0.0.1:0` and starts serving in the background.
    pub async fn start(brain: impl Brain, options: FakeOptions) -> anyhow::Result<FakeServer> {
        Self::start_on(brain, options, 0).await
    }

    /// Like [`FakeServer::start`] on a chosen port of `127.0.0.1` (0 picks a free one), for demos
    /// that need a stable URL.
    pub async fn start_on(brain: impl Brain, options: FakeOptions, port: u16) -> anyhow::Result<FakeServer> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            brain: Box::new(brain),
            options,
            log: Mutex::new(Log::default()),
            next_id: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            shutdown: CancellationToken::new(),
            cache: PromptCache::new(),
        });
        let router = Router::new()
            .route("/v1/chat/completions", post(openai_chat))
            .route("/v1/messages", post(anthropic_messages))
            .route("/v1/models", get(models))
            .route("/v1/models/{id}", get(model_by_id))
            .layer(DefaultBodyLimit::max(BODY_LIMIT))
            .with_state(shared.clone());
        let stop = shared.shutdown.clone();
        // No Nagle: a streamed reply goes out in small writes, and without TCP_NODELAY each one after
        // the first waits for the client's delayed ACK (~40 ms), which the benchmarks would count as
        // the orchestrator's overhead.
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!("cannot set TCP_NODELAY: {e}");
            }
        });
        let task = tokio::spawn(async move {
            let server = axum::serve(listener, router).with_graceful_shutdown(stop.cancelled_owned());
            if let Err(e) = server.await {
                tracing::warn!("fake model server stopped with an error: {e}");
            }
        });
        tracing::debug!("fake model server listening on {addr}");
        Ok(FakeServer {
            addr,
            shared,
            task: Some(task),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn openai_base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn anthropic_base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every chat request received (with a parseable body), in arrival order.
    pub fn requests(&self) -> Vec<SeenRequest> {
        self.shared.log().requests.clone()
    }

    /// When each request of [`FakeServer::requests`] arrived (same order, index = `seq`), taken as its
    /// body was read, before any latency: what a test checking `Retry-After` compliance compares.
    pub fn arrivals(&self) -> Vec<Instant> {
        self.shared.log().arrivals.clone()
    }

    pub fn request_count(&self) -> usize {
        self.shared.log().requests.len()
    }

    /// Requests received and not yet fully answered.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::SeqCst)
    }

    /// The peak of [`FakeServer::in_flight`].
    pub fn max_in_flight(&self) -> usize {
        self.shared.max_in_flight.load(Ordering::SeqCst)
    }

    /// Stops accepting, releases hanging requests and waits (briefly) for open connections to close.
    pub async fn shutdown(mut self) {
        self.shared.shutdown.cancel();
        if let Some(mut task) = self.task.take() {
            if tokio::time::timeout(SHUTDOWN_GRACE, &mut task).await.is_err() {
                task.abort();
            }
        }
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        // Cancelling releases hanging handlers; aborting drops the listener, freeing the port now.
        self.shared.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn openai_chat(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let guard = InFlight::enter(&shared);
    let response = chat(&shared, Api::OpenAi, &headers, &body).await;
    guard.hold_until_sent(response)
}

async fn anthropic_messages(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let guard = InFlight::enter(&shared);
    let response = chat(&shared, Api::Anthropic, &headers, &body).await;
    guard.hold_until_sent(response)
}

/// One chat request from arrival to response: check the key, parse, record, wait, ask the brain.
async fn chat(shared: &Shared, api: Api, headers: &HeaderMap, body: &[u8]) -> Response {
    let arrived = Instant::now();
    // Real APIs check the key before looking at the body, so a bad key wins over a bad body.
    let authorised = shared.authorised(Some(api), headers);
    let parsed = match api {
        Api::OpenAi => parse_openai(body),
        Api::Anthropic => parse_anthropic(body),
    };
    let request = match parsed {
        Err(_) if !authorised => return unauthorised(api),
        Err(problem) => return error_response(api, 400, &problem, None),
        // Rejected requests are recorded too, so tests can count attempts that never got through.
        Ok(request) => shared.record(request, arrived),
    };
    if !authorised {
        return unauthorised(api);
    }
    if !shared.serves(&request.model) {
        let message = format!(
            "The model `{}` does not exist or you do not have access to it.",
            request.model
        );
        return error_response(api, 404, &message, None);
    }
    if !shared.wait_latency().await {
        return error_response(api, 503, "the fake model server is shutting down", None);
    }
    let reply = match shared.ask_brain(&request) {
        Ok(reply) => reply,
        Err(problem) => return error_response(api, 500, &problem, None),
    };
    let include_usage = api == Api::OpenAi && openai_wants_stream_usage(body);
    respond(shared, api, &request, reply, include_usage).await
}

async fn respond(
    shared: &Shared,
    api: Api,
    request: &SeenRequest,
    reply: Reply,
    include_usage: bool,
) -> Response {
    match reply {
        Reply::Text(text) => answer(shared, api, request, text, Vec::new(), include_usage),
        Reply::ToolCalls { text, calls } => answer(shared, api, request, text, calls, include_usage),
        Reply::Error {
            status,
            body,
            retry_after,
        } => error_response(api, status, &body, retry_after),
        Reply::DropStream { text } => {
            let (content_type, chunks) = render_answer(shared, api, request, text, Vec::new(), include_usage);
            dropped_response(content_type, chunks)
        }
        Reply::Hang => {
            shared.shutdown.cancelled().await;
            error_response(api, 503, "the fake model server is shutting down", None)
        }
        Reply::Raw {
            status,
            content_type,
            body,
        } => {
            let content_type = HeaderValue::from_str(&content_type)
                .unwrap_or(HeaderValue::from_static("application/octet-stream"));
            (status_code(status), [(header::CONTENT_TYPE, content_type)], body).into_response()
        }
        Reply::Flood { piece } => {
            let content_type = if request.stream {
                EVENT_STREAM
            } else {
                "application/json"
            };
            let id = match api {
                Api::OpenAi => format!("chatcmpl-{}", shared.next_id()),
                Api::Anthropic => format!("msg_{}", shared.next_id()),
            };
            let answer = Answer::new(id, request, String::new(), Vec::new());
            let (head, repeated) = render::flood(api, request.stream, &answer, &piece, include_usage);
            // `Bytes` clones share one buffer, so the endless body costs the server nothing per piece.
            // Nothing repeated forever would be a busy loop that never fills the socket, and so never
            // lets anything else run: it is a body that stops after its start instead.
            let repeated = Bytes::from(repeated);
            let rest = if repeated.is_empty() {
                futures::stream::pending().left_stream()
            } else {
                futures::stream::repeat(repeated).right_stream()
            };
            let body = futures::stream::once(async move { Bytes::from(head) })
                .chain(rest)
                .map(Ok::<_, Infallible>);
            body_response(content_type, until_shutdown(shared, body))
        }
        Reply::Drip { text, every } => {
            let (content_type, mut chunks) =
                render_answer(shared, api, request, text.clone(), Vec::new(), include_usage);
            if content_type != EVENT_STREAM {
                let body = chunks.concat();
                let pieces = text.chars().count().div_ceil(DRIP_PIECE_CHARS).max(1);
                chunks = render::split(&body, pieces)
                    .into_iter()
                    .map(str::to_string)
                    .collect();
            }
            let body = futures::stream::iter(chunks).then(move |chunk| async move {
                tokio::time::sleep(every).await;
                Ok::<_, Infallible>(Bytes::from(chunk))
            });
            body_response(content_type, until_shutdown(shared, body))
        }
        Reply::Chunked { reply, bytes } => match *reply {
            Reply::Text(text) => chunked(shared, api, request, text, Vec::new(), include_usage, bytes),
            Reply::ToolCalls { text, calls } => {
                chunked(shared, api, request, text, calls, include_usage, bytes)
            }
            other => Box::pin(respond(shared, api, request, other, include_usage)).await,
        },
    }
}

/// Roughly the text a [`Reply::Drip`] sends per piece when not streamed (a streamed one sends one
/// event per piece, and its text deltas are about this long).
const DRIP_PIECE_CHARS: usize = 12;

/// A successful answer whose body goes out in chunks of `bytes` bytes, cut anywhere.
fn chunked(
    shared: &Shared,
    api: Api,
    request: &SeenRequest,
    text: String,
    calls: Vec<(String, String)>,
    include_usage: bool,
    bytes: usize,
) -> Response {
    let (content_type, chunks) = render_answer(shared, api, request, text, calls, include_usage);
    let body = Bytes::from(chunks.concat());
    let size = bytes.max(1);
    let pieces: Vec<Bytes> = (0..body.len())
        .step_by(size)
        .map(|start| body.slice(start..(start + size).min(body.len())))
        .collect();
    body_response(
        content_type,
        futures::stream::iter(pieces.into_iter().map(Ok::<_, Infallible>)),
    )
}

/// Ends a body stream when the server shuts down, so an endless or slow reply cannot keep it alive.
fn until_shutdown<S>(shared: &Shared, body: S) -> impl futures::Stream<Item = S::Item> + Send + 'static
where
    S: futures::Stream + Send + 'static,
{
    body.take_until(shared.shutdown.clone().cancelled_owned())
}

fn body_response<S>(content_type: &'static str, body: S) -> Response
where
    S: futures::Stream<Item = Result<Bytes, Infallible>> + Send + 'static,
{
    ([(header::CONTENT_TYPE, content_type)], Body::from_stream(body)).into_response()
}

fn answer(
    shared: &Shared,
    api: Api,
    request: &SeenRequest,
    text: String,
    calls: Vec<(String, String)>,
    include_usage: bool,
) -> Response {
    let (content_type, chunks) = render_answer(shared, api, request, text, calls, include_usage);
    if content_type == EVENT_STREAM {
        sse_response(chunks)
    } else {
        json_response(chunks.concat())
    }
}

const EVENT_STREAM: &str = "text/event-stream";

/// A successful answer in the request's API and mode: its content type and body chunks (one per
/// event when streamed, else the whole JSON body).
fn render_answer(
    shared: &Shared,
    api: Api,
    request: &SeenRequest,
    text: String,
    calls: Vec<(String, String)>,
    include_usage: bool,
) -> (&'static str, Vec<String>) {
    let (text, calls) = if request.response_format.as_deref() == Some("json_schema") {
        (render::envelope(text, calls), Vec::new())
    } else {
        (text, calls)
    };
    let call_prefix = match api {
        Api::OpenAi => "call_",
        Api::Anthropic => "toolu_",
    };
    let calls = calls
        .into_iter()
        .map(|(name, arguments)| OutCall {
            id: format!("{call_prefix}{}", shared.next_id()),
            name,
            arguments,
        })
        .collect();
    let id = match api {
        Api::OpenAi => format!("chatcmpl-{}", shared.next_id()),
        Api::Anthropic => format!("msg_{}", shared.next_id()),
    };
    let mut answer = Answer::new(id, request, text, calls);
    if !shared.options.no_prompt_cache {
        answer.cache = shared.cache.account(api, &request.prompt, answer.input_tokens);
    }
    match (api, request.stream) {
        (Api::OpenAi, false) => ("application/json", vec![render::openai_json(&answer)]),
        (Api::OpenAi, true) => (EVENT_STREAM, render::openai_sse(&answer, include_usage)),
        (Api::Anthropic, false) => ("application/json", vec![render::anthropic_json(&answer)]),
        (Api::Anthropic, true) => (EVENT_STREAM, render::anthropic_sse(&answer)),
    }
}

/// Sends the first half of an answer (at least one event, or half the JSON body) and then fails the
/// body, which makes the server abort the connection mid-reply, as a crashing server or proxy does.
fn dropped_response(content_type: &'static str, mut chunks: Vec<String>) -> Response {
    let sent: Vec<String> = if chunks.len() > 1 {
        chunks.truncate(chunks.len() / 2);
        chunks
    } else {
        let whole = chunks.concat();
        let half = render::split(&whole, 2).first().map(|s| s.to_string());
        half.into_iter().collect()
    };
    let broken = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "the fake dropped the stream");
    let body = futures::stream::iter(sent.into_iter().map(|c| Ok(Bytes::from(c)))).chain(
        futures::stream::once(async move {
            // A pause lets the server flush what was sent: failing at once would abort the
            // connection before even the status line went out, which is a different fault.
            tokio::time::sleep(DROP_PAUSE).await;
            Err::<Bytes, _>(broken)
        }),
    );
    ([(header::CONTENT_TYPE, content_type)], Body::from_stream(body)).into_response()
}

fn json_response(body: String) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Each event is its own body chunk, as a real server flushes them one by one.
fn sse_response(events: Vec<String>) -> Response {
    let chunks = futures::stream::iter(events.into_iter().map(|e| Ok::<_, Infallible>(Bytes::from(e))));
    (
        [
            (header::CONTENT_TYPE, EVENT_STREAM),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(chunks),
    )
        .into_response()
}

fn status_code(status: u16) -> StatusCode {
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

fn error_response(api: Api, status: u16, message: &str, retry_after: Option<Duration>) -> Response {
    let mut response = (
        status_code(status),
        [(header::CONTENT_TYPE, "application/json")],
        render::error_body(api, status, message),
    )
        .into_response();
    if let Some(wait) = retry_after {
        let headers = response.headers_mut();
        // Retry-After only speaks whole seconds, so round up; sub-second waits also go in the
        // `retry-after-ms` header OpenAI uses.
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        if wait.subsec_nanos() > 0 {
            headers.insert("retry-after-ms", HeaderValue::from(wait.as_millis() as u64));
        }
    }
    response
}

fn unauthorised(api: Api) -> Response {
    let message = match api {
        Api::OpenAi => "Incorrect API key provided.",
        Api::Anthropic => "invalid x-api-key",
    };
    error_response(api, 401, message, None)
}

/// The model list in OpenAI's shape, with Anthropic's paging fields too so either client is happy.
async fn models(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Some(refused) = refuse_listing(&shared, &headers) {
        return refused;
    }
    let ids: Vec<String> = match &shared.options.models {
        Some(models) => models.clone(),
        None => vec!["fake-model".into(), "fake-model-large".into()],
    };
    let body = json!({
        "object": "list",
        "data": ids.iter().map(|id| model_object(id, owner(&shared))).collect::<Vec<_>>(),
        "has_more": false,
        "first_id": ids.first(),
        "last_id": ids.last(),
    });
    json_response(body.to_string())
}

/// One model by id: 404 for a model a strict server does not serve.
async fn model_by_id(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = refuse_listing(&shared, &headers) {
        return refused;
    }
    if !shared.serves(&id) {
        let message = format!("The model `{id}` does not exist or you do not have access to it.");
        return error_response(Api::OpenAi, 404, &message, None);
    }
    json_response(model_object(&id, owner(&shared)).to_string())
}

fn model_object(id: &str, owned_by: &str) -> serde_json::Value {
    json!({"id": id, "object": "model", "type": "model", "created": 0, "owned_by": owned_by, "display_name": id})
}

fn owner(shared: &Shared) -> &str {
    shared.options.owned_by.as_deref().unwrap_or("orchestrator")
}

/// The 401 of a listing request with the wrong key, in the style of the API the headers suggest.
fn refuse_listing(shared: &Shared, headers: &HeaderMap) -> Option<Response> {
    if shared.authorised(None, headers) {
        return None;
    }
    let anthropic = headers.contains_key("x-api-key") || headers.contains_key("anthropic-version");
    Some(unauthorised(if anthropic { Api::Anthropic } else { Api::OpenAi }))
}
