//! Who may use the API.
//!
//! Every `/api` request must carry the server's token: `Authorization: Bearer <token>` for programs, or
//! the `orchestrator_token` cookie for the dashboard. `EventSource` cannot set headers, so opening the
//! dashboard once as `/?token=<token>` stores the token in an HttpOnly, SameSite=Strict cookie and
//! redirects to `/`, which keeps the token out of the address bar and away from scripts. Tokens are
//! compared in constant time.
//!
//! There is no way to serve without a token, not even on loopback: every local user, and every
//! command an agent runs, can reach a loopback port, and a mission started there runs as the server's
//! user with its model key. When the user gives none, the server makes one ([`Token::generate`]).
//!
//! State-changing requests from another origin are refused as well: the cookie is SameSite=Strict,
//! but a page served on another port of the same host counts as the same site and would carry it.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use crate::error::ApiError;

/// The cookie the dashboard carries the token in.
pub const TOKEN_COOKIE: &str = "orchestrator_token";

/// The secret every API request must show. Its `Debug` never shows it, so it cannot leak into a log
/// through a derived `Debug` of something that holds it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

/// Why a token given by the user is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("is empty")]
    Empty,
    #[error(
        "is {0} characters long; a token needs at least {min} to resist guessing (make one with \
         `openssl rand -hex 32`)",
        min = Token::MIN_CHARS
    )]
    TooShort(usize),
    #[error("is {0} characters long; at most {max} are accepted", max = Token::MAX_CHARS)]
    TooLong(usize),
    #[error(
        "contains {0:?}; a token may hold only visible ASCII characters other than `\"`, `,`, `;` and `\\` \
         (it travels in a header and a cookie)"
    )]
    BadCharacter(char),
}

impl Token {
    /// Fewer characters than this are within reach of guessing over the network.
    pub const MIN_CHARS: usize = 16;
    /// More than this is no safer, only a bigger header on every request.
    pub const MAX_CHARS: usize = 1024;
    /// The random bytes of a generated token: 256 bits, as many as a strong key.
    const GENERATED_BYTES: usize = 32;

    /// A user's token, checked: long enough to resist guessing and made of characters that survive a
    /// header and a cookie unchanged. Surrounding whitespace (a file's final newline) is not part of it.
    pub fn new(value: &str) -> Result<Token, TokenError> {
        let value = value.trim();
        let chars = value.chars().count();
        if chars == 0 {
            return Err(TokenError::Empty);
        }
        if let Some(bad) = value.chars().find(|c| !Token::allowed(*c)) {
            return Err(TokenError::BadCharacter(bad));
        }
        if chars < Token::MIN_CHARS {
            return Err(TokenError::TooShort(chars));
        }
        if chars > Token::MAX_CHARS {
            return Err(TokenError::TooLong(chars));
        }
        Ok(Token(value.to_string()))
    }

    /// A fresh token from the operating system's random source, as 64 hex digits (safe in an address,
    /// a header and a cookie as they are).
    pub fn generate() -> Result<Token, getrandom::Error> {
        let mut bytes = [0u8; Token::GENERATED_BYTES];
        getrandom::fill(&mut bytes)?;
        let hex = bytes
            .iter()
            .fold(String::with_capacity(2 * bytes.len()), |mut hex, byte| {
                use std::fmt::Write;
                let _ = write!(hex, "{byte:02x}");
                hex
            });
        Ok(Token(hex))
    }

    /// The token itself, for the one place that shows it: the address `orchestrator serve` prints for
    /// the user who started it, when it made the token.
    pub fn reveal(&self) -> &str {
        &self.0
    }

    /// Whether `candidate` is the token, in time independent of where they differ.
    pub fn matches(&self, candidate: &str) -> bool {
        bool::from(self.0.as_bytes().ct_eq(candidate.as_bytes()))
    }

    /// Visible ASCII that a cookie value may hold as it is (RFC 6265 `cookie-octet`).
    fn allowed(c: char) -> bool {
        c.is_ascii_graphic() && !matches!(c, '"' | ',' | ';' | '\\')
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token([hidden])")
    }
}

#[derive(Debug, Clone)]
pub struct Auth {
    token: Token,
}

impl Auth {
    pub fn new(token: Token) -> Self {
        Auth { token }
    }

    pub fn matches(&self, candidate: &str) -> bool {
        self.token.matches(candidate)
    }

    /// Whether the request may use the API; the error says how to get in.
    pub fn check(&self, method: &Method, headers: &HeaderMap) -> Result<(), ApiError> {
        self.check_token(headers)?;
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
            "{what}: send `Authorization: Bearer <token>`, or open the dashboard once as /?token=<token>. The \
             token is the one the server was started with (ORCHESTRATOR_TOKEN or --token-file), or the one \
             it printed in its dashboard address when it made one"
        ),
    )
}

/// The API guard, as middleware in front of every `/api` route.
pub async fn require(State(auth): State<Arc<Auth>>, request: Request, next: Next) -> Response {
    match auth.check(request.method(), request.headers()) {
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

    const TOKEN: &str = "s3cret-token-for-tests";

    fn headers(pairs: &[(header::HeaderName, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(name.clone(), HeaderValue::from_static(value));
        }
        map
    }

    fn auth() -> Auth {
        Auth::new(Token::new(TOKEN).expect("a good token"))
    }

    #[test]
    fn bearer_or_cookie_carries_the_token() {
        let auth = auth();
        let get = Method::GET;
        assert!(auth
            .check(
                &get,
                &headers(&[(header::AUTHORIZATION, "Bearer s3cret-token-for-tests")])
            )
            .is_ok());
        assert!(auth
            .check(
                &get,
                &headers(&[(header::COOKIE, "a=b; orchestrator_token=s3cret-token-for-tests")])
            )
            .is_ok());
        let wrong = auth.check(&get, &headers(&[(header::AUTHORIZATION, "Bearer nope")]));
        assert_eq!(wrong.map_err(|e| e.status), Err(StatusCode::UNAUTHORIZED));
        let missing = auth.check(&get, &HeaderMap::new());
        assert!(missing.is_err_and(|e| e.message.contains("needs its token")));
    }

    #[test]
    fn even_a_loopback_request_needs_the_token() {
        let local = headers(&[(header::HOST, "127.0.0.1:7700")]);
        let refused = auth().check(&Method::POST, &local);
        assert_eq!(refused.map_err(|e| e.status), Err(StatusCode::UNAUTHORIZED));
    }

    #[test]
    fn changes_from_another_origin_are_refused_even_with_the_token() {
        let auth = auth();
        let same = headers(&[
            (header::HOST, "127.0.0.1:7700"),
            (header::ORIGIN, "http://127.0.0.1:7700"),
            (header::COOKIE, "orchestrator_token=s3cret-token-for-tests"),
        ]);
        assert!(auth.check(&Method::POST, &same).is_ok());
        // Another port of the same host is the same site, so a SameSite=Strict cookie goes along.
        let other = headers(&[
            (header::HOST, "127.0.0.1:7700"),
            (header::ORIGIN, "http://127.0.0.1:8080"),
            (header::COOKIE, "orchestrator_token=s3cret-token-for-tests"),
        ]);
        assert_eq!(
            auth.check(&Method::POST, &other).map_err(|e| e.status),
            Err(StatusCode::FORBIDDEN)
        );
        // Reading is allowed; the browser's same-origin policy keeps the answer from the page.
        assert!(auth.check(&Method::GET, &other).is_ok());
    }

    #[test]
    fn weak_or_unusable_tokens_are_refused() {
        assert_eq!(Token::new("  \n"), Err(TokenError::Empty));
        assert_eq!(Token::new("short"), Err(TokenError::TooShort(5)));
        assert!(Token::new("fifteen-chars-x").is_err());
        assert!(Token::new("sixteen-chars-xx").is_ok());
        assert_eq!(
            Token::new("has;semicolon-and-more"),
            Err(TokenError::BadCharacter(';'))
        );
        assert_eq!(
            Token::new("has space-and-more-chars"),
            Err(TokenError::BadCharacter(' '))
        );
        assert!(Token::new(&"x".repeat(Token::MAX_CHARS + 1)).is_err());
        let message = TokenError::TooShort(5).to_string();
        assert!(message.contains("at least 16"), "{message}");
        // A file's final newline is not part of the token.
        assert_eq!(
            Token::new("sixteen-chars-xx\n").map(|t| t.reveal().to_string()),
            Ok("sixteen-chars-xx".to_string())
        );
    }

    #[test]
    fn generated_tokens_are_long_random_and_never_debug_printed() {
        let a = Token::generate().expect("the OS has randomness");
        let b = Token::generate().expect("the OS has randomness");
        assert_eq!(a.reveal().len(), 64);
        assert!(a.reveal().chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
        assert!(
            Token::new(a.reveal()).is_ok(),
            "a generated token passes the user check"
        );
        assert!(!format!("{a:?}").contains(a.reveal()));
    }
}
