//! HTTP: each plugin's own endpoints under `/plugins/{id}/` (its HTTP hook,
//! streamed both ways) and the operator's endpoints (`/metrics`,
//! `/healthz`, `/readyz`, `/api/v1/plugins`), and the status page at `/`
//! ([`ui_router`]), as axum routers an application can mount in its own
//! server, or [`serve`] on a listener.

mod limits;
mod ops;
mod proxy;
mod ui;

use std::net::SocketAddr;

pub use limits::{HttpLimits, HttpLimitsBuilder};
pub use ui::{TOKEN_HEADER, UiAccess};

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

/// The status page at `/`: a live table of the plugins and their events
/// (server-sent), start / stop / restart buttons, and a settings form per
/// plugin made from its settings_schema, saved as `plugvisor config set`
/// saves (a refusal by the plugin is shown beside the field). Its API is
/// under `/api/v1/ui/`.
///
/// Every request must name the listener in its Host header (else 421,
/// against DNS rebinding) and come from no other origin (else 403); every
/// change must carry [`UiAccess::token`] in the `X-Plugvisor-Token` header
/// (else 403), and when [`UiAccess::reads_need_token`] (the listener is not
/// on loopback) so must every read, or the cookie that
/// [`UiAccess::login_path`] sets (else 401). There are no CORS headers. The
/// other routers are not affected: probes, metrics and plugins' own
/// endpoints answer as before.
pub fn ui_router(env: Environment, access: UiAccess) -> axum::Router {
    ui::routes(env, access)
}

/// The plugin and operations routers together (not the page).
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
    use axum::serve::ListenerExt;
    // Without TCP_NODELAY a body sent after its head waits for the client's
    // delayed ACK: 40 ms per keep-alive request to a Python plugin.
    let listener = listener.tap_io(|stream| {
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!("cannot set TCP_NODELAY: {e}");
        }
    });
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

#[cfg(test)]
mod tests {
    use std::os::fd::{FromRawFd, IntoRawFd};

    /// The accepted socket of `client`, found among this process's fds.
    fn accepted_nodelay(client: &std::net::TcpStream) -> Option<bool> {
        let wanted = client.local_addr().unwrap();
        for entry in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
            let Ok(fd) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let target = std::fs::read_link(entry.path()).unwrap_or_default();
            if !target.to_string_lossy().starts_with("socket:") {
                continue;
            }
            // SAFETY: the fd is open and is given back with into_raw_fd.
            let stream = unsafe { std::net::TcpStream::from_raw_fd(fd) };
            let found = (stream.peer_addr().ok() == Some(wanted)).then(|| stream.nodelay());
            let _ = stream.into_raw_fd();
            if let Some(nodelay) = found {
                return Some(nodelay.unwrap());
            }
        }
        None
    }

    #[tokio::test]
    async fn accepted_connections_have_nagle_off() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(super::serve(listener, axum::Router::new(), async {
            let _ = stopped.await;
        }));
        let client = std::net::TcpStream::connect(address).unwrap();
        let mut nodelay = None;
        for _ in 0..200 {
            nodelay = accepted_nodelay(&client);
            if nodelay.is_some() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert_eq!(nodelay, Some(true));
        drop(client);
        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
    }
}
