//! The HTTP client. Every session-level call takes the directory the session lives in: OpenCode runs
//! one "instance" per project folder inside a single server, chosen by the `directory` query
//! parameter, and a session is only found through the instance of its folder.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use eventsource_stream::Eventsource;
use futures::{Stream, StreamExt};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::types::*;

/// HTTP basic auth credentials (OpenCode's username is `opencode` unless the server sets
/// OPENCODE_SERVER_USERNAME).
#[derive(Clone)]
pub struct Auth {
    pub username: String,
    password: String,
}

impl Auth {
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Auth {
            username: username.into(),
            password: password.into(),
        }
    }

    /// The default username with this password.
    pub fn password(password: impl Into<String>) -> Self {
        Auth::new("opencode", password)
    }
}

impl std::fmt::Debug for Auth {
    // The password never reaches logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Auth({}:***)", self.username)
    }
}

#[derive(Clone, Debug)]
pub struct Client {
    base: String,
    http: reqwest::Client,
    auth: Option<Auth>,
}

impl Client {
    /// A client for the server at `url` (e.g. `http://127.0.0.1:4096`). No request is made yet;
    /// call [`Client::health`] to check the address and the credentials.
    pub fn new(url: &str, auth: Option<Auth>) -> Result<Client> {
        let base = url.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(Error::BadUrl {
                url: url.into(),
                reason: "it must start with http:// or https://".into(),
            });
        }
        let http = reqwest::Client::builder()
            // Connecting is quick or broken; a prompt may legitimately take many minutes, so there
            // is no overall request timeout here.
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|source| Error::Connect {
                url: base.clone(),
                source,
            })?;
        Ok(Client { base, http, auth })
    }

    pub fn url(&self) -> &str {
        &self.base
    }

    fn request(&self, method: Method, path: &str, dir: Option<&Path>) -> RequestBuilder {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(dir) = dir {
            request = request.query(&[("directory", dir.to_string_lossy())]);
        }
        if let Some(auth) = &self.auth {
            request = request.basic_auth(&auth.username, Some(&auth.password));
        }
        request
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        dir: Option<&Path>,
        body: Option<&Value>,
    ) -> Result<String> {
        let verb: &'static str = match method {
            Method::GET => "GET",
            Method::POST => "POST",
            Method::DELETE => "DELETE",
            Method::PATCH => "PATCH",
            _ => "request",
        };
        let mut request = self.request(method, path, dir);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|source| Error::Connect {
            url: self.base.clone(),
            source,
        })?;
        let status = response.status();
        let text = response.text().await.map_err(|source| Error::Connect {
            url: self.base.clone(),
            source,
        })?;
        if status == StatusCode::UNAUTHORIZED {
            return Err(Error::Unauthorized {
                url: self.base.clone(),
            });
        }
        if !status.is_success() {
            return Err(Error::Http {
                method: verb,
                path: path.to_string(),
                status: status.as_u16(),
                body: text.chars().take(2000).collect(),
            });
        }
        Ok(text)
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        dir: Option<&Path>,
        body: Option<&Value>,
    ) -> Result<T> {
        let text = self.send(method, path, dir, body).await?;
        serde_json::from_str(&text).map_err(|source| Error::Decode {
            what: path.to_string(),
            source,
        })
    }

    fn encode<T: serde::Serialize>(what: &str, value: &T) -> Result<Value> {
        serde_json::to_value(value).map_err(|source| Error::Decode {
            what: what.to_string(),
            source,
        })
    }

    /// `GET /global/health`: `{healthy, version}`. Checks the address and the credentials.
    pub async fn health(&self) -> Result<Value> {
        self.call(Method::GET, "/global/health", None, None).await
    }

    /// `POST /session?directory=DIR`: a new session working in `dir`.
    pub async fn create_session(&self, dir: &Path, body: &CreateSession) -> Result<SessionInfo> {
        let body = Self::encode("the new session", body)?;
        self.call(Method::POST, "/session", Some(dir), Some(&body)).await
    }

    /// `GET /session/{id}?directory=DIR`: the session, or an HTTP 404 error when it no longer exists.
    pub async fn session(&self, dir: &Path, id: &str) -> Result<SessionInfo> {
        self.call(Method::GET, &format!("/session/{id}"), Some(dir), None)
            .await
    }

    /// `POST /session/{id}/message`: sends the prompt and returns when the session is idle again,
    /// with its last assistant message. OpenCode runs the whole agent loop (tool calls included)
    /// before answering, so this can take as long as the session works.
    pub async fn prompt(&self, dir: &Path, id: &str, prompt: &PromptRequest) -> Result<Message> {
        let body = Self::encode("the prompt", prompt)?;
        self.call(
            Method::POST,
            &format!("/session/{id}/message"),
            Some(dir),
            Some(&body),
        )
        .await
    }

    /// `POST /session/{id}/prompt_async`: starts the prompt and returns at once (HTTP 204); follow it
    /// with [`Client::wait_idle`] and [`Client::messages`].
    pub async fn prompt_async(&self, dir: &Path, id: &str, prompt: &PromptRequest) -> Result<()> {
        let body = Self::encode("the prompt", prompt)?;
        self.send(
            Method::POST,
            &format!("/session/{id}/prompt_async"),
            Some(dir),
            Some(&body),
        )
        .await
        .map(drop)
    }

    /// `GET /session/{id}/message`: every message of the session with its parts, oldest first.
    pub async fn messages(&self, dir: &Path, id: &str) -> Result<Vec<Message>> {
        self.call(Method::GET, &format!("/session/{id}/message"), Some(dir), None)
            .await
    }

    /// `POST /session/{id}/abort`: stops what the session is doing; its current assistant message
    /// ends with a `MessageAbortedError`.
    pub async fn abort(&self, dir: &Path, id: &str) -> Result<bool> {
        self.call(Method::POST, &format!("/session/{id}/abort"), Some(dir), None)
            .await
    }

    /// `DELETE /session/{id}`.
    pub async fn delete_session(&self, dir: &Path, id: &str) -> Result<bool> {
        self.call(Method::DELETE, &format!("/session/{id}"), Some(dir), None)
            .await
    }

    /// `GET /session/status`: the sessions of `dir`'s instance that are not idle.
    pub async fn statuses(&self, dir: &Path) -> Result<BTreeMap<String, SessionStatus>> {
        self.call(Method::GET, "/session/status", Some(dir), None).await
    }

    /// Waits until the session is idle, polling `GET /session/status` every `every`. Polling rather
    /// than the event stream: it cannot miss an event that came before we subscribed.
    pub async fn wait_idle(&self, dir: &Path, id: &str, every: Duration) -> Result<()> {
        loop {
            match self.statuses(dir).await?.get(id) {
                None | Some(SessionStatus::Idle) => return Ok(()),
                Some(_) => tokio::time::sleep(every).await,
            }
        }
    }

    /// `POST /mcp?directory=DIR`: adds (or replaces) a remote MCP server in `dir`'s instance, at run
    /// time and without touching any config file. Returns the status of every MCP server there.
    pub async fn add_mcp(&self, dir: &Path, name: &str, server: &RemoteMcp) -> Result<Value> {
        let body = serde_json::json!({ "name": name, "config": Self::encode("the MCP server", server)? });
        self.call(Method::POST, "/mcp", Some(dir), Some(&body)).await
    }

    /// `GET /mcp?directory=DIR`: name -> `{status: connected|failed|disabled|..., error?}`.
    pub async fn mcp_status(&self, dir: &Path) -> Result<Value> {
        self.call(Method::GET, "/mcp", Some(dir), None).await
    }

    /// `GET /event?directory=DIR`: the instance's server-sent events, decoded. The first event is
    /// `server.connected`.
    pub async fn events(&self, dir: &Path) -> Result<impl Stream<Item = Result<Event>> + use<>> {
        let response = self
            .request(Method::GET, "/event", Some(dir))
            .header("accept", "text/event-stream")
            .send()
            .await
            .map_err(|source| Error::Connect {
                url: self.base.clone(),
                source,
            })?;
        if response.status() == StatusCode::UNAUTHORIZED {
            return Err(Error::Unauthorized {
                url: self.base.clone(),
            });
        }
        if !response.status().is_success() {
            return Err(Error::Http {
                method: "GET",
                path: "/event".into(),
                status: response.status().as_u16(),
                body: String::new(),
            });
        }
        Ok(response.bytes_stream().eventsource().map(|item| match item {
            Ok(event) => serde_json::from_str::<Event>(&event.data).map_err(|source| Error::Decode {
                what: "an event".into(),
                source,
            }),
            Err(e) => Err(Error::Events(e.to_string())),
        }))
    }
}
