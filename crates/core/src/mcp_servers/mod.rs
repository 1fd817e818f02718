//! The user's MCP servers as agent tools (`[mcp.<name>]` in the config).
//!
//! Each server a role lists is started once per mission run, in the mission's base worktree, under the
//! same supervisor as agent commands (so nothing it starts outlives the mission, even after a
//! `kill -9`), confined like a read-only agent command unless its config says otherwise. Its tools
//! are listed once at start and offered to the sessions of the roles that list the server, as
//! `mcp__<server>__<tool>`. A call is bounded in time and its result in size; a server that hangs,
//! lies or dies gives the session an error result, never the mission a crash.
//!
//! The client is `rmcp`'s, the crate `orchestrator mcp` is built on: over the stdin and stdout of a
//! program we start (`stdio.rs`), or over MCP's streamable HTTP to a server someone else runs
//! (`http.rs`, rmcp's transport driven by the workspace's own reqwest).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use orchestrator_model::ToolSpec;
use orchestrator_protocol::Event;
use orchestrator_tools::ToolOutput;
use rmcp::model::{CallToolRequestParams, PaginatedRequestParams, Tool};
use rmcp::service::{Peer, RunningService, ServiceError};
use rmcp::{RoleClient, ServiceExt};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, McpServerSettings, McpTransport, Provider};

mod http;
mod stdio;
use crate::events::EventBus;

/// Pages of `tools/list` read at most: a server whose cursor never ends cannot hold the start.
const MAX_LIST_PAGES: usize = 20;
/// Tools read from one server's listing at most; the rest are not looked at.
const MAX_LISTED_TOOLS: usize = 1_000;
/// Tools of one server offered to a model at most: every tool's schema is sent with every request.
pub const MAX_TOOLS_PER_SERVER: usize = 64;
/// The largest input schema offered (its JSON, in bytes); a bigger one is dropped with a notice.
pub const MAX_SCHEMA_BYTES: usize = 16 * 1024;
/// A tool's description is cut to this many characters.
const MAX_DESCRIPTION_CHARS: usize = 1_024;
/// Model APIs accept tool names of at most 64 characters of `[A-Za-z0-9_-]` (OpenAI's rule).
const MAX_TOOL_NAME: usize = 64;
/// How long a stopping server's connection may take to close after the server was killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a server could not be started; the message names the server and what to do.
#[derive(Debug, thiserror::Error)]
#[error("MCP server `{server}` ({source_file}): {reason}")]
pub struct StartError {
    server: String,
    source_file: String,
    reason: String,
}

/// The mission's MCP servers: none until [`McpServers::start`], stopped by [`McpServers::stop`]
/// (or, at the latest, when the last handle is dropped: each server dies with its lifeline).
#[derive(Default)]
pub struct McpServers {
    started: OnceLock<Started>,
}

#[derive(Default)]
struct Started {
    servers: BTreeMap<String, Arc<Server>>,
    /// The offered name of every tool, and where it goes.
    routes: BTreeMap<String, Route>,
}

struct Route {
    server: String,
    /// The tool's own name on its server.
    tool: String,
    spec: ToolSpec,
}

struct Server {
    name: String,
    peer: Peer<RoleClient>,
    service: tokio::sync::Mutex<Option<RunningService<RoleClient, ()>>>,
    timeout: Duration,
    link: Link,
}

/// What carries a server's messages, and what must be undone when it stops.
enum Link {
    /// A program of ours on stdio.
    Process(Box<stdio::Process>),
    /// A server someone else runs, reached over streamable HTTP at this address.
    Http { url: String },
}

impl McpServers {
    /// Starts every server some role lists, lists its tools and says what is offered. Servers no
    /// role lists are not started. An error names the server that failed; those already started
    /// are stopped by the caller's [`McpServers::stop`].
    pub async fn start(&self, config: &Config, base: &Path, bus: &EventBus) -> Result<(), StartError> {
        let specialists = config.specialists.values().map(|s| &s.settings);
        let wanted: BTreeSet<&String> = config
            .roles
            .values()
            .chain(specialists)
            .flat_map(|r| r.mcp.iter())
            .collect();
        let mut started = Started::default();
        let result = self.start_each(config, base, bus, &wanted, &mut started).await;
        // Whatever started is kept, so that `stop` finds it even when a later server failed.
        let _ = self.started.set(started);
        result
    }

    async fn start_each(
        &self,
        config: &Config,
        base: &Path,
        bus: &EventBus,
        wanted: &BTreeSet<&String>,
        started: &mut Started,
    ) -> Result<(), StartError> {
        if config.provider == Provider::OpenCode {
            return Ok(());
        }
        for name in config.mcp.keys().filter(|name| !wanted.contains(name)) {
            bus.emit(Event::Notice {
                message: format!(
                    "MCP server `{name}` is not started: no role lists it (`[roles.worker] mcp = [\"{name}\"]` offers \
                     its tools to workers)"
                ),
            });
        }
        for (name, settings) in config.mcp.iter().filter(|(name, _)| wanted.contains(name)) {
            let fail = |reason: String| StartError {
                server: name.clone(),
                source_file: settings.source.clone(),
                reason,
            };
            let (server, listed) = start_server(name, settings, base, settings.startup_timeout)
                .await
                .map_err(fail)?;
            let server = Arc::new(server);
            started.servers.insert(name.clone(), server.clone());
            let chosen = choose_tools(name, settings, listed).map_err(fail)?;
            for warning in &chosen.warnings {
                bus.emit(Event::Notice {
                    message: format!("MCP server `{name}`: {warning}"),
                });
            }
            let mut offered = Vec::new();
            for tool in chosen.tools {
                let exposed = unique_name(&offered_name(name, &tool.name), &started.routes);
                offered.push(exposed.clone());
                started.routes.insert(
                    exposed.clone(),
                    Route {
                        server: name.clone(),
                        tool: tool.name.clone(),
                        spec: ToolSpec {
                            name: exposed,
                            description: tool.description,
                            parameters: tool.schema,
                        },
                    },
                );
            }
            bus.emit(Event::Notice {
                message: format!(
                    "MCP server `{name}` started ({}): {} tool{} offered{}",
                    settings.describe(),
                    offered.len(),
                    if offered.len() == 1 { "" } else { "s" },
                    if offered.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", offered.join(", "))
                    }
                ),
            });
        }
        Ok(())
    }

    /// The tools of `servers` (a role's `mcp` list), as offered to a model.
    pub fn specs_for(&self, servers: &[String]) -> Vec<ToolSpec> {
        let Some(started) = self.started.get() else {
            return Vec::new();
        };
        started
            .routes
            .values()
            .filter(|route| servers.contains(&route.server))
            .map(|route| route.spec.clone())
            .collect()
    }

    /// Runs a call to an offered tool. Never fails: a server's error, a timeout, a dead server and a
    /// cancel all become an error result the model can read.
    pub async fn call(&self, name: &str, arguments: &Value, cancel: &CancellationToken) -> ToolOutput {
        let Some((route, server)) = self.started.get().and_then(|s| {
            let route = s.routes.get(name)?;
            Some((route, s.servers.get(&route.server)?))
        }) else {
            return error(format!("unknown tool `{name}`"));
        };
        server.call(name, &route.tool, arguments, cancel).await
    }

    /// Stops every server: each is killed with everything it started, then its connection closed.
    pub async fn stop(&self) {
        let Some(started) = self.started.get() else {
            return;
        };
        for server in started.servers.values() {
            server.stop().await;
        }
    }
}

impl Server {
    async fn call(
        &self,
        offered: &str,
        tool: &str,
        arguments: &Value,
        cancel: &CancellationToken,
    ) -> ToolOutput {
        if self.peer.is_transport_closed() {
            return error(self.gone());
        }
        let mut params = CallToolRequestParams::new(tool.to_string());
        if let Value::Object(map) = arguments {
            params = params.with_arguments(map.clone());
        }
        // Dropping the request (timeout, cancel) sends the server a cancellation for it.
        let answer = tokio::select! {
            answer = tokio::time::timeout(self.timeout, self.peer.call_tool(params)) => answer,
            _ = cancel.cancelled() => return error("the call was cancelled".into()),
        };
        match answer {
            Err(_) => error(format!(
                "`{offered}` did not answer within {} s (`timeout_secs` of [mcp.{}]); the call was cancelled. \
                 Try it with a smaller request, or go on without it.",
                self.timeout.as_secs(),
                self.name
            )),
            Ok(Err(ServiceError::McpError(e))) => error(format!(
                "the MCP server `{}` refused the call: {}",
                self.name,
                cut(&e.message, 2_000)
            )),
            Ok(Err(ServiceError::TransportClosed | ServiceError::TransportSend(_))) => error(self.gone()),
            Ok(Err(e)) if self.peer.is_transport_closed() => {
                tracing::debug!("MCP server {} failed a call: {e}", self.name);
                error(self.gone())
            }
            Ok(Err(e)) => error(format!("the MCP server `{}` failed the call: {e}", self.name)),
            Ok(Ok(result)) => {
                let text = render_content(&result.content, result.structured_content.as_ref());
                ToolOutput {
                    content: orchestrator_tools::clip_output(&text),
                    is_error: result.is_error.unwrap_or(false),
                }
            }
        }
    }

    fn gone(&self) -> String {
        match &self.link {
            Link::Process(process) => {
                let stderr = process.stderr_tail();
                let said = match stderr.trim() {
                    "" => String::new(),
                    text => format!(" Its last words on stderr: {}", cut(text, 500)),
                };
                format!(
                    "the MCP server `{}` is gone (it exited or closed its connection); its tools cannot be called \
                     for the rest of this run. Go on without them.{said}",
                    self.name
                )
            }
            Link::Http { url } => format!(
                "the MCP server `{}` at {url} is gone (it stopped answering or ended the session and a new one \
                 could not be made); its tools cannot be called for the rest of this run. Go on without them.",
                self.name
            ),
        }
    }

    async fn stop(&self) {
        // A process first: the supervisor kills the server's whole tree once its lifeline is cut.
        if let Link::Process(process) = &self.link {
            process.cut_lifeline();
        }
        // Closing the connection ends an HTTP server's session (a DELETE) and an stdio server's pipes.
        if let Some(service) = self.service.lock().await.take() {
            if tokio::time::timeout(STOP_TIMEOUT, service.cancel())
                .await
                .is_err()
            {
                tracing::warn!("the MCP server {} did not close its connection", self.name);
            }
        }
        if let Link::Process(process) = &self.link {
            if !process.reap(STOP_TIMEOUT).await {
                tracing::warn!("the MCP server {} did not end after it was killed", self.name);
            }
        }
    }
}

/// Starts one server (or reaches it) and lists its tools, all within `within`.
async fn start_server(
    name: &str,
    settings: &McpServerSettings,
    base: &Path,
    within: Duration,
) -> Result<(Server, Vec<Tool>), String> {
    let (service, tools, link) = match &settings.transport {
        McpTransport::Stdio(stdio) => stdio::start(name, stdio, base, within).await?,
        McpTransport::Http(http) => http::start(http, within).await?,
    };
    let server = Server {
        name: name.to_string(),
        peer: service.peer().clone(),
        service: tokio::sync::Mutex::new(Some(service)),
        timeout: settings.timeout,
        link,
    };
    Ok((server, tools))
}

/// The MCP handshake and the tool listing on a connected transport, within `within`; on failure,
/// what went wrong (the caller adds what it knows of the server's side).
async fn handshake<T, E, A>(
    transport: T,
    within: Duration,
) -> Result<(RunningService<RoleClient, ()>, Vec<Tool>), String>
where
    T: rmcp::transport::IntoTransport<RoleClient, E, A>,
    E: std::error::Error + Send + Sync + 'static,
{
    let setup = async {
        let service = ().serve(transport).await.map_err(|e| format!("the MCP handshake failed: {e}"))?;
        let tools = list_tools(service.peer()).await?;
        Ok::<_, String>((service, tools))
    };
    match tokio::time::timeout(within, setup).await {
        Ok(result) => result,
        Err(_) => Err(format!(
            "it did not answer the MCP handshake and tool listing within {} s (`startup_timeout_secs` gives it longer)",
            within.as_secs()
        )),
    }
}

/// The secrets an HTTP server's config names (its bearer token, its `env_http_headers` values), as
/// set in our environment now, for masking in everything the mission writes.
pub fn secrets(config: &Config) -> Vec<String> {
    config
        .mcp
        .values()
        .filter_map(|settings| match &settings.transport {
            McpTransport::Http(http) => Some(http::secret_values(http)),
            McpTransport::Stdio(_) => None,
        })
        .flatten()
        .collect()
}

/// Every page of the server's tool list, within [`MAX_LIST_PAGES`] and [`MAX_LISTED_TOOLS`].
async fn list_tools(peer: &Peer<RoleClient>) -> Result<Vec<Tool>, String> {
    let mut tools = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..MAX_LIST_PAGES {
        let params = cursor
            .take()
            .map(|c| PaginatedRequestParams::default().with_cursor(Some(c)));
        let page = peer
            .list_tools(params)
            .await
            .map_err(|e| format!("listing its tools failed: {e}"))?;
        tools.extend(page.tools);
        if tools.len() >= MAX_LISTED_TOOLS {
            tools.truncate(MAX_LISTED_TOOLS);
            break;
        }
        match page.next_cursor {
            Some(next) if !next.is_empty() => cursor = Some(next),
            _ => break,
        }
    }
    Ok(tools)
}

/// A tool as it will be offered.
#[derive(Debug)]
struct Chosen {
    name: String,
    description: String,
    schema: Value,
}

#[derive(Debug)]
struct Choice {
    tools: Vec<Chosen>,
    warnings: Vec<String>,
}

/// The listed tools that are offered: those the `tools` filter names (a name the server does not
/// have is an error), with a usable schema, up to [`MAX_TOOLS_PER_SERVER`].
fn choose_tools(name: &str, settings: &McpServerSettings, listed: Vec<Tool>) -> Result<Choice, String> {
    if let Some(filter) = &settings.tools {
        let missing: Vec<&str> = filter
            .iter()
            .filter(|wanted| !listed.iter().any(|t| t.name == wanted.as_str()))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            let has: Vec<&str> = listed.iter().take(40).map(|t| t.name.as_ref()).collect();
            return Err(format!(
                "`tools` in [mcp.{name}] names {}, which the server does not offer; it offers: {}",
                missing.join(", "),
                if has.is_empty() {
                    "nothing".into()
                } else {
                    has.join(", ")
                }
            ));
        }
    }
    let mut warnings = Vec::new();
    let mut tools = Vec::new();
    let mut over = 0;
    let mut seen = BTreeSet::new();
    for tool in listed {
        let wanted = settings
            .tools
            .as_ref()
            .is_none_or(|f| f.iter().any(|w| *w == tool.name));
        if !wanted || !seen.insert(tool.name.to_string()) {
            continue;
        }
        let schema = match usable_schema(&tool) {
            Ok(schema) => schema,
            Err(why) => {
                warnings.push(format!("tool `{}` is not offered: {why}", cut(&tool.name, 80)));
                continue;
            }
        };
        if tools.len() == MAX_TOOLS_PER_SERVER {
            over += 1;
            continue;
        }
        let description = tool
            .description
            .as_deref()
            .or(tool.title.as_deref())
            .unwrap_or("")
            .trim()
            .to_string();
        tools.push(Chosen {
            name: tool.name.to_string(),
            description: cut(
                &format!("{description} (from the MCP server `{name}`)"),
                MAX_DESCRIPTION_CHARS,
            ),
            schema,
        });
    }
    if over > 0 {
        warnings.push(format!(
            "{over} more tools are not offered (at most {MAX_TOOLS_PER_SERVER} per server); choose the ones \
             to offer with `tools = [...]` in [mcp.{name}]"
        ));
    }
    Ok(Choice { tools, warnings })
}

/// The tool's input schema as a model API takes it: an object schema of bounded size.
fn usable_schema(tool: &Tool) -> Result<Value, String> {
    let mut schema = serde_json::Map::clone(&tool.input_schema);
    match schema.get("type") {
        None => {
            schema.insert("type".into(), Value::String("object".into()));
        }
        Some(Value::String(t)) if t == "object" => {}
        Some(other) => return Err(format!("its input schema is of type {other}, not an object")),
    }
    let schema = Value::Object(schema);
    let size = schema.to_string().len();
    if size > MAX_SCHEMA_BYTES {
        return Err(format!(
            "its input schema is {size} bytes (at most {MAX_SCHEMA_BYTES} are sent to the model)"
        ));
    }
    Ok(schema)
}

/// `mcp__<server>__<tool>`, with what model APIs refuse in a tool name replaced by `_`, and a long
/// name cut with a hash of the whole, so it stays within 64 characters and the same across runs
/// (a resumed session's history names the tools of the run before).
fn offered_name(server: &str, tool: &str) -> String {
    let full = format!("mcp__{server}__{tool}");
    let clean: String = full
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if clean.len() <= MAX_TOOL_NAME && clean == full {
        return clean;
    }
    if clean.len() <= MAX_TOOL_NAME - 9 {
        return format!("{clean}_{:08x}", fnv1a(&full) as u32);
    }
    format!("{}_{:08x}", &clean[..MAX_TOOL_NAME - 9], fnv1a(&full) as u32)
}

/// `name`, or `name` with a number when another tool already has it (two names that differ only in
/// characters that were replaced).
fn unique_name(name: &str, taken: &BTreeMap<String, Route>) -> String {
    if !taken.contains_key(name) {
        return name.to_string();
    }
    (2..)
        .map(|n| {
            let suffix = format!("_{n}");
            let keep = name.len().min(MAX_TOOL_NAME - suffix.len());
            format!("{}{suffix}", &name[..keep])
        })
        .find(|candidate| !taken.contains_key(candidate))
        .unwrap_or_else(|| name.to_string())
}

/// FNV-1a: a stable hash (std's is randomised per process), for names that must match across runs.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A call's result as text: text blocks and embedded text resources as they are, other content
/// (images, audio, blobs) named with its size, structured content as JSON when there is no text.
fn render_content<T: serde::Serialize>(content: &[T], structured: Option<&Value>) -> String {
    let mut parts = Vec::new();
    for block in content {
        let Ok(value) = serde_json::to_value(block) else {
            continue;
        };
        let kind = value.get("type").and_then(Value::as_str).unwrap_or("");
        let part = match kind {
            "text" => value
                .get("text")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            "resource" => {
                let resource = value.get("resource").cloned().unwrap_or_default();
                match resource.get("text").and_then(Value::as_str) {
                    Some(text) => text.to_string(),
                    None => format!(
                        "[a binary resource, {}, not shown]",
                        resource.get("uri").and_then(Value::as_str).unwrap_or("?")
                    ),
                }
            }
            "resource_link" => format!(
                "[a link to {}]",
                value.get("uri").and_then(Value::as_str).unwrap_or("?")
            ),
            other => {
                let bytes = value.get("data").and_then(Value::as_str).map_or(0, str::len);
                let mime = value.get("mimeType").and_then(Value::as_str).unwrap_or("?");
                format!("[{other} content, {mime}, {bytes} bytes of base64, not shown]")
            }
        };
        parts.push(part);
    }
    if parts.is_empty() {
        if let Some(structured) = structured {
            return structured.to_string();
        }
        return "(the tool returned nothing)".into();
    }
    parts.join("\n")
}

fn cut(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_string(),
    }
}

fn error(content: String) -> ToolOutput {
    ToolOutput {
        content,
        is_error: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tool(name: &str, schema: Value) -> Tool {
        let Value::Object(map) = schema else {
            panic!("an object schema")
        };
        Tool::new(name.to_string(), "does a thing", Arc::new(map))
    }

    fn settings(tools: Option<Vec<&str>>) -> McpServerSettings {
        McpServerSettings {
            transport: McpTransport::Stdio(crate::config::McpStdio {
                command: vec!["srv".into()],
                env: Vec::new(),
                cwd: None,
                sandbox: false,
                network: false,
            }),
            timeout: Duration::from_secs(5),
            startup_timeout: Duration::from_secs(5),
            tools: tools.map(|t| t.into_iter().map(String::from).collect()),
            source: "orchestrator.toml".into(),
        }
    }

    #[test]
    fn offered_names_are_clean_short_and_stable() {
        assert_eq!(offered_name("docs", "search"), "mcp__docs__search");
        let odd = offered_name("docs", "find.page/v2");
        assert!(odd.starts_with("mcp__docs__find_page_v2_"), "{odd}");
        assert_eq!(odd, offered_name("docs", "find.page/v2"), "the same in every run");
        assert_ne!(
            odd,
            offered_name("docs", "find_page_v2"),
            "no collision with the clean name"
        );
        let long = offered_name("a-server-name-of-24-char", &"t".repeat(200));
        assert_eq!(long.len(), 64);
        assert!(long
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'));
        assert_ne!(long, offered_name("a-server-name-of-24-char", &"t".repeat(201)));
    }

    #[test]
    fn a_taken_name_gets_a_number() {
        let mut taken = BTreeMap::new();
        let route = |n: &str| Route {
            server: "s".into(),
            tool: n.into(),
            spec: ToolSpec {
                name: n.into(),
                description: String::new(),
                parameters: Value::Null,
            },
        };
        taken.insert("mcp__s__x".to_string(), route("x"));
        assert_eq!(unique_name("mcp__s__y", &taken), "mcp__s__y");
        assert_eq!(unique_name("mcp__s__x", &taken), "mcp__s__x_2");
        let long = "m".repeat(64);
        taken.insert(long.clone(), route("l"));
        let other = unique_name(&long, &taken);
        assert_eq!(other.len(), 64);
        assert!(other.ends_with("_2"));
    }

    #[test]
    fn giant_or_non_object_schemas_are_dropped_and_floods_are_capped() {
        let mut listed = vec![
            tool(
                "ok",
                serde_json::json!({"type": "object", "properties": {"q": {"type": "string"}}}),
            ),
            tool("untyped", serde_json::json!({"properties": {}})),
            tool("array", serde_json::json!({"type": "array"})),
            tool(
                "giant",
                serde_json::json!({"type": "object", "description": "x".repeat(MAX_SCHEMA_BYTES)}),
            ),
        ];
        listed.extend((0..10_000).map(|n| tool(&format!("t{n}"), serde_json::json!({"type": "object"}))));
        let choice = choose_tools("docs", &settings(None), listed).unwrap();
        assert_eq!(choice.tools.len(), MAX_TOOLS_PER_SERVER);
        assert_eq!(choice.tools[0].name, "ok");
        assert_eq!(choice.tools[1].name, "untyped");
        assert_eq!(
            choice.tools[1].schema["type"], "object",
            "a missing type is an object"
        );
        let said = choice.warnings.join("\n");
        assert!(
            said.contains("`array` is not offered") && said.contains("`giant` is not offered"),
            "{said}"
        );
        assert!(said.contains("more tools are not offered"), "{said}");
        assert!(choice.tools[0].description.contains("MCP server `docs`"));
    }

    #[test]
    fn the_tools_filter_offers_only_what_it_names_and_refuses_what_is_not_there() {
        let listed = || {
            vec![
                tool("a", serde_json::json!({"type": "object"})),
                tool("b", serde_json::json!({"type": "object"})),
            ]
        };
        let choice = choose_tools("docs", &settings(Some(vec!["b"])), listed()).unwrap();
        let names: Vec<&str> = choice.tools.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["b"]);
        let err = choose_tools("docs", &settings(Some(vec!["c"])), listed()).unwrap_err();
        assert!(
            err.contains("names c") && err.contains("it offers: a, b"),
            "{err}"
        );
    }

    #[test]
    fn results_are_rendered_as_text_without_binary_data() {
        let content = vec![
            serde_json::json!({"type": "text", "text": "hello"}),
            serde_json::json!({"type": "image", "data": "aGVsbG8=", "mimeType": "image/png"}),
            serde_json::json!({"type": "resource", "resource": {"uri": "file:///a", "text": "body"}}),
        ];
        let text = render_content(&content, None);
        assert_eq!(
            text,
            "hello\n[image content, image/png, 8 bytes of base64, not shown]\nbody"
        );
        let empty: Vec<Value> = Vec::new();
        assert_eq!(
            render_content(&empty, Some(&serde_json::json!({"n": 1}))),
            r#"{"n":1}"#
        );
    }
}
