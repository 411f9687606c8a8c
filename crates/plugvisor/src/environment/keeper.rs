//! The keeper's decisions, apart from any process, socket or clock: what
//! comes after a start, a health check, a crash or a failed start. The
//! keeper task (`keeper_task.rs`) does the I/O around them.

use std::time::Duration;

use tokio::time::Instant;

use super::status::PluginState;
use crate::policy::{FailureHistory, HealthPolicy, RestartPolicy};

/// Why a plugin is not running as it should.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The running process exited: how, and the message with its stderr.
    Crashed { exit: String, message: String },
    /// Too many health checks in a row failed.
    Unhealthy(String),
    /// A start did not end Running. A timeout while other plugins were
    /// starting too may pass (a loaded host); anything else, such as an exit
    /// before the handshake, does not fix itself before the plugin has ever run.
    StartFailed { message: String, timed_out: bool },
    /// The plugin refused its activation: a configuration error, which no
    /// restart fixes.
    Refused(String),
    /// An attached plugin went away (why). Its process was never plugvisor's
    /// to restart.
    Gone(String),
}

impl Failure {
    pub(crate) fn message(&self) -> &str {
        match self {
            Failure::Crashed { message, .. }
            | Failure::Unhealthy(message)
            | Failure::Refused(message)
            | Failure::Gone(message)
            | Failure::StartFailed { message, .. } => message,
        }
    }
}

/// What the keeper does next.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Next {
    /// Start the plugin again after `delay`; `attempt` counts the restarts in a row.
    Restart { delay: Duration, attempt: u32 },
    /// Stop trying: the plugin ends in `state`, with `reason` as its last error.
    GiveUp { state: PluginState, reason: String },
}

pub(crate) struct Keeper {
    restart: RestartPolicy,
    fail_limit: u32,
    history: FailureHistory,
    restarts_in_a_row: u32,
    running_since: Option<Instant>,
    has_run: bool,
    failed_checks: u32,
}

impl Keeper {
    pub(crate) fn new(restart: RestartPolicy, health: &HealthPolicy) -> Keeper {
        Keeper {
            restart,
            fail_limit: health.fail_limit(),
            history: FailureHistory::default(),
            restarts_in_a_row: 0,
            running_since: None,
            has_run: false,
            failed_checks: 0,
        }
    }

    /// A start ended Running.
    pub(crate) fn started(&mut self, now: Instant) {
        self.running_since = Some(now);
        self.has_run = true;
        self.failed_checks = 0;
    }

    /// A health check of the running plugin answered. True when this one
    /// makes `fail_limit` failures in a row: the plugin counts as hung. In
    /// debug mode no failure counts: it may be paused at a breakpoint, and
    /// when debug mode ends it gets `fail_limit` fresh chances.
    pub(crate) fn checked(&mut self, healthy: bool, debugging: bool) -> bool {
        if healthy || debugging {
            self.failed_checks = 0;
            return false;
        }
        self.failed_checks += 1;
        self.failed_checks >= self.fail_limit
    }

    /// After a failure: a restart after some delay, or giving up. `jitter`
    /// is a uniform sample in `[0, 1)`. In debug mode the keeper always
    /// gives up: a restart would take the process from the developer's
    /// debugger.
    pub(crate) fn failed(
        &mut self,
        now: Instant,
        failure: &Failure,
        jitter: f64,
        debugging: bool,
    ) -> Next {
        let message = failure.message();
        if let Failure::Gone(why) = failure {
            let reason = format!(
                "attached plugin went away: {why}; not restarted: plugvisor does not own its process (start it again, then `plugvisor attach` it)"
            );
            return Next::GiveUp {
                state: PluginState::FailedToStayRunning,
                reason,
            };
        }
        if debugging {
            let state = match failure {
                Failure::Crashed { .. } | Failure::Unhealthy(_) | Failure::Gone(_) => {
                    PluginState::FailedToStayRunning
                }
                Failure::StartFailed { .. } | Failure::Refused(_) => PluginState::FailedToStart,
            };
            let reason = format!("not restarted in debug mode: {message}");
            return Next::GiveUp { state, reason };
        }
        match failure {
            Failure::Refused(_) => return self.give_up(PluginState::FailedToStart, message),
            Failure::StartFailed {
                timed_out: false, ..
            } if !self.has_run => return self.give_up(PluginState::FailedToStart, message),
            _ => {}
        }
        if let Some(since) = self.running_since.take()
            && now.duration_since(since) >= self.restart.reset_after()
        {
            self.restarts_in_a_row = 0;
        }
        if self.history.record(now, &self.restart) {
            let state = match self.has_run {
                true => PluginState::FailedToStayRunning,
                false => PluginState::FailedToStart,
            };
            let reason = format!(
                "disabled after {} failures within {}; last: {message}",
                self.history.count(),
                humanize(self.restart.failure_window())
            );
            return Next::GiveUp { state, reason };
        }
        let delay = self.restart.delay(self.restarts_in_a_row, jitter);
        self.restarts_in_a_row += 1;
        Next::Restart {
            delay,
            attempt: self.restarts_in_a_row,
        }
    }

    fn give_up(&self, state: PluginState, message: &str) -> Next {
        Next::GiveUp {
            state,
            reason: message.to_string(),
        }
    }
}

/// `60 min`, `90 s`, `250 ms`.
fn humanize(duration: Duration) -> String {
    let secs = duration.as_secs();
    if duration.subsec_nanos() != 0 || secs == 0 {
        format!("{} ms", duration.as_millis())
    } else if secs.is_multiple_of(60) {
        format!("{} min", secs / 60)
    } else {
        format!("{secs} s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keeper() -> Keeper {
        let restart = RestartPolicy::builder().jitter(0.0).build().unwrap();
        Keeper::new(restart, &HealthPolicy::default())
    }

    fn crash() -> Failure {
        Failure::Crashed {
            exit: "exit status 3".into(),
            message: "plugin crashed (exit status 3)".into(),
        }
    }

    fn restart_delay(next: Next) -> Duration {
        match next {
            Next::Restart { delay, .. } => delay,
            other => panic!("expected a restart, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_attached_plugin_that_went_away_is_never_restarted() {
        let mut keeper = keeper();
        keeper.started(Instant::now());
        let gone = Failure::Gone("its process 42 exited".into());
        match keeper.failed(Instant::now(), &gone, 0.5, false) {
            Next::GiveUp { state, reason } => {
                assert_eq!(state, PluginState::FailedToStayRunning);
                assert!(
                    reason.starts_with(
                        "attached plugin went away: its process 42 exited; not restarted"
                    ),
                    "{reason}"
                );
            }
            other => panic!("expected to give up, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_crash_restarts_at_once_then_backs_off_and_disables() {
        let mut keeper = keeper();
        keeper.started(Instant::now());
        let first = keeper.failed(Instant::now(), &crash(), 0.5, false);
        assert_eq!(
            first,
            Next::Restart {
                delay: Duration::ZERO,
                attempt: 1
            }
        );
        keeper.started(Instant::now());
        let second = restart_delay(keeper.failed(Instant::now(), &crash(), 0.5, false));
        assert_eq!(second, Duration::from_secs(1));
        // The backoff expires; the restart fails to come up.
        tokio::time::advance(second).await;
        let failed_start = Failure::StartFailed {
            message: "exited before its handshake".into(),
            timed_out: false,
        };
        let third = restart_delay(keeper.failed(Instant::now(), &failed_start, 0.5, false));
        assert_eq!(third, Duration::from_secs(2));
        tokio::time::advance(third).await;
        // A fourth failure within the hour is one more than max_failures.
        match keeper.failed(Instant::now(), &crash(), 0.5, false) {
            Next::GiveUp { state, reason } => {
                assert_eq!(state, PluginState::FailedToStayRunning);
                assert!(reason.contains("4 failures within 60 min"), "{reason}");
                assert!(reason.ends_with("exit status 3)"), "{reason}");
            }
            other => panic!("expected to give up, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn running_long_enough_resets_the_backoff() {
        let mut keeper = keeper();
        keeper.started(Instant::now());
        keeper.failed(Instant::now(), &crash(), 0.5, false);
        keeper.started(Instant::now());
        assert_eq!(
            restart_delay(keeper.failed(Instant::now(), &crash(), 0.5, false)),
            Duration::from_secs(1)
        );
        keeper.started(Instant::now());
        tokio::time::advance(RestartPolicy::DEFAULT_RESET_AFTER).await;
        assert_eq!(
            restart_delay(keeper.failed(Instant::now(), &crash(), 0.5, false)),
            Duration::ZERO
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_first_start_that_fails_on_its_own_is_not_retried() {
        let mut keeper = keeper();
        let exited = Failure::StartFailed {
            message: "plugin exited before its handshake (exit status 1)".into(),
            timed_out: false,
        };
        match keeper.failed(Instant::now(), &exited, 0.5, false) {
            Next::GiveUp { state, reason } => {
                assert_eq!(state, PluginState::FailedToStart);
                assert_eq!(reason, exited.message());
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_first_start_that_timed_out_is_retried_with_backoff() {
        let mut keeper = keeper();
        let slow = Failure::StartFailed {
            message: "plugin printed no handshake within 3s".into(),
            timed_out: true,
        };
        assert_eq!(
            restart_delay(keeper.failed(Instant::now(), &slow, 0.5, false)),
            Duration::ZERO
        );
        assert_eq!(
            restart_delay(keeper.failed(Instant::now(), &slow, 0.5, false)),
            Duration::from_secs(1)
        );
        keeper.failed(Instant::now(), &slow, 0.5, false);
        match keeper.failed(Instant::now(), &slow, 0.5, false) {
            Next::GiveUp { state, .. } => assert_eq!(state, PluginState::FailedToStart),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusal_is_never_retried_even_after_running() {
        let mut keeper = keeper();
        keeper.started(Instant::now());
        keeper.failed(Instant::now(), &crash(), 0.5, false);
        let refused = Failure::Refused("greeting must not be empty".into());
        assert_eq!(
            keeper.failed(Instant::now(), &refused, 0.5, false),
            Next::GiveUp {
                state: PluginState::FailedToStart,
                reason: "greeting must not be empty".into()
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn debug_mode_gives_up_at_the_first_failure_of_any_kind() {
        let mut keeper = keeper();
        keeper.started(Instant::now());
        match keeper.failed(Instant::now(), &crash(), 0.5, true) {
            Next::GiveUp { state, reason } => {
                assert_eq!(state, PluginState::FailedToStayRunning);
                assert_eq!(
                    reason,
                    "not restarted in debug mode: plugin crashed (exit status 3)"
                );
            }
            other => panic!("a debug-mode plugin was restarted: {other:?}"),
        }
        // A start that timed out would be retried outside debug mode.
        let slow = Failure::StartFailed {
            message: "plugin printed no handshake within 1h".into(),
            timed_out: true,
        };
        match keeper.failed(Instant::now(), &slow, 0.5, true) {
            Next::GiveUp { state, .. } => assert_eq!(state, PluginState::FailedToStart),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn failed_checks_do_not_count_in_debug_mode() {
        let mut keeper = keeper();
        keeper.started(Instant::now());
        assert!(!keeper.checked(false, false));
        assert!(!keeper.checked(false, false));
        for _ in 0..10 {
            assert!(!keeper.checked(false, true), "debug mode counted a failure");
        }
        // Out of debug mode, it has its full limit again.
        assert!(!keeper.checked(false, false));
        assert!(!keeper.checked(false, false));
        assert!(keeper.checked(false, false));
    }

    #[test]
    fn health_checks_fail_only_after_the_limit_in_a_row() {
        let mut keeper = keeper();
        keeper.started(Instant::now());
        assert!(!keeper.checked(false, false));
        assert!(!keeper.checked(false, false));
        assert!(!keeper.checked(true, false), "a success resets the count");
        assert!(!keeper.checked(false, false));
        assert!(!keeper.checked(false, false));
        assert!(keeper.checked(false, false));
    }
}
