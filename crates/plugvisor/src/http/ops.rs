//! The endpoints an operator's tools expect: `/metrics` (Prometheus),
//! `/healthz` and `/readyz` (Kubernetes probes), `/api/v1/plugins` (the
//! statuses, as `plugvisor status --json` prints them).

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::Environment;

pub(crate) fn routes(env: Environment) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/api/v1/plugins", get(plugins))
        .with_state(env)
}

async fn metrics(State(env): State<Environment>) -> Response {
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    ([(header::CONTENT_TYPE, content_type)], env.metrics()).into_response()
}

/// The host itself answers.
async fn healthz() -> &'static str {
    "ok\n"
}

/// Every plugin that should be Running is.
async fn readyz(State(env): State<Environment>) -> Response {
    let unready = env.unready();
    if unready.is_empty() {
        return "ready\n".into_response();
    }
    let lines: String = unready
        .iter()
        .map(|s| format!("{}: {}\n", s.id, s.state))
        .collect();
    (
        StatusCode::SERVICE_UNAVAILABLE,
        format!("not ready:\n{lines}"),
    )
        .into_response()
}

async fn plugins(State(env): State<Environment>) -> Response {
    Json(env.statuses()).into_response()
}
