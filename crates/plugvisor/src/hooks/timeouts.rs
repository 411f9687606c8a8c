//! How long the host waits for each lifecycle hook.

use std::time::Duration;

use crate::invalid_config::{InvalidConfig, positive};

/// The deadline of each lifecycle hook. A hook that does not answer in time
/// counts as failed: a late OnActivate fails the start, a late
/// OnConfigurationChange keeps the old configuration, a late OnDeactivate
/// goes on to the stop sequence. A hanging hook holds up only its own
/// plugin. Build with [`HookTimeouts::builder`]; [`Default`] gives the
/// defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct HookTimeouts {
    pub(crate) implemented: Duration,
    pub(crate) on_activate: Duration,
    pub(crate) on_configuration_change: Duration,
    pub(crate) on_deactivate: Duration,
}

impl HookTimeouts {
    /// `Implemented`, asked right after the first healthy answer: 2 s.
    pub const DEFAULT_IMPLEMENTED: Duration = Duration::from_secs(2);
    /// `OnActivate`, where a plugin may connect to what it needs: 10 s.
    pub const DEFAULT_ON_ACTIVATE: Duration = Duration::from_secs(10);
    /// `OnConfigurationChange`: 5 s.
    pub const DEFAULT_ON_CONFIGURATION_CHANGE: Duration = Duration::from_secs(5);
    /// `OnDeactivate`, before the stop sequence; it counts against the
    /// shutdown deadline too: 2 s.
    pub const DEFAULT_ON_DEACTIVATE: Duration = Duration::from_secs(2);

    /// Starts from the defaults.
    pub fn builder() -> HookTimeoutsBuilder {
        HookTimeoutsBuilder(HookTimeouts::default())
    }

    /// See [`HookTimeouts::DEFAULT_IMPLEMENTED`].
    pub fn implemented(&self) -> Duration {
        self.implemented
    }

    /// See [`HookTimeouts::DEFAULT_ON_ACTIVATE`].
    pub fn on_activate(&self) -> Duration {
        self.on_activate
    }

    /// See [`HookTimeouts::DEFAULT_ON_CONFIGURATION_CHANGE`].
    pub fn on_configuration_change(&self) -> Duration {
        self.on_configuration_change
    }

    /// See [`HookTimeouts::DEFAULT_ON_DEACTIVATE`].
    pub fn on_deactivate(&self) -> Duration {
        self.on_deactivate
    }
}

impl Default for HookTimeouts {
    fn default() -> Self {
        HookTimeouts {
            implemented: Self::DEFAULT_IMPLEMENTED,
            on_activate: Self::DEFAULT_ON_ACTIVATE,
            on_configuration_change: Self::DEFAULT_ON_CONFIGURATION_CHANGE,
            on_deactivate: Self::DEFAULT_ON_DEACTIVATE,
        }
    }
}

/// Builds [`HookTimeouts`]; each must be more than zero.
#[derive(Debug, Clone)]
pub struct HookTimeoutsBuilder(HookTimeouts);

impl HookTimeoutsBuilder {
    /// See [`HookTimeouts::implemented`].
    pub fn implemented(mut self, timeout: Duration) -> Self {
        self.0.implemented = timeout;
        self
    }

    /// See [`HookTimeouts::on_activate`].
    pub fn on_activate(mut self, timeout: Duration) -> Self {
        self.0.on_activate = timeout;
        self
    }

    /// See [`HookTimeouts::on_configuration_change`].
    pub fn on_configuration_change(mut self, timeout: Duration) -> Self {
        self.0.on_configuration_change = timeout;
        self
    }

    /// See [`HookTimeouts::on_deactivate`].
    pub fn on_deactivate(mut self, timeout: Duration) -> Self {
        self.0.on_deactivate = timeout;
        self
    }

    /// The timeouts, or the first that cannot work.
    pub fn build(self) -> Result<HookTimeouts, InvalidConfig> {
        let t = self.0;
        positive("implemented-timeout", t.implemented)?;
        positive("activate-timeout", t.on_activate)?;
        positive("configuration-change-timeout", t.on_configuration_change)?;
        positive("deactivate-timeout", t.on_deactivate)?;
        Ok(t)
    }
}
