//! Logging in and out, the session every page runs as, and the guard in front of every
//! `/ui` route: security headers, and a refusal of state-changing requests from another
//! site.

use askama::Template;
use axum::Form;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use taskbox_core::auth::{Principal, same_token};

use super::COOKIE;
use super::pages::{error_page, render};
use crate::api::AppState;

/// Scripts, styles and requests only from this server: no inline script or style, no
/// framing.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' \
                   data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
                   base-uri 'none'";

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    error: Option<String>,
}

pub(super) async fn login_form() -> Response {
    render(&LoginPage { error: None })
}

#[derive(Deserialize)]
pub(super) struct Login {
    token: String,
}

/// Exchanges a bearer token for a session.
pub(super) async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(login): Form<Login>,
) -> Response {
    let token = login.token.trim();
    let principal = match &state.config.admin_token {
        Some(admin) if same_token(token, admin) => Some(Principal::default_admin()),
        _ => match state.tokens.verify(token).await {
            Ok(principal) => principal,
            Err(err) => return error_page(StatusCode::INTERNAL_SERVER_ERROR, &format!("{err:#}")),
        },
    };
    let Some(principal) = principal else {
        let page = LoginPage {
            error: Some("That token is not valid.".to_owned()),
        };
        return (StatusCode::UNAUTHORIZED, render(&page)).into_response();
    };
    let id = match state.sessions.begin(&principal).await {
        Ok(id) => id,
        Err(err) => return error_page(StatusCode::INTERNAL_SERVER_ERROR, &format!("{err:#}")),
    };
    let secure = if behind_tls(&headers) { "; Secure" } else { "" };
    let cookie = format!(
        "{COOKIE}={id}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        state.sessions.lifetime().as_secs()
    );
    ([(header::SET_COOKIE, cookie)], Redirect::to("/ui")).into_response()
}

pub(super) async fn logout(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(id) = session_id(&headers)
        && let Err(err) = state.sessions.end(id).await
    {
        return error_page(StatusCode::INTERNAL_SERVER_ERROR, &format!("{err:#}"));
    }
    (
        [(
            header::SET_COOKIE,
            format!("{COOKIE}=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0"),
        )],
        Redirect::to("/ui/login"),
    )
        .into_response()
}

/// Runs the request as its session's principal, or sends a browser to the login page. A
/// server without an admin token is open, as its API is: everyone is the default admin.
pub(super) async fn require(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let principal = if state.config.admin_token.is_none() {
        Some(Principal::default_admin())
    } else {
        match session_id(request.headers()) {
            Some(id) => match state.sessions.find(id).await {
                Ok(found) => found,
                Err(err) => {
                    return error_page(StatusCode::INTERNAL_SERVER_ERROR, &format!("{err:#}"));
                }
            },
            None => None,
        }
    };
    let Some(principal) = principal else {
        if request.method() == Method::GET {
            return Redirect::to("/ui/login").into_response();
        }
        return error_page(
            StatusCode::UNAUTHORIZED,
            "Your session has ended: log in again.",
        );
    };
    request.extensions_mut().insert(principal);
    next.run(request).await
}

/// Refuses state-changing requests that a browser did not send from this site, and adds
/// the security headers to every answer.
pub(super) async fn guard(request: Request, next: Next) -> Response {
    let changes_state = !matches!(*request.method(), Method::GET | Method::HEAD);
    let mut response = if changes_state && !same_origin(request.headers()) {
        error_page(
            StatusCode::FORBIDDEN,
            "This request did not come from a page of this dashboard, so it was refused.",
        )
    } else {
        next.run(request).await
    };
    let headers = response.headers_mut();
    // A page is the session's alone: no cache keeps it, on the way or in the browser.
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "same-origin"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// Whether a browser sent the request from a page of this origin: by `Sec-Fetch-Site` where
/// the browser sends it, else by `Origin` against `Host`. A request with neither is refused:
/// every browser that posts a form sends one of them.
fn same_origin(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        return site == "same-origin";
    }
    let (Some(origin), Some(host)) = (headers.get(header::ORIGIN), headers.get(header::HOST))
    else {
        return false;
    };
    let (Ok(origin), Ok(host)) = (origin.to_str(), host.to_str()) else {
        return false;
    };
    origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        == Some(host)
}

fn behind_tls(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .is_some_and(|proto| proto == "https")
}

fn session_id(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|cookies| cookies.split(';'))
        .find_map(|cookie| cookie.trim().strip_prefix(COOKIE)?.strip_prefix('='))
        .filter(|id| !id.is_empty())
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderMap, HeaderValue, header};

    use super::{same_origin, session_id};

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, HeaderValue::from_static(value));
        }
        headers
    }

    #[test]
    fn only_a_same_origin_request_may_change_state() {
        assert!(same_origin(&headers(&[("sec-fetch-site", "same-origin")])));
        assert!(!same_origin(&headers(&[("sec-fetch-site", "cross-site")])));
        assert!(!same_origin(&headers(&[("sec-fetch-site", "same-site")])));
        let host = ("host", "127.0.0.1:7878");
        assert!(same_origin(&headers(&[
            host,
            ("origin", "http://127.0.0.1:7878")
        ])));
        assert!(!same_origin(&headers(&[
            host,
            ("origin", "http://evil.example")
        ])));
        assert!(!same_origin(&headers(&[host, ("origin", "null")])));
        assert!(!same_origin(&headers(&[host])));
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut cookies = HeaderMap::new();
        cookies.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; tb_session=abc; b=2"),
        );
        assert_eq!(session_id(&cookies), Some("abc"));
        cookies.insert(
            header::COOKIE,
            HeaderValue::from_static("tb_sessionx=1; tb_session="),
        );
        assert_eq!(session_id(&cookies), None);
    }
}
