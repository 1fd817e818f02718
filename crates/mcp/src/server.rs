//! The MCP tools. Each tool resolves the repository, does one thing through the engine's public API
//! (or by launching the `orchestrator` binary), and answers with text; every failure is a tool error
//! whose text says what to do, never a panic or a bare protocol error.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolResult, ContentBlock, Implementation, ListResourceTemplatesResult, ListResourcesResult,
    PaginatedRequestParams, ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult,
    ResourceContents, ServerCapabilities, ServerConfig, SubscribeRequestParams, UnsubscribeRequestParams,
};
use rmcp::service::RequestContext;
use rmcp::{tool, tool_handler, tool_router, ErrorData, RoleServer, ServerHandler};

use crate::error::ToolError;
use crate::launch::{self, Launch, Started};
use crate::params::{
    ApprovePlanParams, ListMissionsParams, RepoParams, StartMissionParams, StatusParams, TellWorkerParams,
    WaitParams,
};
use crate::resources::{self, Subscriptions, Target};
use crate::wait::{self, Ended};
use crate::{report, ServerOptions};
use orchestrator_core::{MissionState, MissionSummary};

/// How long `cancel_mission` waits for the mission process to let go of the repository.
const CANCEL_WAIT: Duration = Duration::from_secs(60);

const INSTRUCTIONS: &str = "Runs orchestrator missions: one large objective turned into parallel, \
verified work by AI coding agents on a git repository, delivered as commits on the user's branch. \
Call start_mission with the objective; it returns at once while the mission runs in the background. \
Then call wait_for_mission to wait for its outcome (it reports progress as it goes), or use mission_status to \
look at it and mission_result for the outcome; cancel_mission stops it. \
A mission started with approve_plan stops after planning: mission_status shows the waiting plan; show it to \
the user and pass their decision to approve_plan. tell_worker passes a message from the user to a running \
unit's worker.";

#[derive(Clone)]
pub struct OrchestratorMcp {
    options: ServerOptions,
    subscriptions: Arc<Subscriptions>,
}

impl std::fmt::Debug for OrchestratorMcp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrchestratorMcp")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// A successful answer: text for a person, then optionally the data as JSON.
struct Reply {
    text: String,
    json: Option<String>,
}

fn respond(result: Result<Reply, ToolError>) -> CallToolResult {
    match result {
        Ok(reply) => {
            let mut content = vec![ContentBlock::text(reply.text)];
            content.extend(reply.json.map(ContentBlock::text));
            CallToolResult::success(content)
        }
        Err(error) => CallToolResult::error(vec![ContentBlock::text(error.to_string())]),
    }
}

#[tool_router]
impl OrchestratorMcp {
    pub fn new(options: ServerOptions) -> Self {
        OrchestratorMcp {
            options,
            subscriptions: Arc::default(),
        }
    }

    #[tool(
        description = "Start an orchestrator mission in the background: the objective is planned into units that AI \
coding agents build in parallel, each verified (build, tests, review) and merged; when the whole passes a final \
review the user's branch is fast-forwarded to the result. Returns the mission id as soon as the mission has \
started (usually a few seconds), not when it finishes. When the repository has an interrupted mission (a crash, \
a kill, a cancel), that mission is resumed instead and the answer says so. Refused when the working tree has \
uncommitted changes (unless allow_dirty) or another mission runs in the repository."
    )]
    async fn start_mission(&self, Parameters(params): Parameters<StartMissionParams>) -> CallToolResult {
        respond(self.start(params).await)
    }

    #[tool(
        description = "Every mission of the repository, newest first: id, objective, state (running, interrupted, \
finished, abandoned), outcome, tokens and cost. An interrupted mission is unfinished work: start_mission in the \
repository resumes it. Pass a mission's id to mission_status or mission_result to look at an older one."
    )]
    async fn list_missions(&self, Parameters(params): Parameters<ListMissionsParams>) -> CallToolResult {
        respond(self.list(params).await)
    }

    #[tool(
        description = "Where the repository's latest mission (or the one `mission` names) stands: running or not, phase, round, every unit \
with its state, sessions and tokens. A short summary, then the full status as JSON."
    )]
    async fn mission_status(&self, Parameters(params): Parameters<StatusParams>) -> CallToolResult {
        respond(self.status(params).await)
    }

    #[tool(
        description = "The result of the repository's latest mission (or the one `mission` names) once it has finished: outcome (sealed, \
unsealed or interrupted), the engine's summary, the integration branch and the result commit. While it still \
runs, says so with its progress."
    )]
    async fn mission_result(&self, Parameters(params): Parameters<RepoParams>) -> CallToolResult {
        respond(self.result(params).await)
    }

    #[tool(
        description = "Wait until the repository's latest mission (or the one `mission` names) ends, then return its \
result as mission_result does. Returns early when its plan waits for the user's approval (pass their answer to \
approve_plan, then wait again). While it waits, it sends progress notifications (counting finished units, and saying \
what changed) when the call carries a progress token. When timeout_seconds (default 600, at most 3600) pass first, \
it says the mission still runs and where it stands: call it again to keep waiting."
    )]
    async fn wait_for_mission(
        &self,
        Parameters(params): Parameters<WaitParams>,
        context: RequestContext<RoleServer>,
    ) -> CallToolResult {
        respond(self.wait(params, &context).await)
    }

    #[tool(
        description = "Stop the repository's running mission (or the one `mission` names) cleanly: sessions are stopped, finished work is \
kept, and the mission can be continued later: start_mission in the same repository resumes it (as does `orchestrator resume`)."
    )]
    async fn cancel_mission(&self, Parameters(params): Parameters<RepoParams>) -> CallToolResult {
        respond(self.cancel(params).await)
    }

    #[tool(
        description = "Answer the plan a mission started with approve_plan waits with (mission_status shows it): \
approve it, reject it with feedback (the planner plans again and the new plan waits again), or edit it (run \
another plan). Pass on the user's decision; never decide for them."
    )]
    async fn approve_plan(&self, Parameters(params): Parameters<ApprovePlanParams>) -> CallToolResult {
        respond(self.answer_plan(params).await)
    }

    #[tool(
        description = "Give the user's message to a running unit's worker (or, without `unit`, to every running \
worker) before its next model call: a correction or a hint while it works. Pass on the user's words; never \
steer workers on your own."
    )]
    async fn tell_worker(&self, Parameters(params): Parameters<TellWorkerParams>) -> CallToolResult {
        respond(self.tell(params).await)
    }
}

#[tool_handler]
impl ServerHandler for OrchestratorMcp {
    fn get_info(&self) -> ServerConfig {
        let capabilities = ServerCapabilities::builder()
            .enable_tools()
            .enable_resources()
            .enable_resources_subscribe()
            .build();
        ServerConfig::new(capabilities)
            .with_server_info(Implementation::new("orchestrator", env!("CARGO_PKG_VERSION")))
            .with_instructions(INSTRUCTIONS)
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        let listed = match self.root(None).await {
            Ok(root) => resources::list(&root),
            // Not started in a repository: nothing to list, and nothing wrong with asking.
            Err(_) => Vec::new(),
        };
        Ok(ListResourcesResult::with_all_items(listed))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        Ok(ListResourceTemplatesResult::with_all_items(vec![
            resources::template(),
        ]))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let target = Target::parse(&request.uri).map_err(|e| ErrorData::resource_not_found(e, None))?;
        let root = self.root(None).await.map_err(not_found)?;
        let text = resources::read(&root, &target).map_err(not_found)?;
        let contents = ResourceContents::text(text, request.uri).with_mime_type(resources::MIME);
        Ok(ReadResourceResult::new(vec![contents]).into())
    }

    #[allow(deprecated)] // The subscription of protocol versions up to 2025-11-25, which clients speak today.
    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let root = self.root(None).await.map_err(not_found)?;
        self.subscriptions
            .subscribe(&root, &request.uri, context.peer)
            .map_err(|e| ErrorData::invalid_params(e, None))
    }

    #[allow(deprecated)]
    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        // Unsubscribing from something not subscribed is already done.
        self.subscriptions.unsubscribe(&request.uri);
        Ok(())
    }
}

fn not_found(error: ToolError) -> ErrorData {
    ErrorData::resource_not_found(error.to_string(), None)
}

impl OrchestratorMcp {
    /// The top of the repository the call names, or of the server's own folder.
    async fn root(&self, repo: Option<&str>) -> Result<PathBuf, ToolError> {
        let dir = match repo {
            Some(repo) => self.options.default_repo.join(repo),
            None => self.options.default_repo.clone(),
        };
        Ok(orchestrator_core::repo_root(&dir).await?)
    }

    async fn start(&self, params: StartMissionParams) -> Result<Reply, ToolError> {
        if params.objective.trim().is_empty() {
            return Err(ToolError::Other(
                "the objective is empty: say what the mission should achieve".into(),
            ));
        }
        let root = self.root(params.repo.as_deref()).await?;
        if params.abandon_interrupted != Some(true) {
            if let Some(interrupted) = interrupted_mission(&root)? {
                return self.resume(&root, &interrupted).await;
            }
        }
        let launched = launch::start(&self.options.exe, &root, &params, self.options.start_timeout).await?;
        let text = match launched {
            Launch::Started(started) => started_words(&root, &started),
            Launch::Pending { pid, log } => format!(
                "The mission process (pid {pid}) is still starting after {} s; it goes on in the background. \
Its output is in {}; call mission_status in a moment to see it.",
                self.options.start_timeout.as_secs(),
                log.display()
            ),
        };
        Ok(Reply { text, json: None })
    }

    /// An interrupted mission is the client's own earlier work: it is continued, not left behind
    /// beside a new one (which `orchestrator task` would refuse anyway).
    async fn resume(&self, root: &Path, interrupted: &MissionSummary) -> Result<Reply, ToolError> {
        let launched = launch::resume(
            &self.options.exe,
            root,
            &interrupted.id,
            self.options.start_timeout,
        )
        .await?;
        let how = match launched {
            Launch::Started(started) => format!("It runs again as process {}", started.pid),
            Launch::Pending { pid, .. } => format!("Its process (pid {pid}) is still starting"),
        };
        let text = format!(
            "This repository has an interrupted mission, {} (\"{}\"), so it was resumed instead of starting a new \
one: none of its work is lost. {how}; follow it with mission_status and get its outcome with mission_result. \
When it has finished, call start_mission again for the new objective; or, only if the user wants the \
interrupted mission dropped, call start_mission with abandon_interrupted: true.",
            interrupted.id,
            orchestrator_core::shorten(&interrupted.objective, 120),
        );
        Ok(Reply { text, json: None })
    }

    async fn status(&self, params: StatusParams) -> Result<Reply, ToolError> {
        let root = self.root(params.repo.as_deref()).await?;
        let status = orchestrator_core::status_of(&root, params.mission.as_deref())?;
        let json = if params.detail == Some(true) {
            serde_json::to_string(&status)
        } else {
            serde_json::to_string(&report::compact(&status))
        }
        .map_err(|e| ToolError::Other(format!("cannot write the status as JSON: {e}")))?;
        Ok(Reply {
            text: report::summary(&status),
            json: Some(json),
        })
    }

    async fn list(&self, params: ListMissionsParams) -> Result<Reply, ToolError> {
        let root = self.root(params.repo.as_deref()).await?;
        let missions = orchestrator_core::missions(&root)?;
        let json = serde_json::to_string(&missions)
            .map_err(|e| ToolError::Other(format!("cannot write the missions as JSON: {e}")))?;
        Ok(Reply {
            text: missions_words(&missions),
            json: Some(json),
        })
    }

    async fn result(&self, params: RepoParams) -> Result<Reply, ToolError> {
        let root = self.root(params.repo.as_deref()).await?;
        let status = orchestrator_core::status_of(&root, params.mission.as_deref())?;
        // `true` when git cannot say, so a branch is never reported gone by mistake.
        let branch_kept = match orchestrator_git::Repo::discover(&root).await {
            Ok(repo) => repo
                .branch_exists(&status.integration_branch)
                .await
                .unwrap_or(true),
            Err(_) => true,
        };
        let result = report::result(&root, &status, branch_kept)?;
        let json = serde_json::to_string(&result)
            .map_err(|e| ToolError::Other(format!("cannot write the result as JSON: {e}")))?;
        Ok(Reply {
            text: report::result_words(&result, &status),
            json: Some(json),
        })
    }

    async fn wait(
        &self,
        params: WaitParams,
        context: &RequestContext<RoleServer>,
    ) -> Result<Reply, ToolError> {
        let timeout = wait::timeout_of(params.timeout_seconds)?;
        let root = self.root(params.repo.as_deref()).await?;
        let store = orchestrator_core::open_store_in(&root)?;
        let id = orchestrator_core::find_mission(&store, params.mission.as_deref())?.id;
        drop(store);
        let text = match wait::follow(&root, &id, timeout, context).await? {
            Ended::Stopped => {
                let repo = params.repo;
                return self.result(RepoParams { repo, mission: Some(id) }).await;
            }
            Ended::PlanWaits(status) => format!(
                "Mission {id} stopped waiting: its plan waits for the user's approval.\n{}",
                report::summary(&status)
            ),
            Ended::TimedOut(status) => format!(
                "Mission {id} is still running after {} s of waiting; call wait_for_mission again to keep waiting.\n{}",
                timeout.as_secs_f64(),
                report::summary(&status)
            ),
            Ended::Cancelled => return Err(ToolError::Other("the wait was cancelled".into())),
        };
        Ok(Reply { text, json: None })
    }

    async fn answer_plan(&self, params: ApprovePlanParams) -> Result<Reply, ToolError> {
        let root = self.root(params.repo.as_deref()).await?;
        let answer = orchestrator_core::plan_answer_from(&params.answer, params.feedback, params.plan)?;
        let text = orchestrator_core::answer_plan(&root, params.mission.as_deref(), answer).await?;
        Ok(Reply { text, json: None })
    }

    async fn tell(&self, params: TellWorkerParams) -> Result<Reply, ToolError> {
        let root = self.root(params.repo.as_deref()).await?;
        let to = orchestrator_core::Recipient::from_op(params.unit);
        let text = orchestrator_core::tell(&root, params.mission.as_deref(), to, &params.message).await?;
        Ok(Reply { text, json: None })
    }

    async fn cancel(&self, params: RepoParams) -> Result<Reply, ToolError> {
        let root = self.root(params.repo.as_deref()).await?;
        let text = orchestrator_core::cancel_mission(&root, params.mission.as_deref(), CANCEL_WAIT).await?;
        Ok(Reply { text, json: None })
    }
}

/// The newest interrupted mission of the repository, if any.
fn interrupted_mission(root: &Path) -> Result<Option<MissionSummary>, ToolError> {
    Ok(orchestrator_core::missions(root)?
        .into_iter()
        .find(|m| m.state == MissionState::Interrupted))
}

fn started_words(root: &Path, started: &Started) -> String {
    format!(
        "Mission {} started in {} (process {}). It runs in the background and keeps running if this client \
disconnects. Follow it with mission_status (or `orchestrator status` / `orchestrator logs --follow` in the \
repository), get the outcome with mission_result once it has finished, and stop it with cancel_mission. Its \
output is logged to {}.",
        started.mission,
        root.display(),
        started.pid,
        started.log.display()
    )
}

/// One line per mission, newest first, and what to do about an interrupted one.
fn missions_words(missions: &[MissionSummary]) -> String {
    if missions.is_empty() {
        return "No mission has run in this repository; start one with start_mission.".into();
    }
    let mut lines: Vec<String> = missions
        .iter()
        .map(|m| {
            format!(
                "{} · {}{} · {} tokens · ${:.2} · {}",
                m.id,
                m.state.as_str(),
                m.outcome
                    .as_deref()
                    .map(|o| format!(" ({o})"))
                    .unwrap_or_default(),
                m.tokens,
                m.cost_usd,
                orchestrator_core::shorten(&m.objective, 80)
            )
        })
        .collect();
    if let Some(open) = missions.iter().find(|m| m.state == MissionState::Interrupted) {
        lines.push(format!(
            "Mission {} is interrupted: start_mission in this repository resumes it (abandon_interrupted: true drops it).",
            open.id
        ));
    }
    lines.join("\n")
}
