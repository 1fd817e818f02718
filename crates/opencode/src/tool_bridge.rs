//! Our orchestration tools (`spawn`, `submit_plan`, `submit_review`), served to OpenCode sessions as
//! an MCP server over streamable HTTP on 127.0.0.1.
//!
//! Attribution: every engine session gets its own URL, `http://127.0.0.1:PORT/s/<key>/mcp`, registered
//! in OpenCode under its own server name. A call arriving on that URL can only come from the OpenCode
//! session that was given the server, so the key in the path says which engine session called; MCP
//! itself carries no caller identity we could trust. The tools listed on a URL are the ones
//! registered for that key, so a reviewer's server offers `submit_review` and nothing else.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::types::RemoteMcp;

/// A tool as offered to the model: name, description and JSON schema of its arguments (an object).
#[derive(Debug, Clone)]
pub struct BridgeTool {
    pub name: String,
    pub description: String,
    pub input_schema: serde_json::Map<String, Value>,
}

/// One call, attributed to the key it was registered under.
#[derive(Debug, Clone)]
pub struct BridgeCall {
    pub session_key: String,
    pub tool: String,
    pub arguments: Value,
}

/// What the model sees as the tool's result.
#[derive(Debug, Clone)]
pub struct BridgeReply {
    pub text: String,
    pub is_error: bool,
}

impl BridgeReply {
    pub fn ok(text: impl Into<String>) -> Self {
        BridgeReply {
            text: text.into(),
            is_error: false,
        }
    }

    pub fn error(text: impl Into<String>) -> Self {
        BridgeReply {
            text: text.into(),
            is_error: true,
        }
    }
}

/// Handles calls; may take long (a `spawn` returns when the children are done).
pub type BridgeHandler = Arc<dyn Fn(BridgeCall) -> BoxFuture<'static, BridgeReply> + Send + Sync>;

/// How long OpenCode may wait for one of our tool calls (milliseconds): one day.
pub const BRIDGE_CALL_TIMEOUT_MS: u64 = 24 * 60 * 60 * 1000;

type Registry = Arc<Mutex<HashMap<String, Vec<BridgeTool>>>>;

pub struct ToolBridge {
    addr: SocketAddr,
    registry: Registry,
    cancel: CancellationToken,
}

impl ToolBridge {
    /// Serves on a free port of 127.0.0.1 until [`ToolBridge::stop`] or drop.
    pub async fn start(handler: BridgeHandler) -> Result<ToolBridge> {
        let registry: Registry = Arc::default();
        let cancel = CancellationToken::new();
        let service = {
            let registry = registry.clone();
            StreamableHttpService::new(
                move || {
                    Ok(BridgeService {
                        registry: registry.clone(),
                        handler: handler.clone(),
                    })
                },
                Arc::new(LocalSessionManager::default()),
                StreamableHttpServerConfig::default().with_cancellation_token(cancel.child_token()),
            )
        };
        // route_service keeps the full path in the request, which is where the key is read from.
        let app = axum::Router::new().route_service("/s/{key}/mcp", service);
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(Error::Bridge)?;
        let addr = listener.local_addr().map_err(Error::Bridge)?;
        let shutdown = cancel.clone();
        tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move { shutdown.cancelled().await })
                .await;
            if let Err(e) = served {
                tracing::error!("the tool bridge stopped: {e}");
            }
        });
        Ok(ToolBridge {
            addr,
            registry,
            cancel,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Offers `tools` under `key` and returns the URL to give OpenCode for it. Keys are made of
    /// `[A-Za-z0-9_-]`; other characters become `_` (the URL is built from the cleaned key, and
    /// calls are reported with it).
    pub fn register(&self, key: &str, tools: Vec<BridgeTool>) -> String {
        let key = clean_key(key);
        if let Ok(mut registry) = self.registry.lock() {
            registry.insert(key.clone(), tools);
        }
        self.url_for(&key)
    }

    /// Stops offering tools under `key`; later calls there get an error result.
    pub fn unregister(&self, key: &str) {
        if let Ok(mut registry) = self.registry.lock() {
            registry.remove(&clean_key(key));
        }
    }

    /// The MCP server entry to add to OpenCode (`POST /mcp`) for `key`'s URL. OpenCode applies the
    /// entry's `timeout` to tool calls too, and without one a call is cut at 60 s ("MCP error -32001:
    /// Request timed out", verified on 1.18.33) while our handler runs on; a `spawn` waits for whole
    /// sub-trees, so the bridge asks for a day. (OpenCode runs on JavaScript timers, which break
    /// above 2^31 ms; a day is far below.)
    pub fn mcp_config(&self, key: &str) -> RemoteMcp {
        RemoteMcp {
            timeout: Some(BRIDGE_CALL_TIMEOUT_MS),
            ..RemoteMcp::new(self.url_for(key))
        }
    }

    pub fn url_for(&self, key: &str) -> String {
        format!("http://{}/s/{}/mcp", self.addr, clean_key(key))
    }

    pub fn stop(&self) {
        self.cancel.cancel();
    }
}

impl Drop for ToolBridge {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// The name OpenCode should know the bridge of session `key` by. OpenCode names an MCP tool
/// `<server>_<tool>`, so with this server name a reviewer's tool is `orch_<key>_submit_review`.
pub fn server_name(key: &str) -> String {
    format!("orch_{}", clean_key(key))
}

pub fn clean_key(key: &str) -> String {
    key.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[derive(Clone)]
struct BridgeService {
    registry: Registry,
    handler: BridgeHandler,
}

impl BridgeService {
    /// The key in the path of the HTTP request this MCP request came in.
    fn key(context: &RequestContext<RoleServer>) -> Option<String> {
        let parts = context.extensions.get::<axum::http::request::Parts>()?;
        let path = parts.uri.path();
        let key = path.strip_prefix("/s/")?.strip_suffix("/mcp")?;
        Some(key.to_string())
    }

    fn tools(&self, key: &str) -> Option<Vec<BridgeTool>> {
        self.registry.lock().ok()?.get(key).cloned()
    }
}

impl ServerHandler for BridgeService {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build()).with_server_info(
            Implementation::new("orchestrator-bridge", env!("CARGO_PKG_VERSION")),
        )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let tools = Self::key(&context)
            .and_then(|key| self.tools(&key))
            .unwrap_or_default();
        Ok(ListToolsResult::with_all_items(
            tools
                .into_iter()
                .map(|t| Tool::new(t.name, t.description, Arc::new(t.input_schema)))
                .collect(),
        ))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let Some(key) = Self::key(&context) else {
            return Ok(error_result("this tool server was reached without a session key").into());
        };
        let Some(tools) = self.tools(&key) else {
            return Ok(error_result(format!("the session `{key}` is no longer served here")).into());
        };
        let name = request.name.to_string();
        if !tools.iter().any(|t| t.name == name) {
            let offered: Vec<&str> = tools.iter().map(|t| t.name.as_str()).collect();
            return Ok(error_result(format!(
                "Unknown tool `{name}`. The tools available here are: {}.",
                offered.join(", ")
            ))
            .into());
        }
        let call = BridgeCall {
            session_key: key,
            tool: name,
            arguments: Value::Object(request.arguments.unwrap_or_default()),
        };
        let reply = (self.handler)(call).await;
        let content = vec![ContentBlock::text(reply.text)];
        Ok(if reply.is_error {
            CallToolResult::error(content)
        } else {
            CallToolResult::success(content)
        }
        .into())
    }
}

fn error_result(text: impl Into<String>) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(text.into())])
}
