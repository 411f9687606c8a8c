//! The health check call, `grpc.health.v1.Health/Check`, made straight on
//! the plugin's HTTP/2 connection.
//!
//! At a thousand plugins the check is nearly all the host does when idle,
//! so it skips what a generic tonic call carries and this one never needs:
//! the request is encoded once per call into one exact buffer, the answer is
//! read as the one frame it is, and a plugin that answers SERVING with
//! grpc-status 0 costs no `Status`, metadata map or streaming decoder. Any
//! other answer is turned into the `tonic::Status` a tonic client would give.

use http_body_util::{BodyExt, Full};
use prost::Message;
use tonic::codegen::Bytes;
use tonic::codegen::http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tower::Service;

use crate::transport::{ChannelError, PluginChannel};

const PATH: &str = "/grpc.health.v1.Health/Check";

/// One Check of `service` on the plugin's connection.
pub(super) async fn check(
    mut channel: PluginChannel,
    service: &str,
) -> Result<HealthCheckResponse, tonic::Status> {
    std::future::poll_fn(|cx| channel.poll_ready(cx))
        .await
        .map_err(status_of)?;
    let response = channel.call(request(service)).await.map_err(status_of)?;
    let (head, mut body) = response.into_parts();
    if head.status != StatusCode::OK {
        return Err(tonic::Status::unknown(format!(
            "the plugin answered HTTP {}",
            head.status
        )));
    }
    // A "trailers-only" answer (an error at once) has grpc-status here.
    failed(&head.headers)?;
    let mut message = Vec::new();
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|error| status_of(Box::new(error)))?;
        match frame.into_data() {
            Ok(data) => message.extend_from_slice(&data),
            Err(frame) => trailers = frame.into_trailers().ok(),
        }
    }
    match &trailers {
        Some(trailers) => failed(trailers)?,
        None if head.headers.contains_key("grpc-status") => {}
        None => return Err(tonic::Status::internal("the answer has no grpc-status")),
    }
    decode(&message)
}

/// POST with the request as one length-prefixed, uncompressed gRPC message.
fn request(service: &str) -> Request<tonic::body::Body> {
    let message = HealthCheckRequest {
        service: service.to_string(),
    };
    let length = message.encoded_len();
    let mut frame = Vec::with_capacity(5 + length);
    frame.push(0);
    frame.extend_from_slice(&(length as u32).to_be_bytes());
    message
        .encode(&mut frame)
        .expect("a Vec grows to fit the message");
    let mut request = Request::new(tonic::body::Body::new(Full::new(Bytes::from(frame))));
    *request.method_mut() = Method::POST;
    *request.uri_mut() = tonic::codegen::http::Uri::from_static(PATH);
    let headers = request.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert(header::TE, HeaderValue::from_static("trailers"));
    request
}

/// Err when `headers` carry a grpc-status other than 0.
fn failed(headers: &HeaderMap) -> Result<(), tonic::Status> {
    match headers.get("grpc-status") {
        None => Ok(()),
        Some(code) if code.as_bytes() == b"0" => Ok(()),
        Some(_) => Err(tonic::Status::from_header_map(headers)
            .unwrap_or_else(|| tonic::Status::unknown("unreadable grpc-status"))),
    }
}

fn decode(message: &[u8]) -> Result<HealthCheckResponse, tonic::Status> {
    let (header, payload) = match message.split_at_checked(5) {
        Some(split) => split,
        None => return Err(tonic::Status::internal("the answer has no message")),
    };
    if header[0] != 0 {
        return Err(tonic::Status::internal(
            "the answer is compressed, which was not asked for",
        ));
    }
    let length = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    if payload.len() != length {
        return Err(tonic::Status::internal(format!(
            "the answer's message is {} bytes, its frame says {length}",
            payload.len()
        )));
    }
    HealthCheckResponse::decode(payload)
        .map_err(|error| tonic::Status::internal(format!("unreadable answer: {error}")))
}

/// The status a tonic client gives for a failed call on the channel.
fn status_of(error: ChannelError) -> tonic::Status {
    match error.downcast::<tonic::Status>() {
        Ok(status) => *status,
        Err(error) => tonic::Status::from_error(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(message: &impl Message) -> Vec<u8> {
        let mut frame = vec![0];
        frame.extend_from_slice(&(message.encoded_len() as u32).to_be_bytes());
        message.encode(&mut frame).unwrap();
        frame
    }

    #[test]
    fn a_framed_answer_decodes_and_a_cut_or_compressed_one_is_refused() {
        let answer = HealthCheckResponse { status: 1 };
        assert_eq!(decode(&framed(&answer)).unwrap(), answer);
        let mut cut = framed(&answer);
        cut.pop();
        assert_eq!(decode(&cut).unwrap_err().code(), tonic::Code::Internal);
        let mut compressed = framed(&answer);
        compressed[0] = 1;
        assert_eq!(
            decode(&compressed).unwrap_err().code(),
            tonic::Code::Internal
        );
        assert_eq!(decode(&[]).unwrap_err().code(), tonic::Code::Internal);
    }

    #[test]
    fn a_grpc_status_other_than_zero_is_the_plugins_error() {
        let mut headers = HeaderMap::new();
        assert!(failed(&headers).is_ok());
        headers.insert("grpc-status", HeaderValue::from_static("0"));
        assert!(failed(&headers).is_ok());
        headers.insert("grpc-status", HeaderValue::from_static("5"));
        headers.insert(
            "grpc-message",
            HeaderValue::from_static("no%20such%20service"),
        );
        let status = failed(&headers).unwrap_err();
        assert_eq!(status.code(), tonic::Code::NotFound);
        assert_eq!(status.message(), "no such service");
    }
}
