//! The gRPC connection to a plugin: hyper's HTTP/2 client on a stream to the
//! address it announced in its handshake, plaintext or, with AutoMTLS, over
//! TLS pinned to the plugin's certificate.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tonic::body::Body;
use tonic::codegen::http::uri::{Authority, PathAndQuery, Scheme};
use tonic::codegen::http::{Request, Response, Uri};

use crate::handshake::{Handshake, Network};

mod coalesced_writes;
use coalesced_writes::CoalescedWrites;

/// The host could not connect to the address a plugin announced.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
#[allow(missing_docs)] // each variant is its message
pub enum ConnectError {
    #[error("cannot connect to {address}: {source}")]
    Io {
        address: String,
        source: std::io::Error,
    },
    #[error("cannot connect to {address}: HTTP/2: {source}")]
    Http2 {
        address: String,
        source: hyper::Error,
    },
    #[error("cannot connect to {address}: no answer within {after:?}")]
    Timeout { address: String, after: Duration },
    #[error("plugin announced unix socket {path}, which does not exist")]
    NoSocket { path: String },
}

/// The connection to one plugin, for any tonic client
/// (`MyServiceClient::new(channel)`); clones share it.
///
/// It is dialed once: there is no reconnect (a plugin that went away is
/// restarted, with a new connection) and no request buffer in front of it,
/// so a call costs no extra task and a plugin no extra worker. A call on a
/// closed connection fails with UNAVAILABLE.
#[derive(Debug, Clone)]
pub struct PluginChannel {
    send: http2::SendRequest<Body>,
}

/// What a call on a [`PluginChannel`] fails with: a `tonic::Status`
/// (UNAVAILABLE once the connection is gone) or hyper's error, which tonic
/// maps to a status.
pub type ChannelError = Box<dyn std::error::Error + Send + Sync>;

/// The future of one call on a [`PluginChannel`].
pub type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<Response<hyper::body::Incoming>, ChannelError>> + Send>>;

impl tower::Service<Request<Body>> for PluginChannel {
    type Response = Response<hyper::body::Incoming>;
    type Error = ChannelError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ChannelError>> {
        self.send.poll_ready(cx).map_err(gone)
    }

    fn call(&mut self, mut request: Request<Body>) -> ResponseFuture {
        // tonic's clients give a path; HTTP/2 wants :scheme and :authority.
        // The path moves over as it is (no copy, no parse).
        let mut parts = std::mem::take(request.uri_mut()).into_parts();
        parts.scheme = Some(Scheme::HTTP);
        parts.authority = Some(Authority::from_static("plugin"));
        parts
            .path_and_query
            .get_or_insert_with(|| PathAndQuery::from_static("/"));
        *request.uri_mut() =
            Uri::from_parts(parts).unwrap_or_else(|_| Uri::from_static("http://plugin/"));
        let sending = self.send.send_request(request);
        Box::pin(async move {
            sending.await.map_err(|error| {
                if error.is_closed() || error.is_canceled() {
                    gone(error)
                } else {
                    Box::new(error) as ChannelError
                }
            })
        })
    }
}

/// The connection closed: UNAVAILABLE, as a gRPC client says when nothing
/// answers any more.
fn gone(error: hyper::Error) -> ChannelError {
    Box::new(tonic::Status::unavailable(format!(
        "the plugin's connection is closed: {error}"
    )))
}

/// A byte stream to the plugin: unix or tcp, with or without TLS.
trait PluginStream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> PluginStream for T {}

/// Connects eagerly, so a wrong address fails here and not on the first call.
/// The connection runs on a task of the caller's runtime until every clone
/// of the channel is dropped or the plugin closes it.
pub async fn connect(
    handshake: &Handshake,
    timeout: Duration,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Result<PluginChannel, ConnectError> {
    let address = handshake.address.clone();
    if handshake.network == Network::Unix && !std::path::Path::new(&address).exists() {
        return Err(ConnectError::NoSocket { path: address });
    }
    match tokio::time::timeout(timeout, dial(handshake.network, &address, tls)).await {
        Ok(result) => result,
        Err(_) => Err(ConnectError::Timeout {
            address,
            after: timeout,
        }),
    }
}

async fn dial(
    network: Network,
    address: &str,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Result<PluginChannel, ConnectError> {
    let io = |source| ConnectError::Io {
        address: address.to_string(),
        source,
    };
    let stream: Box<dyn PluginStream> = match network {
        Network::Unix => Box::new(tokio::net::UnixStream::connect(address).await.map_err(io)?),
        Network::Tcp => {
            let stream = tokio::net::TcpStream::connect(address).await.map_err(io)?;
            stream.set_nodelay(true).map_err(io)?;
            Box::new(stream)
        }
    };
    let stream: Box<dyn PluginStream> = match tls {
        Some(config) => Box::new(
            tokio_rustls::TlsConnector::from(config)
                .connect(crate::tls::server_name(), stream)
                .await
                .map_err(io)?,
        ),
        None => stream,
    };
    let (send, connection) = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .handshake(TokioIo::new(CoalescedWrites::new(stream)))
        .await
        .map_err(|source| ConnectError::Http2 {
            address: address.to_string(),
            source,
        })?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "the plugin's connection ended");
        }
    });
    Ok(PluginChannel { send })
}
