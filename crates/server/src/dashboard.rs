//! The web dashboard: one page, its script and its style sheet, compiled into the binary (no CDN,
//! no build step).

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use crate::auth::token_cookie;
use crate::state::AppState;

const INDEX_HTML: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const STYLE_CSS: &str = include_str!("../assets/style.css");
const FAVICON_SVG: &str = include_str!("../assets/favicon.svg");

#[derive(Debug, Deserialize)]
pub struct IndexQuery {
    token: Option<String>,
}

/// The page. Opened as `/?token=<token>` with the right token, it stores the token in a cookie and
/// redirects to `/`, so the token leaves the address bar and the browser history.
pub async fn index(State(state): State<AppState>, Query(query): Query<IndexQuery>) -> Response {
    if let Some(token) = query.token {
        if state.auth.matches(&token) {
            let mut response = Redirect::to("/").into_response();
            if let Ok(cookie) = header::HeaderValue::from_str(&token_cookie(&token)) {
                response.headers_mut().insert(header::SET_COOKIE, cookie);
            }
            return response;
        }
    }
    page(INDEX_HTML, "text/html; charset=utf-8")
}

pub async fn script() -> Response {
    page(APP_JS, "text/javascript; charset=utf-8")
}

pub async fn style() -> Response {
    page(STYLE_CSS, "text/css; charset=utf-8")
}

pub async fn icon() -> Response {
    page(FAVICON_SVG, "image/svg+xml")
}

fn page(body: &'static str, content_type: &'static str) -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            // Only our own script and style; no framing by other sites.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}
