//! plugvisor: host HashiCorp go-plugin gRPC plugins from a Rust application,
//! with Python plugins first-class.
//!
//! An [`Environment`] takes a folder of plugin bundles (each a directory with
//! a Mattermost-style `plugin.json`), activates them, keeps them running
//! (crash restarts with backoff, health checks, crash-loop detection) and
//! stops them cleanly, leaving no process behind. A [`Supervisor`] is one
//! plugin process, for an application that wants to manage a single plugin
//! itself.
//!
//! ```no_run
//! use plugvisor::{Environment, EnvironmentConfig};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let env = Environment::new(EnvironmentConfig::new("plugins"))?;
//! for id in env.plugin_ids() {
//!     env.activate(&id).await?;
//! }
//! env.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! The library does not print: it logs with `tracing` and returns typed
//! errors whose messages say what to do next. Configurations are checked
//! when they are built ([`InvalidConfig`]). `docs/architecture.md` in the
//! repository describes the layers.
#![deny(missing_docs)]

mod bundle;
mod cgroup;
mod digest;
mod environment;
mod handshake;
mod hooks;
pub mod http;
mod integrity;
mod invalid_config;
mod launch;
mod limits;
mod lock;
mod manifest;
mod policy;
mod process;
mod sandbox;
mod settings_schema;
mod stdio;
mod store;
mod supervisor;
mod sweep;
mod tls;
mod transport;
mod zygote;

pub use bundle::{Bundle, BundleError, BundleProblem, MANIFEST_FILE, ScanError};
pub use cgroup::{CgroupSupport, cgroup_support};
pub use digest::{InvalidSha256, Sha256};
pub use environment::{
    Available, CallError, ConfigApplied, ConfigChange, ConfigSource, ConfigValue, Environment,
    EnvironmentConfig, EnvironmentConfigBuilder, EnvironmentError, Event, EventKind, PluginState,
    PluginStatus, ReloadIssue, ReloadReport,
};
pub use handshake::{Handshake, HandshakeLineError, Network};
pub use hooks::{CallerPlugin, HookError, HookTimeouts, HookTimeoutsBuilder};
pub use integrity::{IntegrityError, Pin, PinSource, check_pins, lock_entry};
pub use invalid_config::InvalidConfig;
pub use launch::{
    LaunchError, LaunchOptions, LaunchOptionsBuilder, LaunchPlan, RuntimeKind, plan_launch,
};
pub use limits::{EnforcedLimit, Enforcement, LimitKind, LimitsError, ResourceLimits};
pub use lock::{LOCK_FILE, Lock, LockError, LockedInterpreter, LockedPlugin};
pub use manifest::{Manifest, ManifestError, ServerSection};
pub use policy::{HealthPolicy, RestartPolicy, RestartPolicyBuilder};
pub use sandbox::{
    SandboxError, SandboxPolicy, SandboxRequest, SandboxStatus, landlock_abi, require_landlock,
};
pub use settings_schema::{InvalidSetting, Setting, SettingOption, SettingType, SettingsSchema};
pub use stdio::StderrLines;
pub use store::{KvLimits, KvLimitsBuilder, StoreError};
pub use supervisor::{
    AttachTarget, Ended, PingError, SkippedLines, StopMethod, StopReport, Supervisor,
    SupervisorConfig, SupervisorConfigBuilder, SupervisorError, TlsMode, Transport,
};
pub use tls::TlsError;
pub use transport::{ChannelError, ConnectError, PluginChannel, ResponseBody};

/// The JSON library plugvisor's configuration values are made of
/// ([`EnvironmentConfigBuilder::plugin_configuration`], [`ConfigValue`]),
/// so that an application builds them with the same version.
pub use serde_json;

/// Generated gRPC code: go-plugin's services (`plugin`) and plugvisor's own
/// (`plugvisor::v1`), for an application's own clients and servers.
pub mod proto {
    /// go-plugin's `plugin` package: controller, stdio and broker.
    #[allow(missing_docs)]
    pub mod plugin {
        tonic::include_proto!("plugin");
    }

    /// plugvisor's protocol: lifecycle hooks, the host API, the HTTP hook.
    pub mod plugvisor {
        /// Version 1.
        #[allow(missing_docs)]
        pub mod v1 {
            tonic::include_proto!("plugvisor.v1");
        }
    }
}

/// Internals for plugvisor's own fuzz targets and tests; not a stable API.
#[doc(hidden)]
pub mod internals {
    pub use crate::handshake::parse_handshake_line;
    pub use crate::manifest::{PLATFORM_KEYS, clean_bundle_path};
    pub use crate::stdio::{HclogLine, Line, parse_hclog_line, read_bounded_line};
    /// Waits until every sweep for leftovers asked for so far has run.
    pub use crate::sweep::settled as sweep_settled;
    pub use crate::tls::{ClientIdentity, client_config};
    pub use crate::transport::connect;
}

/// The README's Rust examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
