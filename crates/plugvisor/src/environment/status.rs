//! What the environment says about its plugins: states, statuses and events.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::Bundle;
use crate::bundle::BundleError;
use crate::launch::RuntimeKind;

/// A plugin's state, as Mattermost names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum PluginState {
    /// Not activated, or deactivated.
    NotRunning,
    /// Being started (or restarted): spawn, handshake, health, activation.
    Starting,
    /// Healthy and activated.
    Running,
    /// Its start failed and will not be retried on its own (an exit before
    /// the handshake, a refused activation); `start` tries again.
    FailedToStart,
    /// It failed more often than the restart policy allows and was disabled.
    FailedToStayRunning,
    /// Being deactivated.
    Stopping,
}

impl std::fmt::Display for PluginState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// A snapshot of one plugin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PluginStatus {
    /// The manifest's id.
    pub id: String,
    /// The manifest's version, or "-".
    pub version: String,
    /// Native or Python; `None` when no launch plan can be made.
    pub runtime: Option<RuntimeKind>,
    /// Where the plugin is in its lifecycle.
    pub state: PluginState,
    /// The plugin process, while Running.
    pub pid: Option<u32>,
    /// When the plugin entered this state.
    #[serde(rename = "since_unix_ms", with = "unix_ms")]
    pub since: SystemTime,
    /// Restarts since the plugin was activated.
    pub restarts: u32,
    /// Why the plugin last failed, while that is still news: cleared by a
    /// deactivation or a new activation.
    pub last_error: Option<String>,
    /// What a Starting plugin waits for, such as its turn to start when
    /// many plugins start at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// In debug mode ([`crate::Environment::set_debugging`]): failed health
    /// checks do not kill it, an exit does not restart it, and a start may
    /// take [`crate::LaunchOptions::DEBUG_START_TIMEOUT`].
    #[serde(default)]
    pub debug: bool,
    /// How the host reaches the plugin, while Running: unix, unix+mtls,
    /// tcp or tcp+mtls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<crate::Transport>,
    /// What its sandbox enforces, while Running sandboxed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<crate::SandboxStatus>,
    /// The resource limits in force on the running process, and how each is
    /// enforced (from the manifest's `server.limits` and the operator's
    /// [`crate::LaunchOptionsBuilder::limits`]); empty when none is set or
    /// nothing runs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub limits: Vec<crate::EnforcedLimit>,
    /// Where its starts attach to a plugin someone else started
    /// ([`crate::Environment::attach`]), with its pid if given: plugvisor
    /// never signals or restarts that process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attached: Option<String>,
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

/// What happened to a plugin. Sent with the status it led to.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventKind {
    /// An activation began.
    Starting,
    /// The plugin waits for its turn: other plugins are starting
    /// ([`PluginStatus::note`] says how many).
    Queued,
    /// The plugin is Running; `startup_ms` is from its spawn (or its
    /// restart's spawn) to its activation.
    Running {
        /// Milliseconds from the spawn to Running.
        startup_ms: u64,
    },
    /// A start failed; `error` says why (with the plugin's stderr).
    FailedToStart {
        /// Why.
        error: String,
    },
    /// The running process exited.
    Crashed {
        /// `exit status 3`, `killed by signal 9 (SIGKILL)`.
        exit: String,
    },
    /// Too many health checks in a row failed.
    Unhealthy {
        /// Which check failed how.
        reason: String,
    },
    /// The plugin will be started again after `delay_ms`.
    RestartScheduled {
        /// Milliseconds until the restart.
        delay_ms: u64,
        /// Restarts in a row, this one included.
        attempt: u32,
    },
    /// The plugin failed too often and is no longer restarted.
    Disabled {
        /// The failures and the last of them.
        reason: String,
    },
    /// Debug mode began (`on`) or ended.
    Debugging {
        /// Whether the plugin is in debug mode now.
        on: bool,
    },
    /// A deactivation began.
    Stopping,
    /// [`crate::Environment::detach`]: its starts spawn its bundle again.
    Detached,
    /// A reload found a new bundle; its activation follows.
    Added,
    /// A reload loaded a new version of the plugin (its plugin.json or its
    /// executable changed); an activated plugin was stopped and its start
    /// follows.
    Reloaded {
        /// The version it had before.
        previous_version: String,
    },
    /// A reload found a new version that cannot be launched and kept the
    /// one the plugin has, running or not.
    ReloadRefused {
        /// Which file or field is at fault.
        reason: String,
    },
    /// A reload found the bundle gone: the plugin was stopped and is no
    /// longer listed.
    Removed,
    /// The plugin is stopped and reaped.
    Stopped {
        /// Which step of the stop sequence ended the process; `None` when
        /// there was no process (a deactivation during a restart's backoff).
        method: Option<crate::StopMethod>,
        /// Its exit (`exit status 0`, `killed by signal 9 (SIGKILL)`).
        exit: Option<String>,
    },
}

/// A state change of one plugin.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Event {
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
    /// The plugin's status right after it.
    pub status: PluginStatus,
}

/// A bundle found in the plugins directory, or one that failed to load.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Available {
    /// A valid bundle.
    Bundle(Box<Bundle>),
    /// A directory that is not a valid bundle, and why.
    Invalid(BundleError),
}
