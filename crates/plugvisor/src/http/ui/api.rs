//! The page's API: the statuses, one plugin's settings form, and the
//! actions (start, stop, restart, save settings), each the same
//! [`Environment`] call the control socket makes for `plugvisor start`,
//! `stop`, `restart` and `config set`, so a refusal reads the same.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::{ConfigChange, Environment, EnvironmentError};

/// Every plugin's status, as `/api/v1/plugins` and `plugvisor status --json`.
pub(crate) async fn statuses(State(env): State<Environment>) -> Response {
    Json(env.statuses()).into_response()
}

/// What the settings form of one plugin is made from: its settings_schema
/// and its effective configuration (value and where it comes from).
pub(crate) async fn settings(State(env): State<Environment>, Path(id): Path<String>) -> Response {
    let answer = env.settings(&id).and_then(|schema| {
        let values = env.configuration(&id)?;
        Ok(json!({"id": id, "settings": schema.settings, "values": values}))
    });
    match answer {
        Ok(body) => Json(body).into_response(),
        Err(error) => failure(&error),
    }
}

/// What a save sends: the changed values (as typed; the schema turns
/// `"42"` into 42) and the keys to reset to the file's value or the default.
#[derive(Deserialize)]
pub(crate) struct Save {
    #[serde(default)]
    values: Map<String, Value>,
    #[serde(default)]
    unset: Vec<String>,
}

pub(crate) async fn save(
    State(env): State<Environment>,
    Path(id): Path<String>,
    Json(save): Json<Save>,
) -> Response {
    let changed: Vec<String> = save
        .values
        .keys()
        .chain(save.unset.iter())
        .cloned()
        .collect();
    let changes = save
        .values
        .into_iter()
        .map(|(key, value)| ConfigChange::set(key, value))
        .chain(save.unset.into_iter().map(ConfigChange::unset));
    match env.set_configuration(&id, changes).await {
        Ok(applied) => Json(json!({
            "applied": applied,
            "values": env.configuration(&id).unwrap_or_default(),
        }))
        .into_response(),
        Err(EnvironmentError::InvalidSetting { source, .. }) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({
                "error": source.to_string(),
                "fields": {source.key.clone(): source.problem},
            })),
        )
            .into_response(),
        // The plugin's own words; it refused the change as a whole, so the
        // page shows them beside each field that changed.
        Err(EnvironmentError::Refused { message, .. }) => {
            let fields: Map<String, Value> = changed
                .into_iter()
                .map(|key| (key, Value::String(message.clone())))
                .collect();
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(json!({
                    "error": format!("the plugin refused: {message}"),
                    "refused": message,
                    "fields": fields,
                })),
            )
                .into_response()
        }
        Err(error) => failure(&error),
    }
}

/// `start`, `stop` or `restart`, answered once it is done.
pub(crate) async fn action(
    State(env): State<Environment>,
    Path((id, action)): Path<(String, String)>,
) -> Response {
    let done = match action.as_str() {
        "start" => env.activate(&id).await.map(|_| ()),
        "stop" => env.deactivate(&id).await,
        "restart" => env.restart(&id).await.map(|_| ()),
        _ => {
            return (
                StatusCode::NOT_FOUND,
                Json(json!({"error": "the actions are start, stop and restart"})),
            )
                .into_response();
        }
    };
    match done.and_then(|()| env.status(&id)) {
        Ok(status) => Json(status).into_response(),
        Err(error) => failure(&error),
    }
}

/// An error as JSON, with a status that says whose fault it is.
fn failure(error: &EnvironmentError) -> Response {
    let status = match error {
        EnvironmentError::UnknownPlugin(_) => StatusCode::NOT_FOUND,
        EnvironmentError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
        EnvironmentError::Store { .. } | EnvironmentError::OpenStore(_) => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
        // The plugin's failures: it did not start, refused, timed out.
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    };
    (status, Json(json!({"error": error.to_string()}))).into_response()
}
