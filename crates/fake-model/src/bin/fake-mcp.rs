//! `fake-mcp`: a tiny MCP server on stdio for the tests of users' MCP servers as agent tools
//! (`[mcp.<name>]`). Built with rmcp's server side, like `orchestrator mcp`.
//!
//! Usage: `fake-mcp [--pid-file PATH] [--calls PATH] [--tools N] [--fail-start] [--http] [--token T]`.
//! `--http` serves streamable HTTP on a free port of 127.0.0.1 instead of stdio and prints
//! `listening http://127.0.0.1:PORT/mcp` on stdout; `--token T` then refuses requests without
//! `Authorization: Bearer T` (401). Tools:
//! `echo {text}` answers `echo: <text> (fake-mcp pid <pid>)` (no `text`: an invalid-params error), `flood {chars}` answers
//! that many characters, `hang` never answers, `die` exits the process, `refuse` answers with a
//! tool error. `--tools N` lists N more tools (`extra_0`, …), `--pid-file` writes the server's pid,
//! `--calls` appends one line per call (`name arguments`), `--fail-start` exits at once with a
//! message on stderr. Over HTTP, `headers` answers with the request's headers (one `name: value`
//! a line), so that tests can see what a client sent.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use axum::response::IntoResponse;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler, ServiceExt};
use serde_json::{json, Value};

#[derive(Default)]
struct Args {
    pid_file: Option<PathBuf>,
    calls: Option<PathBuf>,
    extra_tools: usize,
    fail_start: bool,
    http: bool,
    token: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args::default();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--pid-file" => args.pid_file = Some(value()?.into()),
            "--calls" => args.calls = Some(value()?.into()),
            "--tools" => args.extra_tools = value()?.parse().map_err(|e| format!("--tools: {e}"))?,
            "--fail-start" => args.fail_start = true,
            "--http" => args.http = true,
            "--token" => args.token = Some(value()?),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

#[derive(Clone)]
struct FakeMcp {
    calls: Option<PathBuf>,
    extra_tools: usize,
}

fn tool(name: &str, description: &str, schema: Value) -> Tool {
    let Value::Object(schema) = schema else {
        unreachable!("every schema here is an object")
    };
    Tool::new(name.to_string(), description.to_string(), Arc::new(schema))
}

impl FakeMcp {
    fn tools(&self) -> Vec<Tool> {
        let mut tools = vec![
            tool(
                "echo",
                "Answers with the text it is given.",
                json!({"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}),
            ),
            tool(
                "flood",
                "Answers with that many characters.",
                json!({"type": "object", "properties": {"chars": {"type": "integer"}}}),
            ),
            tool("hang", "Never answers.", json!({"type": "object"})),
            tool("die", "Exits the server.", json!({"type": "object"})),
            tool("refuse", "Answers with a tool error.", json!({"type": "object"})),
            tool(
                "headers",
                "Answers with the HTTP request's headers.",
                json!({"type": "object"}),
            ),
        ];
        tools.extend(
            (0..self.extra_tools)
                .map(|n| tool(&format!("extra_{n}"), "An extra tool.", json!({"type": "object"}))),
        );
        tools
    }

    fn record(&self, request: &CallToolRequestParams) {
        let Some(path) = &self.calls else { return };
        let arguments = serde_json::to_string(&request.arguments).unwrap_or_default();
        if let Ok(mut file) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
            let _ = writeln!(file, "{} {arguments}", request.name);
        }
    }
}

impl ServerHandler for FakeMcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("fake-mcp", env!("CARGO_PKG_VERSION")))
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(self.tools()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        self.record(&request);
        let argument = |key: &str| request.arguments.as_ref().and_then(|a| a.get(key)).cloned();
        let text = |t: String| Ok(CallToolResult::success(vec![ContentBlock::text(t)]).into());
        match request.name.as_ref() {
            "echo" => match argument("text") {
                Some(Value::String(said)) => {
                    text(format!("echo: {said} (fake-mcp pid {})", std::process::id()))
                }
                _ => Err(ErrorData::invalid_params("echo needs a string `text`", None)),
            },
            "flood" => {
                let chars = argument("chars").and_then(|v| v.as_u64()).unwrap_or(1_000_000);
                text("x".repeat(chars as usize))
            }
            "hang" => std::future::pending().await,
            "die" => std::process::exit(3),
            "refuse" => Ok(CallToolResult::error(vec![ContentBlock::text("refused: nothing to do")]).into()),
            "headers" => match context.extensions.get::<axum::http::request::Parts>() {
                Some(parts) => text(
                    parts
                        .headers
                        .iter()
                        .map(|(name, value)| format!("{name}: {}", String::from_utf8_lossy(value.as_bytes())))
                        .collect::<Vec<_>>()
                        .join("\n"),
                ),
                None => text("(not over HTTP)".into()),
            },
            name if name.starts_with("extra_") => text(format!("{name} ran")),
            other => Err(ErrorData::invalid_params(format!("no tool {other}"), None)),
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("fake-mcp: {e}");
            std::process::exit(2);
        }
    };
    if args.fail_start {
        eprintln!("fake-mcp: told to fail at start");
        std::process::exit(1);
    }
    if let Some(path) = &args.pid_file {
        if let Err(e) = std::fs::write(path, std::process::id().to_string()) {
            eprintln!("fake-mcp: cannot write {}: {e}", path.display());
        }
    }
    let server = FakeMcp {
        calls: args.calls,
        extra_tools: args.extra_tools,
    };
    if args.http {
        if let Err(e) = serve_http(server, args.token).await {
            eprintln!("fake-mcp: {e}");
            std::process::exit(1);
        }
        return;
    }
    match server.serve(rmcp::transport::stdio()).await {
        Ok(running) => {
            let _ = running.waiting().await;
        }
        Err(e) => eprintln!("fake-mcp: {e}"),
    }
}

/// Serves streamable HTTP at `/mcp` on a free port of 127.0.0.1 until killed.
async fn serve_http(server: FakeMcp, token: Option<String>) -> std::io::Result<()> {
    use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
    use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};

    let service = StreamableHttpService::new(
        move || Ok(server.clone()),
        Arc::new(LocalSessionManager::default()),
        StreamableHttpServerConfig::default(),
    );
    let expected = token.map(|t| format!("Bearer {t}"));
    let app = axum::Router::new()
        .route_service("/mcp", service)
        .layer(axum::middleware::from_fn(
            move |request: axum::extract::Request, next: axum::middleware::Next| {
                let expected = expected.clone();
                async move {
                    let given = request
                        .headers()
                        .get(axum::http::header::AUTHORIZATION)
                        .and_then(|v| v.to_str().ok());
                    match expected {
                        Some(want) if given != Some(want.as_str()) => {
                            axum::http::StatusCode::UNAUTHORIZED.into_response()
                        }
                        _ => next.run(request).await,
                    }
                }
            },
        ));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    println!("listening http://{addr}/mcp");
    std::io::stdout().flush()?;
    axum::serve(listener, app).await
}
