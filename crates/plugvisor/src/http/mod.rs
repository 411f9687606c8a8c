//! HTTP: each plugin's own endpoints under `/plugins/{id}/` (its HTTP hook,
//! streamed both ways) and the operator's endpoints (`/metrics`,
//! `/healthz`, `/readyz`, `/api/v1/plugins`), as axum routers an
//! application can mount in its own server, or [`serve`] on a listener.

mod limits;
mod ops;
mod proxy;

use std::net::SocketAddr;

pub use limits::{HttpLimits, HttpLimitsBuilder};

use crate::Environment;

/// `/plugins/{id}/...` → each plugin's HTTP hook. A request for an unknown
/// plugin is answered 404; for a plugin that is not Running (starting,
/// restarting, stopped, failed) 503 with `Retry-After`; past the limits 413
/// or 431; a plugin that does not send its response head in time, 504. A
/// plugin that fails in the middle of its response makes the host abort the
/// connection, never end a truncated response as if it were whole.
pub fn plugin_router(env: Environment, limits: HttpLimits) -> axum::Router {
    proxy::routes(env, limits)
}

/// `/metrics` (Prometheus text), `/healthz` (the host answers), `/readyz`
/// (every plugin that should be Running is; 503 with the others listed) and
/// `/api/v1/plugins` (the statuses as JSON).
pub fn operations_router(env: Environment) -> axum::Router {
    ops::routes(env)
}

/// Both routers together.
pub fn router(env: Environment, limits: HttpLimits) -> axum::Router {
    plugin_router(env.clone(), limits).merge(operations_router(env))
}

/// Serves `router` on `listener` until `shutdown` resolves, with each
/// request's client address available to plugins (`remote_addr`).
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}
