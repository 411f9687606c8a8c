//! Many plugins: the bundles of a plugins directory, each activated,
//! supervised, restarted and deactivated on request.
//!
//! Each activated plugin has a keeper task that starts it, watches it and
//! applies the restart policy ([`crate::RestartPolicy`]); a crash is seen the
//! moment the process exits, a hung plugin by the periodic health check
//! ([`crate::HealthPolicy`]). Every state change is sent as an [`Event`]
//! ([`Environment::subscribe`]). The environment knows plugins by id and
//! never touches a process or a socket itself: that is the supervisor's job.

mod config;
mod error;
mod instance;
mod keeper;
mod keeper_task;
mod pacing;
mod slot;
mod status;

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::{broadcast, oneshot};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

pub use config::{EnvironmentConfig, EnvironmentConfigBuilder};
pub use error::EnvironmentError;
pub use status::{Available, Event, EventKind, PluginState, PluginStatus};

use crate::bundle::{BundleError, scan_plugins_dir};
use crate::launch::plan_launch;
use keeper_task::KeeperTask;
use slot::{Keeper, Life, Phase, Slot};

/// How many events a slow subscriber may fall behind before it misses some.
const EVENT_BUFFER: usize = 1024;

/// The plugins of one plugins directory. Cheap to clone: clones share the
/// plugins.
///
/// [`Environment::shutdown`] stops every plugin gracefully. Dropping the last
/// handle without it SIGKILLs the process group of every running plugin at
/// once (nothing can be awaited in a drop), so no plugin outlives its
/// environment.
#[derive(Clone)]
pub struct Environment {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    slots: BTreeMap<String, Arc<Slot>>,
    invalid: Vec<BundleError>,
}

/// What every keeper task needs, apart from its own slot.
pub(crate) struct Shared {
    pub(crate) config: EnvironmentConfig,
    pub(crate) events: broadcast::Sender<Event>,
    /// Cancelled at shutdown (and drop): keepers stop, nothing new starts.
    pub(crate) closing: CancellationToken,
    pub(crate) starts: pacing::Starts,
}

impl Environment {
    /// Scans the plugins directory. Invalid bundles are kept for
    /// [`Environment::available`]; nothing is started yet.
    pub fn new(config: EnvironmentConfig) -> Result<Environment, EnvironmentError> {
        let scan = scan_plugins_dir(&config.plugins_dir)?;
        let slots = scan
            .bundles
            .into_iter()
            .map(|bundle| {
                for hint in bundle.manifest.unknown_field_hints() {
                    tracing::warn!(
                        plugin = bundle.id(),
                        "{}: {hint}",
                        bundle.manifest_path().display()
                    );
                }
                let runtime = plan_launch(&bundle, &config.launch).ok().map(|p| p.runtime);
                (
                    bundle.id().to_string(),
                    Arc::new(Slot::new(bundle, runtime)),
                )
            })
            .collect();
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let shared = Shared {
            config,
            events,
            closing: CancellationToken::new(),
            starts: pacing::Starts::default(),
        };
        Ok(Environment {
            inner: Arc::new(Inner {
                shared: Arc::new(shared),
                slots,
                invalid: scan.errors,
            }),
        })
    }

    /// The configuration it was made with.
    pub fn config(&self) -> &EnvironmentConfig {
        &self.inner.shared.config
    }

    /// Every bundle directory, valid or not, as found at [`Environment::new`].
    pub fn available(&self) -> Vec<Available> {
        let valid = self
            .inner
            .slots
            .values()
            .map(|s| Available::Bundle(Box::new(s.bundle.clone())));
        let invalid = self.inner.invalid.iter().cloned().map(Available::Invalid);
        valid.chain(invalid).collect()
    }

    /// Ids of the valid bundles, sorted.
    pub fn plugin_ids(&self) -> Vec<String> {
        self.inner.slots.keys().cloned().collect()
    }

    /// Receives every state change from now on. A subscriber more than
    /// 1024 events behind misses the oldest (`RecvError::Lagged`).
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.inner.shared.events.subscribe()
    }

    /// Every plugin's status, sorted by id.
    pub fn statuses(&self) -> Vec<PluginStatus> {
        self.inner.slots.values().map(|s| s.status()).collect()
    }

    /// One plugin's status.
    pub fn status(&self, id: &str) -> Result<PluginStatus, EnvironmentError> {
        Ok(self.slot(id)?.status())
    }

    /// Whether the plugin is Running.
    pub fn is_active(&self, id: &str) -> bool {
        self.slot(id).is_ok_and(|s| s.running().is_some())
    }

    /// The running plugin's gRPC channel, for the application's own clients
    /// (go-plugin's `Dispense`). It stays bound to this process: after a
    /// restart, ask again.
    pub fn channel(&self, id: &str) -> Result<Channel, EnvironmentError> {
        Ok(self.running(id)?.channel())
    }

    /// Starts the plugin and waits until it is Running, or until its start
    /// has failed for good (a start that timed out is retried under the
    /// restart policy first). Activating an active plugin starts nothing and
    /// returns its status.
    pub async fn activate(&self, id: &str) -> Result<PluginStatus, EnvironmentError> {
        let slot = self.slot(id)?;
        let _op = slot.op.lock().await;
        let shared = &self.inner.shared;
        if shared.closing.is_cancelled() {
            return Err(EnvironmentError::ShuttingDown);
        }
        if matches!(slot.lock().life, Life::Kept(..)) {
            return Ok(slot.status());
        }
        let stop = shared.closing.child_token();
        let keeper = Keeper {
            stop: stop.clone(),
            task: None,
        };
        slot.update(&shared.events, EventKind::Starting, |s| {
            s.life = Life::Kept(keeper, Phase::Starting);
            s.restarts = 0;
            s.last_error = None;
        });
        let (first, outcome) = oneshot::channel();
        let task = KeeperTask {
            slot: slot.clone(),
            shared: shared.clone(),
            stop,
            first: Some(first),
        };
        let task = tokio::spawn(task.run());
        if let Some(keeper) = slot.lock().life.keeper() {
            keeper.task = Some(task);
        }
        outcome
            .await
            .unwrap_or_else(|_| Err(EnvironmentError::Cancelled(id.to_string())))
    }

    /// Stops the plugin (or its start, or its pending restart) and waits
    /// until it is reaped. A plugin that is not active is left as it is.
    pub async fn deactivate(&self, id: &str) -> Result<(), EnvironmentError> {
        let slot = self.slot(id)?;
        // Cancel first, so that an activation under way gives up the op lock.
        if let Some(keeper) = slot.lock().life.keeper() {
            keeper.stop.cancel();
        }
        let _op = slot.op.lock().await;
        let task = slot.lock().life.keeper().and_then(|keeper| {
            keeper.stop.cancel();
            keeper.task.take()
        });
        if let Some(task) = task {
            let _ = task.await;
        }
        Ok(())
    }

    /// Deactivates, then activates.
    pub async fn restart(&self, id: &str) -> Result<PluginStatus, EnvironmentError> {
        self.deactivate(id).await?;
        self.activate(id).await
    }

    /// Pings the plugin once, now.
    pub async fn perform_health_check(&self, id: &str) -> Result<(), EnvironmentError> {
        self.running(id)?
            .ping()
            .await
            .map_err(|source| EnvironmentError::Ping {
                id: id.to_string(),
                source,
            })
    }

    /// Stops every plugin in parallel, and no more start. What is still
    /// running at the shutdown deadline is SIGKILLed, so this never hangs on
    /// a stuck plugin.
    pub async fn shutdown(&self) {
        self.inner.shared.closing.cancel();
        let all =
            || futures::future::join_all(self.inner.slots.keys().map(|id| self.deactivate(id)));
        let deadline = self.inner.shared.config.shutdown_deadline;
        if tokio::time::timeout(deadline, all()).await.is_err() {
            tracing::warn!(?deadline, "shutdown deadline passed; killing what is left");
            self.kill_all();
            all().await;
        }
    }

    /// Stops every plugin the hard way, now: SIGKILL of each running
    /// plugin's process group, and every keeper told to stop (a start under
    /// way is killed too). For a second Ctrl-C; [`Environment::shutdown`] is
    /// the graceful way.
    pub fn kill_all(&self) {
        self.inner.kill_everything();
    }

    fn slot(&self, id: &str) -> Result<Arc<Slot>, EnvironmentError> {
        self.inner
            .slots
            .get(id)
            .cloned()
            .ok_or_else(|| EnvironmentError::UnknownPlugin(id.to_string()))
    }

    fn running(&self, id: &str) -> Result<Arc<instance::Instance>, EnvironmentError> {
        self.slot(id)?
            .running()
            .ok_or_else(|| EnvironmentError::NotRunning(id.to_string()))
    }
}

impl Inner {
    /// The one kill-everything path: a second Ctrl-C, a shutdown past its
    /// deadline, and the drop of the last handle.
    fn kill_everything(&self) {
        for slot in self.slots.values() {
            let mut state = slot.lock();
            if let Life::Kept(keeper, phase) = &mut state.life {
                keeper.stop.cancel();
                if let Phase::Running(instance) | Phase::Stopping(instance) = phase {
                    instance.kill_now();
                }
            }
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shared.closing.cancel();
        self.kill_everything();
    }
}
