//! How an [`crate::Environment`] runs its plugins.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::invalid_config::{InvalidConfig, positive};
use crate::launch::LaunchOptions;
use crate::policy::{HealthPolicy, RestartPolicy};
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

    /// The configuration, or the first setting that cannot work.
    pub fn build(self) -> Result<EnvironmentConfig, InvalidConfig> {
        positive("shutdown-deadline", self.0.shutdown_deadline)?;
        Ok(self.0)
    }
}
