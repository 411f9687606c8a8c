//! The page itself: one HTML file, one script and one stylesheet, built
//! into the binary, so it works with the network off and fetches nothing
//! from anywhere else.

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};

use super::access::{TOKEN_COOKIE, UiAccess};

const INDEX: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/app.js");
const STYLE: &str = include_str!("assets/style.css");

/// Only this origin's own files, no inline script, never in a frame.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The page, with this run's token in it. Another origin can load it in
/// no way that lets it read it (no CORS, no frames), so the token stays
/// with the page. A login URL (`/?token=…`) sets the cookie for reading
/// and redirects to `/`, so the token leaves the address bar.
pub(crate) async fn index(State(access): State<UiAccess>, request: Request) -> Response {
    if access.reads_need_token() && access.query_token(request.uri().query()) {
        let cookie = format!(
            "{TOKEN_COOKIE}={}; Path=/; HttpOnly; SameSite=Strict",
            access.token()
        );
        let mut response = Redirect::to("/").into_response();
        if let Ok(value) = HeaderValue::from_str(&cookie) {
            response.headers_mut().insert(header::SET_COOKIE, value);
        }
        return response;
    }
    let html = INDEX.replace("{{TOKEN}}", access.token());
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, POLICY),
        ],
        html,
    )
        .into_response()
}

pub(crate) async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        SCRIPT,
    )
        .into_response()
}

pub(crate) async fn style() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE).into_response()
}
