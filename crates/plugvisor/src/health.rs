//! The restart policy: when a crashed or hung plugin is restarted, and when a
//! crash-looping one is given up on. Pure: the [`crate::environment`] applies it.
//!
//! | what | default | anchor |
//! |---|---|---|
//! | crash detection | immediate (the exit itself) | Mattermost: next 30 s health tick |
//! | health ping interval | 10 s | Mattermost: 30 s |
//! | failed pings that make a failure | 3 in a row | Mattermost: 3 |
//! | first restart | immediate | |
//! | later restarts | 1 s, doubling to 60 s, ±20 % jitter | k8s: 10 s doubling to 300 s |
//! | backoff reset | after 10 min healthy | k8s: 10 min |
//! | crash-loop limit | more than 3 failures in 60 min disables the plugin (FailedToStayRunning) | Mattermost: 3 in 60 min; systemd: 5 starts in 10 s |
//!
//! A failure is a crash, a health check failing `fail_limit` times in a row, or
//! a restart attempt that does not become healthy.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The periodic health check, for plugins that are alive but hung.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthPolicy {
    pub interval: Duration,
    /// Failed pings in a row that count as one failure.
    pub fail_limit: u32,
}

impl Default for HealthPolicy {
    fn default() -> Self {
        HealthPolicy {
            interval: Duration::from_secs(10),
            fail_limit: 3,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct RestartPolicy {
    /// Delay of the second restart in a row; the first is immediate.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Running healthy this long forgets earlier restarts for the backoff.
    pub reset_after: Duration,
    /// Each delay is scaled by a random factor in `1 ± jitter`.
    pub jitter: f64,
    /// More failures than this within `failure_window` disables the plugin.
    pub max_failures: u32,
    pub failure_window: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            reset_after: Duration::from_secs(600),
            jitter: 0.2,
            max_failures: 3,
            failure_window: Duration::from_secs(3600),
        }
    }
}

impl RestartPolicy {
    /// The wait before a restart, given how many restarts came right before it
    /// and a uniform sample in `[0, 1)` for the jitter.
    pub fn delay(&self, restarts_in_a_row: u32, sample: f64) -> Duration {
        if restarts_in_a_row == 0 {
            return Duration::ZERO;
        }
        let doublings = (restarts_in_a_row - 1).min(32);
        let base = self
            .initial_backoff
            .saturating_mul(1u32 << doublings.min(31))
            .min(self.max_backoff);
        let factor = 1.0 + self.jitter * (2.0 * sample.clamp(0.0, 1.0) - 1.0);
        base.mul_f64(factor.max(0.0))
    }
}

/// Failures within the sliding window.
#[derive(Debug, Default)]
pub struct FailureHistory {
    failures: VecDeque<Instant>,
}

impl FailureHistory {
    /// Records a failure at `now`; returns true when the plugin is crash-looping
    /// and must not be restarted.
    pub fn record(&mut self, now: Instant, policy: &RestartPolicy) -> bool {
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

    pub fn count(&self) -> usize {
        self.failures.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_immediate_then_doubles_to_the_cap() {
        let policy = RestartPolicy {
            jitter: 0.0,
            ..RestartPolicy::default()
        };
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
        let policy = RestartPolicy {
            failure_window: Duration::from_secs(60),
            ..RestartPolicy::default()
        };
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
