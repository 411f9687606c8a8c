//! Timings and protocol settings for one plugin process.

use std::time::Duration;

use super::TlsMode;
use crate::handshake::HandshakeConfig;
use crate::invalid_config::{InvalidConfig, positive};

/// How one plugin process is started, checked and stopped. Build it with
/// [`SupervisorConfig::builder`]; [`Default`] gives the defaults, which are
/// Mattermost's handshake values so that Mattermost plugins run unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SupervisorConfig {
    pub(crate) handshake: HandshakeConfig,
    pub(crate) ping_timeout: Duration,
    pub(crate) controller_grace: Duration,
    pub(crate) stop_grace: Duration,
    pub(crate) tls: TlsMode,
    pub(crate) allow_remote: bool,
}

impl SupervisorConfig {
    /// The magic cookie every plugin is given and must check:
    /// `MATTERMOST_PLUGIN=Securely message teams, anywhere.`
    pub const DEFAULT_MAGIC_COOKIE: (&'static str, &'static str) =
        crate::handshake::DEFAULT_MAGIC_COOKIE;
    /// App protocol versions the host accepts: `[1]`. The plugin answers
    /// with the highest one it also speaks.
    pub const DEFAULT_APP_VERSIONS: &'static [u32] = &[1];
    /// The TCP port range offered to plugins (`PLUGIN_MIN_PORT`,
    /// `PLUGIN_MAX_PORT`): 10000 to 25000, as go-plugin.
    pub const DEFAULT_PORT_RANGE: (u16, u16) = (10000, 25000);
    /// Deadline of one health check: 1 s.
    pub const DEFAULT_PING_TIMEOUT: Duration = Duration::from_secs(1);
    /// Wait for the exit after `GRPCController/Shutdown`, before SIGTERM: 2 s.
    pub const DEFAULT_CONTROLLER_GRACE: Duration = Duration::from_secs(2);
    /// Wait for the exit after SIGTERM, before SIGKILL: 2 s.
    pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(2);

    /// Starts from the defaults.
    pub fn builder() -> SupervisorConfigBuilder {
        SupervisorConfigBuilder(SupervisorConfig::default())
    }

    /// The magic cookie's variable name and value.
    pub fn magic_cookie(&self) -> (&str, &str) {
        (
            &self.handshake.magic_cookie_key,
            &self.handshake.magic_cookie_value,
        )
    }

    /// App protocol versions the host accepts.
    pub fn app_versions(&self) -> &[u32] {
        &self.handshake.app_versions
    }

    /// Deadline of one health check (and of the controller's Shutdown call).
    pub fn ping_timeout(&self) -> Duration {
        self.ping_timeout
    }

    /// Wait for the exit after the controller's Shutdown.
    pub fn controller_grace(&self) -> Duration {
        self.controller_grace
    }

    /// Wait for the exit after SIGTERM, before SIGKILL.
    pub fn stop_grace(&self) -> Duration {
        self.stop_grace
    }

    /// Whether go-plugin's AutoMTLS is offered: with [`TlsMode::Auto`] (the
    /// default) and [`TlsMode::Require`] each start gets a throwaway client
    /// certificate in `PLUGIN_CLIENT_CERT`, and a plugin that answers with its
    /// own certificate is spoken to over TLS pinned to it. The mode says what
    /// happens to a plugin that answers in plaintext.
    pub fn tls(&self) -> TlsMode {
        self.tls
    }

    /// Whether a plugin may ask to be dialled at a TCP address that is not
    /// loopback (127.0.0.0/8, ::1), the unspecified 0.0.0.0 and :: included.
    /// Off by default: such a plugin fails to start, before any dial, since
    /// whatever listens there is reachable from other machines.
    pub fn allow_remote(&self) -> bool {
        self.allow_remote
    }
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        SupervisorConfig {
            handshake: HandshakeConfig::default(),
            ping_timeout: Self::DEFAULT_PING_TIMEOUT,
            controller_grace: Self::DEFAULT_CONTROLLER_GRACE,
            stop_grace: Self::DEFAULT_STOP_GRACE,
            tls: TlsMode::default(),
            allow_remote: false,
        }
    }
}

/// Builds a [`SupervisorConfig`]; [`SupervisorConfigBuilder::build`] checks it.
#[derive(Debug, Clone)]
pub struct SupervisorConfigBuilder(SupervisorConfig);

impl SupervisorConfigBuilder {
    /// See [`SupervisorConfig::magic_cookie`]. The key must be a valid
    /// environment variable name.
    pub fn magic_cookie(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.0.handshake.magic_cookie_key = key.into();
        self.0.handshake.magic_cookie_value = value.into();
        self
    }

    /// See [`SupervisorConfig::app_versions`]; at least one.
    pub fn app_versions(mut self, versions: impl IntoIterator<Item = u32>) -> Self {
        self.0.handshake.app_versions = versions.into_iter().collect();
        self
    }

    /// The TCP port range offered to plugins; `min` ≤ `max`.
    pub fn port_range(mut self, min: u16, max: u16) -> Self {
        self.0.handshake.min_port = min;
        self.0.handshake.max_port = max;
        self
    }

    /// See [`SupervisorConfig::ping_timeout`]; more than zero.
    pub fn ping_timeout(mut self, timeout: Duration) -> Self {
        self.0.ping_timeout = timeout;
        self
    }

    /// See [`SupervisorConfig::controller_grace`].
    pub fn controller_grace(mut self, grace: Duration) -> Self {
        self.0.controller_grace = grace;
        self
    }

    /// See [`SupervisorConfig::stop_grace`].
    pub fn stop_grace(mut self, grace: Duration) -> Self {
        self.0.stop_grace = grace;
        self
    }

    /// See [`SupervisorConfig::allow_remote`].
    pub fn allow_remote(mut self, on: bool) -> Self {
        self.0.allow_remote = on;
        self
    }

    /// See [`SupervisorConfig::tls`].
    pub fn tls(mut self, mode: TlsMode) -> Self {
        self.0.tls = mode;
        self
    }

    /// The configuration, or the first setting that cannot work.
    pub fn build(self) -> Result<SupervisorConfig, InvalidConfig> {
        let config = self.0;
        let handshake = &config.handshake;
        let key = &handshake.magic_cookie_key;
        if key.is_empty() || key.contains(['=', '\0']) {
            return Err(InvalidConfig::new(
                "magic-cookie",
                format!("{key:?} is not an environment variable name; write KEY=VALUE"),
            ));
        }
        if handshake.magic_cookie_value.contains('\0') {
            return Err(InvalidConfig::new(
                "magic-cookie",
                "the value contains a NUL byte",
            ));
        }
        if handshake.app_versions.is_empty() {
            return Err(InvalidConfig::new(
                "app-versions",
                "at least one app protocol version is needed",
            ));
        }
        if handshake.min_port > handshake.max_port {
            return Err(InvalidConfig::new(
                "port-range",
                format!("{} is more than {}", handshake.min_port, handshake.max_port),
            ));
        }
        positive("ping-timeout", config.ping_timeout)?;
        Ok(config)
    }
}
