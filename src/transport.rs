//! A tonic `Channel` to the address a plugin announced in its handshake.

use std::path::PathBuf;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::handshake::{Handshake, Network};

#[derive(Debug, thiserror::Error)]
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

/// Connects eagerly, so a wrong address fails here and not on the first call.
pub async fn connect(handshake: &Handshake, timeout: Duration) -> Result<Channel, ConnectError> {
    let address = handshake.address.clone();
    let transport_error = |source| ConnectError::Transport {
        address: address.clone(),
        source,
    };
    let connecting = async {
        match handshake.network {
            Network::Tcp => {
                Endpoint::from_shared(format!("http://{address}"))
                    .map_err(transport_error)?
                    .tcp_nodelay(true)
                    .connect()
                    .await
            }
            Network::Unix => {
                let path = PathBuf::from(&address);
                if !path.exists() {
                    return Err(ConnectError::NoSocket {
                        path: address.clone(),
                    });
                }
                // The URI is ignored: the connector always dials the socket.
                Endpoint::from_static("http://plugin")
                    .connect_with_connector(tower::service_fn(move |_: Uri| {
                        let path = path.clone();
                        async move {
                            let stream = tokio::net::UnixStream::connect(path).await?;
                            Ok::<_, std::io::Error>(TokioIo::new(stream))
                        }
                    }))
                    .await
            }
        }
        .map_err(transport_error)
    };
    tokio::time::timeout(timeout, connecting)
        .await
        .map_err(|_| ConnectError::Timeout {
            address: address.clone(),
            after: timeout,
        })?
}
