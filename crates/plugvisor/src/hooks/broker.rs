//! go-plugin's broker, host side, non-multiplexed: one `StartStream` call per
//! plugin process, kept open, on which the host announces where it listens
//! for a service id. The plugin dials that address, as go-plugin's own
//! `broker.Dial(id)` does.

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tracing::Instrument;

use crate::proto::plugin::ConnInfo;
use crate::proto::plugin::grpc_broker_client::GrpcBrokerClient;
use crate::transport::PluginChannel;

/// The broker id the host API is announced under. Any non-zero id works;
/// plugins must take it from OnActivate, not assume it.
pub(crate) const HOST_API_SERVICE_ID: u32 = 1;

/// Most announcements the plugin may send the host before they are read; the
/// host reads them only to log them (it dials nothing a plugin offers).
const BACKLOG: usize = 16;

pub(crate) struct Broker {
    outgoing: mpsc::Sender<ConnInfo>,
    stream: JoinHandle<()>,
}

impl Broker {
    /// Opens the stream. It stays open until the Broker is dropped; what it
    /// logs goes in `span` (the plugin's).
    pub(crate) fn open(channel: PluginChannel, span: tracing::Span) -> Broker {
        let (outgoing, requests) = mpsc::channel(BACKLOG);
        let stream = tokio::spawn(async move {
            let mut client = GrpcBrokerClient::new(channel);
            let mut incoming = match client.start_stream(ReceiverStream::new(requests)).await {
                Ok(response) => response.into_inner(),
                // A plugin that claims a broker it lacks: the operator should know.
                Err(status) if status.code() == tonic::Code::Unimplemented => {
                    tracing::warn!("the plugin reports plugin.GRPCBroker but does not serve StartStream; it gets no host API connection");
                    return;
                }
                // The plugin went away (a stop, a crash): nothing to say here.
                Err(status) => {
                    tracing::debug!(code = ?status.code(), message = status.message(), "the broker stream ended");
                    return;
                }
            };
            // Plugins may announce services of their own; plugvisor does not dial them.
            while let Ok(Some(info)) = incoming.message().await {
                tracing::debug!(
                    service_id = info.service_id,
                    network = %info.network.chars().take(20).collect::<String>(),
                    "the plugin announced a brokered service; plugvisor does not dial plugin-offered services"
                );
            }
        }.instrument(span));
        Broker { outgoing, stream }
    }

    /// Tells the plugin where service `id` listens.
    pub(crate) async fn announce(&self, id: u32, network: &str, address: &str) -> bool {
        let info = ConnInfo {
            service_id: id,
            network: network.to_string(),
            address: address.to_string(),
            knock: None,
        };
        self.outgoing.send(info).await.is_ok()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stream.abort();
    }
}
