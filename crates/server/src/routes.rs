//! The routes: the dashboard at `/`, the API under `/api`.

use std::time::Duration;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::OriginalUri;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{middleware, Json, Router};
use orchestrator_protocol::{Op, Steer};
use serde::Deserialize;
use serde_json::json;

use crate::auth::{self};
use crate::dashboard;
use crate::error::ApiError;
use crate::registry::{Found, MissionDetail};
use crate::start::{self, StartRequest};
use crate::state::AppState;
use crate::stream;

/// How long a cancel request waits for the mission to stop.
const CANCEL_WAIT: Duration = Duration::from_secs(120);

pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/missions", get(list).post(start))
        .route("/missions/{id}", get(detail))
        .route("/missions/{id}/events", get(events))
        .route("/missions/{id}/pictures", get(pictures))
        .route("/missions/{id}/cancel", post(cancel))
        .route("/missions/{id}/pause", post(pause))
        .route("/missions/{id}/resume", post(resume))
        .route("/missions/{id}/plan", post(answer_plan))
        .route("/missions/{id}/tell", post(tell))
        .fallback(no_such_endpoint)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.auth.clone(), auth::require));
    Router::new()
        .route("/", get(dashboard::index))
        .route("/app.js", get(dashboard::script))
        .route("/style.css", get(dashboard::style))
        .route("/favicon.svg", get(dashboard::icon))
        .nest("/api", api)
        .with_state(state)
}

type ApiResult<T> = Result<T, ApiError>;

async fn list(State(state): State<AppState>) -> ApiResult<Json<serde_json::Value>> {
    let (missions, repos) = state.registry.list().await?;
    Ok(Json(json!({ "missions": missions, "repos": repos })))
}

async fn start(
    State(state): State<AppState>,
    body: Result<Json<serde_json::Value>, JsonRejection>,
) -> ApiResult<Response> {
    let Json(body) = body.map_err(bad_body)?;
    let request = StartRequest::from_json(body)?;
    let id = start::launch(state.registry.clone(), request).await?;
    let body = started_body(&state, &id).await?;
    Ok(accepted(&id, body))
}

/// What a start or a resume answers: where the mission is and where its events are.
async fn started_body(state: &AppState, id: &str) -> ApiResult<serde_json::Value> {
    let found = state.registry.find(id).await?;
    let location = format!("/api/missions/{id}");
    Ok(json!({
        "id": id,
        "repo": found.root.display().to_string(),
        "status": found.record.status,
        "state": found.state(),
        "running": found.is_running(),
        "url": location,
        "events": format!("{location}/events"),
    }))
}

fn accepted(id: &str, body: serde_json::Value) -> Response {
    let location = format!("/api/missions/{id}");
    (StatusCode::ACCEPTED, [(header::LOCATION, location)], Json(body)).into_response()
}

/// axum's own words for a body that is not JSON at all, with what it should look like.
fn bad_body(rejection: JsonRejection) -> ApiError {
    let status = match rejection {
        JsonRejection::MissingJsonContentType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        JsonRejection::JsonSyntaxError(_) => StatusCode::BAD_REQUEST,
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    };
    ApiError::new(
        status,
        format!("{}. {}", rejection.body_text(), start::EXPECTED_BODY),
    )
}

async fn detail(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<MissionDetail>> {
    let found = state.registry.find(&id).await?;
    let events = found.events_after(None).await?;
    Ok(Json(MissionDetail::new(&found, &events)))
}

/// The mission's pictures as SVG (the plan graph, the timeline, tokens over time), drawn from the
/// same fold as the detail, for the dashboard to show beside the table; `last_seq` says which event
/// they include.
async fn pictures(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let found = state.registry.find(&id).await?;
    let events = found.events_after(None).await?;
    let view = orchestrator_view::MissionView::from_events(&events);
    let pictures = orchestrator_report::pictures_svg(&view);
    Ok(Json(json!({
        "last_seq": view.last_seq,
        "graph": pictures.graph,
        "timeline": pictures.timeline,
        "usage": pictures.usage,
    })))
}

#[derive(Debug, Deserialize)]
struct EventsQuery {
    after: Option<u64>,
}

async fn events(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let Query(query) = query.map_err(|e| {
        ApiError::bad_request(format!(
            "{}; `after` is the sequence number of the last event you have (a whole number)",
            e.body_text()
        ))
    })?;
    let after = match headers.get("last-event-id") {
        Some(value) => Some(last_event_id(value)?),
        None => query.after,
    };
    let found = state.registry.find(&id).await?;
    if !stream::has_more(&found, after).await? {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    Ok(stream::open(found, after, state.closing.clone()))
}

fn last_event_id(value: &header::HeaderValue) -> ApiResult<u64> {
    value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "Last-Event-ID must be an event's sequence number (a whole number), got {value:?}"
            ))
        })
}

async fn cancel(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<serde_json::Value>> {
    let found = state.registry.find(&id).await?;
    if !found.is_running() {
        return Err(not_running(&found));
    }
    let message = match &found.live {
        Some(live) => {
            live.steer.send(Op::Cancel);
            if !live.stopped(CANCEL_WAIT).await {
                return Err(ApiError::internal(format!(
                    "mission {id} did not stop within {} s",
                    CANCEL_WAIT.as_secs()
                )));
            }
            format!(
                "mission {id} stopped; continue it with `orchestrator resume` in {}",
                found.root.display()
            )
        }
        None => cancel_elsewhere(&found).await?,
    };
    Ok(Json(json!({ "id": id, "message": message })))
}

/// A mission run by another process: `orchestrator cancel` does it (it signals the owner and waits).
async fn cancel_elsewhere(found: &Found) -> ApiResult<String> {
    let latest = crate::registry::blocking({
        let store = found.store.clone();
        move || store.latest_mission()
    })
    .await?
    .map_err(|e| ApiError::internal(e.to_string()))?;
    if latest.as_ref().map(|m| &m.id) != Some(&found.record.id) {
        return Err(not_running(found));
    }
    orchestrator_core::cancel(&found.root, CANCEL_WAIT)
        .await
        .map_err(|e| ApiError::from_engine(&e))
}

fn not_running(found: &Found) -> ApiError {
    ApiError::conflict(format!(
        "mission {} is not running (status: {})",
        found.record.id,
        status_word(found)
    ))
}

fn status_word(found: &Found) -> String {
    serde_json::to_value(found.record.status)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

async fn pause(state: State<AppState>, id: Path<String>) -> ApiResult<Json<serde_json::Value>> {
    steer(state, id, true).await
}

/// Resumes what is stopped: a paused dispatch of a mission this server runs, or an interrupted
/// mission (killed, crashed, cancelled), continued in this process.
async fn resume(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Response> {
    let found = state.registry.find(&id).await?;
    if let Some(live) = found.live.as_ref().filter(|live| live.is_running()) {
        if !live.steer.dispatch_paused() {
            return Err(ApiError::conflict(format!(
                "mission {id} is already running in this server and its dispatch is not paused; nothing to resume"
            )));
        }
        return Ok(steer(State(state), Path(id), false).await?.into_response());
    }
    let id = crate::resume::resume(state.registry.clone(), &found).await?;
    let mut body = started_body(&state, &id).await?;
    body["resumed"] = json!(true);
    Ok(accepted(&id, body))
}

/// Pauses or resumes the dispatch of new units of a mission this server runs.
async fn steer(
    State(state): State<AppState>,
    Path(id): Path<String>,
    pause: bool,
) -> ApiResult<Json<serde_json::Value>> {
    let found = state.registry.find(&id).await?;
    let live = match &found.live {
        Some(live) if live.is_running() => live,
        Some(_) => return Err(not_running(&found)),
        None if found.is_running() => {
            return Err(ApiError::conflict(format!(
                "mission {id} is run by another process (pid {}), not by this server; only cancel reaches it from here",
                found.record.pid.unwrap_or_default()
            )))
        }
        None => return Err(not_running(&found)),
    };
    live.steer.send(match pause {
        true => Op::PauseDispatch,
        false => Op::ResumeDispatch,
    });
    Ok(Json(json!({ "id": id, "paused": live.steer.dispatch_paused() })))
}

/// The body of `POST /api/missions/{id}/plan`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanAnswerBody {
    /// approve, reject or edit.
    answer: String,
    feedback: Option<String>,
    plan: Option<serde_json::Value>,
}

/// Answers the plan a mission waits with (`--approve-plan`): approve, reject with feedback, or edit.
/// A mission this server runs gets the answer as an `Op`; one run by another process (or by none)
/// gets it as `orchestrator approve` gives it, through the store.
async fn answer_plan(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Result<Json<PlanAnswerBody>, JsonRejection>,
) -> ApiResult<Json<serde_json::Value>> {
    let Json(body) = body.map_err(|rejection| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("{}. {PLAN_ANSWER_BODY}", rejection.body_text()),
        )
    })?;
    let answer = orchestrator_core::plan_answer_from(&body.answer, body.feedback, body.plan)
        .map_err(|e| ApiError::unprocessable(format!("{e}. {PLAN_ANSWER_BODY}")))?;
    let found = state.registry.find(&id).await?;
    let word = answer.as_str();
    let message = match found.live.as_ref().filter(|live| live.is_running()) {
        Some(live) => {
            let events = found.events_after(None).await?;
            let Some(waiting) = orchestrator_core::WaitingPlan::from_events(&events) else {
                return Err(ApiError::conflict(format!(
                    "mission {id} has no plan waiting for approval"
                )));
            };
            live.steer.send(Op::AnswerPlan {
                attempt: waiting.attempt,
                answer,
            });
            format!("plan {} of mission {id} {word}", waiting.attempt)
        }
        None => orchestrator_core::answer_plan(&found.root, Some(&found.record.id), answer)
            .await
            .map_err(|e| ApiError::from_engine(&e))?,
    };
    Ok(Json(json!({ "id": id, "answer": word, "message": message })))
}

const PLAN_ANSWER_BODY: &str = "Expected {\"answer\": \"approve\"}, {\"answer\": \"reject\", \"feedback\": \"what to change\"} \
     or {\"answer\": \"edit\", \"plan\": {\"tasks\": [{\"id\", \"title\", \"description\", \"depends_on\"}]}}";

/// The body of `POST /api/missions/{id}/tell`: a unit, or every running worker.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TellBody {
    unit: Option<String>,
    #[serde(default)]
    all: bool,
    message: String,
}

const TELL_BODY: &str =
    "Expected {\"unit\": \"t2\", \"message\": \"...\"} or {\"all\": true, \"message\": \"...\"}";

/// Gives a unit's worker (or every running worker) a message before its next model call. A mission
/// this server runs gets it as an `Op::Tell`, after the mission's own checks so a refusal is an
/// answer here; one run by another process (or by none) gets it as `orchestrator tell` gives it.
async fn tell(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Result<Json<TellBody>, JsonRejection>,
) -> ApiResult<Json<serde_json::Value>> {
    let Json(body) =
        body.map_err(|rejection| ApiError::unprocessable(format!("{}. {TELL_BODY}", rejection.body_text())))?;
    let to = match (body.unit, body.all) {
        (Some(unit), false) => orchestrator_core::Recipient::Unit(unit),
        (None, true) => orchestrator_core::Recipient::All,
        _ => {
            return Err(ApiError::unprocessable(format!(
                "give either `unit` or `\"all\": true`. {TELL_BODY}"
            )))
        }
    };
    let found = state.registry.find(&id).await?;
    let refused = |e: orchestrator_core::EngineError| ApiError::from_engine(&e);
    let message = match found.live.as_ref().filter(|live| live.is_running()) {
        Some(live) => {
            let (record, store, check) = (found.record.clone(), found.store.clone(), to.clone());
            let text = body.message.clone();
            let units = crate::registry::blocking(move || {
                orchestrator_core::check_tell(&record, &store, &check, &text)
            })
            .await?
            .map_err(refused)?;
            let unit = match to {
                orchestrator_core::Recipient::Unit(unit) => Some(unit),
                orchestrator_core::Recipient::All => None,
            };
            live.steer.send(Op::Tell {
                unit,
                message: body.message,
            });
            format!(
                "message for {} of mission {id} sent; each worker reads it before its next model call",
                units.join(", ")
            )
        }
        None => orchestrator_core::tell(&found.root, Some(&found.record.id), to, &body.message)
            .await
            .map_err(refused)?,
    };
    Ok(Json(json!({ "id": id, "message": message })))
}

async fn no_such_endpoint(method: Method, OriginalUri(uri): OriginalUri) -> ApiError {
    ApiError::not_found(format!(
        "no such endpoint: {method} {uri}; the API is /api/missions[/{{id}}[/events|/cancel|/pause|/resume|/plan|/tell]]"
    ))
}

async fn method_not_allowed(method: Method, OriginalUri(uri): OriginalUri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on {uri}"),
    )
}
