//! Many plugins: the bundles of a plugins directory, each activated,
//! supervised, restarted and deactivated on request.
//!
//! Each activated plugin has a keeper task that starts it, watches it and
//! applies the restart policy ([`crate::RestartPolicy`]); a crash is seen the
//! moment the process exits, a hung plugin by the periodic health check
//! ([`crate::HealthPolicy`]). Every state change is sent as an [`Event`]
//! ([`Environment::subscribe`]). [`Environment::reload`] applies what changed
//! in the plugins directory since. The environment knows plugins by id and
//! never touches a process or a socket itself: that is the supervisor's job.

mod call;
mod config;
mod configuration;
mod error;
mod instance;
mod keeper;
mod keeper_task;
mod metrics;
mod pacing;
mod reload;
mod slot;
mod status;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::{broadcast, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub use call::CallError;
pub use config::{EnvironmentConfig, EnvironmentConfigBuilder};
pub use configuration::{ConfigApplied, ConfigChange, ConfigSource, ConfigValue};
pub use error::EnvironmentError;
pub use reload::{ReloadIssue, ReloadReport};
pub use status::{Available, Event, EventKind, PluginState, PluginStatus};

use crate::bundle::{BundleError, scan_plugins_dir};
use crate::launch::plan_launch;
use crate::settings_schema::SettingsSchema;
use crate::store::Store;
use crate::supervisor::AttachTarget;
use crate::transport::PluginChannel;
use keeper_task::KeeperTask;
use metrics::Metrics;
use slot::{Keeper, Life, Phase, Slot, Version};

/// How many events a slow subscriber may fall behind before it misses some.
const EVENT_BUFFER: usize = 1024;
/// How many of the last events [`Environment::recent_events`] keeps.
const RECENT_EVENTS: usize = 100;

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
    /// Changed only by [`Environment::reload`]; never locked across an await.
    slots: RwLock<BTreeMap<String, Arc<Slot>>>,
    invalid: Mutex<Vec<BundleError>>,
    /// What was last said about each bundle directory that is no plugin
    /// (yet): a reload warns when that changes, not every time.
    refused_new: Mutex<BTreeMap<std::path::PathBuf, String>>,
    /// One reload at a time.
    reloading: tokio::sync::Mutex<()>,
}

/// What every keeper task needs, apart from its own slot.
pub(crate) struct Shared {
    pub(crate) config: EnvironmentConfig,
    pub(crate) events: broadcast::Sender<Event>,
    /// The last [`RECENT_EVENTS`] events, oldest first.
    pub(crate) recent: std::sync::Mutex<std::collections::VecDeque<Event>>,
    /// Cancelled at shutdown (and drop): keepers stop, nothing new starts.
    pub(crate) closing: CancellationToken,
    /// Paces starts (adapting to how fast plugins come up) and stops.
    pub(crate) starts: pacing::Gate,
    pub(crate) stops: pacing::Gate,
    pub(crate) store: Store,
    pub(crate) metrics: Metrics,
}

impl Shared {
    /// Sends `event` to the subscribers and keeps it among the recent ones,
    /// under one lock, so that [`Environment::subscribe_with_recent`] sees
    /// each event exactly once.
    pub(crate) fn publish(&self, event: Event) {
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if recent.len() == RECENT_EVENTS {
            recent.pop_front();
        }
        recent.push_back(event.clone());
        let _ = self.events.send(event);
    }
}

impl Environment {
    /// Scans the plugins directory, opens the store (in the data directory,
    /// if there is one) and checks the configured values against each
    /// plugin's settings_schema. Invalid bundles are kept for
    /// [`Environment::available`]; nothing is started yet.
    pub fn new(mut config: EnvironmentConfig) -> Result<Environment, EnvironmentError> {
        let scan = scan_plugins_dir(&config.plugins_dir)?;
        let schema_of = |id: &str| {
            scan.bundles
                .iter()
                .find(|b| b.id() == id)
                .map(|b| b.manifest.settings().unwrap_or_default())
        };
        config.plugin_configuration =
            configuration::check_file_values(&config.plugin_configuration, schema_of)
                .map_err(|(id, source)| EnvironmentError::InvalidSetting { id, source })?;
        if config.launch.sandbox() {
            crate::require_landlock()?;
        }
        let store = match &config.data_dir {
            Some(dir) => Store::open(dir, config.kv_limits)?,
            None => Store::in_memory(config.kv_limits),
        };
        let slots: BTreeMap<String, Arc<Slot>> = scan
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
                let slot = Slot::new(Version::of(bundle, &config.launch), runtime);
                slot.set_attach_target(config.attach.get(slot.id()).cloned());
                (slot.id().to_string(), Arc::new(slot))
            })
            .collect();
        if let Some(id) = config.attach.keys().find(|id| !slots.contains_key(*id)) {
            return Err(EnvironmentError::UnknownPlugin(id.clone()));
        }
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let shared = Shared {
            config,
            events,
            recent: Default::default(),
            closing: CancellationToken::new(),
            starts: pacing::Gate::for_starts(),
            stops: pacing::Gate::for_stops(),
            store,
            metrics: Metrics::new(),
        };
        for id in slots.keys() {
            shared.metrics.plugin_added(id);
        }
        Ok(Environment {
            inner: Arc::new(Inner {
                shared: Arc::new(shared),
                slots: RwLock::new(slots),
                refused_new: Mutex::new(
                    (scan.errors.iter())
                        .map(|error| (error.dir.clone(), error.to_string()))
                        .collect(),
                ),
                invalid: Mutex::new(scan.errors),
                reloading: tokio::sync::Mutex::new(()),
            }),
        })
    }

    /// The configuration it was made with.
    pub fn config(&self) -> &EnvironmentConfig {
        &self.inner.shared.config
    }

    /// Every bundle directory, valid or not, as found at [`Environment::new`]
    /// or the last [`Environment::reload`].
    pub fn available(&self) -> Vec<Available> {
        let valid = self
            .inner
            .slots()
            .into_iter()
            .map(|s| Available::Bundle(Box::new(s.version().bundle.clone())));
        let invalid = self.inner.invalid().into_iter().map(Available::Invalid);
        valid.chain(invalid).collect()
    }

    /// Ids of the valid bundles, sorted.
    pub fn plugin_ids(&self) -> Vec<String> {
        self.inner
            .slots()
            .iter()
            .map(|s| s.id().to_string())
            .collect()
    }

    /// The last 100 events, oldest first, and a receiver of every event
    /// after them: what a status page opened late shows, with no event
    /// missed or seen twice.
    pub fn subscribe_with_recent(&self) -> (Vec<Event>, broadcast::Receiver<Event>) {
        let shared = &self.inner.shared;
        let recent = shared.recent.lock().unwrap_or_else(|e| e.into_inner());
        (recent.iter().cloned().collect(), shared.events.subscribe())
    }

    /// Receives every state change from now on. A subscriber more than
    /// 1024 events behind misses the oldest (`RecvError::Lagged`).
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.inner.shared.events.subscribe()
    }

    /// Every plugin's status, sorted by id.
    pub fn statuses(&self) -> Vec<PluginStatus> {
        self.inner.slots().iter().map(|s| s.status()).collect()
    }

    /// One plugin's status.
    pub fn status(&self, id: &str) -> Result<PluginStatus, EnvironmentError> {
        Ok(self.slot(id)?.status())
    }

    /// The plugins that should be Running (activated, not deactivated since)
    /// and are not: starting, restarting, or failed. Empty means ready.
    /// While the environment shuts down, every plugin is listed.
    pub fn unready(&self) -> Vec<PluginStatus> {
        let closing = self.inner.shared.closing.is_cancelled();
        self.inner
            .slots()
            .into_iter()
            .filter(|slot| closing || slot.wanted.load(Ordering::Relaxed))
            .map(|slot| slot.status())
            .filter(|status| closing || status.state != PluginState::Running)
            .collect()
    }

    /// Whether the plugin is Running.
    pub fn is_active(&self, id: &str) -> bool {
        self.slot(id).is_ok_and(|s| s.running().is_some())
    }

    /// The running plugin's gRPC channel, for the application's own clients
    /// (go-plugin's `Dispense`). It stays bound to this process: after a
    /// restart, ask again.
    pub fn channel(&self, id: &str) -> Result<PluginChannel, EnvironmentError> {
        Ok(self.running(id)?.channel())
    }

    /// Starts the plugin and waits until it is Running, or until its start
    /// has failed for good (a start that timed out is retried under the
    /// restart policy first). Activating an active plugin starts nothing and
    /// returns its status.
    pub async fn activate(&self, id: &str) -> Result<PluginStatus, EnvironmentError> {
        let slot = self.slot(id)?;
        let _op = slot.op.lock().await;
        self.activate_locked(&slot).await
    }

    /// The activation, for a caller that holds the slot's op lock.
    async fn activate_locked(&self, slot: &Arc<Slot>) -> Result<PluginStatus, EnvironmentError> {
        let id = slot.id();
        let shared = &self.inner.shared;
        if shared.closing.is_cancelled() {
            return Err(EnvironmentError::ShuttingDown);
        }
        if slot.removed.load(Ordering::Relaxed) {
            return Err(EnvironmentError::UnknownPlugin(id.to_string()));
        }
        slot.wanted.store(true, Ordering::Relaxed);
        if matches!(slot.lock().life, Life::Kept(..)) {
            return Ok(slot.status());
        }
        let stop = shared.closing.child_token();
        let keeper = Keeper {
            stop: stop.clone(),
            task: None,
        };
        slot.update(shared, EventKind::Starting, |s| {
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
        let span = tracing::info_span!("plugin", id = %id);
        let task = tokio::spawn(task.run().instrument(span));
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
        let _op = Self::stop_unwanted(&slot).await;
        Ok(())
    }

    /// Marks the plugin not wanted and stops it; returns its op lock, held.
    async fn stop_unwanted(slot: &Slot) -> tokio::sync::MutexGuard<'_, ()> {
        slot.wanted.store(false, Ordering::Relaxed);
        // Cancel first, so that an activation under way gives up the op lock.
        if let Some(keeper) = slot.lock().life.keeper() {
            keeper.stop.cancel();
        }
        let op = slot.op.lock().await;
        Self::stop_locked(slot).await;
        op
    }

    /// Stops the plugin's keeper and waits for its end, for a caller that
    /// holds the slot's op lock.
    async fn stop_locked(slot: &Slot) {
        let task = slot.lock().life.keeper().and_then(|keeper| {
            keeper.stop.cancel();
            keeper.task.take()
        });
        if let Some(task) = task {
            let _ = task.await;
        }
    }

    /// The plugin's settings, from its manifest's settings_schema.
    pub fn settings(&self, id: &str) -> Result<SettingsSchema, EnvironmentError> {
        Ok(self.slot(id)?.settings().clone())
    }

    /// The plugin's effective configuration, sorted by key, with where each
    /// value comes from ([`ConfigSource`]).
    pub fn configuration(&self, id: &str) -> Result<Vec<ConfigValue>, EnvironmentError> {
        let slot = self.slot(id)?;
        Ok(configuration::effective(&slot, &self.inner.shared))
    }

    /// Changes the operator's configuration values of a plugin, all or
    /// none. Each value is checked against the plugin's settings_schema
    /// ([`EnvironmentError::InvalidSetting`] names the key). A running
    /// plugin that implements OnConfigurationChange gets the new
    /// configuration first: if it refuses ([`EnvironmentError::Refused`],
    /// with its message) or does not answer in time, nothing changes.
    /// Otherwise the values are stored (in the data directory) and outlive
    /// restarts of the plugin and of the host.
    pub async fn set_configuration(
        &self,
        id: &str,
        changes: impl IntoIterator<Item = ConfigChange>,
    ) -> Result<ConfigApplied, EnvironmentError> {
        let slot = self.slot(id)?;
        let _one_at_a_time = slot.configuring.lock().await;
        let shared = &self.inner.shared;
        let store_failed = |error: crate::store::KvError| EnvironmentError::Store {
            id: id.to_string(),
            problem: error.to_string(),
        };
        let mut operator = shared.store.config_values(id).map_err(store_failed)?;
        let mut stored = Vec::new();
        for change in changes {
            match change {
                ConfigChange::Set { key, value } => {
                    let value = slot.settings().check(&key, &value).map_err(|source| {
                        EnvironmentError::InvalidSetting {
                            id: id.to_string(),
                            source,
                        }
                    })?;
                    operator.insert(key.clone(), value.clone());
                    stored.push((key, Some(value)));
                }
                ConfigChange::Unset { key } => {
                    operator.remove(&key);
                    stored.push((key, None));
                }
            }
        }
        let values = configuration::effective_with(&slot, shared, &operator);
        let applied = match slot.running() {
            None => ConfigApplied::AtNextActivation,
            Some(instance) => match instance
                .configuration_changed(configuration::to_json(&values))
                .await
            {
                None => ConfigApplied::AtNextRestart,
                Some(Ok(None)) => ConfigApplied::Live,
                Some(Ok(Some(message))) => {
                    return Err(EnvironmentError::Refused {
                        id: id.to_string(),
                        message,
                    });
                }
                Some(Err(source)) => {
                    return Err(EnvironmentError::Hook {
                        id: id.to_string(),
                        source,
                    });
                }
            },
        };
        shared
            .store
            .set_config_values(id, &stored)
            .map_err(store_failed)?;
        Ok(applied)
    }

    /// The Running plugins that said (in Implemented) they serve the gRPC
    /// service `service` (such as `"chat.v1.MessageHooks"`), sorted by id,
    /// with their channels: for an application that calls them in turn
    /// (a filter chain).
    pub fn plugins_serving(&self, service: &str) -> Vec<(String, PluginChannel)> {
        self.inner
            .slots()
            .into_iter()
            .filter_map(|slot| {
                let instance = slot.running()?;
                instance
                    .serves(service)
                    .then(|| (slot.id().to_string(), instance.channel()))
            })
            .collect()
    }

    /// Calls every Running plugin that serves `service` at once, each under
    /// its own `timeout`, and returns each one's result (Mattermost's
    /// RunMultiPluginHook). A slow or crashed plugin delays the others by no
    /// more than the timeout. `call` gets the plugin's id and channel; wrap
    /// the channel in the service's generated client.
    pub async fn call_each<T, F, Fut>(
        &self,
        service: &str,
        timeout: std::time::Duration,
        call: F,
    ) -> Vec<(String, Result<T, CallError>)>
    where
        F: Fn(String, PluginChannel) -> Fut,
        Fut: Future<Output = Result<T, tonic::Status>>,
    {
        let calls = self
            .plugins_serving(service)
            .into_iter()
            .map(|(id, channel)| {
                let call = call(id.clone(), channel);
                async move { (id, call::within(timeout, call).await) }
            });
        futures::future::join_all(calls).await
    }

    /// What the environment measured, in Prometheus' text exposition format:
    /// per plugin `plugvisor_plugin_state`, `_restarts_total`,
    /// `_crashes_total`, and the histograms `_start_seconds`,
    /// `_health_check_seconds`, `_hook_seconds` (by hook) and the counter
    /// `_http_requests_total` (by status).
    pub fn metrics(&self) -> String {
        self.inner.shared.metrics.text()
    }

    /// Where an HTTP request for plugin `id` goes: its channel, if it is
    /// Running and serves the HTTP hook.
    pub(crate) fn http_target(&self, id: &str) -> Result<PluginChannel, HttpTarget> {
        let slot = self.inner.slot(id).ok_or(HttpTarget::Unknown)?;
        let instance = slot
            .running()
            .ok_or_else(|| HttpTarget::NotRunning(slot.status().state))?;
        match instance.implements(crate::hooks::lifecycle::SERVE_HTTP) {
            true => Ok(instance.channel()),
            false => Err(HttpTarget::NoHttp),
        }
    }

    /// Cancelled when the environment shuts down: for the HTTP layer's
    /// long-lived streams, which end then.
    pub(crate) fn closing(&self) -> CancellationToken {
        self.inner.shared.closing.clone()
    }

    /// The measurements, for the HTTP layer.
    pub(crate) fn measurements(&self) -> &Metrics {
        &self.inner.shared.metrics
    }

    /// Puts the plugin in debug mode (`on`), or takes it out, for a
    /// developer who pauses it in a debugger. In debug mode health checks
    /// still run (a failure is logged) but never kill it, an exit is not
    /// followed by a restart (it ends FailedToStayRunning; activate it
    /// again), and its starts get [`LaunchOptions::DEBUG_START_TIMEOUT`],
    /// for the start and for Implemented and OnActivate. A running plugin
    /// keeps its process, so a debugger can attach to its pid; a start
    /// under way keeps its deadline. Sends [`EventKind::Debugging`] when
    /// the mode changes.
    ///
    /// [`LaunchOptions::DEBUG_START_TIMEOUT`]: crate::LaunchOptions::DEBUG_START_TIMEOUT
    pub fn set_debugging(&self, id: &str, on: bool) -> Result<PluginStatus, EnvironmentError> {
        let slot = self.slot(id)?;
        if !slot.set_debugging(on) {
            return Ok(slot.status());
        }
        match on {
            true => tracing::info!(
                plugin = id,
                "debug mode: failed health checks do not kill it, an exit does not restart it, a start may take {:?}",
                crate::LaunchOptions::DEBUG_START_TIMEOUT
            ),
            false => tracing::info!(plugin = id, "debug mode ended"),
        }
        Ok(slot.update(&self.inner.shared, EventKind::Debugging { on }, |_| {}))
    }

    /// Supervises plugin `id` as a process that someone else started and
    /// that listens at `target` (go-plugin's reattach), such as a developer
    /// under a debugger: a running process of the plugin is stopped first,
    /// then every start of `id` (this one, `restart`, a reload's) dials
    /// `target` instead of spawning the bundle's executable, and gets its
    /// health checks, Implemented, OnActivate, configuration changes and
    /// HTTP as usual. Its process is never signalled: a deactivation calls
    /// OnDeactivate and disconnects; when it goes away the plugin ends
    /// FailedToStayRunning, not restarted. [`Environment::detach`] ends this.
    /// The plugin still needs its bundle (its manifest gives its settings).
    pub async fn attach(
        &self,
        id: &str,
        target: AttachTarget,
    ) -> Result<PluginStatus, EnvironmentError> {
        let slot = self.slot(id)?;
        let _op = Self::stop_unwanted(&slot).await;
        tracing::info!(plugin = id, "attaching to the plugin at {target}");
        slot.set_attach_target(Some(target));
        self.activate_locked(&slot).await
    }

    /// Ends [`Environment::attach`]: disconnects from the attached plugin
    /// (OnDeactivate, and its process is left running) and leaves `id`
    /// NotRunning; its next start spawns its bundle's executable again.
    pub async fn detach(&self, id: &str) -> Result<PluginStatus, EnvironmentError> {
        self.deactivate(id).await?;
        let slot = self.slot(id)?;
        let _op = slot.op.lock().await;
        slot.set_attach_target(None);
        // What the attached process did is no longer this plugin's news.
        Ok(slot.update(&self.inner.shared, EventKind::Detached, |s| {
            if let Life::Idle(_) = s.life {
                s.life = Life::Idle(PluginState::NotRunning);
                s.last_error = None;
            }
        }))
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
        let ids = self.plugin_ids();
        let all = || futures::future::join_all(ids.iter().map(|id| self.deactivate(id)));
        let deadline = self.inner.shared.config.shutdown_deadline;
        if tokio::time::timeout(deadline, all()).await.is_err() {
            tracing::warn!(?deadline, "shutdown deadline passed; killing what is left");
            self.kill_all();
            all().await;
        }
        // What the plugins left behind is killed by now, even if the host exits next.
        crate::sweep::settled().await;
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
            .slot(id)
            .ok_or_else(|| EnvironmentError::UnknownPlugin(id.to_string()))
    }

    fn running(&self, id: &str) -> Result<Arc<instance::Instance>, EnvironmentError> {
        self.slot(id)?
            .running()
            .ok_or_else(|| EnvironmentError::NotRunning(id.to_string()))
    }
}

/// Why an HTTP request cannot reach a plugin.
pub(crate) enum HttpTarget {
    Unknown,
    NotRunning(PluginState),
    NoHttp,
}

impl Inner {
    /// Every slot, sorted by id (a snapshot: a reload may change the map).
    fn slots(&self) -> Vec<Arc<Slot>> {
        let slots = self.slots.read().unwrap_or_else(|e| e.into_inner());
        slots.values().cloned().collect()
    }

    fn slot(&self, id: &str) -> Option<Arc<Slot>> {
        let slots = self.slots.read().unwrap_or_else(|e| e.into_inner());
        slots.get(id).cloned()
    }

    fn invalid(&self) -> Vec<BundleError> {
        self.invalid
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The one kill-everything path: a second Ctrl-C, a shutdown past its
    /// deadline, and the drop of the last handle.
    fn kill_everything(&self) {
        for slot in self.slots() {
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
