//! The page's event stream: every [`crate::Event`] as a server-sent event,
//! as it happens. A page that falls behind (more than the environment's
//! event buffer) gets `resync` instead of what it missed, and fetches the
//! table again; the host never waits for a slow page.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event as Sse, KeepAlive};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use tokio::sync::broadcast::error::RecvError;

use crate::{Environment, Event};

pub(crate) async fn stream(State(env): State<Environment>) -> Response {
    axum::response::Sse::new(events(env))
        // Keeps proxies from closing an idle stream; not a poll.
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

fn events(env: Environment) -> impl Stream<Item = Result<Sse, Infallible>> {
    let receiver = env.subscribe();
    let closing = env.closing();
    // First a `hello`: the page fetches the table after it, so nothing
    // between its fetch and its subscription is lost.
    futures::stream::unfold((receiver, true), move |(mut receiver, first)| {
        let closing = closing.clone();
        async move {
            if first {
                return Some((
                    Ok(Sse::default().event("hello").data("{}")),
                    (receiver, false),
                ));
            }
            let next = tokio::select! {
                next = receiver.recv() => next,
                // A shutdown ends the stream, so a graceful stop of the server
                // does not wait for the page.
                _ = closing.cancelled() => return None,
            };
            let sse = match next {
                Ok(event) => as_sse(&event),
                Err(RecvError::Lagged(missed)) => Sse::default()
                    .event("resync")
                    .data(format!("{{\"missed\":{missed}}}")),
                Err(RecvError::Closed) => return None,
            };
            Some((Ok(sse), (receiver, false)))
        }
    })
}

fn as_sse(event: &Event) -> Sse {
    let data = serde_json::to_string(event).unwrap_or_else(|_| "{}".into());
    Sse::default().event("plugin").data(data)
}
