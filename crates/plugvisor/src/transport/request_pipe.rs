//! A request's body, moved frame by frame onto its HTTP/2 stream.
//!
//! A body that is ready at once and small (every unary call) is written
//! while the call is made, with no task; anything else (a client stream, an
//! upload) gets a task of its own that takes a frame from the body only when
//! the plugin's flow-control window has room for it, so a big upload is
//! never buffered whole.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker, ready};

use h2::SendStream;
use http_body::Body as _;
use tonic::body::Body;
use tonic::codegen::Bytes;

/// At most this much of a body of known size is handed to h2 without
/// waiting for window: a unary message, not an upload.
const SEND_UNASKED: u64 = 64 * 1024;

/// Sends `body` on `stream`: at once when it can, else on a task.
pub(super) fn send(body: Body, stream: SendStream<Bytes>) {
    let small = body.size_hint().upper().is_some_and(|n| n <= SEND_UNASKED);
    let mut pipe = Pipe {
        body,
        stream,
        ask_window: !small,
    };
    // A no-op waker is enough here: a pipe that is not done is polled again
    // at once by its own task, which registers the real one.
    if Pin::new(&mut pipe)
        .poll(&mut Context::from_waker(Waker::noop()))
        .is_pending()
    {
        tokio::spawn(pipe);
    }
}

struct Pipe {
    body: Body,
    stream: SendStream<Bytes>,
    /// Take a frame from the body only once the window has room.
    ask_window: bool,
}

impl Future for Pipe {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let me = &mut *self;
        loop {
            if me.ask_window {
                me.stream.reserve_capacity(1);
                while me.stream.capacity() == 0 {
                    match ready!(me.stream.poll_capacity(cx)) {
                        Some(Ok(_)) => {}
                        Some(Err(error)) => return stopped(error),
                        None => return Poll::Ready(()),
                    }
                }
            }
            // The plugin may reset the stream while the body has nothing to
            // give: then the body is dropped, not waited for.
            if let Poll::Ready(reason) = me.stream.poll_reset(cx) {
                tracing::debug!(?reason, "the plugin reset a request stream");
                return Poll::Ready(());
            }
            let sent = match ready!(Pin::new(&mut me.body).poll_frame(cx)) {
                None => me.stream.send_data(Bytes::new(), true),
                Some(Err(error)) => {
                    tracing::debug!(%error, "a request body failed; resetting its stream");
                    me.stream.send_reset(h2::Reason::INTERNAL_ERROR);
                    return Poll::Ready(());
                }
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        let last = me.body.is_end_stream();
                        match me.stream.send_data(data, last) {
                            Ok(()) if !last => continue,
                            sent => sent,
                        }
                    }
                    Err(frame) => match frame.into_trailers() {
                        Ok(trailers) => me.stream.send_trailers(trailers),
                        Err(_) => continue, // a frame kind h2 has no use for
                    },
                },
            };
            return match sent {
                Ok(()) => Poll::Ready(()),
                Err(error) => stopped(error),
            };
        }
    }
}

fn stopped(error: h2::Error) -> Poll<()> {
    tracing::debug!(%error, "a request body could not be sent");
    Poll::Ready(())
}
