//! The host API server of one plugin process: a gRPC server on a unix socket
//! in the plugin's private socket directory, announced through go-plugin's
//! broker. It answers only the plugin's own processes (peer uid and process
//! group, checked on every connection), over TLS when AutoMTLS is on, and
//! bounds what one plugin can make the host hold: connections, concurrent
//! calls, log lines.

mod services;

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

use crate::proto::plugvisor::v1::configuration_server::ConfigurationServer;
use crate::proto::plugvisor::v1::key_value_server::KeyValueServer;
use crate::proto::plugvisor::v1::log_server::LogServer;
use crate::store::Store;
use services::{
    ConfigurationService, KeyValueService, LOG_LINES_PER_SECOND, LogService, TokenBucket,
};

/// Connections one plugin may hold open to its host API at once.
pub(crate) const MAX_CONNECTIONS: usize = 8;
/// Calls one connection may have under way at once.
const MAX_CALLS_PER_CONNECTION: usize = 32;
/// Time a TLS handshake may take.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Which plugin is calling: inserted into every request's extensions, so
/// that an embedder's own host services know it
/// (`request.extensions().get::<CallerPlugin>()`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerPlugin(pub(crate) Arc<str>);

impl CallerPlugin {
    /// The calling plugin's id.
    pub fn id(&self) -> &str {
        &self.0
    }
}

/// What one plugin's host API serves.
pub(crate) struct HostApiContext {
    pub(crate) plugin_id: String,
    pub(crate) store: Store,
    pub(crate) configuration: Arc<dyn Fn() -> String + Send + Sync>,
    /// The embedder's own services.
    pub(crate) embedder: Routes,
}

/// A running host API server; dropping it stops it.
pub(crate) struct HostApi {
    address: PathBuf,
    stop: CancellationToken,
    accept: JoinHandle<()>,
}

impl HostApi {
    /// Listens in `socket_dir` for the plugin whose process group is `pgid`
    /// (any process of our user when it is not known).
    pub(crate) fn serve(
        context: HostApiContext,
        socket_dir: &Path,
        pgid: Option<u32>,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> std::io::Result<HostApi> {
        // The directory may be shared with other plugins' sockets: named
        // by the plugin's group, and unique even when a pid comes again.
        static SERVED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = SERVED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let group = pgid.map_or_else(|| "attached".to_string(), |g| g.to_string());
        let address = socket_dir.join(format!("host-api-{group}-{n}.sock"));
        let listener = UnixListener::bind(&address)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&address, std::fs::Permissions::from_mode(0o600))?;
        let stop = CancellationToken::new();
        let span = crate::stdio::plugin_span(&context.plugin_id);
        let (connections, incoming) = mpsc::channel(MAX_CONNECTIONS);
        let accept = tokio::spawn(accept(
            listener,
            pgid,
            tls.map(tokio_rustls::TlsAcceptor::from),
            connections,
            span.clone(),
        ));
        let caller = CallerPlugin(context.plugin_id.clone().into());
        let routes = context
            .embedder
            .add_service(LogServer::new(LogService {
                span,
                bucket: Mutex::new(TokenBucket::new(LOG_LINES_PER_SECOND)),
            }))
            .add_service(KeyValueServer::new(KeyValueService {
                plugin: context.plugin_id.clone(),
                store: context.store,
            }))
            .add_service(ConfigurationServer::new(ConfigurationService {
                current: context.configuration,
            }));
        let stopped = stop.clone();
        tokio::spawn(async move {
            let served = tonic::transport::Server::builder()
                .concurrency_limit_per_connection(MAX_CALLS_PER_CONNECTION)
                .layer(tower::util::MapRequestLayer::new(
                    move |mut request: tonic::codegen::http::Request<tonic::body::Body>| {
                        request.extensions_mut().insert(caller.clone());
                        request
                    },
                ))
                .add_routes(routes)
                .serve_with_incoming_shutdown(ReceiverStream::new(incoming), stopped.cancelled())
                .await;
            if let Err(error) = served {
                tracing::warn!(%error, "the host API server ended");
            }
        });
        Ok(HostApi {
            address,
            stop,
            accept,
        })
    }

    /// The socket path the plugin dials.
    pub(crate) fn address(&self) -> &Path {
        &self.address
    }
}

impl Drop for HostApi {
    fn drop(&mut self) {
        self.accept.abort();
        self.stop.cancel();
        let _ = std::fs::remove_file(&self.address);
    }
}

/// Accepts connections from the plugin's own processes only, up to
/// [`MAX_CONNECTIONS`] at once; never a busy loop on errors.
async fn accept(
    listener: UnixListener,
    pgid: Option<u32>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    connections: mpsc::Sender<std::io::Result<HostConn>>,
    span: tracing::Span,
) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                span.in_scope(|| tracing::warn!(%error, "host API accept failed"));
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if let Err(why) = from_the_plugin(&stream, pgid) {
            span.in_scope(|| tracing::warn!("refused a host API connection: {why}"));
            continue;
        }
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            span.in_scope(|| {
                tracing::warn!(
                    "refused a host API connection: the plugin already holds {MAX_CONNECTIONS}"
                )
            });
            continue;
        };
        match &tls {
            None => {
                let _ = connections.send(Ok(HostConn::new(stream, permit))).await;
            }
            Some(acceptor) => {
                let (acceptor, connections, span) =
                    (acceptor.clone(), connections.clone(), span.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            let _ = connections.send(Ok(HostConn::new(stream, permit))).await;
                        }
                        Ok(Err(error)) => span.in_scope(|| {
                            tracing::warn!(%error, "refused a host API connection: TLS handshake failed")
                        }),
                        Err(_) => span.in_scope(|| {
                            tracing::warn!("refused a host API connection: no TLS handshake within {TLS_HANDSHAKE_TIMEOUT:?}")
                        }),
                    }
                });
            }
        }
    }
}

/// The peer must run as our user and belong to the plugin's process group
/// (when it is known: an attached plugin's pid may not be).
fn from_the_plugin(stream: &UnixStream, pgid: Option<u32>) -> Result<(), String> {
    let credentials = stream
        .peer_cred()
        .map_err(|e| format!("its credentials cannot be read: {e}"))?;
    let me = nix::unistd::geteuid().as_raw();
    if credentials.uid() != me {
        return Err(format!("it comes from uid {}, not {me}", credentials.uid()));
    }
    let Some(pgid) = pgid else {
        return Ok(());
    };
    let pid = credentials
        .pid()
        .ok_or("its process is not known".to_string())?;
    let group = nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(pid)))
        .map_err(|e| format!("process {pid} is gone ({e})"))?;
    if group.as_raw() as u32 != pgid {
        return Err(format!(
            "process {pid} is not one of the plugin's (its process group is {group}, the plugin's {pgid})"
        ));
    }
    Ok(())
}

trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// One accepted connection, plain or TLS, holding its connection permit.
struct HostConn {
    io: Box<dyn Io>,
    _permit: OwnedSemaphorePermit,
}

impl HostConn {
    fn new(io: impl Io + 'static, permit: OwnedSemaphorePermit) -> HostConn {
        HostConn {
            io: Box::new(io),
            _permit: permit,
        }
    }
}

impl tonic::transport::server::Connected for HostConn {
    type ConnectInfo = ();
    fn connect_info(&self) -> Self::ConnectInfo {}
}

impl AsyncRead for HostConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for HostConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
