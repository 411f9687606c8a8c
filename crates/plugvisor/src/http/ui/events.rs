//! The page's event stream: first a `snapshot` of every status, then every
//! [`crate::Event`] as a server-sent event, as it happens. A page that falls
//! behind (more than the environment's event buffer) gets a new `snapshot`
//! instead of what it missed (with how many that was); the host never waits
//! for a slow page. The stream ends when the environment shuts down, so a
//! graceful stop of the server does not wait for the page.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event as Sse, KeepAlive};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::RecvError;

use crate::{Environment, Event};

pub(crate) async fn stream(State(env): State<Environment>) -> Response {
    axum::response::Sse::new(events(env))
        // Keeps proxies from closing an idle stream; not a poll.
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

/// Where the stream is: before its snapshot, or following the events.
struct Follow {
    env: Environment,
    receiver: Receiver<Event>,
    /// The events before the subscription, until the first snapshot sends them.
    recent: Option<Vec<Event>>,
}

fn events(env: Environment) -> impl Stream<Item = Result<Sse, Infallible>> {
    // The snapshot is taken after the subscription: an event in between is
    // sent after it too, and each event carries its whole status, so the
    // page ends right whatever it applies twice.
    let (recent, receiver) = env.subscribe_with_recent();
    let follow = Follow {
        receiver,
        env,
        recent: Some(recent),
    };
    futures::stream::unfold(follow, |mut follow| async move {
        if let Some(recent) = follow.recent.take() {
            let first = snapshot(&follow.env, 0, recent);
            return Some((Ok(first), follow));
        }
        let closing = follow.env.closing();
        let next = tokio::select! {
            next = follow.receiver.recv() => next,
            _ = closing.cancelled() => return None,
        };
        let sse = match next {
            Ok(event) => as_sse(&event),
            Err(RecvError::Lagged(missed)) => snapshot(&follow.env, missed, Vec::new()),
            Err(RecvError::Closed) => return None,
        };
        Some((Ok(sse), follow))
    })
}

/// Every status now, how many events the page missed before it, and on a
/// first snapshot the events before it (for the page's list).
#[derive(serde::Serialize)]
struct Snapshot<'a> {
    missed: u64,
    statuses: &'a [crate::PluginStatus],
    recent: &'a [Event],
}

fn snapshot(env: &Environment, missed: u64, recent: Vec<Event>) -> Sse {
    // Written straight to text, not through a serde_json::Value tree: with a
    // thousand plugins the page waits for this before it draws anything.
    let statuses = env.statuses();
    let data = serde_json::to_string(&Snapshot {
        missed,
        statuses: &statuses,
        recent: &recent,
    })
    .unwrap_or_else(|_| "{}".into());
    Sse::default().event("snapshot").data(data)
}

fn as_sse(event: &Event) -> Sse {
    let data = serde_json::to_string(event).unwrap_or_else(|_| "{}".into());
    Sse::default().event("plugin").data(data)
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;
    use crate::EnvironmentConfig;

    /// The text of one server-sent event, as the page receives it.
    async fn text(sse: Sse) -> String {
        use axum::response::sse::Sse as Response;
        let stream = futures::stream::iter([Ok::<_, Infallible>(sse)]);
        let body = Response::new(stream).into_response().into_body();
        let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn a_page_that_falls_behind_gets_a_snapshot_instead() {
        let dir = tempfile::tempdir().unwrap();
        let bundle = dir.path().join("idle");
        std::fs::create_dir(&bundle).unwrap();
        std::fs::write(
            bundle.join("plugin.json"),
            r#"{"id": "idle", "version": "1.0.0", "server": {"executable": "none"}}"#,
        )
        .unwrap();
        let config = EnvironmentConfig::builder(dir.path()).build().unwrap();
        let env = Environment::new(config).unwrap();
        let mut stream = Box::pin(events(env.clone()));
        let first = text(stream.next().await.unwrap().unwrap()).await;
        assert!(first.starts_with("event: snapshot\n"), "{first}");
        assert!(first.contains(r#""missed":0"#) && first.contains(r#""id":"idle""#));
        env.set_debugging("idle", true).unwrap();
        let event = text(stream.next().await.unwrap().unwrap()).await;
        assert!(event.starts_with("event: plugin\n"), "{event}");
        assert!(event.contains(r#""event":"debugging""#), "{event}");
        // Past the buffer while the page reads nothing: the host does not wait.
        for i in 0..1500 {
            env.set_debugging("idle", i % 2 == 0).unwrap();
        }
        let caught_up = text(stream.next().await.unwrap().unwrap()).await;
        assert!(caught_up.starts_with("event: snapshot\n"), "{caught_up}");
        assert!(!caught_up.contains(r#""missed":0"#), "{caught_up}");
        assert!(caught_up.contains(r#""debug":false"#), "{caught_up}");
        // A shutdown ends the stream.
        env.shutdown().await;
        let mut rest = 0;
        while stream.next().await.is_some() {
            rest += 1;
        }
        assert!(rest <= 1024, "{rest}");
    }
}
