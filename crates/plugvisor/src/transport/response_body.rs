//! The body of a plugin's answer: its DATA frames, then its trailers (where
//! gRPC puts grpc-status).

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http_body::{Body, Frame, SizeHint};
use tonic::codegen::Bytes;
use tonic::codegen::http::HeaderMap;

/// The body of a response on a [`PluginChannel`](super::PluginChannel).
#[derive(Debug)]
pub struct ResponseBody {
    stream: h2::RecvStream,
    data_done: bool,
}

impl ResponseBody {
    pub(super) fn new(stream: h2::RecvStream) -> Self {
        ResponseBody {
            stream,
            data_done: false,
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        let me = &mut *self;
        if !me.data_done {
            match ready!(me.stream.poll_data(cx)) {
                Some(Ok(data)) => {
                    // Read, so the plugin may send that much more.
                    let _ = me.stream.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                // The plugin ended the stream early but cleanly: the body
                // ends, as a server that stops reading would have it.
                Some(Err(error))
                    if matches!(
                        error.reason(),
                        Some(h2::Reason::NO_ERROR | h2::Reason::CANCEL)
                    ) =>
                {
                    return Poll::Ready(None);
                }
                Some(Err(error)) => return Poll::Ready(Some(Err(error))),
                None => me.data_done = true,
            }
        }
        let trailers: Result<Option<HeaderMap>, h2::Error> = ready!(me.stream.poll_trailers(cx));
        Poll::Ready(trailers.transpose().map(|t| t.map(Frame::trailers)))
    }

    fn is_end_stream(&self) -> bool {
        self.stream.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
