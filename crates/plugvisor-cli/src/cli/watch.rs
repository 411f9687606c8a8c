//! `plugvisor run`'s watch over the plugins directory: inotify (through
//! `notify`) on the directories a reload reads, and one reload once they
//! have been quiet for a moment, so a bundle copied in pieces restarts its
//! plugin once.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use notify::event::{AccessKind, AccessMode};
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use plugvisor::Environment;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How long the watched directories must stay quiet before a reload
/// (`run --help` and the README say 300 ms).
pub const QUIET: Duration = Duration::from_millis(300);

/// Starts watching; the task reloads until it is aborted.
pub fn spawn(env: Environment) -> anyhow::Result<JoinHandle<()>> {
    let (sender, mut changes) = mpsc::unbounded_channel();
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let _ = sender.send(event);
    })
    .context("cannot watch the plugins directory (inotify): hot reload is off")?;
    let mut watch = Watch {
        watcher,
        watched: BTreeSet::new(),
    };
    watch.update(&env);
    Ok(tokio::spawn(async move {
        loop {
            match changes.recv().await {
                Some(event) if matters(&event) => {}
                Some(_) => continue,
                None => return,
            }
            // Every change that matters restarts the quiet period.
            let mut quiet_from = Instant::now() + QUIET;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(quiet_from) => break,
                    event = changes.recv() => match event {
                        Some(event) if matters(&event) => quiet_from = Instant::now() + QUIET,
                        Some(_) => {}
                        None => return,
                    },
                }
            }
            // Watch first, then scan: a file written in between is in the
            // scan or sends an event, never neither.
            watch.update(&env);
            if let Err(error) = env.reload().await {
                tracing::warn!("reload failed: {error}");
            }
        }
    }))
}

struct Watch {
    watcher: RecommendedWatcher,
    watched: BTreeSet<PathBuf>,
}

impl Watch {
    /// Watches what the next reload will read: bundles come and go.
    fn update(&mut self, env: &Environment) {
        let wanted: BTreeSet<PathBuf> = env.reload_watch_paths().into_iter().collect();
        for gone in self.watched.difference(&wanted) {
            // A deleted directory's watch is gone with it (and notify would
            // warn that it cannot remove it).
            if gone.exists() {
                let _ = self.watcher.unwatch(gone);
            }
        }
        self.watched.retain(|path| wanted.contains(path));
        for path in wanted {
            if self.watched.contains(&path) {
                continue;
            }
            match self.watcher.watch(&path, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    self.watched.insert(path);
                }
                // It may be gone already; the next change looks again.
                Err(error) => tracing::debug!(path = %path.display(), %error, "cannot watch"),
            }
        }
    }
}

/// Reads are not changes: a reload reads every manifest and a start opens
/// the executable, and neither may trigger another reload.
fn matters(event: &notify::Result<notify::Event>) -> bool {
    match event {
        Ok(event) => match event.kind {
            notify::EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
            notify::EventKind::Access(_) => false,
            _ => true,
        },
        Err(error) => {
            tracing::warn!(%error, "watching the plugins directory");
            false
        }
    }
}
