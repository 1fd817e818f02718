//! `--provider opencode`: every session of the mission runs as an OpenCode session on an `opencode
//! serve` instance (one the user points at with `--opencode-url`, or one started here on a free
//! loopback port and stopped with the mission). See docs/opencode-provider.md.
//!
//! The engine is the mission's [`TurnRunner`]: `Session::run` hands every session's turns to it
//! instead of the native loop. Orchestration tools reach the engine through the
//! [`ToolBridge`]: a call is sent over a channel into the running `Session::run`, which calls
//! `hooks.call(..)` itself, so `spawn` releases and re-takes the session's slot exactly as natively.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use orchestrator_model::Message as ChatMessage;
use orchestrator_opencode::tool_bridge::{clean_key, server_name, BridgeHandler};
use orchestrator_opencode::{
    Auth, BridgeCall, BridgeReply, BridgeTool, Client, CreateSession, ModelRef, OpencodeServer,
    PromptRequest, ServerOptions, ToolBridge,
};
use orchestrator_protocol::{Event, Role, TokenUsage};
use orchestrator_tools::summarize_call;
use tokio::sync::{mpsc, oneshot};

use crate::error::{EngineError, Result};
use crate::session::{HookResult, Runtime, Session, SessionEnd, SessionHooks, Slot, TurnRunner};

/// The environment variable holding the password of the server given with `--opencode-url`.
pub const PASSWORD_ENV: &str = "OPENCODE_SERVER_PASSWORD";

pub use crate::config::OPENCODE_DEFAULT_MODEL;

/// How long a session may go on after its finishing call was accepted before it is aborted.
const FINISH_GRACE: Duration = Duration::from_secs(10);

/// How many protocol corrections in a row a session gets (as the native loop).
const MAX_CORRECTIONS: u32 = 3;

type Route = mpsc::Sender<(BridgeCall, oneshot::Sender<BridgeReply>)>;

/// The server, its client and the tool bridge, shared by every session of the mission.
pub struct OpencodeEngine {
    client: Client,
    server: Mutex<Option<OpencodeServer>>,
    bridge: ToolBridge,
    routes: Arc<Mutex<HashMap<String, Route>>>,
    /// Every bridge key registered so far, so that a session's prompt disables the others' servers.
    keys: Mutex<HashSet<String>>,
}

impl OpencodeEngine {
    /// The preflight: starts `opencode serve` (or checks the server at `url` answers with the
    /// password), then the tool bridge. Errors are usage errors (exit 2), and nothing is touched.
    pub async fn start(url: Option<&str>, repo_root: &Path) -> Result<Arc<OpencodeEngine>> {
        let password = std::env::var(PASSWORD_ENV).ok().filter(|p| !p.is_empty());
        let (client, server) = match url {
            Some(url) => {
                let client = Client::new(url, password.map(Auth::password))
                    .map_err(|e| EngineError::Usage(format!("--opencode-url: {e}")))?;
                let checked = tokio::time::timeout(Duration::from_secs(30), client.health()).await;
                match checked {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        return Err(EngineError::Usage(format!(
                            "the OpenCode server at {url} did not answer /global/health: {e}\nCheck --opencode-url \
                             and {PASSWORD_ENV}; nothing was started."
                        )))
                    }
                    Err(_) => {
                        return Err(EngineError::Usage(format!(
                            "the OpenCode server at {url} did not answer within 30 s; nothing was started."
                        )))
                    }
                }
                (client, None)
            }
            None => {
                let bin = opencode_bin()?;
                let options = ServerOptions {
                    password,
                    ..ServerOptions::new(&bin).current_dir(repo_root)
                };
                let server = OpencodeServer::start(options).await.map_err(|e| {
                    EngineError::Usage(format!(
                        "cannot start `{} serve`: {e}\nCheck your OpenCode installation and configuration (or pass \
                         --opencode-url for a running server); nothing was started.",
                        bin.display()
                    ))
                })?;
                let client = server
                    .client()
                    .map_err(|e| EngineError::Usage(format!("OpenCode server: {e}")))?;
                (client, Some(server))
            }
        };
        let routes: Arc<Mutex<HashMap<String, Route>>> = Arc::default();
        let handler: BridgeHandler = {
            let routes = routes.clone();
            Arc::new(move |call: BridgeCall| {
                let route = routes.lock().ok().and_then(|r| r.get(&call.session_key).cloned());
                Box::pin(async move {
                    let Some(route) = route else {
                        return BridgeReply::error(
                            "This session is not running in the orchestrator right now; its tools are unavailable.",
                        );
                    };
                    let (tx, rx) = oneshot::channel();
                    if route.send((call, tx)).await.is_err() {
                        return BridgeReply::error("The session has ended; the call was not run.");
                    }
                    rx.await.unwrap_or_else(|_| {
                        BridgeReply::error("The session has ended; the call was not run.")
                    })
                })
            })
        };
        let bridge = ToolBridge::start(handler)
            .await
            .map_err(|e| EngineError::Usage(format!("cannot start the OpenCode tool bridge: {e}")))?;
        Ok(Arc::new(OpencodeEngine {
            client,
            server: Mutex::new(server),
            bridge,
            routes,
            keys: Mutex::default(),
        }))
    }

    /// Stops the server we started (its whole process group) and the bridge.
    pub async fn stop(&self) {
        self.bridge.stop();
        let server = self.server.lock().ok().and_then(|mut s| s.take());
        if let Some(server) = server {
            server.stop(Duration::from_secs(5)).await;
        }
    }
}

/// `OPENCODE_BIN`, else `opencode` on PATH.
fn opencode_bin() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os("OPENCODE_BIN").filter(|b| !b.is_empty()) {
        return Ok(PathBuf::from(bin));
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("opencode"))
            .find(|candidate| candidate.is_file())
    });
    found.ok_or_else(|| {
        EngineError::Usage(
            "--provider opencode needs OpenCode: no `opencode` on PATH and OPENCODE_BIN is not set. Install it \
             (npm install -g opencode-ai), set OPENCODE_BIN, or pass --opencode-url for a running server."
                .into(),
        )
    })
}

/// Stored under `<transcript key>#opencode`: the OpenCode session and how many of our messages it
/// has been given.
#[derive(serde::Serialize, serde::Deserialize, Default, Clone)]
struct Attachment {
    id: String,
    sent: usize,
}

fn load_attachment(rt: &Runtime, key: &str) -> Option<Attachment> {
    let store = rt.store.as_ref()?;
    let values = store.messages(&rt.mission, &format!("{key}#opencode")).ok()?;
    serde_json::from_value(values.into_iter().next()?).ok()
}

fn save_attachment(rt: &Runtime, key: &str, attachment: &Attachment) {
    let value = serde_json::to_value(attachment).unwrap_or_default();
    rt.write_transcript(&format!("the OpenCode session of {key}"), |store| {
        store.append_message(&rt.mission, &format!("{key}#opencode"), 0, &value)
    });
}

fn read_only(role: Role) -> bool {
    matches!(
        role,
        Role::Scout | Role::Planner | Role::Reviewer | Role::MasterReviewer
    )
}

#[async_trait::async_trait]
impl TurnRunner for OpencodeEngine {
    async fn run_turns(
        &self,
        session: &mut Session,
        rt: &Runtime,
        hooks: &dyn SessionHooks,
        slot: &mut Slot,
    ) -> SessionEnd {
        run_turns(self, session, rt, hooks, slot).await
    }

    fn confinement(&self, _session: &Session) -> Option<String> {
        Some("OpenCode's own permissions (not this sandbox)".to_string())
    }

    /// OpenCode reads and writes the unit's directory itself from its first step.
    fn waits_for_worktree(&self) -> bool {
        false
    }
}

/// The OpenCode-backed equivalent of the native loop of turns.
async fn run_turns(
    engine: &OpencodeEngine,
    session: &mut Session,
    rt: &Runtime,
    hooks: &dyn SessionHooks,
    slot: &mut Slot,
) -> SessionEnd {
    if let Some(answer) = session.finished_answer() {
        return SessionEnd::Answered(answer);
    }
    let dir = session.toolbox.root().to_path_buf();
    let key = session.store_key();
    let bridge_key = clean_key(&format!("{}-{}", rt.mission, key));

    // Re-attach to the stored OpenCode session when the server still has it, else start one.
    let mut attachment = match load_attachment(rt, &key) {
        Some(a) if engine.client.session(&dir, &a.id).await.is_ok() => a,
        _ => {
            let created = engine
                .client
                .create_session(
                    &dir,
                    &CreateSession {
                        title: Some(format!("orchestrator {key}")),
                        ..CreateSession::default()
                    },
                )
                .await;
            match created {
                Ok(info) => Attachment { id: info.id, sent: 0 },
                Err(e) => {
                    return SessionEnd::EndpointFailed(format!("OpenCode: cannot create a session: {e}"))
                }
            }
        }
    };
    save_attachment(rt, &key, &attachment);

    // The orchestration tools this session is offered, served by the bridge.
    let (tx, mut rx) = mpsc::channel(8);
    let extra: Vec<BridgeTool> = session
        .tools
        .iter()
        .filter(|t| session.extra.contains(&t.name))
        .map(|t| BridgeTool {
            name: t.name.clone(),
            description: t.description.clone(),
            input_schema: t.parameters.as_object().cloned().unwrap_or_default(),
        })
        .collect();
    let has_bridge = !extra.is_empty();
    if has_bridge {
        engine.bridge.register(&bridge_key, extra);
        if let Ok(mut routes) = engine.routes.lock() {
            routes.insert(bridge_key.clone(), tx);
        }
        if let Ok(mut keys) = engine.keys.lock() {
            keys.insert(bridge_key.clone());
        }
        if let Err(e) = engine
            .client
            .add_mcp(
                &dir,
                &server_name(&bridge_key),
                &engine.bridge.mcp_config(&bridge_key),
            )
            .await
        {
            unregister(engine, &bridge_key);
            return SessionEnd::EndpointFailed(format!("OpenCode: cannot add the orchestration tools: {e}"));
        }
    }
    let end = prompt_loop(
        engine,
        session,
        rt,
        hooks,
        slot,
        &dir,
        &key,
        &bridge_key,
        &mut attachment,
        &mut rx,
    )
    .await;
    if has_bridge {
        unregister(engine, &bridge_key);
    }
    end
}

fn unregister(engine: &OpencodeEngine, key: &str) {
    engine.bridge.unregister(key);
    if let Ok(mut routes) = engine.routes.lock() {
        routes.remove(key);
    }
}

#[allow(clippy::too_many_arguments)]
async fn prompt_loop(
    engine: &OpencodeEngine,
    session: &mut Session,
    rt: &Runtime,
    hooks: &dyn SessionHooks,
    slot: &mut Slot,
    dir: &Path,
    key: &str,
    bridge_key: &str,
    attachment: &mut Attachment,
    rx: &mut mpsc::Receiver<(BridgeCall, oneshot::Sender<BridgeReply>)>,
) -> SessionEnd {
    let mut corrections = 0;
    let run_started_turns = session.turns;
    let mut seen: HashSet<String> = match engine.client.messages(dir, &attachment.id).await {
        Ok(messages) => messages.into_iter().map(|m| m.info.id).collect(),
        Err(_) => HashSet::new(),
    };
    loop {
        if rt.cancel.is_cancelled() {
            return SessionEnd::Cancelled;
        }
        if let Some(end) = limit_reached(session, rt, run_started_turns) {
            return end;
        }
        // A person's message (`orchestrator tell`) goes with the next prompt.
        session.take_mail(rt);
        let pending: Vec<String> = session
            .messages
            .iter()
            .skip(attachment.sent)
            .filter_map(|m| match m {
                ChatMessage::User { content } => Some(content.clone()),
                _ => None,
            })
            .collect();
        let text = if pending.is_empty() {
            "Continue.".to_string()
        } else {
            pending.join("\n\n")
        };
        let mut request = PromptRequest::text(text);
        request.system = Some(session.system_prompt(rt));
        // `provider/model` picks an OpenCode model; anything else leaves OpenCode's configured one.
        request.model = ModelRef::parse(&session.settings.model);
        request.tools = tools_map(engine, session.role, bridge_key);
        let started = Instant::now();
        let mut finished = false;
        // OpenCode runs a whole agent loop per prompt, so the budget and the turn limit are checked
        // while it runs, as its steps complete, not only between prompts.
        let mut watch = tokio::time::interval(USAGE_POLL);
        watch.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stopped: Option<SessionEnd> = None;
        let reply = {
            let prompt = engine.client.prompt(dir, &attachment.id, &request);
            tokio::pin!(prompt);
            // After an accepted plan or review the session is done; a model that goes on working is
            // given a moment to answer, then stopped.
            let grace = tokio::time::sleep(Duration::from_secs(86_400));
            tokio::pin!(grace);
            loop {
                tokio::select! {
                    reply = &mut prompt => break reply,
                    _ = &mut grace, if finished => {
                        let _ = engine.client.abort(dir, &attachment.id).await;
                        break (&mut prompt).await;
                    }
                    Some((call, reply_tx)) = rx.recv() => {
                        let summary = summarize_call(&call.tool, &call.arguments);
                        let tool_started = Instant::now();
                        let (reply, ends) = match hooks.call(&call.tool, crate::session::without_nulls(call.arguments), slot).await {
                            HookResult::Continue(out) => (out, false),
                            HookResult::Finish(out) => (out, true),
                        };
                        if ends && !finished {
                            grace.as_mut().reset(tokio::time::Instant::now() + FINISH_GRACE);
                        }
                        finished |= ends;
                        rt.bus.emit(Event::ToolCalled {
                            session: session.id.clone(),
                            tool: call.tool.clone(),
                            summary,
                            ok: !reply.is_error,
                            duration_ms: tool_started.elapsed().as_millis() as u64,
                        });
                        let _ = reply_tx.send(BridgeReply { text: reply.content, is_error: reply.is_error });
                    }
                    _ = watch.tick(), if stopped.is_none() && !finished => {
                        account_messages(engine, session, rt, dir, &attachment.id, &mut seen, started, true).await;
                        stopped = limit_reached(session, rt, run_started_turns);
                        if stopped.is_some() {
                            let _ = engine.client.abort(dir, &attachment.id).await;
                        }
                    }
                    _ = rt.cancel.cancelled() => {
                        let _ = engine.client.abort(dir, &attachment.id).await;
                        return SessionEnd::Cancelled;
                    }
                }
            }
        };
        // What OpenCode was given is delivered, whatever the reply.
        attachment.sent = session.messages.len();
        save_attachment(rt, key, attachment);
        // Usage of every new assistant message becomes a model call, with OpenCode's cost.
        account_messages(
            engine,
            session,
            rt,
            dir,
            &attachment.id,
            &mut seen,
            started,
            false,
        )
        .await;
        if let Some(end) = stopped {
            return end;
        }
        let reply = match reply {
            Ok(reply) => reply,
            Err(e) if rt.cancel.is_cancelled() => {
                tracing::debug!("prompt ended by cancel: {e}");
                return SessionEnd::Cancelled;
            }
            Err(e) => return SessionEnd::EndpointFailed(format!("OpenCode: {e}")),
        };
        if finished {
            session.record_answer(reply.text());
            return SessionEnd::Finished;
        }
        if let Some(error) = reply.error_message() {
            if error.starts_with("MessageAbortedError") {
                return SessionEnd::Cancelled;
            }
            return SessionEnd::ModelFailed(format!("OpenCode: {error}"));
        }
        let text = reply.text();
        session.record_answer(text.clone());
        let correction = match session.finish_tool {
            Some(tool) => Some(format!(
                "You answered without calling a tool. Your session must end with a call to `{tool}`; call it now."
            )),
            None if text.trim().is_empty() => Some(
                "Your reply was empty. Continue the task with a tool call, or answer with a short summary when done."
                    .to_string(),
            ),
            None => None,
        };
        let Some(correction) = correction else {
            return SessionEnd::Answered(text);
        };
        corrections += 1;
        if corrections > MAX_CORRECTIONS {
            return SessionEnd::ModelFailed(format!(
                "the model broke the protocol {MAX_CORRECTIONS} times in a row: {correction}"
            ));
        }
        session.push_user(correction);
    }
}

/// How often a running prompt's completed steps are counted against the budget and turn limit.
const USAGE_POLL: Duration = Duration::from_secs(1);

/// The budget or this run's turn limit, whichever is reached first.
fn limit_reached(session: &Session, rt: &Runtime, run_started_turns: u32) -> Option<SessionEnd> {
    if rt.budget_spent() || session.role_budget_spent(rt) {
        return Some(SessionEnd::BudgetSpent);
    }
    (session.turns.saturating_sub(run_started_turns) >= session.settings.max_turns)
        .then_some(SessionEnd::TurnLimit)
}

/// Turns OpenCode's new assistant messages into model calls (usage, OpenCode's cost). While a prompt
/// runs only completed messages count, so a step's tokens are never counted half-way.
#[allow(clippy::too_many_arguments)]
async fn account_messages(
    engine: &OpencodeEngine,
    session: &mut Session,
    rt: &Runtime,
    dir: &Path,
    id: &str,
    seen: &mut HashSet<String>,
    started: Instant,
    completed_only: bool,
) {
    let Ok(messages) = engine.client.messages(dir, id).await else {
        return;
    };
    let new: Vec<_> = messages
        .into_iter()
        .filter(|m| m.is_assistant() && !seen.contains(&m.info.id))
        .filter(|m| !completed_only || m.info.time.is_some_and(|t| t.completed.is_some()))
        .collect();
    let count = new.len().max(1) as u64;
    for message in new {
        seen.insert(message.info.id.clone());
        let tokens = message.info.tokens.unwrap_or_default();
        let usage = TokenUsage {
            input_tokens: tokens.input.max(0.0) as u64,
            output_tokens: (tokens.output + tokens.reasoning).max(0.0) as u64,
            cache_read_tokens: tokens.cache.read.max(0.0) as u64,
            cache_write_tokens: tokens.cache.write.max(0.0) as u64,
        };
        session.turns += 1;
        session.usage.add(usage);
        rt.record_spend(usage);
        rt.bus.emit(Event::ModelCall {
            session: session.id.clone(),
            role: session.role,
            model: message
                .info
                .model_id
                .clone()
                .unwrap_or_else(|| session.settings.model.clone()),
            usage,
            cost_usd: message.info.cost,
            // OpenCode makes the calls; what it constrained is not reported.
            constraint: None,
            duration_ms: message
                .info
                .time
                .and_then(|t| Some(t.completed?.saturating_sub(t.created)))
                .unwrap_or(started.elapsed().as_millis() as u64 / count),
        });
    }
}

/// Other sessions' bridge servers are hidden; read-only roles lose OpenCode's editing tools.
fn tools_map(engine: &OpencodeEngine, role: Role, own: &str) -> BTreeMap<String, bool> {
    let mut tools = BTreeMap::new();
    if let Ok(keys) = engine.keys.lock() {
        for other in keys.iter().filter(|k| k.as_str() != own) {
            tools.insert(format!("{}_*", server_name(other)), false);
        }
    }
    if read_only(role) {
        for tool in ["write", "edit", "patch", "multiedit", "apply_patch"] {
            tools.insert(tool.to_string(), false);
        }
    }
    tools
}
