//! Who may use the API.
//!
//! With a token, every `/api` request must carry it: `Authorization: Bearer <token>` for programs, or
//! the `orchestrator_token` cookie for the dashboard. `EventSource` cannot set headers, so opening the
//! dashboard once as `/?token=<token>` stores the token in an HttpOnly, SameSite=Strict cookie and
//! redirects to `/`, which keeps the token out of the address bar and away from scripts. Tokens are
//! compared in constant time.
//!
//! Without a token the server only listens on loopback, where the threat is a web page in the user's
//! own browser: requests must name the server by a loopback host (defeats DNS rebinding), and
//! state-changing requests from another origin are refused (defeats cross-site requests).

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::routes::AppState;

/// The cookie the dashboard carries the token in.
pub const TOKEN_COOKIE: &str = "orchestrator_token";

#[derive(Debug, Clone, Default)]
pub struct Auth {
    token: Option<String>,
    loopback_only: bool,
}

impl Auth {
    pub fn new(token: Option<String>, loopback_only: bool) -> Self {
        Auth {
            token: token.filter(|t| !t.is_empty()),
            loopback_only,
        }
    }

    pub fn matches(&self, candidate: &str) -> bool {
        self.token
            .as_deref()
            .is_some_and(|token| bool::from(token.as_bytes().ct_eq(candidate.as_bytes())))
    }

    /// Whether the request may use the API; the error says how to get in.
    pub fn check(&self, method: &Method, headers: &HeaderMap) -> Result<(), ApiError> {
        if self.token.is_some() {
            self.check_token(headers)?;
        } else if self.loopback_only {
            check_loopback_host(headers)?;
        }
        if !is_safe(method) {
            check_same_origin(headers)?;
        }
        Ok(())
    }

    fn check_token(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let presented = bearer(headers).or_else(|| cookie(headers, TOKEN_COOKIE));
        match presented {
            Some(token) if self.matches(&token) => Ok(()),
            Some(_) => Err(unauthorized("the token is wrong")),
            None => Err(unauthorized("this server needs its token")),
        }
    }
}

fn unauthorized(what: &str) -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        format!(
            "{what}: send `Authorization: Bearer <token>` (the --token or ORCHESTRATOR_TOKEN the server was \
             started with), or open the dashboard once as /?token=<token>"
        ),
    )
}

/// The API guard, as middleware in front of every `/api` route.
pub async fn require(State(state): State<AppState>, request: Request, next: Next) -> Response {
    match state.auth.check(request.method(), request.headers()) {
        Ok(()) => next.run(request).await,
        Err(error) => {
            let mut response = error.clone().into_response();
            if error.status == StatusCode::UNAUTHORIZED {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static("Bearer"),
                );
            }
            response
        }
    }
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_string())
}

/// The value of cookie `name`, from any `Cookie` header.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_string())
}

/// `Set-Cookie` for the dashboard's token: never readable by scripts, never sent cross-site.
pub fn token_cookie(token: &str) -> String {
    format!("{TOKEN_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict")
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

fn host(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::HOST)?.to_str().ok()
}

fn check_loopback_host(headers: &HeaderMap) -> Result<(), ApiError> {
    let name = host(headers).map(host_name).unwrap_or_default();
    let loopback = name.eq_ignore_ascii_case("localhost")
        || name
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if loopback {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "this server listens on loopback without a token and answers only requests addressed to \
                 127.0.0.1, localhost or [::1] (Host was `{name}`); start it with --token to serve other names"
            ),
        ))
    }
}

/// The host of a `Host` header without its port (`[::1]:7700` → `[::1]`).
fn host_name(host: &str) -> &str {
    match host.rfind(':') {
        Some(colon) if !host[colon..].contains(']') => &host[..colon],
        _ => host,
    }
}

/// A browser names the page a request comes from in `Origin`; it must be this server's own.
fn check_same_origin(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else {
        return Ok(());
    };
    let own = host(headers).unwrap_or_default();
    let origin_host = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .unwrap_or_default();
    if !own.is_empty() && origin_host.eq_ignore_ascii_case(own) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("cross-origin request from {origin} refused: only this server's own dashboard may change missions"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(header::HeaderName, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(name.clone(), HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn bearer_or_cookie_carries_the_token() {
        let auth = Auth::new(Some("s3cret".into()), false);
        let get = Method::GET;
        assert!(auth
            .check(&get, &headers(&[(header::AUTHORIZATION, "Bearer s3cret")]))
            .is_ok());
        assert!(auth
            .check(
                &get,
                &headers(&[(header::COOKIE, "a=b; orchestrator_token=s3cret")])
            )
            .is_ok());
        let wrong = auth.check(&get, &headers(&[(header::AUTHORIZATION, "Bearer nope")]));
        assert_eq!(wrong.map_err(|e| e.status), Err(StatusCode::UNAUTHORIZED));
        let missing = auth.check(&get, &HeaderMap::new());
        assert!(missing.is_err_and(|e| e.message.contains("needs its token")));
    }

    #[test]
    fn loopback_without_token_needs_a_loopback_host() {
        let auth = Auth::new(None, true);
        for host in ["127.0.0.1:7700", "localhost:80", "[::1]:7700", "LOCALHOST"] {
            let h = headers(&[(header::HOST, host)]);
            assert!(auth.check(&Method::GET, &h).is_ok(), "{host}");
        }
        let rebound = headers(&[(header::HOST, "evil.example:7700")]);
        assert_eq!(
            auth.check(&Method::GET, &rebound).map_err(|e| e.status),
            Err(StatusCode::FORBIDDEN)
        );
    }

    #[test]
    fn changes_from_another_origin_are_refused() {
        let auth = Auth::new(None, true);
        let same = headers(&[
            (header::HOST, "127.0.0.1:7700"),
            (header::ORIGIN, "http://127.0.0.1:7700"),
        ]);
        assert!(auth.check(&Method::POST, &same).is_ok());
        let other = headers(&[
            (header::HOST, "127.0.0.1:7700"),
            (header::ORIGIN, "https://evil.example"),
        ]);
        assert_eq!(
            auth.check(&Method::POST, &other).map_err(|e| e.status),
            Err(StatusCode::FORBIDDEN)
        );
        // Reading is allowed; the browser's same-origin policy keeps the answer from the page.
        assert!(auth.check(&Method::GET, &other).is_ok());
    }
}
