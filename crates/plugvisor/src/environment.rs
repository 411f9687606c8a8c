//! The set of plugins in a plugins directory: activate, deactivate, restart,
//! health-check and shut down, with a keeper task per active plugin that
//! applies the [`crate::health`] restart policy.
//!
//! Activation dispenses no lifecycle hooks: a plugin is active once it is
//! healthy. A crash is seen the moment the process exits; a hung plugin is
//! caught by the periodic health check. Every state change is sent as an
//! [`Event`] on a broadcast channel ([`Environment::subscribe`]).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::bundle::{Bundle, BundleError, ScanError, scan_plugins_dir};
use crate::health::{FailureHistory, HealthPolicy, RestartPolicy};
use crate::process::describe_exit;
use crate::runtime::{LaunchError, LaunchOptions, RuntimeKind, plan_launch};
use crate::supervisor::{PingError, Supervisor, SupervisorConfig, SupervisorError};

#[derive(Debug, Clone)]
pub struct EnvironmentConfig {
    pub plugins_dir: PathBuf,
    pub launch: LaunchOptions,
    pub supervisor: SupervisorConfig,
    pub health: HealthPolicy,
    pub restart: RestartPolicy,
    /// `shutdown()` SIGKILLs whatever is still running after this long.
    pub shutdown_deadline: Duration,
}

impl EnvironmentConfig {
    pub fn new(plugins_dir: impl Into<PathBuf>) -> Self {
        EnvironmentConfig {
            plugins_dir: plugins_dir.into(),
            launch: LaunchOptions::default(),
            supervisor: SupervisorConfig::default(),
            health: HealthPolicy::default(),
            restart: RestartPolicy::default(),
            shutdown_deadline: Duration::from_secs(5),
        }
    }
}

/// Plugin states, as Mattermost names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PluginState {
    NotRunning,
    Starting,
    Running,
    FailedToStart,
    FailedToStayRunning,
    Stopping,
}

impl std::fmt::Display for PluginState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PluginStatus {
    pub id: String,
    pub version: String,
    pub runtime: Option<RuntimeKind>,
    pub state: PluginState,
    pub pid: Option<u32>,
    /// When the plugin entered this state.
    #[serde(rename = "since_unix_ms", with = "unix_ms")]
    pub since: SystemTime,
    /// Restart attempts since activation.
    pub restarts: u32,
    pub last_error: Option<String>,
}

/// Times as milliseconds since the Unix epoch, in JSON.
mod unix_ms {
    use std::time::{Duration, SystemTime};

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        let ms = t
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        s.serialize_u64(ms)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        Ok(SystemTime::UNIX_EPOCH + Duration::from_millis(u64::deserialize(d)?))
    }
}

/// What happened, sent with the status it led to.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum EventKind {
    Starting,
    Running { startup_ms: u64 },
    FailedToStart { error: String },
    Crashed { exit: String },
    Unhealthy { reason: String },
    RestartScheduled { delay_ms: u64, attempt: u32 },
    Disabled { reason: String },
    Stopping,
    Stopped,
}

#[derive(Debug, Clone, Serialize)]
pub struct Event {
    #[serde(flatten)]
    pub kind: EventKind,
    pub status: PluginStatus,
}

/// A bundle found in the plugins directory, or one that failed to load.
#[derive(Debug, Clone)]
pub enum Available {
    Bundle(Box<Bundle>),
    Invalid(BundleError),
}

#[derive(Debug, thiserror::Error)]
pub enum EnvironmentError {
    #[error(transparent)]
    Scan(#[from] ScanError),
    #[error("no plugin with id {0:?} in the plugins directory")]
    UnknownPlugin(String),
    #[error("plugin {0:?} is not running")]
    NotRunning(String),
    #[error("plugin {id:?} cannot be launched: {source}")]
    Launch { id: String, source: LaunchError },
    #[error("plugin {id:?} failed to start: {source}")]
    Start { id: String, source: SupervisorError },
    #[error("activation of plugin {0:?} was cancelled")]
    Cancelled(String),
    #[error("the environment is shutting down")]
    ShuttingDown,
    #[error("plugin {id:?} failed its health check: {source}")]
    Ping { id: String, source: PingError },
}

/// Many plugins, each supervised, restarted and stopped. Cheap to clone.
#[derive(Clone)]
pub struct Environment {
    inner: Arc<Inner>,
}

struct Inner {
    config: EnvironmentConfig,
    slots: BTreeMap<String, Arc<Slot>>,
    invalid: Vec<BundleError>,
    events: broadcast::Sender<Event>,
    shutting_down: CancellationToken,
}

/// One plugin id's state. `op` serialises activate/deactivate for the id.
struct Slot {
    bundle: Bundle,
    op: tokio::sync::Mutex<()>,
    state: Mutex<SlotState>,
}

struct SlotState {
    status: PluginStatus,
    supervisor: Option<Arc<Supervisor>>,
    cancel: Option<CancellationToken>,
    keeper: Option<JoinHandle<()>>,
}

impl Environment {
    /// Scans the plugins directory. Invalid bundles are kept for [`Environment::available`].
    pub fn new(config: EnvironmentConfig) -> Result<Environment, EnvironmentError> {
        let scan = scan_plugins_dir(&config.plugins_dir)?;
        let slots = scan
            .bundles
            .into_iter()
            .map(|bundle| {
                let status = PluginStatus {
                    id: bundle.id().to_string(),
                    version: bundle.manifest.display_version().to_string(),
                    runtime: plan_launch(&bundle, &config.launch).ok().map(|p| p.runtime),
                    state: PluginState::NotRunning,
                    pid: None,
                    since: SystemTime::now(),
                    restarts: 0,
                    last_error: None,
                };
                let slot = Slot {
                    bundle,
                    op: tokio::sync::Mutex::new(()),
                    state: Mutex::new(SlotState {
                        status,
                        supervisor: None,
                        cancel: None,
                        keeper: None,
                    }),
                };
                (slot.bundle.id().to_string(), Arc::new(slot))
            })
            .collect();
        let (events, _) = broadcast::channel(1024);
        Ok(Environment {
            inner: Arc::new(Inner {
                config,
                slots,
                invalid: scan.errors,
                events,
                shutting_down: CancellationToken::new(),
            }),
        })
    }

    pub fn config(&self) -> &EnvironmentConfig {
        &self.inner.config
    }

    /// Every bundle directory, valid or not.
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

    /// Receives every state change from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    pub fn statuses(&self) -> Vec<PluginStatus> {
        self.inner.slots.values().map(|s| s.status()).collect()
    }

    pub fn status(&self, id: &str) -> Result<PluginStatus, EnvironmentError> {
        Ok(self.slot(id)?.status())
    }

    pub fn is_active(&self, id: &str) -> bool {
        self.slot(id)
            .map(|s| s.status().state == PluginState::Running)
            .unwrap_or(false)
    }

    /// The running plugin's gRPC channel, for the embedder's own services.
    pub fn channel(&self, id: &str) -> Result<Channel, EnvironmentError> {
        Ok(self.running_supervisor(id)?.channel())
    }

    /// Starts the plugin and waits until it is healthy. Activating an active
    /// plugin returns its status and starts nothing.
    pub async fn activate(&self, id: &str) -> Result<PluginStatus, EnvironmentError> {
        let slot = self.slot(id)?;
        let _op = slot.op.lock().await;
        if self.inner.shutting_down.is_cancelled() {
            return Err(EnvironmentError::ShuttingDown);
        }
        {
            let mut state = slot.lock();
            let active = matches!(
                state.status.state,
                PluginState::Running | PluginState::Starting
            );
            if active && state.keeper.is_some() {
                return Ok(state.status.clone());
            }
            // A keeper that gave up (crash loop) has ended; activation starts afresh.
            state.keeper = None;
        }
        let cancel = self.inner.shutting_down.child_token();
        slot.lock().cancel = Some(cancel.clone());
        self.update(&slot, EventKind::Starting, |s| {
            s.state = PluginState::Starting;
            s.pid = None;
            s.restarts = 0;
            s.last_error = None;
        });
        let started = Instant::now();
        let result = tokio::select! {
            result = start_healthy(&self.inner.config, &slot.bundle) => result,
            _ = cancel.cancelled() => Err(EnvironmentError::Cancelled(id.to_string())),
        };
        let supervisor = match result {
            Ok(supervisor) => supervisor,
            Err(error) => {
                let message = error.to_string();
                tracing::error!(plugin = id, "{message}");
                slot.lock().cancel = None;
                self.update(
                    &slot,
                    EventKind::FailedToStart {
                        error: message.clone(),
                    },
                    |s| {
                        s.state = PluginState::FailedToStart;
                        s.last_error = Some(message);
                    },
                );
                return Err(error);
            }
        };
        if !supervisor.has_hooks() {
            tracing::info!(plugin = id, "plugin {id} activated without lifecycle hooks");
        }
        let status = self.mark_running(&slot, &supervisor, started.elapsed());
        let keeper = tokio::spawn(keep(self.clone(), slot.clone(), supervisor, cancel));
        slot.lock().keeper = Some(keeper);
        Ok(status)
    }

    /// Stops the plugin and cancels any pending restart.
    pub async fn deactivate(&self, id: &str) -> Result<(), EnvironmentError> {
        let slot = self.slot(id)?;
        // Cancel first, so an activation in progress gives up the op lock.
        if let Some(cancel) = &slot.lock().cancel {
            cancel.cancel();
        }
        let _op = slot.op.lock().await;
        let keeper = {
            let mut state = slot.lock();
            state.cancel = None;
            state.keeper.take()
        };
        if let Some(keeper) = keeper {
            let _ = keeper.await;
        }
        Ok(())
    }

    pub async fn restart(&self, id: &str) -> Result<PluginStatus, EnvironmentError> {
        self.deactivate(id).await?;
        self.activate(id).await
    }

    /// Pings the plugin once, now.
    pub async fn perform_health_check(&self, id: &str) -> Result<(), EnvironmentError> {
        let supervisor = self.running_supervisor(id)?;
        supervisor
            .ping()
            .await
            .map_err(|source| EnvironmentError::Ping {
                id: id.to_string(),
                source,
            })
    }

    /// Stops every plugin in parallel. What is still running at the deadline
    /// is SIGKILLed, so this never hangs on a stuck plugin.
    pub async fn shutdown(&self) {
        self.inner.shutting_down.cancel();
        let all =
            || futures::future::join_all(self.inner.slots.keys().map(|id| self.deactivate(id)));
        if tokio::time::timeout(self.inner.config.shutdown_deadline, all())
            .await
            .is_err()
        {
            tracing::warn!(deadline = ?self.inner.config.shutdown_deadline, "shutdown deadline passed; killing what is left");
            self.kill_all();
            all().await;
        }
    }

    /// SIGKILLs every running plugin now (a second Ctrl-C).
    pub fn kill_all(&self) {
        for slot in self.inner.slots.values() {
            if let Some(supervisor) = &slot.lock().supervisor {
                supervisor.kill_now();
            }
        }
    }

    fn slot(&self, id: &str) -> Result<Arc<Slot>, EnvironmentError> {
        self.inner
            .slots
            .get(id)
            .cloned()
            .ok_or_else(|| EnvironmentError::UnknownPlugin(id.to_string()))
    }

    fn running_supervisor(&self, id: &str) -> Result<Arc<Supervisor>, EnvironmentError> {
        let slot = self.slot(id)?;
        let state = slot.lock();
        match (&state.supervisor, state.status.state) {
            (Some(supervisor), PluginState::Running) => Ok(supervisor.clone()),
            _ => Err(EnvironmentError::NotRunning(id.to_string())),
        }
    }

    /// Changes a slot's status and announces it.
    fn update(
        &self,
        slot: &Slot,
        kind: EventKind,
        change: impl FnOnce(&mut PluginStatus),
    ) -> PluginStatus {
        let status = {
            let mut state = slot.lock();
            let before = state.status.state;
            change(&mut state.status);
            if state.status.state != before {
                state.status.since = SystemTime::now();
            }
            state.status.clone()
        };
        let _ = self.inner.events.send(Event {
            kind,
            status: status.clone(),
        });
        status
    }

    fn mark_running(
        &self,
        slot: &Slot,
        supervisor: &Arc<Supervisor>,
        startup: Duration,
    ) -> PluginStatus {
        slot.lock().supervisor = Some(supervisor.clone());
        let pid = supervisor.pid();
        self.update(
            slot,
            EventKind::Running {
                startup_ms: startup.as_millis() as u64,
            },
            |s| {
                s.state = PluginState::Running;
                s.pid = Some(pid);
            },
        )
    }
}

impl Slot {
    fn lock(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn status(&self) -> PluginStatus {
        self.lock().status.clone()
    }
}

/// Launches a bundle and waits until it answers SERVING, within its start timeout.
async fn start_healthy(
    config: &EnvironmentConfig,
    bundle: &Bundle,
) -> Result<Arc<Supervisor>, EnvironmentError> {
    let id = bundle.id().to_string();
    let plan = plan_launch(bundle, &config.launch).map_err(|source| EnvironmentError::Launch {
        id: id.clone(),
        source,
    })?;
    let started = Instant::now();
    let start_error = |source| EnvironmentError::Start {
        id: id.clone(),
        source,
    };
    let supervisor = Supervisor::start(&id, &plan, &config.supervisor)
        .await
        .map_err(start_error)?;
    let left = plan.start_timeout.saturating_sub(started.elapsed());
    if let Err(error) = supervisor
        .wait_healthy(left.max(Duration::from_millis(100)))
        .await
    {
        supervisor.stop().await;
        return Err(start_error(error));
    }
    Ok(Arc::new(supervisor))
}

/// Why a running plugin needs a restart.
enum Failure {
    Crashed(String),
    Unhealthy(PingError),
}

/// Watches a running plugin until it is deactivated: restarts it after a crash
/// or failed health checks, and disables it when it crash-loops.
async fn keep(
    env: Environment,
    slot: Arc<Slot>,
    mut supervisor: Arc<Supervisor>,
    cancel: CancellationToken,
) {
    let config = &env.inner.config;
    let policy = &config.restart;
    let mut history = FailureHistory::default();
    let mut in_a_row = 0u32;
    let mut healthy_since = Instant::now();
    'watching: loop {
        let failure = tokio::select! {
            _ = cancel.cancelled() => break 'watching,
            status = supervisor.exited() => Failure::Crashed(describe_exit(status)),
            error = failed_health_checks(&supervisor, &config.health) => Failure::Unhealthy(error),
        };
        let (kind, message) = match failure {
            Failure::Crashed(exit) => {
                let message = format!("plugin crashed ({exit}){}", supervisor.stderr_tail());
                (EventKind::Crashed { exit }, message)
            }
            Failure::Unhealthy(error) => {
                let reason = format!(
                    "{} failed health checks in a row: {error}",
                    config.health.fail_limit
                );
                (
                    EventKind::Unhealthy {
                        reason: reason.clone(),
                    },
                    reason,
                )
            }
        };
        tracing::warn!(plugin = supervisor.id(), "{message}");
        env.update(&slot, kind, |s| s.last_error = Some(message.clone()));
        supervisor.stop().await;
        if healthy_since.elapsed() >= policy.reset_after {
            in_a_row = 0;
        }
        // Restart until healthy, disabled or cancelled.
        loop {
            if history.record(Instant::now(), policy) {
                let reason = format!(
                    "disabled after {} failures within {:?}; last: {message}",
                    history.count(),
                    policy.failure_window
                );
                tracing::error!(plugin = supervisor.id(), "{reason}");
                slot.lock().supervisor = None;
                env.update(
                    &slot,
                    EventKind::Disabled {
                        reason: reason.clone(),
                    },
                    |s| {
                        s.state = PluginState::FailedToStayRunning;
                        s.pid = None;
                        s.last_error = Some(reason);
                    },
                );
                return;
            }
            let delay = policy.delay(in_a_row, fastrand::f64());
            in_a_row += 1;
            let attempt = {
                let status = env.update(
                    &slot,
                    EventKind::RestartScheduled {
                        delay_ms: delay.as_millis() as u64,
                        attempt: in_a_row,
                    },
                    |s| {
                        s.state = PluginState::Starting;
                        s.pid = None;
                        s.restarts += 1;
                    },
                );
                status.restarts
            };
            tracing::info!(
                plugin = supervisor.id(),
                ?delay,
                attempt,
                "restarting plugin"
            );
            let (result, started) = tokio::select! {
                _ = cancel.cancelled() => break 'watching,
                result = async {
                    tokio::time::sleep(delay).await;
                    let started = Instant::now();
                    (start_healthy(config, &slot.bundle).await, started)
                } => result,
            };
            match result {
                Ok(restarted) => {
                    supervisor = restarted;
                    env.mark_running(&slot, &supervisor, started.elapsed());
                    healthy_since = Instant::now();
                    continue 'watching;
                }
                Err(error) => {
                    let message = error.to_string();
                    tracing::error!(plugin = slot.bundle.id(), "{message}");
                    env.update(
                        &slot,
                        EventKind::FailedToStart {
                            error: message.clone(),
                        },
                        |s| s.last_error = Some(message),
                    );
                }
            }
        }
    }
    // Deactivated.
    env.update(&slot, EventKind::Stopping, |s| {
        s.state = PluginState::Stopping
    });
    supervisor.stop().await;
    slot.lock().supervisor = None;
    env.update(&slot, EventKind::Stopped, |s| {
        s.state = PluginState::NotRunning;
        s.pid = None;
    });
}

/// Resolves once `fail_limit` health checks in a row have failed.
async fn failed_health_checks(supervisor: &Supervisor, policy: &HealthPolicy) -> PingError {
    let mut failures = 0;
    let mut ticks = tokio::time::interval_at(
        tokio::time::Instant::now() + policy.interval,
        policy.interval,
    );
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match supervisor.ping().await {
            Ok(()) => failures = 0,
            Err(error) => {
                failures += 1;
                tracing::debug!(plugin = supervisor.id(), failures, %error, "health check failed");
                if failures >= policy.fail_limit.max(1) {
                    return error;
                }
            }
        }
    }
}
