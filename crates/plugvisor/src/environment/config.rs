//! How an [`crate::Environment`] runs its plugins.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};
use tonic::service::Routes;

use super::configuration::FileValues;
use crate::hooks::HookTimeouts;
use crate::invalid_config::{InvalidConfig, positive};
use crate::launch::LaunchOptions;
use crate::policy::{HealthPolicy, RestartPolicy};
use crate::store::KvLimits;
use crate::supervisor::SupervisorConfig;

/// Everything an [`crate::Environment`] needs: where the bundles are, how
/// plugins are launched, checked, restarted and stopped. Build it with
/// [`EnvironmentConfig::builder`], or take every default with
/// [`EnvironmentConfig::new`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct EnvironmentConfig {
    pub(crate) plugins_dir: PathBuf,
    pub(crate) launch: LaunchOptions,
    pub(crate) supervisor: SupervisorConfig,
    pub(crate) health: HealthPolicy,
    pub(crate) restart: RestartPolicy,
    pub(crate) shutdown_deadline: Duration,
    pub(crate) data_dir: Option<PathBuf>,
    pub(crate) hooks: HookTimeouts,
    pub(crate) kv_limits: KvLimits,
    pub(crate) plugin_configuration: FileValues,
    pub(crate) host_services: Routes,
    pub(crate) attach: std::collections::BTreeMap<String, crate::AttachTarget>,
}

impl EnvironmentConfig {
    /// [`crate::Environment::shutdown`] SIGKILLs whatever is still running
    /// this long after it began: 5 s.
    pub const DEFAULT_SHUTDOWN_DEADLINE: Duration = Duration::from_secs(5);

    /// Every default, for the bundles in `plugins_dir`.
    pub fn new(plugins_dir: impl Into<PathBuf>) -> EnvironmentConfig {
        EnvironmentConfig {
            plugins_dir: plugins_dir.into(),
            launch: LaunchOptions::default(),
            supervisor: SupervisorConfig::default(),
            health: HealthPolicy::default(),
            restart: RestartPolicy::default(),
            shutdown_deadline: Self::DEFAULT_SHUTDOWN_DEADLINE,
            data_dir: None,
            hooks: HookTimeouts::default(),
            kv_limits: KvLimits::default(),
            plugin_configuration: FileValues::new(),
            host_services: Routes::default(),
            attach: std::collections::BTreeMap::new(),
        }
    }

    /// Starts from [`EnvironmentConfig::new`].
    pub fn builder(plugins_dir: impl Into<PathBuf>) -> EnvironmentConfigBuilder {
        EnvironmentConfigBuilder(EnvironmentConfig::new(plugins_dir))
    }

    /// The folder whose subdirectories are plugin bundles.
    pub fn plugins_dir(&self) -> &Path {
        &self.plugins_dir
    }

    /// How launch plans are made (interpreters, start timeouts).
    pub fn launch(&self) -> &LaunchOptions {
        &self.launch
    }

    /// How each plugin process is started and stopped.
    pub fn supervisor(&self) -> &SupervisorConfig {
        &self.supervisor
    }

    /// How hung plugins are found.
    pub fn health(&self) -> &HealthPolicy {
        &self.health
    }

    /// When failed plugins are restarted or given up on.
    pub fn restart(&self) -> &RestartPolicy {
        &self.restart
    }

    /// See [`EnvironmentConfig::DEFAULT_SHUTDOWN_DEADLINE`].
    pub fn shutdown_deadline(&self) -> Duration {
        self.shutdown_deadline
    }

    /// Where the store lives (`plugvisor.db`: the plugins' key-value data and
    /// the operator's configuration values). `None`, the default, keeps the
    /// store in memory: nothing survives the host.
    pub fn data_dir(&self) -> Option<&Path> {
        self.data_dir.as_deref()
    }

    /// How long each lifecycle hook may take.
    pub fn hook_timeouts(&self) -> &HookTimeouts {
        &self.hooks
    }

    /// Size limits of each plugin's key-value store.
    pub fn kv_limits(&self) -> &KvLimits {
        &self.kv_limits
    }

    /// Where plugin `id`'s starts attach to a plugin someone else started
    /// (see [`crate::Environment::attach`]), from the start.
    pub fn attach_target(&self, id: &str) -> Option<&crate::AttachTarget> {
        self.attach.get(id)
    }

    /// The host's configuration values for plugin `id`, between its
    /// settings_schema's defaults and the operator's values.
    pub fn plugin_configuration(&self, id: &str) -> Option<&Map<String, Value>> {
        self.plugin_configuration.get(id)
    }
}

/// Builds an [`EnvironmentConfig`]; [`EnvironmentConfigBuilder::build`]
/// checks it. Each part ([`LaunchOptions`], [`SupervisorConfig`], the
/// policies) is checked when it is built itself.
#[derive(Debug, Clone)]
pub struct EnvironmentConfigBuilder(EnvironmentConfig);

impl EnvironmentConfigBuilder {
    /// See [`EnvironmentConfig::launch`].
    pub fn launch(mut self, options: LaunchOptions) -> Self {
        self.0.launch = options;
        self
    }

    /// See [`EnvironmentConfig::supervisor`].
    pub fn supervisor(mut self, config: SupervisorConfig) -> Self {
        self.0.supervisor = config;
        self
    }

    /// See [`EnvironmentConfig::health`].
    pub fn health(mut self, policy: HealthPolicy) -> Self {
        self.0.health = policy;
        self
    }

    /// See [`EnvironmentConfig::restart`].
    pub fn restart(mut self, policy: RestartPolicy) -> Self {
        self.0.restart = policy;
        self
    }

    /// See [`EnvironmentConfig::shutdown_deadline`]; more than zero.
    pub fn shutdown_deadline(mut self, deadline: Duration) -> Self {
        self.0.shutdown_deadline = deadline;
        self
    }

    /// See [`EnvironmentConfig::data_dir`].
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.0.data_dir = Some(dir.into());
        self
    }

    /// See [`EnvironmentConfig::hook_timeouts`].
    pub fn hook_timeouts(mut self, timeouts: HookTimeouts) -> Self {
        self.0.hooks = timeouts;
        self
    }

    /// See [`EnvironmentConfig::kv_limits`].
    pub fn kv_limits(mut self, limits: KvLimits) -> Self {
        self.0.kv_limits = limits;
        self
    }

    /// Sets the host's configuration values of plugin `id` (replacing
    /// earlier ones). They are checked against its settings_schema when the
    /// environment is made; a bad one fails [`crate::Environment::new`],
    /// naming the key.
    pub fn plugin_configuration(
        mut self,
        id: impl Into<String>,
        values: Map<String, Value>,
    ) -> Self {
        self.0.plugin_configuration.insert(id.into(), values);
        self
    }

    /// See [`EnvironmentConfig::attach_target`]; an id with no bundle fails
    /// [`crate::Environment::new`].
    pub fn attach(mut self, id: impl Into<String>, target: crate::AttachTarget) -> Self {
        self.0.attach.insert(id.into(), target);
        self
    }

    /// Adds one of the application's own gRPC services to every plugin's
    /// host API, beside plugvisor's own (Log, KeyValue, Configuration). Each
    /// request carries the calling plugin's [`crate::CallerPlugin`] in its
    /// extensions. A service built with tonic's codegen qualifies:
    ///
    /// ```no_run
    /// # fn service() -> tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health> {
    /// #     tonic_health::server::health_reporter().1
    /// # }
    /// let config = plugvisor::EnvironmentConfig::builder("plugins")
    ///     .host_service(service()) // e.g. ChatApiServer::new(MyChatApi { .. })
    ///     .build()?;
    /// # Ok::<(), plugvisor::InvalidConfig>(())
    /// ```
    pub fn host_service<S>(mut self, service: S) -> Self
    where
        S: tower::Service<
                tonic::codegen::http::Request<tonic::body::Body>,
                Error = std::convert::Infallible,
            > + tonic::server::NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Response: axum::response::IntoResponse,
        S::Future: Send + 'static,
    {
        let routes = std::mem::take(&mut self.0.host_services);
        self.0.host_services = routes.add_service(service);
        self
    }

    /// The configuration, or the first setting that cannot work.
    pub fn build(self) -> Result<EnvironmentConfig, InvalidConfig> {
        positive("shutdown-deadline", self.0.shutdown_deadline)?;
        Ok(self.0)
    }
}
