//! The restart policy (when a crashed or hung plugin is restarted, and when a
//! crash-looping one is given up on) and the health policy (how a hung
//! plugin is noticed). Pure values: the keeper applies them.
//!
//! | what | default | anchor |
//! |---|---|---|
//! | crash detection | immediate (the exit itself) | Mattermost: next 30 s health tick |
//! | health check interval | [`HealthPolicy::DEFAULT_INTERVAL`] (10 s) | Mattermost: 30 s |
//! | failed checks that make a failure | [`HealthPolicy::DEFAULT_FAIL_LIMIT`] (3) in a row | Mattermost: 3 |
//! | first restart | immediate | |
//! | later restarts | [`RestartPolicy::DEFAULT_INITIAL_BACKOFF`] (1 s), doubling to [`RestartPolicy::DEFAULT_MAX_BACKOFF`] (60 s), ± [`RestartPolicy::DEFAULT_JITTER`] (20 %) | k8s: 10 s doubling to 300 s |
//! | backoff reset | after [`RestartPolicy::DEFAULT_RESET_AFTER`] (10 min) running | k8s: 10 min |
//! | crash-loop limit | more than [`RestartPolicy::DEFAULT_MAX_FAILURES`] (3) failures within [`RestartPolicy::DEFAULT_FAILURE_WINDOW`] (60 min) | Mattermost: 3 in 60 min |
//!
//! A failure is a crash, `fail_limit` failed health checks in a row, or a
//! restart attempt that does not become healthy.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use crate::invalid_config::{InvalidConfig, positive};

/// The periodic health check that catches plugins that are alive but hung.
/// Build it with [`HealthPolicy::new`]; [`Default`] gives the defaults below.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HealthPolicy {
    interval: Duration,
    fail_limit: u32,
}

impl HealthPolicy {
    /// Time between two health checks of one running plugin: 10 s.
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
    /// Failed health checks in a row that count as one failure: 3.
    pub const DEFAULT_FAIL_LIMIT: u32 = 3;

    /// A policy that checks every `interval` and restarts the plugin after
    /// `fail_limit` failed checks in a row. Both must be more than zero.
    pub fn new(interval: Duration, fail_limit: u32) -> Result<HealthPolicy, InvalidConfig> {
        positive("health-interval", interval)?;
        if fail_limit == 0 {
            return Err(InvalidConfig::new(
                "health-fail-limit",
                "must be at least 1",
            ));
        }
        Ok(HealthPolicy {
            interval,
            fail_limit,
        })
    }

    /// Time between two checks of one plugin. The first check of each plugin
    /// comes at a random point within its first interval, so that plugins
    /// started together are not all checked at once; each check is then
    /// rounded up to one of 20 slots per interval, so that the checks of a
    /// slot share one wake-up of the host.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Failed checks in a row that make the plugin count as hung.
    pub fn fail_limit(&self) -> u32 {
        self.fail_limit
    }
}

impl Default for HealthPolicy {
    fn default() -> Self {
        HealthPolicy {
            interval: Self::DEFAULT_INTERVAL,
            fail_limit: Self::DEFAULT_FAIL_LIMIT,
        }
    }
}

/// When a failed plugin is restarted, and when it is given up on. Build it
/// with [`RestartPolicy::builder`]; [`Default`] gives the defaults.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RestartPolicy {
    initial_backoff: Duration,
    max_backoff: Duration,
    reset_after: Duration,
    jitter: f64,
    max_failures: u32,
    failure_window: Duration,
}

impl RestartPolicy {
    /// Wait before the second restart in a row (the first is immediate): 1 s.
    pub const DEFAULT_INITIAL_BACKOFF: Duration = Duration::from_secs(1);
    /// Longest wait between restarts: 60 s.
    pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(60);
    /// Running this long forgets earlier restarts for the backoff: 10 min.
    pub const DEFAULT_RESET_AFTER: Duration = Duration::from_secs(600);
    /// Each wait is scaled by a random factor in `1 ± jitter`: 0.2.
    pub const DEFAULT_JITTER: f64 = 0.2;
    /// Failures tolerated within the window; one more disables the plugin: 3.
    pub const DEFAULT_MAX_FAILURES: u32 = 3;
    /// The window for `max_failures`: 60 min.
    pub const DEFAULT_FAILURE_WINDOW: Duration = Duration::from_secs(3600);

    /// Starts from the defaults.
    pub fn builder() -> RestartPolicyBuilder {
        RestartPolicyBuilder(RestartPolicy::default())
    }

    /// Wait before the second restart in a row; it doubles after each.
    pub fn initial_backoff(&self) -> Duration {
        self.initial_backoff
    }

    /// The cap on the doubling wait.
    pub fn max_backoff(&self) -> Duration {
        self.max_backoff
    }

    /// Running this long resets the backoff to an immediate restart.
    pub fn reset_after(&self) -> Duration {
        self.reset_after
    }

    /// Random spread of each wait, as a fraction.
    pub fn jitter(&self) -> f64 {
        self.jitter
    }

    /// More failures than this within [`RestartPolicy::failure_window`]
    /// disable the plugin (FailedToStayRunning).
    pub fn max_failures(&self) -> u32 {
        self.max_failures
    }

    /// The sliding window for `max_failures`.
    pub fn failure_window(&self) -> Duration {
        self.failure_window
    }

    /// The wait before a restart, given how many restarts came right before
    /// it and a uniform sample in `[0, 1)` for the jitter.
    pub(crate) fn delay(&self, restarts_in_a_row: u32, sample: f64) -> Duration {
        if restarts_in_a_row == 0 {
            return Duration::ZERO;
        }
        let doublings = (restarts_in_a_row - 1).min(31);
        let base = self
            .initial_backoff
            .saturating_mul(1u32 << doublings)
            .min(self.max_backoff);
        let factor = 1.0 + self.jitter * (2.0 * sample.clamp(0.0, 1.0) - 1.0);
        base.mul_f64(factor.max(0.0))
    }
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            initial_backoff: Self::DEFAULT_INITIAL_BACKOFF,
            max_backoff: Self::DEFAULT_MAX_BACKOFF,
            reset_after: Self::DEFAULT_RESET_AFTER,
            jitter: Self::DEFAULT_JITTER,
            max_failures: Self::DEFAULT_MAX_FAILURES,
            failure_window: Self::DEFAULT_FAILURE_WINDOW,
        }
    }
}

/// Builds a [`RestartPolicy`]; [`RestartPolicyBuilder::build`] checks it.
#[derive(Debug, Clone)]
pub struct RestartPolicyBuilder(RestartPolicy);

impl RestartPolicyBuilder {
    /// See [`RestartPolicy::initial_backoff`]; more than zero.
    pub fn initial_backoff(mut self, value: Duration) -> Self {
        self.0.initial_backoff = value;
        self
    }

    /// See [`RestartPolicy::max_backoff`]; at least the initial backoff.
    pub fn max_backoff(mut self, value: Duration) -> Self {
        self.0.max_backoff = value;
        self
    }

    /// See [`RestartPolicy::reset_after`]; more than zero.
    pub fn reset_after(mut self, value: Duration) -> Self {
        self.0.reset_after = value;
        self
    }

    /// See [`RestartPolicy::jitter`]; from 0 to 1.
    pub fn jitter(mut self, value: f64) -> Self {
        self.0.jitter = value;
        self
    }

    /// See [`RestartPolicy::max_failures`]; 0 disables a plugin at its first failure.
    pub fn max_failures(mut self, value: u32) -> Self {
        self.0.max_failures = value;
        self
    }

    /// See [`RestartPolicy::failure_window`]; more than zero.
    pub fn failure_window(mut self, value: Duration) -> Self {
        self.0.failure_window = value;
        self
    }

    /// The policy, or the first setting that cannot work.
    pub fn build(self) -> Result<RestartPolicy, InvalidConfig> {
        let policy = self.0;
        positive("restart-backoff", policy.initial_backoff)?;
        positive("failure-window", policy.failure_window)?;
        positive("backoff-reset", policy.reset_after)?;
        if policy.max_backoff < policy.initial_backoff {
            return Err(InvalidConfig::new(
                "restart-max-backoff",
                format!(
                    "{:?} is less than the initial backoff {:?}",
                    policy.max_backoff, policy.initial_backoff
                ),
            ));
        }
        if !(0.0..=1.0).contains(&policy.jitter) {
            return Err(InvalidConfig::new(
                "restart-jitter",
                format!("{} is not between 0 and 1", policy.jitter),
            ));
        }
        Ok(policy)
    }
}

/// Failures within the sliding window.
#[derive(Debug, Default)]
pub(crate) struct FailureHistory {
    failures: VecDeque<Instant>,
}

impl FailureHistory {
    /// Records a failure at `now`; true when the plugin is crash-looping and
    /// must not be restarted.
    pub(crate) fn record(&mut self, now: Instant, policy: &RestartPolicy) -> bool {
        while let Some(&oldest) = self.failures.front() {
            if now.duration_since(oldest) > policy.failure_window {
                self.failures.pop_front();
            } else {
                break;
            }
        }
        self.failures.push_back(now);
        self.failures.len() > policy.max_failures as usize
    }

    pub(crate) fn count(&self) -> usize {
        self.failures.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_jitter() -> RestartPolicy {
        RestartPolicy::builder().jitter(0.0).build().unwrap()
    }

    #[test]
    fn backoff_is_immediate_then_doubles_to_the_cap() {
        let policy = no_jitter();
        let delays: Vec<u64> = (0..10).map(|n| policy.delay(n, 0.5).as_secs()).collect();
        assert_eq!(delays, vec![0, 1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(policy.delay(u32::MAX, 0.5), Duration::from_secs(60));
    }

    #[test]
    fn jitter_stays_within_bounds() {
        let policy = RestartPolicy::default();
        assert_eq!(policy.delay(1, 0.0), Duration::from_millis(800));
        assert_eq!(policy.delay(1, 1.0), Duration::from_millis(1200));
        assert_eq!(policy.delay(0, 1.0), Duration::ZERO);
    }

    #[test]
    fn bad_policies_are_refused_when_built() {
        let zero = HealthPolicy::new(Duration::ZERO, 3).unwrap_err();
        assert_eq!(zero.setting, "health-interval");
        assert!(HealthPolicy::new(Duration::from_secs(1), 0).is_err());
        let error = RestartPolicy::builder()
            .initial_backoff(Duration::from_secs(10))
            .max_backoff(Duration::from_secs(1))
            .build()
            .unwrap_err();
        assert_eq!(error.setting, "restart-max-backoff");
        assert!(RestartPolicy::builder().jitter(1.5).build().is_err());
        assert!(
            RestartPolicy::builder()
                .initial_backoff(Duration::ZERO)
                .build()
                .is_err()
        );
        assert!(
            RestartPolicy::builder()
                .failure_window(Duration::ZERO)
                .build()
                .is_err()
        );
    }

    #[test]
    fn more_than_max_failures_in_the_window_is_a_crash_loop() {
        let policy = RestartPolicy::default();
        let mut history = FailureHistory::default();
        let start = Instant::now();
        assert!(!history.record(start, &policy));
        assert!(!history.record(start + Duration::from_secs(1), &policy));
        assert!(!history.record(start + Duration::from_secs(2), &policy));
        assert!(history.record(start + Duration::from_secs(3), &policy));
    }

    #[test]
    fn old_failures_leave_the_window() {
        let policy = RestartPolicy::builder()
            .failure_window(Duration::from_secs(60))
            .build()
            .unwrap();
        let mut history = FailureHistory::default();
        let start = Instant::now();
        for i in 0..3 {
            assert!(!history.record(start + Duration::from_secs(i), &policy));
        }
        // The first two have left the window by now.
        assert!(!history.record(start + Duration::from_secs(62), &policy));
        assert_eq!(history.count(), 2);
    }
}
