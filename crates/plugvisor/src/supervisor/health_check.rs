//! The health check call, `grpc.health.v1.Health/Check`, with buffers sized
//! to its messages.
//!
//! tonic's generated client gives every call an 8 KiB encode buffer and an
//! 8 KiB decode buffer. The request here is 8 bytes and the answer 2: at a
//! thousand plugins checked every few seconds, allocating and freeing those
//! two blocks was a large part of the host's idle CPU (glibc consolidates
//! its free lists on blocks that size).

use std::marker::PhantomData;

use tonic::codec::{BufferSettings, Codec};
use tonic::codegen::http::uri::PathAndQuery;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tonic_prost::ProstCodec;

use crate::transport::PluginChannel;

const PATH: &str = "/grpc.health.v1.Health/Check";

/// Room for a health message with its 5-byte frame header; a larger one
/// grows the buffer as usual.
const BUFFERS: usize = 64;

/// One Check of `service` on the plugin's connection.
pub(super) async fn check(
    channel: PluginChannel,
    service: &str,
) -> Result<HealthCheckResponse, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|error| tonic::Status::unavailable(error.to_string()))?;
    let request = tonic::Request::new(HealthCheckRequest {
        service: service.to_string(),
    });
    let codec = SmallBuffers::<HealthCheckRequest, HealthCheckResponse>(PhantomData);
    let response = grpc
        .unary(request, PathAndQuery::from_static(PATH), codec)
        .await?;
    Ok(response.into_inner())
}

/// tonic's prost codec with small buffers.
struct SmallBuffers<T, U>(PhantomData<(T, U)>);

impl<T, U> Codec for SmallBuffers<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = <ProstCodec<T, U> as Codec>::Encoder;
    type Decoder = <ProstCodec<T, U> as Codec>::Decoder;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(settings())
    }
}

fn settings() -> BufferSettings {
    // The yield threshold is tonic's default; a health message never reaches it.
    BufferSettings::new(BUFFERS, 32 * 1024)
}
