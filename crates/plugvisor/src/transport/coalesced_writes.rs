//! Fewer, larger writes on a plugin's connection.
//!
//! A health check written by h2 as it comes is three writes, each of which
//! wakes the plugin: the request's HEADERS (h2 opens the stream, and gives
//! it room to send, only when the connection task runs), then its DATA, and
//! later the ack of the PING that grpc-go's server sends after every request
//! it reads data from (its bandwidth estimate). At a thousand plugins those
//! writes are most of the host's idle CPU. This stream makes them one:
//! - a flush waits one turn of the runtime, so that what other tasks hand h2
//!   in that turn (the request body after its headers) goes in the same
//!   write;
//! - a flush that would send nothing but acks of grpc-go's bandwidth pings
//!   keeps them for the next write. grpc-go sends no new bandwidth ping until
//!   the last one is acked and never times one out, so the ack only has to
//!   arrive, and it does, in front of the next request. Keepalive pings,
//!   which a server does time out, carry other data and are acked at once.
//!
//! Bytes are never reordered, only sent later, and a shutdown sends them all.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A PING frame with the ACK flag on stream 0 (RFC 9113 6.7), the payload
/// grpc-go puts in every bandwidth-estimation ping (`bdpPing` in its
/// transport); 17 bytes.
const BDP_PING_ACK: [u8; 17] = [
    0, 0, 8, // length
    6, // PING
    1, // ACK
    0, 0, 0, 0, // stream 0
    2, 4, 16, 16, 9, 14, 7, 7, // grpc-go's bdpPing data
];

/// Above this many unsent bytes a write first sends what is held.
const HOLD_AT_MOST: usize = 64 * 1024;

/// Capacity kept between writes; a larger buffer (after a big body) is let go.
const KEEP_CAPACITY: usize = 4 * 1024;

pub(super) struct CoalescedWrites<S> {
    inner: S,
    /// Bytes accepted but not yet written, from `sent` on.
    unsent: Vec<u8>,
    sent: usize,
    /// A flush has waited its one turn.
    waited: bool,
}

impl<S> CoalescedWrites<S> {
    pub(super) fn new(inner: S) -> Self {
        CoalescedWrites {
            inner,
            unsent: Vec::new(),
            sent: 0,
            waited: false,
        }
    }

    fn held(&self) -> &[u8] {
        &self.unsent[self.sent..]
    }

    /// Only acks of grpc-go's bandwidth pings are waiting. What is held always
    /// starts at a frame: h2 hands over whole frames and every write it makes
    /// is taken whole.
    fn only_bandwidth_acks(&self) -> bool {
        let held = self.held();
        !held.is_empty()
            && held.len().is_multiple_of(BDP_PING_ACK.len())
            && held
                .chunks(BDP_PING_ACK.len())
                .all(|frame| frame == BDP_PING_ACK)
    }
}

impl<S: AsyncWrite + Unpin> CoalescedWrites<S> {
    /// Writes everything held.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.unsent.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.unsent[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.sent = 0;
        self.unsent.clear();
        if self.unsent.capacity() > KEEP_CAPACITY {
            self.unsent = Vec::new();
        }
        Poll::Ready(Ok(()))
    }

    fn poll_room(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.held().len() >= HOLD_AT_MOST {
            ready!(self.poll_send(cx))?;
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for CoalescedWrites<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_room(cx))?;
        this.unsent.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_room(cx))?;
        let mut n = 0;
        for buf in bufs {
            this.unsent.extend_from_slice(buf);
            n += buf.len();
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.held().is_empty() || this.only_bandwidth_acks() {
            this.waited = false;
            return Pin::new(&mut this.inner).poll_flush(cx);
        }
        if !this.waited {
            // One turn: the tasks already woken (a request's body) run first.
            this.waited = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        ready!(this.poll_send(cx))?;
        this.waited = false;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for CoalescedWrites<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;
    use std::sync::{Arc, Mutex};

    use tokio::io::AsyncWriteExt;

    use super::*;

    /// Records every write it is given.
    #[derive(Clone, Default)]
    struct Recorder(Arc<Mutex<Vec<Vec<u8>>>>);

    impl Recorder {
        fn writes(&self) -> Vec<Vec<u8>> {
            self.0.lock().unwrap().clone()
        }
    }

    impl AsyncWrite for Recorder {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.0.lock().unwrap().push(buf.to_vec());
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn recorded() -> (Recorder, CoalescedWrites<Recorder>) {
        let recorder = Recorder::default();
        (recorder.clone(), CoalescedWrites::new(recorder))
    }

    /// Writes and flushes, as h2 does.
    async fn send(stream: &mut CoalescedWrites<Recorder>, bytes: &[u8]) {
        stream.write_all(bytes).await.unwrap();
        stream.flush().await.unwrap();
    }

    fn flush_once(stream: &mut CoalescedWrites<Recorder>) -> Poll<io::Result<()>> {
        let waker = std::task::Waker::noop();
        Pin::new(stream).poll_flush(&mut Context::from_waker(waker))
    }

    #[tokio::test]
    async fn a_flush_waits_one_turn_and_what_came_in_it_goes_in_the_same_write() {
        let (recorder, mut stream) = recorded();
        stream.write_all(b"headers").await.unwrap();
        assert!(
            flush_once(&mut stream).is_pending(),
            "the first flush waits a turn"
        );
        assert!(recorder.writes().is_empty());
        stream.write_all(b"+data").await.unwrap();
        assert!(matches!(flush_once(&mut stream), Poll::Ready(Ok(()))));
        assert_eq!(recorder.writes(), vec![b"headers+data".to_vec()]);
        // The wait wakes the task itself: a plain flush finishes.
        stream.write_all(b"more").await.unwrap();
        poll_fn(|cx| Pin::new(&mut stream).poll_flush(cx))
            .await
            .unwrap();
        assert_eq!(recorder.writes().len(), 2);
    }

    #[tokio::test]
    async fn acks_of_grpc_gos_bandwidth_pings_wait_for_the_next_write() {
        let (recorder, mut stream) = recorded();
        send(&mut stream, &BDP_PING_ACK).await;
        assert!(recorder.writes().is_empty(), "a lone bandwidth ack is held");
        send(&mut stream, b"request").await;
        let mut expected = BDP_PING_ACK.to_vec();
        expected.extend_from_slice(b"request");
        assert_eq!(recorder.writes(), vec![expected], "in order, in one write");
    }

    #[tokio::test]
    async fn any_other_ping_ack_goes_at_once() {
        let (recorder, mut stream) = recorded();
        // A keepalive ping's ack: the server times it out.
        let mut keepalive = BDP_PING_ACK;
        keepalive[9..].fill(0);
        send(&mut stream, &keepalive).await;
        assert_eq!(recorder.writes(), vec![keepalive.to_vec()]);
        // A bandwidth ack with other frames behind it is no reason to wait.
        let mut both = BDP_PING_ACK.to_vec();
        both.extend_from_slice(b"window update");
        send(&mut stream, &both).await;
        assert_eq!(recorder.writes().len(), 2);
    }

    #[tokio::test]
    async fn a_shutdown_sends_what_is_held() {
        let (recorder, mut stream) = recorded();
        send(&mut stream, &BDP_PING_ACK).await;
        stream.shutdown().await.unwrap();
        assert_eq!(recorder.writes(), vec![BDP_PING_ACK.to_vec()]);
    }
}
