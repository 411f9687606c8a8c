//! The gRPC connection to a plugin: an HTTP/2 client (h2, driven directly)
//! on a stream to the address it announced in its handshake, plaintext or,
//! with AutoMTLS, over TLS pinned to the plugin's certificate.
//!
//! h2 is driven without hyper's client on top: a call hands its request to
//! the connection and awaits the answer from it, with no dispatch task in
//! between and no task per call (a small body is written while the call is
//! made). At a thousand plugins the health checks are most of what the host
//! does, and those hops were a tenth of each.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tonic::body::Body;
use tonic::codegen::Bytes;
use tonic::codegen::http::uri::{Authority, PathAndQuery, Scheme};
use tonic::codegen::http::{Request, Response, Uri};

use crate::handshake::{Handshake, Network};

mod coalesced_writes;
mod request_pipe;
mod response_body;
use coalesced_writes::CoalescedWrites;
pub use response_body::ResponseBody;

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
    Http2 { address: String, source: h2::Error },
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
    send: h2::client::SendRequest<Bytes>,
}

/// What a call on a [`PluginChannel`] fails with: a `tonic::Status`
/// (UNAVAILABLE once the connection is gone) or h2's error, which tonic
/// maps to a status.
pub type ChannelError = Box<dyn std::error::Error + Send + Sync>;

/// The future of one call on a [`PluginChannel`].
pub type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<Response<ResponseBody>, ChannelError>> + Send>>;

impl tower::Service<Request<Body>> for PluginChannel {
    type Response = Response<ResponseBody>;
    type Error = ChannelError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ChannelError>> {
        self.send.poll_ready(cx).map_err(gone)
    }

    fn call(&mut self, request: Request<Body>) -> ResponseFuture {
        let (mut head, body) = request.into_parts();
        // tonic's clients give a path; HTTP/2 wants :scheme and :authority.
        // The path moves over as it is (no copy, no parse).
        let mut parts = std::mem::take(&mut head.uri).into_parts();
        parts.scheme = Some(Scheme::HTTP);
        parts.authority = Some(Authority::from_static("plugin"));
        parts
            .path_and_query
            .get_or_insert_with(|| PathAndQuery::from_static("/"));
        head.uri = Uri::from_parts(parts).unwrap_or_else(|_| Uri::from_static("http://plugin/"));
        let empty = http_body::Body::is_end_stream(&body);
        let answer = match self.send.send_request(Request::from_parts(head, ()), empty) {
            Ok((answer, stream)) => {
                if !empty {
                    request_pipe::send(body, stream);
                }
                answer
            }
            Err(error) => return Box::pin(std::future::ready(Err(failed(error)))),
        };
        Box::pin(async move {
            let response = answer.await.map_err(failed)?;
            Ok(response.map(ResponseBody::new))
        })
    }
}

/// The connection closed: UNAVAILABLE, as a gRPC client says when nothing
/// answers any more.
fn gone(error: h2::Error) -> ChannelError {
    Box::new(tonic::Status::unavailable(format!(
        "the plugin's connection is closed: {error}"
    )))
}

/// A call that failed: UNAVAILABLE when the connection is gone, else h2's
/// error for tonic to map (a reset stream, a malformed answer).
fn failed(error: h2::Error) -> ChannelError {
    if error.is_io() || error.is_go_away() {
        gone(error)
    } else {
        Box::new(error)
    }
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
    handshake(stream)
        .await
        .map_err(|source| ConnectError::Http2 {
            address: address.to_string(),
            source,
        })
}

/// HTTP/2 on a dialed stream, with hyper's client defaults (which the
/// plugins were served with before).
async fn handshake<S: AsyncRead + AsyncWrite + Send + Unpin + 'static>(
    stream: S,
) -> Result<PluginChannel, h2::Error> {
    let (send, connection) = h2::client::Builder::new()
        .initial_window_size(2 * 1024 * 1024)
        .initial_connection_window_size(5 * 1024 * 1024)
        .max_frame_size(16 * 1024)
        .max_send_buffer_size(1024 * 1024)
        .max_header_list_size(16 * 1024)
        .initial_max_send_streams(100)
        .enable_push(false)
        .handshake::<_, Bytes>(CoalescedWrites::new(stream))
        .await?;
    // Ends once every clone of the channel and every call on it is dropped
    // (h2 then says goodbye), or when the plugin closes the connection.
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "the plugin's connection ended");
        }
    });
    Ok(PluginChannel { send })
}

#[cfg(test)]
mod tests;
