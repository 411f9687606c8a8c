//! What can go wrong when an application asks the environment for something.

use crate::InvalidConfig;
use crate::bundle::ScanError;
use crate::hooks::HookError;
use crate::launch::LaunchError;
use crate::settings_schema::InvalidSetting;
use crate::store::StoreError;
use crate::supervisor::{PingError, SupervisorError};

/// An [`crate::Environment`] call that failed, naming the plugin.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnvironmentError {
    /// The plugins directory could not be scanned.
    #[error(transparent)]
    Scan(#[from] ScanError),
    /// The configuration cannot work.
    #[error("invalid configuration: {0}")]
    Config(#[from] InvalidConfig),
    /// Plugins are to run sandboxed, and this kernel cannot sandbox them.
    #[error(transparent)]
    Sandbox(#[from] crate::SandboxError),
    /// The plugin's own data directory could not be made.
    #[error("cannot create the data directory {} of plugin {id:?}: {source}", path.display())]
    DataDir {
        /// The plugin.
        id: String,
        /// The directory.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// No valid bundle has this id.
    #[error("no plugin with id {0:?} in the plugins directory")]
    UnknownPlugin(String),
    /// The call needs a Running plugin.
    #[error("plugin {0:?} is not running")]
    NotRunning(String),
    /// The bundle names a file that cannot be run.
    #[error("plugin {id:?} cannot be launched: {source}")]
    Launch {
        /// The plugin.
        id: String,
        /// Which file, which field.
        source: LaunchError,
    },
    /// The process did not start healthy.
    #[error("plugin {id:?} failed to start: {source}")]
    Start {
        /// The plugin.
        id: String,
        /// Why, with its stderr.
        source: SupervisorError,
    },
    /// The plugin refused: its activation (OnActivate) or a configuration
    /// change (OnConfigurationChange), with its own message.
    #[error("plugin {id:?} refused: {message}")]
    Refused {
        /// The plugin.
        id: String,
        /// Why, in the plugin's words.
        message: String,
    },
    /// A lifecycle hook did not answer (in time).
    #[error("plugin {id:?}: {source}")]
    Hook {
        /// The plugin.
        id: String,
        /// Which hook, how.
        source: HookError,
    },
    /// The plugin exited while the host waited for a lifecycle hook.
    #[error("plugin {id:?} exited ({exit}) during {hook}{stderr}")]
    ExitedDuringHook {
        /// The plugin.
        id: String,
        /// Which hook.
        hook: &'static str,
        /// `exit status 3`, `killed by signal 9 (SIGKILL)`.
        exit: String,
        /// Its last stderr lines.
        stderr: crate::StderrLines,
    },
    /// The host API could not be served to the plugin.
    #[error("plugin {id:?}: the host API cannot be served: {problem}")]
    HostApi {
        /// The plugin.
        id: String,
        /// Why.
        problem: String,
    },
    /// A configuration value does not fit the plugin's settings_schema.
    #[error("plugin {id:?}: {source}")]
    InvalidSetting {
        /// The plugin.
        id: String,
        /// Which key, and what would fit.
        source: InvalidSetting,
    },
    /// The store (data directory) failed.
    #[error("plugin {id:?}: {problem}")]
    Store {
        /// The plugin.
        id: String,
        /// What failed.
        problem: String,
    },
    /// The store could not be opened.
    #[error(transparent)]
    OpenStore(#[from] StoreError),
    /// The keeper stopped restarting the plugin.
    #[error("plugin {id:?} was given up on: {reason}")]
    GaveUp {
        /// The plugin.
        id: String,
        /// The failures and the last of them.
        reason: String,
    },
    /// A deactivation (or shutdown) came first.
    #[error("activation of plugin {0:?} was cancelled")]
    Cancelled(String),
    /// The environment no longer starts plugins.
    #[error("the environment is shutting down")]
    ShuttingDown,
    /// A health check failed.
    #[error("plugin {id:?} failed its health check: {source}")]
    Ping {
        /// The plugin.
        id: String,
        /// How.
        source: PingError,
    },
}

impl EnvironmentError {
    /// The part of the message that is about the plugin itself, without
    /// "plugin X failed to start:": what its status shows as LAST ERROR.
    pub(crate) fn plugin_message(&self) -> String {
        match self {
            EnvironmentError::Launch { source, .. } => source.to_string(),
            EnvironmentError::Start { source, .. } => source.to_string(),
            EnvironmentError::Refused { message, .. } => message.clone(),
            EnvironmentError::Hook { source, .. } => source.to_string(),
            EnvironmentError::ExitedDuringHook {
                hook, exit, stderr, ..
            } => format!("exited ({exit}) during {hook}{stderr}"),
            EnvironmentError::HostApi { problem, .. } => {
                format!("the host API cannot be served: {problem}")
            }
            other => other.to_string(),
        }
    }

    /// Whether a later attempt may succeed on its own: a start that ran out
    /// of time (a loaded host, a slow machine).
    pub(crate) fn is_timeout(&self) -> bool {
        matches!(self, EnvironmentError::Start { source, .. } if source.is_timeout())
    }

    /// Whether the plugin turned its activation down, or could not answer
    /// it: a refusal, a hook that timed out or that it claims but does not
    /// serve; or files that do not match their integrity pins, which stay
    /// so until an operator acts, or a sandbox this kernel cannot make. A restart would not change that.
    pub(crate) fn is_refusal(&self) -> bool {
        match self {
            EnvironmentError::Refused { .. } => true,
            EnvironmentError::Launch { source, .. } => source.is_integrity(),
            EnvironmentError::Start {
                source:
                    SupervisorError::Integrity(_)
                    | SupervisorError::Sandbox(_)
                    | SupervisorError::Attach { .. },
                ..
            } => true,
            EnvironmentError::Hook { source, .. } => source.is_final(),
            _ => false,
        }
    }
}
