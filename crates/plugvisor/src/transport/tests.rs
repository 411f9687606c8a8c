//! PluginChannel against a real h2 server on an in-memory stream.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use http_body::Frame;
use http_body_util::{BodyExt, Full, StreamBody};
use tokio::io::DuplexStream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::http::HeaderMap;
use tower::Service;

use super::*;

type Call = (Request<h2::RecvStream>, h2::server::SendResponse<Bytes>);

/// A plugin's side: every call it is sent, with `window` bytes of room per
/// stream.
fn serve(stream: DuplexStream, window: u32) -> mpsc::Receiver<Call> {
    let (calls, received) = mpsc::channel(4);
    tokio::spawn(async move {
        let mut connection = h2::server::Builder::new()
            .initial_window_size(window)
            .handshake::<_, Bytes>(stream)
            .await
            .expect("server handshake");
        while let Some(Ok(call)) = connection.accept().await {
            if calls.send(call).await.is_err() {
                break;
            }
        }
    });
    received
}

async fn channel_to(window: u32) -> (PluginChannel, mpsc::Receiver<Call>) {
    let (client, server) = tokio::io::duplex(1 << 20);
    let calls = serve(server, window);
    (handshake(client).await.expect("client handshake"), calls)
}

async fn call(channel: &mut PluginChannel, body: Body) -> ResponseFuture {
    std::future::poll_fn(|cx| channel.poll_ready(cx))
        .await
        .expect("ready");
    channel.call(Request::post("/plugin.Test/Call").body(body).unwrap())
}

/// A body fed by the test, one frame at a time; its size is not known.
fn fed_body() -> (mpsc::Sender<Result<Frame<Bytes>, tonic::Status>>, Body) {
    let (feed, frames) = mpsc::channel(1);
    (
        feed,
        Body::new(StreamBody::new(ReceiverStream::new(frames))),
    )
}

#[tokio::test]
async fn a_call_carries_its_body_out_and_brings_the_answer_and_its_trailers_back() {
    let (mut channel, mut calls) = channel_to(65_535).await;
    let answer = call(
        &mut channel,
        Body::new(Full::new(Bytes::from_static(b"ping"))),
    )
    .await;

    let (request, mut respond) = calls.recv().await.expect("the call arrives");
    assert_eq!(request.uri(), "http://plugin/plugin.Test/Call");
    let mut body = request.into_body();
    let mut sent = Vec::new();
    while let Some(data) = body.data().await {
        sent.extend_from_slice(&data.expect("data"));
    }
    assert_eq!(sent, b"ping");
    let mut stream = respond
        .send_response(Response::new(()), false)
        .expect("headers");
    stream
        .send_data(Bytes::from_static(b"pong"), false)
        .expect("data");
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", "0".parse().unwrap());
    stream.send_trailers(trailers).expect("trailers");

    let answer = answer.await.expect("an answer").into_body().collect().await;
    let answer = answer.expect("its body");
    assert_eq!(answer.trailers().expect("trailers")["grpc-status"], "0");
    assert_eq!(answer.to_bytes(), "pong");
}

#[tokio::test]
async fn a_body_waiting_for_its_next_frame_is_dropped_when_the_plugin_resets_the_stream() {
    let (mut channel, mut calls) = channel_to(65_535).await;
    let (feed, body) = fed_body();
    let answer = call(&mut channel, body).await;

    let (_request, mut respond) = calls.recv().await.expect("the call arrives");
    respond.send_reset(h2::Reason::CANCEL);

    tokio::time::timeout(Duration::from_secs(30), feed.closed())
        .await
        .expect("the reset stream's body is dropped, not kept waiting");
    assert!(answer.await.is_err(), "a reset call has no answer");
}

#[tokio::test]
async fn a_big_body_is_taken_only_as_fast_as_the_plugin_gives_window() {
    const CHUNK: usize = 16 * 1024;
    const CHUNKS: usize = 100;
    let (mut channel, mut calls) = channel_to(65_535).await;
    let (feed, body) = fed_body();
    let answer = call(&mut channel, body).await;
    let taken = Arc::new(AtomicUsize::new(0));
    let counted = taken.clone();
    let feeder = tokio::spawn(async move {
        for i in 0..CHUNKS {
            let chunk = Bytes::from(vec![(i % 251) as u8; CHUNK]);
            if feed.send(Ok(Frame::data(chunk))).await.is_err() {
                return;
            }
            counted.fetch_add(1, Ordering::SeqCst);
        }
    });

    let (request, _respond) = calls.recv().await.expect("the call arrives");
    let mut body = request.into_body();
    // Read a window's worth without giving any of it back.
    let mut received = Vec::new();
    while received.len() < 60_000 {
        received.extend_from_slice(&body.data().await.expect("more data").expect("data"));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let early = taken.load(Ordering::SeqCst);
    // A window of 64 KiB is 4 chunks; one more may wait in h2, one in the
    // feed and one in the feeder's hand.
    assert!(
        early <= 8,
        "{early} of {CHUNKS} chunks were taken from the body with no window to send them"
    );

    let _ = body.flow_control().release_capacity(received.len());
    while let Some(data) = body.data().await {
        let data = data.expect("data");
        let _ = body.flow_control().release_capacity(data.len());
        received.extend_from_slice(&data);
    }
    feeder.await.unwrap();
    assert_eq!(received.len(), CHUNK * CHUNKS);
    for (i, chunk) in received.chunks(CHUNK).enumerate() {
        assert!(
            chunk.iter().all(|&b| b == (i % 251) as u8),
            "chunk {i} arrived intact and in order"
        );
    }
    drop(answer);
}
