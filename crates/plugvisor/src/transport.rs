//! A tonic `Channel` to the address a plugin announced in its handshake,
//! plaintext or, with AutoMTLS, over TLS pinned to the plugin's certificate.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tonic::transport::{Channel, Endpoint, Uri};

use crate::handshake::{Handshake, Network};

/// The host could not connect to the address a plugin announced.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
#[allow(missing_docs)] // each variant is its message
pub enum ConnectError {
    #[error("cannot connect to {address}: {source}")]
    Transport {
        address: String,
        source: tonic::transport::Error,
    },
    #[error("cannot connect to {address}: no answer within {after:?}")]
    Timeout { address: String, after: Duration },
    #[error("plugin announced unix socket {path}, which does not exist")]
    NoSocket { path: String },
}

/// A byte stream to the plugin: unix or tcp, with or without TLS.
trait PluginStream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> PluginStream for T {}

/// Connects eagerly, so a wrong address fails here and not on the first call.
pub async fn connect(
    handshake: &Handshake,
    timeout: Duration,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Result<Channel, ConnectError> {
    let address = handshake.address.clone();
    if handshake.network == Network::Unix && !std::path::Path::new(&address).exists() {
        return Err(ConnectError::NoSocket { path: address });
    }
    let network = handshake.network;
    let target = address.clone();
    // The URI is ignored: the connector always dials the announced address.
    let endpoint = Endpoint::from_static("http://plugin");
    let connecting = endpoint.connect_with_connector(tower::service_fn(move |_: Uri| {
        let target = target.clone();
        let tls = tls.clone();
        async move {
            let stream: Box<dyn PluginStream> = match network {
                Network::Unix => Box::new(tokio::net::UnixStream::connect(&target).await?),
                Network::Tcp => {
                    let stream = tokio::net::TcpStream::connect(&target).await?;
                    stream.set_nodelay(true)?;
                    Box::new(stream)
                }
            };
            let stream: Box<dyn PluginStream> = match tls {
                Some(config) => Box::new(
                    tokio_rustls::TlsConnector::from(config)
                        .connect(crate::tls::server_name(), stream)
                        .await?,
                ),
                None => stream,
            };
            Ok::<_, std::io::Error>(TokioIo::new(stream))
        }
    }));
    match tokio::time::timeout(timeout, connecting).await {
        Ok(Ok(channel)) => Ok(channel),
        Ok(Err(source)) => Err(ConnectError::Transport { address, source }),
        Err(_) => Err(ConnectError::Timeout {
            address,
            after: timeout,
        }),
    }
}
