//! A streamable-HTTP server: one someone else runs, reached at its `url`.
//!
//! The protocol side (sessions, the SSE streams, reconnection, re-initialising an expired session)
//! is rmcp's streamable-HTTP client transport; the HTTP side is ours, over the workspace's reqwest
//! 0.12 — rmcp's own binding needs reqwest 0.13, a second HTTP stack in the binary for one feature.
//! What a server sends is bounded here, before anything is parsed: a JSON body, one SSE event and
//! an error body each have a size limit, a stream that breaks one ends, and reconnecting is tried a
//! few times, not forever. Redirects are not followed (a token must not be carried elsewhere).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use reqwest::header::{HeaderName, HeaderValue, ACCEPT, CONTENT_TYPE, LOCATION, RETRY_AFTER};
use reqwest::StatusCode;
use rmcp::model::{ClientJsonRpcMessage, JsonRpcMessage, ServerJsonRpcMessage, Tool};
use rmcp::service::RunningService;
use rmcp::transport::common::client_side_sse::SseRetryPolicy;
use rmcp::transport::common::http_header::{
    EVENT_STREAM_MIME_TYPE, HEADER_LAST_EVENT_ID, HEADER_SESSION_ID, JSON_MIME_TYPE,
};
use rmcp::transport::streamable_http_client::{
    HttpStatusError, StreamableHttpClient, StreamableHttpClientTransport,
    StreamableHttpClientTransportConfig, StreamableHttpError, StreamableHttpPostResponse,
    StreamableHttpResponseLimits,
};
use rmcp::RoleClient;
use sse_stream::{Error as SseError, Sse, SseStream};

use super::{cut, handshake, Link};
use crate::config::McpHttp;

/// How long connecting to the server may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest JSON body read from the server; tool results are cut far below this anyway.
pub(super) const MAX_JSON_BYTES: usize = 8 * 1024 * 1024;
/// The largest single SSE event read from the server.
pub(super) const MAX_SSE_EVENT_BYTES: usize = 8 * 1024 * 1024;
/// How much of an error body is kept, to say what the server answered.
const MAX_ERROR_BYTES: usize = 2 * 1024;
/// Reconnections of a broken SSE stream tried before the stream is given up.
const MAX_RECONNECTS: usize = 3;

type Result<T> = std::result::Result<T, StreamableHttpError<HttpError>>;

/// What went wrong on the HTTP side, in words that say what to check.
#[derive(Debug, thiserror::Error)]
pub(super) enum HttpError {
    #[error("{}", describe_request_error(.0))]
    Request(#[from] reqwest::Error),
    #[error("the server sent more than {0} bytes in one answer (or one event); it is not read further")]
    TooLarge(usize),
    #[error("the server answered HTTP {status}{hint}: {body}")]
    Status {
        status: u16,
        hint: &'static str,
        body: String,
    },
    #[error("the server redirects to {0}; put that address in `url` (redirects are not followed)")]
    Redirect(String),
}

/// Our side of rmcp's streamable-HTTP transport: reqwest with the bounds above.
#[derive(Clone)]
pub(super) struct HttpClient {
    client: reqwest::Client,
    /// The last thing that went wrong on the HTTP side. rmcp's worker turns every transport error
    /// into "connection closed"; this says why, in the start's error and the log.
    last_error: LastError,
}

type LastError = Arc<std::sync::Mutex<Option<String>>>;

fn note(last_error: &LastError, what: String) {
    tracing::debug!(target: "mcp_server", "HTTP: {what}");
    *last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(what);
}

/// Connects to the server and lists its tools, all within `within`.
pub(super) async fn start(
    settings: &McpHttp,
    within: Duration,
) -> std::result::Result<(RunningService<RoleClient, ()>, Vec<Tool>, Link), String> {
    let last_error = LastError::default();
    let transport = transport(settings, last_error.clone())?;
    let (service, tools) = handshake(transport, within).await.map_err(|e| {
        let why = last_error.lock().unwrap_or_else(|p| p.into_inner()).take();
        match why {
            Some(why) if !e.contains(&why) => format!("{e} (at {}): {why}", settings.url),
            _ => format!("{e} (at {})", settings.url),
        }
    })?;
    let link = Link::Http {
        url: settings.url.clone(),
    };
    Ok((service, tools, link))
}

fn transport(
    settings: &McpHttp,
    last_error: LastError,
) -> std::result::Result<StreamableHttpClientTransport<HttpClient>, String> {
    let client = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| format!("cannot make an HTTP client: {e}"))?;
    let mut config = StreamableHttpClientTransportConfig::with_uri(settings.url.as_str())
        .custom_headers(headers(settings)?)
        .max_sse_event_size(MAX_SSE_EVENT_BYTES)
        .max_json_response_size(MAX_JSON_BYTES)
        .max_error_response_size(MAX_ERROR_BYTES);
    config.retry_config = Arc::new(FewReconnects);
    if let Some(var) = &settings.bearer_token_env_var {
        config = config.auth_header(variable(var, "bearer_token_env_var")?);
    }
    Ok(StreamableHttpClientTransport::with_client(
        HttpClient { client, last_error },
        config,
    ))
}

/// The headers sent with every request: those written, and those read from the environment.
fn headers(settings: &McpHttp) -> std::result::Result<HashMap<HeaderName, HeaderValue>, String> {
    let mut headers = HashMap::new();
    let from_env = settings
        .env_headers
        .iter()
        .map(|(name, var)| Ok::<_, String>((name, variable(var, &format!("env_http_headers.{name}"))?)));
    let written = settings
        .headers
        .iter()
        .map(|(n, v)| Ok::<_, String>((n, v.clone())));
    for pair in written.chain(from_env) {
        let (name, value) = pair?;
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("`{name}` is not a valid HTTP header name"))?;
        let value = HeaderValue::from_str(&value)
            .map_err(|_| format!("the value of the header `{name}` is not a valid HTTP header value"))?;
        headers.insert(name, value);
    }
    Ok(headers)
}

/// An environment variable the config names, which must be set.
fn variable(var: &str, key: &str) -> std::result::Result<String, String> {
    std::env::var(var)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .ok_or_else(|| {
            format!("`{key}` names the environment variable {var}, which is not set; export it and resume")
        })
}

/// The secret values this server's config names, as set now.
pub(super) fn secret_values(settings: &McpHttp) -> Vec<String> {
    settings
        .bearer_token_env_var
        .iter()
        .chain(settings.env_headers.values())
        .filter_map(|var| std::env::var(var).ok())
        .filter(|v| !v.trim().is_empty())
        .collect()
}

/// A broken SSE stream is reopened a few times, a second apart, then given up: the call waiting on
/// it then ends by its own timeout, never by waiting for a server that is gone.
#[derive(Debug)]
struct FewReconnects;

impl SseRetryPolicy for FewReconnects {
    fn retry(&self, times: usize) -> Option<Duration> {
        (times < MAX_RECONNECTS).then_some(Duration::from_secs(1))
    }
}

fn describe_request_error(e: &reqwest::Error) -> String {
    let mut text = if e.is_connect() {
        "cannot connect".to_string()
    } else if e.is_timeout() {
        "the request timed out".to_string()
    } else {
        "the request failed".to_string()
    };
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    if e.is_connect() {
        text.push_str(" (is the server running at that address, and reachable from here?)");
    }
    text
}

fn client_error(e: impl Into<HttpError>) -> StreamableHttpError<HttpError> {
    StreamableHttpError::Client(e.into())
}

fn media_type_is(value: Option<&HeaderValue>, expected: &str) -> bool {
    value
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case(expected))
}

/// Reads a whole body, refusing one longer than `max` bytes before it is all in memory.
async fn read_bounded(mut response: reqwest::Response, max: usize) -> Result<Vec<u8>> {
    if response.content_length().is_some_and(|n| n > max as u64) {
        return Err(client_error(HttpError::TooLarge(max)));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(client_error)? {
        if body.len() + chunk.len() > max {
            return Err(client_error(HttpError::TooLarge(max)));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The start of an error body, as text, for the message.
async fn error_preview(mut response: reqwest::Response) -> String {
    let mut body = Vec::new();
    while body.len() < MAX_ERROR_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            _ => break,
        }
    }
    body.truncate(MAX_ERROR_BYTES);
    match String::from_utf8_lossy(&body).trim() {
        "" => "(no body)".to_string(),
        text => cut(text, 500),
    }
}

/// An answer that is not a success, as the error that says what to do.
async fn failure(response: reqwest::Response) -> StreamableHttpError<HttpError> {
    let status = response.status();
    if status.is_redirection() {
        let to = response
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .map_or_else(|| "another address".to_string(), |v| cut(v, 300));
        return client_error(HttpError::Redirect(to));
    }
    if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .filter(|v| v.len() <= 64)
            .map(str::to_owned);
        return HttpStatusError::new(status.as_u16(), retry_after).into();
    }
    let hint = match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
            " (it refused our credentials: check the token `bearer_token_env_var` names, or `env_http_headers`)"
        }
        StatusCode::NOT_FOUND => " (is `url` the server's MCP endpoint, often ending in /mcp?)",
        _ => "",
    };
    client_error(HttpError::Status {
        status: status.as_u16(),
        hint,
        body: error_preview(response).await,
    })
}

/// The server's SSE events, each at most `max` bytes; a larger one ends the stream with an error.
fn bounded_sse<S>(
    bytes: S,
    max: usize,
    last_error: LastError,
) -> BoxStream<'static, std::result::Result<Sse, SseError>>
where
    S: futures::Stream<Item = std::result::Result<Bytes, reqwest::Error>> + Send + 'static,
{
    let mut counter = EventSize::default();
    let limited = bytes.scan(false, move |over, chunk| {
        let item = if *over {
            None
        } else {
            Some(chunk.map_err(HttpError::from).and_then(|chunk| {
                if counter.add(&chunk, max) {
                    Ok(chunk)
                } else {
                    *over = true;
                    let error = HttpError::TooLarge(max);
                    note(&last_error, error.to_string());
                    Err(error)
                }
            }))
        };
        futures::future::ready(item)
    });
    SseStream::from_bytes_stream(limited).boxed()
}

/// The bytes of the SSE event being read, reset at each blank line (the end of an event).
#[derive(Default)]
struct EventSize {
    bytes: usize,
    after_newline: bool,
}

impl EventSize {
    /// Counts `chunk`; false once an event has grown past `max`.
    fn add(&mut self, chunk: &[u8], max: usize) -> bool {
        for &byte in chunk {
            match byte {
                b'\n' if self.after_newline => {
                    self.bytes = 0;
                    self.after_newline = false;
                    continue;
                }
                b'\n' => self.after_newline = true,
                b'\r' => {}
                _ => self.after_newline = false,
            }
            self.bytes += 1;
            if self.bytes > max {
                return false;
            }
        }
        true
    }
}

impl HttpClient {
    fn request(
        &self,
        builder: reqwest::RequestBuilder,
        session_id: Option<&str>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> reqwest::RequestBuilder {
        let mut builder = builder;
        if let Some(session) = session_id {
            builder = builder.header(HEADER_SESSION_ID, session);
        }
        if let Some(token) = auth_header {
            builder = builder.bearer_auth(token);
        }
        for (name, value) in custom_headers {
            builder = builder.header(name, value);
        }
        builder
    }
}

impl HttpClient {
    fn noted<T>(&self, answer: Result<T>) -> Result<T> {
        if let Err(e) = &answer {
            note(&self.last_error, e.to_string());
        }
        answer
    }

    async fn post(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        limits: StreamableHttpResponseLimits,
    ) -> Result<StreamableHttpPostResponse> {
        let post = self
            .client
            .post(uri.as_ref())
            .header(ACCEPT, format!("{JSON_MIME_TYPE}, {EVENT_STREAM_MIME_TYPE}"))
            .json(&message);
        let post = self.request(post, session_id.as_deref(), auth_header, custom_headers);
        let response = post.send().await.map_err(client_error)?;
        let status = response.status();
        if matches!(status, StatusCode::ACCEPTED | StatusCode::NO_CONTENT) {
            return Ok(StreamableHttpPostResponse::Accepted);
        }
        if status == StatusCode::NOT_FOUND && session_id.is_some() {
            return Err(StreamableHttpError::SessionExpired);
        }
        let session = response
            .headers()
            .get(HEADER_SESSION_ID)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let content_type = response.headers().get(CONTENT_TYPE).cloned();
        let is_json = media_type_is(content_type.as_ref(), JSON_MIME_TYPE);
        let json_limit = limits.max_json_response_size.min(MAX_JSON_BYTES);
        if !status.is_success() {
            if is_json && !status.is_server_error() && status != StatusCode::TOO_MANY_REQUESTS {
                // A JSON-RPC error sent with an HTTP error status is still the server's answer.
                let body = read_bounded(response, json_limit).await?;
                if let Ok(error @ JsonRpcMessage::Error(_)) =
                    serde_json::from_slice::<ServerJsonRpcMessage>(&body)
                {
                    return Ok(StreamableHttpPostResponse::Json(error, session));
                }
                return Err(client_error(HttpError::Status {
                    status: status.as_u16(),
                    hint: "",
                    body: cut(String::from_utf8_lossy(&body).trim(), 500),
                }));
            }
            return Err(failure(response).await);
        }
        let answers_nothing = !matches!(message, ClientJsonRpcMessage::Request(_));
        if media_type_is(content_type.as_ref(), EVENT_STREAM_MIME_TYPE) {
            let events = bounded_sse(
                response.bytes_stream(),
                limits.max_sse_event_size.min(MAX_SSE_EVENT_BYTES),
                self.last_error.clone(),
            );
            return Ok(StreamableHttpPostResponse::Sse(events, session));
        }
        if is_json {
            let body = read_bounded(response, json_limit).await?;
            if body.is_empty() && answers_nothing {
                return Ok(StreamableHttpPostResponse::Accepted);
            }
            let message = serde_json::from_slice(&body).map_err(|e| {
                StreamableHttpError::UnexpectedServerResponse(Cow::Owned(format!(
                    "its JSON answer is not a JSON-RPC message ({e}): {}",
                    cut(String::from_utf8_lossy(&body).trim(), 300)
                )))
            })?;
            return Ok(StreamableHttpPostResponse::Json(message, session));
        }
        if answers_nothing && response.content_length() == Some(0) {
            return Ok(StreamableHttpPostResponse::Accepted);
        }
        let content_type = content_type.map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        Err(StreamableHttpError::UnexpectedContentType(content_type))
    }

    async fn delete(
        &self,
        uri: Arc<str>,
        session_id: Arc<str>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<()> {
        let delete = self.client.delete(uri.as_ref());
        let delete = self.request(delete, Some(&session_id), auth_header, custom_headers);
        let response = delete.send().await.map_err(client_error)?;
        // A server that keeps no sessions says so with 405; nothing is left to end.
        if response.status().is_success() || response.status() == StatusCode::METHOD_NOT_ALLOWED {
            return Ok(());
        }
        Err(failure(response).await)
    }

    async fn get(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        max_sse_event_size: usize,
    ) -> Result<BoxStream<'static, std::result::Result<Sse, SseError>>> {
        let mut get = self
            .client
            .get(uri.as_ref())
            .header(ACCEPT, EVENT_STREAM_MIME_TYPE);
        if let Some(id) = last_event_id {
            get = get.header(HEADER_LAST_EVENT_ID, id);
        }
        let get = self.request(get, session_id.as_deref(), auth_header, custom_headers);
        let response = get.send().await.map_err(client_error)?;
        if response.status() == StatusCode::METHOD_NOT_ALLOWED {
            return Err(StreamableHttpError::ServerDoesNotSupportSse);
        }
        if !response.status().is_success() {
            return Err(failure(response).await);
        }
        let content_type = response.headers().get(CONTENT_TYPE);
        if !media_type_is(content_type, EVENT_STREAM_MIME_TYPE) {
            let content_type = content_type.map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
            return Err(StreamableHttpError::UnexpectedContentType(content_type));
        }
        Ok(bounded_sse(
            response.bytes_stream(),
            max_sse_event_size.min(MAX_SSE_EVENT_BYTES),
            self.last_error.clone(),
        ))
    }
}

impl StreamableHttpClient for HttpClient {
    type Error = HttpError;

    async fn post_message(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<StreamableHttpPostResponse> {
        let limits = StreamableHttpResponseLimits::default();
        let answer = self
            .post(uri, message, session_id, auth_header, custom_headers, limits)
            .await;
        self.noted(answer)
    }

    async fn post_message_with_response_limits(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        limits: StreamableHttpResponseLimits,
    ) -> Result<StreamableHttpPostResponse> {
        let answer = self
            .post(uri, message, session_id, auth_header, custom_headers, limits)
            .await;
        self.noted(answer)
    }

    async fn delete_session(
        &self,
        uri: Arc<str>,
        session_id: Arc<str>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<()> {
        let answer = self.delete(uri, session_id, auth_header, custom_headers).await;
        self.noted(answer)
    }

    async fn get_stream(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<BoxStream<'static, std::result::Result<Sse, SseError>>> {
        let answer = self
            .get(
                uri,
                session_id,
                last_event_id,
                auth_header,
                custom_headers,
                MAX_SSE_EVENT_BYTES,
            )
            .await;
        self.noted(answer)
    }

    async fn get_stream_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        max_sse_event_size: usize,
    ) -> Result<BoxStream<'static, std::result::Result<Sse, SseError>>> {
        let answer = self
            .get(
                uri,
                session_id,
                last_event_id,
                auth_header,
                custom_headers,
                max_sse_event_size,
            )
            .await;
        self.noted(answer)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// How a raw test server answers each request.
    #[derive(Clone, Copy)]
    enum Answer {
        /// These bytes, then the connection is closed.
        Bytes(&'static str),
        /// A success header of this content type, then bytes without end.
        Flood(&'static str),
        /// Nothing, ever.
        Silence,
    }

    /// A server on 127.0.0.1 that answers every request the same way; it keeps each request's head.
    async fn raw_server(answer: Answer) -> (McpHttp, Arc<Mutex<Vec<String>>>) {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.expect("bind");
        let url = format!("http://{}/mcp", listener.local_addr().expect("addr"));
        let heads = Arc::new(Mutex::new(Vec::new()));
        let kept = heads.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let kept = kept.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") && socket.read(&mut byte).await.is_ok_and(|n| n == 1) {
                        head.push(byte[0]);
                    }
                    kept.lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&head).to_lowercase());
                    match answer {
                        Answer::Bytes(text) => {
                            let _ = socket.write_all(text.as_bytes()).await;
                        }
                        Answer::Flood(content_type) => {
                            let header = format!("HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\n\r\n");
                            let _ = socket.write_all(header.as_bytes()).await;
                            let chunk = vec![b'x'; 64 * 1024];
                            while socket.write_all(&chunk).await.is_ok() {}
                        }
                        Answer::Silence => std::future::pending::<()>().await,
                    }
                });
            }
        });
        (settings(&url), heads)
    }

    fn settings(url: &str) -> McpHttp {
        McpHttp {
            url: url.to_string(),
            bearer_token_env_var: None,
            headers: BTreeMap::new(),
            env_headers: BTreeMap::new(),
        }
    }

    async fn start_error(settings: &McpHttp, within: Duration) -> String {
        match start(settings, within).await {
            Ok(_) => panic!("the start succeeded"),
            Err(e) => e,
        }
    }

    #[tokio::test]
    async fn nothing_listening_is_said_at_once_with_the_address() {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let url = format!("http://{}/mcp", listener.local_addr().unwrap());
        drop(listener);
        let err = start_error(&settings(&url), Duration::from_secs(20)).await;
        assert!(err.contains("cannot connect") && err.contains(&url), "{err}");
    }

    #[tokio::test]
    async fn a_server_that_never_answers_is_given_up_in_time() {
        let (settings, heads) = raw_server(Answer::Silence).await;
        let err = start_error(&settings, Duration::from_secs(1)).await;
        assert!(err.contains("within 1 s"), "{err}");
        assert_eq!(heads.lock().unwrap().len(), 1, "it was asked once");
    }

    #[tokio::test]
    async fn an_endless_json_body_or_sse_event_is_cut_off_not_read_into_memory() {
        for content_type in ["application/json", "text/event-stream"] {
            let (settings, _) = raw_server(Answer::Flood(content_type)).await;
            let err = start_error(&settings, Duration::from_secs(60)).await;
            assert!(
                err.contains(&format!("more than {MAX_JSON_BYTES} bytes")),
                "{content_type}: {err}"
            );
        }
    }

    #[tokio::test]
    async fn credentials_and_headers_are_sent_and_a_refusal_says_what_to_check() {
        let (mut settings, heads) = raw_server(Answer::Bytes(
            "HTTP/1.1 401 Unauthorized\r\ncontent-length: 6\r\n\r\nno way",
        ))
        .await;
        // Variables every test process has, so that no test changes the environment.
        settings.bearer_token_env_var = Some("PATH".into());
        settings.headers.insert("X-Team".into(), "core".into());
        settings.env_headers.insert("X-Home".into(), "HOME".into());
        let err = start_error(&settings, Duration::from_secs(20)).await;
        assert!(
            err.contains("HTTP 401") && err.contains("bearer_token_env_var") && err.contains("no way"),
            "{err}"
        );
        let head = heads.lock().unwrap()[0].clone();
        let path = std::env::var("PATH").unwrap().to_lowercase();
        let home = std::env::var("HOME").unwrap().to_lowercase();
        assert!(head.contains(&format!("authorization: bearer {path}")), "{head}");
        assert!(
            head.contains("x-team: core") && head.contains(&format!("x-home: {home}")),
            "{head}"
        );
        assert_eq!(
            secret_values(&settings),
            vec![std::env::var("PATH").unwrap(), std::env::var("HOME").unwrap()]
        );
    }

    #[tokio::test]
    async fn a_redirect_is_not_followed_and_names_where_it_goes() {
        let (settings, heads) = raw_server(Answer::Bytes(
            "HTTP/1.1 307 Temporary Redirect\r\nlocation: https://elsewhere.example/mcp\r\ncontent-length: 0\r\n\r\n",
        ))
        .await;
        let err = start_error(&settings, Duration::from_secs(20)).await;
        assert!(
            err.contains("redirects to https://elsewhere.example/mcp"),
            "{err}"
        );
        assert_eq!(heads.lock().unwrap().len(), 1, "not followed, not retried");
    }

    #[tokio::test]
    async fn an_answer_that_is_not_json_rpc_is_quoted() {
        let (settings, _) = raw_server(Answer::Bytes(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 13\r\n\r\n{\"hello\": 1}\n",
        ))
        .await;
        let err = start_error(&settings, Duration::from_secs(20)).await;
        assert!(
            err.contains("not a JSON-RPC message") && err.contains("hello"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_missing_variable_is_named_before_anything_is_sent() {
        let (mut settings, heads) = raw_server(Answer::Silence).await;
        settings.bearer_token_env_var = Some("ORCHESTRATOR_TEST_SURELY_UNSET_7731".into());
        let err = start_error(&settings, Duration::from_secs(20)).await;
        assert!(
            err.contains("ORCHESTRATOR_TEST_SURELY_UNSET_7731") && err.contains("not set"),
            "{err}"
        );
        assert!(heads.lock().unwrap().is_empty());
    }

    #[test]
    fn an_event_is_measured_from_the_last_blank_line() {
        let mut size = EventSize::default();
        assert!(size.add(b"data: 12345\n\n", 16));
        assert!(
            size.add(b"data: 1234\r\n\r\ndata: 1", 16),
            "CRLF ends an event too"
        );
        assert!(size.add(b"2345\n", 16));
        assert!(!size.add(b"more!", 16), "an event over the limit is refused");
    }

    #[tokio::test]
    async fn a_stream_with_an_oversized_event_ends_with_one_error() {
        let chunks = vec![
            Ok(Bytes::from_static(b"data: {}\n\n")),
            Ok(Bytes::from(vec![b'x'; 64])),
            Ok(Bytes::from(vec![b'y'; 64])),
        ];
        let mut events = bounded_sse(futures::stream::iter(chunks), 32, LastError::default());
        let first = events.next().await.expect("an event").expect("a good event");
        assert_eq!(first.data.as_deref(), Some("{}"));
        assert!(events.next().await.expect("an error").is_err());
        assert!(events.next().await.is_none(), "nothing is read after the error");
    }
}
