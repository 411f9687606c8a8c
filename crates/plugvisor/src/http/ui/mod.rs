//! The status page: a live table of the plugins, their events as they
//! happen, start / stop / restart, and each plugin's settings form made
//! from its settings_schema. The routes, all behind [`access::guard`]:
//!
//! | route | what |
//! |---|---|
//! | `GET /` | the page (the token is in it) |
//! | `GET /ui/app.js`, `/ui/style.css` | its script and style |
//! | `GET /api/v1/ui/plugins` | the statuses |
//! | `GET /api/v1/ui/events` | server-sent events: a `snapshot` of the statuses, then `plugin` (an event with its status), and a new `snapshot` when the page fell behind |
//! | `GET /api/v1/ui/plugins/{id}/settings` | the settings_schema and the effective configuration |
//! | `POST /api/v1/ui/plugins/{id}/settings` | save (`{"values": {...}, "unset": [...]}`), as `plugvisor config set` |
//! | `POST /api/v1/ui/plugins/{id}/start`, `stop`, `restart` | the actions |

mod access;
mod api;
mod events;
mod page;

use axum::Router;
use axum::routing::{get, post};

pub use access::{TOKEN_HEADER, UiAccess};

use crate::Environment;

pub(crate) fn routes(env: Environment, access: UiAccess) -> Router {
    let api = Router::new()
        .route("/api/v1/ui/plugins", get(api::statuses))
        .route("/api/v1/ui/events", get(events::stream))
        .route(
            "/api/v1/ui/plugins/{id}/settings",
            get(api::settings).post(api::save),
        )
        .route("/api/v1/ui/plugins/{id}/{action}", post(api::action))
        .with_state(env);
    let page = Router::new()
        .route("/", get(page::index))
        .route("/ui/app.js", get(page::script))
        .route("/ui/style.css", get(page::style))
        .with_state(access.clone());
    page.merge(api)
        // Only its own routes: any other path is not the page's to refuse.
        .route_layer(axum::middleware::from_fn_with_state(access, access::guard))
}
