//! One started plugin process as the environment sees it: the supervisor
//! that owns the process, what the plugin said it implements, and the host
//! API and broker stream that serve it.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use super::Shared;
use super::configuration;
use super::error::EnvironmentError;
use super::slot::Slot;
use crate::hooks::broker::{Broker, HOST_API_SERVICE_ID};
use crate::hooks::host_api::{HostApi, HostApiContext};
use crate::hooks::lifecycle::{self, BROKER_SERVICE, HookError, Implemented};
use crate::launch::plan_launch;
use crate::proto::plugvisor::v1::OnActivateRequest;
use crate::supervisor::{Ended, PingError, StopReport, Supervisor};
use crate::transport::PluginChannel;

/// What the host says it is, in OnActivate.
const HOST_VERSION: &str = concat!("plugvisor ", env!("CARGO_PKG_VERSION"));

pub(crate) struct Instance {
    supervisor: Supervisor,
    implemented: Implemented,
    shared: Arc<Shared>,
    // Held for the life of the process; dropping them stops them.
    _host_api: Option<HostApi>,
    _broker: Option<Broker>,
}

impl Instance {
    /// The one start path, for a first activation and for every restart:
    /// the launch plan, the supervisor's spawn → handshake → healthy within
    /// the plan's start timeout, then Implemented and OnActivate under their
    /// own timeouts. On any failure nothing is left running.
    pub(crate) async fn start(
        slot: &Arc<Slot>,
        shared: &Arc<Shared>,
    ) -> Result<Instance, EnvironmentError> {
        let id = slot.id();
        let config = &shared.config;
        let started = match slot.attach_target() {
            // Someone else's process: no plan, nothing spawned.
            Some(target) => {
                let timeout = slot.start_timeout(&config.launch);
                Supervisor::attach(id, &target, &config.supervisor, timeout).await
            }
            None => {
                let mut plan =
                    plan_launch(&slot.version().bundle, &config.launch).map_err(|source| {
                        EnvironmentError::Launch {
                            id: id.to_string(),
                            source,
                        }
                    })?;
                if slot.debugging() {
                    plan.start_timeout = crate::LaunchOptions::DEBUG_START_TIMEOUT;
                }
                if let Some(data_dir) = &config.data_dir {
                    plan.data_dir = Some(plugin_data_dir(data_dir, id)?);
                }
                Supervisor::start(id, &plan, &config.supervisor).await
            }
        };
        let supervisor = started.map_err(|source| EnvironmentError::Start {
            id: id.to_string(),
            source,
        })?;
        match Instance::activate(supervisor, slot, shared).await {
            Ok(instance) => Ok(instance),
            Err((supervisor, error)) => {
                supervisor.stop().await;
                Err(error)
            }
        }
    }

    /// Implemented, the host API, OnActivate.
    async fn activate(
        supervisor: Supervisor,
        slot: &Arc<Slot>,
        shared: &Arc<Shared>,
    ) -> Result<Instance, (Supervisor, EnvironmentError)> {
        let id = slot.id();
        let timeouts = slot.start_hook_timeouts(shared.config.hooks);
        let channel = supervisor.channel();
        let asked = lifecycle::implemented(&channel, timeouts.implemented);
        let implemented = match timed(shared, id, "Implemented", asked).await {
            Ok(implemented) => implemented,
            Err(error) => {
                let error = hook_failed(&supervisor, error).await;
                return Err((supervisor, error));
            }
        };
        let mut instance = Instance {
            supervisor,
            implemented,
            shared: shared.clone(),
            _host_api: None,
            _broker: None,
        };
        if !instance.implemented.lifecycle {
            if !slot.said_no_hooks.swap(true, Ordering::Relaxed) {
                tracing::info!("activated without lifecycle hooks");
            }
            return Ok(instance);
        }
        let broker_id = match instance.implemented.service(BROKER_SERVICE) {
            true => match instance.serve_host_api(slot, shared).await {
                Ok(id) => id,
                Err(error) => return Err((instance.supervisor, error)),
            },
            false => 0,
        };
        let values = configuration::effective(slot, shared);
        let request = OnActivateRequest {
            plugin_id: id.to_string(),
            configuration_json: configuration::to_json(&values),
            host_api_broker_id: broker_id,
            host_version: HOST_VERSION.to_string(),
        };
        let activated = lifecycle::on_activate(&channel, timeouts.on_activate, request);
        match timed(shared, id, lifecycle::ON_ACTIVATE, activated).await {
            Ok(None) => Ok(instance),
            Ok(Some(message)) => {
                tracing::error!("refused its activation: {message}");
                let error = EnvironmentError::Refused {
                    id: id.to_string(),
                    message,
                };
                Err((instance.supervisor, error))
            }
            Err(error) => {
                let error = hook_failed(&instance.supervisor, error).await;
                Err((instance.supervisor, error))
            }
        }
    }

    /// Serves the host API in the plugin's socket directory and announces it
    /// on the broker; returns its broker id.
    async fn serve_host_api(
        &mut self,
        slot: &Arc<Slot>,
        shared: &Arc<Shared>,
    ) -> Result<u32, EnvironmentError> {
        let id = slot.id();
        let unavailable = |problem: String| EnvironmentError::HostApi {
            id: id.to_string(),
            problem,
        };
        let socket_dir = self
            .supervisor
            .socket_dir()
            .ok_or_else(|| unavailable("the plugin's socket directory is gone".into()))?;
        let tls = self
            .supervisor
            .brokered_tls()
            .map_err(|e| unavailable(e.to_string()))?;
        let (slot_ref, shared_ref) = (Arc::downgrade(slot), Arc::downgrade(shared));
        let context = HostApiContext {
            plugin_id: id.to_string(),
            store: shared.store.clone(),
            configuration: Arc::new(move || current_json(&slot_ref, &shared_ref)),
            embedder: shared.config.host_services.clone(),
        };
        let group = self.supervisor.process_group();
        let host_api = HostApi::serve(context, &socket_dir, group, tls)
            .map_err(|e| unavailable(format!("cannot listen in {}: {e}", socket_dir.display())))?;
        let broker = Broker::open(self.supervisor.channel(), crate::stdio::plugin_span(id));
        let address = host_api.address().to_string_lossy().into_owned();
        if !broker.announce(HOST_API_SERVICE_ID, "unix", &address).await {
            return Err(unavailable("the broker stream closed".into()));
        }
        self._host_api = Some(host_api);
        self._broker = Some(broker);
        Ok(HOST_API_SERVICE_ID)
    }

    pub(crate) fn pid(&self) -> Option<u32> {
        self.supervisor.pid()
    }

    pub(crate) fn transport(&self) -> crate::Transport {
        self.supervisor.transport()
    }

    pub(crate) fn sandbox(&self) -> Option<crate::SandboxStatus> {
        self.supervisor.sandbox()
    }

    pub(crate) fn channel(&self) -> PluginChannel {
        self.supervisor.channel()
    }

    /// Whether the plugin said it serves this gRPC service.
    pub(crate) fn serves(&self, service: &str) -> bool {
        self.implemented.service(service)
    }

    /// Whether the plugin said it implements this hook.
    pub(crate) fn implements(&self, hook: &str) -> bool {
        self.implemented.hook(hook)
    }

    pub(crate) fn stderr_tail(&self) -> crate::stdio::StderrLines {
        self.supervisor.stderr_tail()
    }

    pub(crate) fn limits(&self) -> Vec<crate::EnforcedLimit> {
        self.supervisor.limits()
    }

    /// After the exit: the resource limit that ended the process, if one did.
    pub(crate) async fn limit_reached(&self) -> Option<String> {
        self.supervisor.limit_reached().await
    }

    pub(crate) async fn ping(&self) -> Result<(), PingError> {
        self.supervisor.ping().await
    }

    /// Resolves when the process exits, or the attached plugin goes away.
    pub(crate) async fn ended(&self) -> Ended {
        self.supervisor.ended().await
    }

    /// `OnConfigurationChange`, if the plugin implements it: `None` when it
    /// does not, else its answer (a refusal's message, or nothing).
    pub(crate) async fn configuration_changed(
        &self,
        configuration_json: String,
    ) -> Option<Result<Option<String>, HookError>> {
        if !self.implements(lifecycle::ON_CONFIGURATION_CHANGE) {
            return None;
        }
        let timeout = self.shared.config.hooks.on_configuration_change;
        let channel = self.channel();
        let call = lifecycle::on_configuration_change(&channel, timeout, configuration_json);
        let hook = lifecycle::ON_CONFIGURATION_CHANGE;
        Some(timed(&self.shared, self.supervisor.id(), hook, call).await)
    }

    /// A deactivation: OnDeactivate (bounded by its timeout, never blocking
    /// the stop), then the stop sequence.
    pub(crate) async fn stop(&self) -> StopReport {
        if self.implements(lifecycle::ON_DEACTIVATE) && !self.supervisor.has_ended() {
            let timeout = self.shared.config.hooks.on_deactivate;
            let channel = self.channel();
            let call = lifecycle::on_deactivate(&channel, timeout);
            let id = self.supervisor.id();
            if let Err(error) = timed(&self.shared, id, lifecycle::ON_DEACTIVATE, call).await {
                tracing::warn!("{error}; stopping it anyway");
            }
        }
        self.supervisor.stop_reaped().await
    }

    /// After a crash or a hang: no hooks, only the stop sequence (or the
    /// reaping of what exited) and the clean-up.
    pub(crate) async fn clean_up(&self) -> StopReport {
        self.supervisor.stop_reaped().await
    }

    /// SIGKILLs the process group now; a stop under way then ends at once.
    pub(crate) fn kill_now(&self) {
        self.supervisor.kill_now();
    }
}

/// A hook call that failed: when the connection broke because the plugin
/// exited, that exit is the news (with the plugin's stderr), not the hook.
async fn hook_failed(supervisor: &Supervisor, source: HookError) -> EnvironmentError {
    let id = supervisor.id().to_string();
    let hook = source.hook();
    if !source.is_final() {
        let ended = tokio::time::timeout(std::time::Duration::from_millis(200), supervisor.ended());
        if let Ok(ended) = ended.await {
            return EnvironmentError::ExitedDuringHook {
                id,
                hook,
                exit: ended.to_string(),
                stderr: supervisor.stderr_tail(),
            };
        }
    }
    EnvironmentError::Hook { id, source }
}

/// Awaits a hook call, measuring it.
async fn timed<T>(shared: &Shared, id: &str, hook: &str, call: impl Future<Output = T>) -> T {
    let started = std::time::Instant::now();
    let result = call.await;
    shared.metrics.hook(id, hook, started.elapsed());
    result
}

/// The configuration the host API's Configuration.Get answers with.
fn current_json(slot: &Weak<Slot>, shared: &Weak<Shared>) -> String {
    match (slot.upgrade(), shared.upgrade()) {
        (Some(slot), Some(shared)) => {
            configuration::to_json(&configuration::effective(&slot, &shared))
        }
        _ => "{}".to_string(),
    }
}

/// `DATA_DIR/plugins/ID`, made 0700 if missing: the plugin's own files, apart
/// from the store (`DATA_DIR/plugvisor.db`), which a sandboxed plugin cannot
/// open.
fn plugin_data_dir(
    data_dir: &std::path::Path,
    id: &str,
) -> Result<std::path::PathBuf, EnvironmentError> {
    use std::os::unix::fs::DirBuilderExt;
    let path = data_dir.join("plugins").join(id);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&path)
        .map_err(|source| EnvironmentError::DataDir {
            id: id.to_string(),
            path: path.clone(),
            source,
        })?;
    Ok(path)
}
