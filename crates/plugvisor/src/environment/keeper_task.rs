//! The task that keeps one activated plugin running: it starts it, watches
//! it (exit, health checks), restarts it as the keeper decides, and stops it
//! when asked. It holds its slot and the shared settings, never the
//! Environment, so dropping the last Environment handle ends it.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Shared;
use super::error::EnvironmentError;
use super::instance::Instance;
use super::keeper::{Failure, Keeper, Next};
use super::slot::{Life, Phase, Slot};
use super::status::{EventKind, PluginState, PluginStatus};
use crate::process::describe_exit;
use crate::supervisor::{Ended, StopReport};

/// The first outcome of an activation: Running, or why not.
pub(crate) type Outcome = Result<PluginStatus, EnvironmentError>;

pub(crate) struct KeeperTask {
    pub(crate) slot: Arc<Slot>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) stop: CancellationToken,
    pub(crate) first: Option<oneshot::Sender<Outcome>>,
}

/// How the keeper's watch over a running plugin ended.
enum Watch {
    StopRequested,
    Failed(Failure),
}

/// How the keeper ends.
enum End {
    Stopped(Option<StopReport>),
    GaveUp {
        state: PluginState,
        reason: String,
        error: Option<EnvironmentError>,
    },
}

impl KeeperTask {
    pub(crate) async fn run(mut self) {
        let config = &self.shared.config;
        let mut keeper = Keeper::new(config.restart.clone(), &config.health);
        let mut backoff = Duration::ZERO;
        let end = loop {
            if !backoff.is_zero() {
                tokio::select! {
                    _ = self.stop.cancelled() => break End::Stopped(None),
                    _ = tokio::time::sleep(backoff) => {}
                }
            }
            let shared = self.shared.clone();
            let slot = match shared.starts.try_enter() {
                Some(slot) => slot,
                None => {
                    self.queued();
                    tokio::select! {
                        _ = self.stop.cancelled() => break End::Stopped(None),
                        slot = shared.starts.enter() => slot,
                    }
                }
            };
            self.slot.lock().note = None;
            let spawned = Instant::now();
            // Cancelling drops a start under way, which kills its process.
            let started = tokio::select! {
                _ = self.stop.cancelled() => break End::Stopped(None),
                // Boxed: the start's state is large and short-lived, the
                // keeper's small and lives as long as the plugin.
                started = Box::pin(Instance::start(&self.slot, &self.shared)) => started,
            };
            let loaded = slot.shared_the_host();
            slot.done(
                spawned.elapsed(),
                self.slot.start_timeout(&shared.config.launch),
            );
            let (failure, error) = match started {
                Ok(instance) => {
                    let instance = Arc::new(instance);
                    keeper.started(Instant::now());
                    self.running(&instance, spawned.elapsed());
                    match Box::pin(self.watch(&instance, &mut keeper)).await {
                        Watch::StopRequested => {
                            break End::Stopped(Some(Box::pin(self.stop_running(&instance)).await));
                        }
                        Watch::Failed(failure) => {
                            Box::pin(self.failed_while_running(&instance, &failure)).await;
                            (failure, None)
                        }
                    }
                }
                Err(error) => {
                    let failure = match error.is_refusal() {
                        true => Failure::Refused(error.plugin_message()),
                        false => Failure::StartFailed {
                            message: error.plugin_message(),
                            timed_out: error.is_timeout() && loaded,
                        },
                    };
                    tracing::error!("failed to start: {}", error.plugin_message());
                    (failure, Some(error))
                }
            };
            let next = keeper.failed(
                Instant::now(),
                &failure,
                fastrand::f64(),
                self.slot.debugging(),
            );
            if let Failure::StartFailed { message, .. } | Failure::Refused(message) = &failure {
                self.start_failed(message, &next);
            }
            match next {
                Next::Restart { delay, attempt } => {
                    self.restart_scheduled(delay, attempt);
                    backoff = delay;
                }
                Next::GiveUp { state, reason } => {
                    break End::GaveUp {
                        state,
                        reason,
                        error,
                    };
                }
            }
        };
        self.end(end);
    }

    /// Many plugins are starting: this one waits for its turn.
    fn queued(&self) {
        let starts = &self.shared.starts;
        let note = format!(
            "queued: {} plugins are starting, {} at a time",
            starts.busy(),
            starts.limit()
        );
        self.slot
            .update(&self.shared, EventKind::Queued, |s| s.note = Some(note));
    }

    fn running(&mut self, instance: &Arc<Instance>, startup: Duration) {
        let kind = EventKind::Running {
            startup_ms: startup.as_millis() as u64,
        };
        let status = self.slot.update(&self.shared, kind, |s| {
            Slot::set_phase(s, Phase::Running(instance.clone()))
        });
        if let Some(first) = self.first.take() {
            let _ = first.send(Ok(status));
        }
    }

    /// Until a stop is asked for, the process exits, or too many health
    /// checks in a row fail.
    async fn watch(&self, instance: &Instance, keeper: &mut Keeper) -> Watch {
        let policy = &self.shared.config.health;
        let latencies = self.shared.metrics.health_checks(self.slot.id());
        let checks = async {
            // A random first check spreads the checks of plugins that started
            // together; the grid then batches them into a few wake-ups.
            let mut next = Instant::now() + policy.interval().mul_f64(fastrand::f64().max(0.01));
            loop {
                tokio::time::sleep_until(on_grid(next, policy.interval())).await;
                let pinged = Instant::now();
                // Boxed for the length of the call only: between checks the
                // watch holds no call state.
                let result = Box::pin(instance.ping()).await;
                latencies.observe(pinged.elapsed().as_secs_f64());
                let debugging = self.slot.debugging();
                match &result {
                    Err(error) if debugging => {
                        tracing::info!(%error, "health check failed (debug mode: not counted)");
                    }
                    Err(error) => tracing::debug!(%error, "health check failed"),
                    Ok(()) => {}
                }
                if keeper.checked(result.is_ok(), debugging) {
                    let error = result.err().map(|e| e.to_string()).unwrap_or_default();
                    return format!(
                        "{} failed health checks in a row: {error}",
                        policy.fail_limit()
                    );
                }
                next += policy.interval();
                // A plugin that answers slowly is checked again one interval later, not at once.
                next = next.max(Instant::now());
            }
        };
        tokio::select! {
            _ = self.stop.cancelled() => Watch::StopRequested,
            ended = instance.ended() => {
                let status = match ended {
                    Ended::Exited(status) => status,
                    Ended::Gone(why) => return Watch::Failed(Failure::Gone(why)),
                };
                let exit = describe_exit(status);
                let limit = instance.limit_reached().await;
                let tail = instance.stderr_tail();
                let message = match limit {
                    Some(limit) => format!("plugin crashed {limit} ({exit}){tail}"),
                    None => format!("plugin crashed ({exit}){tail}"),
                };
                Watch::Failed(Failure::Crashed { exit, message })
            }
            reason = checks => Watch::Failed(Failure::Unhealthy(reason)),
        }
    }

    async fn failed_while_running(&self, instance: &Instance, failure: &Failure) {
        let message = failure.message().to_string();
        tracing::warn!("{message}");
        let kind = match failure {
            Failure::Crashed { exit, .. } => EventKind::Crashed { exit: exit.clone() },
            Failure::Gone(why) => EventKind::Crashed {
                exit: format!("attached plugin went away: {why}"),
            },
            _ => EventKind::Unhealthy {
                reason: message.clone(),
            },
        };
        self.slot
            .update(&self.shared, kind, |s| s.last_error = Some(message));
        instance.clean_up().await;
    }

    async fn stop_running(&self, instance: &Arc<Instance>) -> StopReport {
        self.slot.update(&self.shared, EventKind::Stopping, |s| {
            Slot::set_phase(s, Phase::Stopping(instance.clone()))
        });
        let _turn = self.shared.stops.enter().await;
        instance.stop().await
    }

    /// Announces a failed start, and its end when the keeper gives up here.
    fn start_failed(&self, message: &str, next: &Next) {
        let (text, gives_up) = match next {
            Next::GiveUp {
                state: PluginState::FailedToStart,
                reason,
            } => (reason.as_str(), true),
            _ => (message, false),
        };
        let kind = EventKind::FailedToStart {
            error: text.to_string(),
        };
        self.slot.update(&self.shared, kind, |s| {
            s.last_error = Some(text.to_string());
            if gives_up {
                s.life = Life::Idle(PluginState::FailedToStart);
            }
        });
    }

    fn restart_scheduled(&self, delay: Duration, attempt: u32) {
        tracing::info!(?delay, attempt, "restarting plugin");
        let kind = EventKind::RestartScheduled {
            delay_ms: delay.as_millis() as u64,
            attempt,
        };
        self.slot.update(&self.shared, kind, |s| {
            Slot::set_phase(s, Phase::Starting);
            s.restarts += 1;
        });
    }

    fn end(mut self, end: End) {
        let outcome = match end {
            End::Stopped(report) => {
                let kind = EventKind::Stopped {
                    method: report.map(|r| r.method),
                    exit: report.and_then(|r| r.status).map(describe_exit),
                };
                self.slot.update(&self.shared, kind, |s| {
                    s.life = Life::Idle(PluginState::NotRunning);
                    s.last_error = None;
                });
                Err(EnvironmentError::Cancelled(self.slot.id().to_string()))
            }
            End::GaveUp {
                state,
                reason,
                error,
            } => {
                if state == PluginState::FailedToStayRunning {
                    tracing::error!("{reason}");
                    let kind = EventKind::Disabled {
                        reason: reason.clone(),
                    };
                    self.slot.update(&self.shared, kind, |s| {
                        s.life = Life::Idle(state);
                        s.last_error = Some(reason.clone());
                    });
                } else {
                    // start_failed has announced it; make sure the keeper is gone.
                    self.slot.lock().life = Life::Idle(state);
                }
                Err(error.unwrap_or(EnvironmentError::GaveUp {
                    id: self.slot.id().to_string(),
                    reason,
                }))
            }
        };
        if let Some(first) = self.first.take() {
            let _ = first.send(outcome);
        }
    }
}

/// Slots per health interval: checks due in the same slot share one wake-up
/// of the host (a lone check costs it several times what one among many
/// does), while each slot holds only 1/SLOTS of the plugins.
const SLOTS_PER_INTERVAL: u32 = 20;

/// `at` rounded up to the slot grid, which is common to every plugin of the
/// process.
fn on_grid(at: Instant, interval: Duration) -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    let step = (interval / SLOTS_PER_INTERVAL).as_nanos().max(1);
    let slots = at
        .saturating_duration_since(epoch)
        .as_nanos()
        .div_ceil(step);
    epoch + Duration::from_nanos(u64::try_from(slots * step).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_grid_rounds_up_to_a_slot_shared_by_every_plugin() {
        let interval = Duration::from_secs(2);
        let step = interval / SLOTS_PER_INTERVAL;
        let base = on_grid(Instant::now(), interval);
        for offset_ms in [0, 1, 37, 99, 100, 101, 1999] {
            let at = base + Duration::from_millis(offset_ms);
            let slot = on_grid(at, interval);
            assert!(
                slot >= at && slot - at < step,
                "{offset_ms} ms -> {:?}",
                slot - at
            );
            assert_eq!(
                (slot - base).as_nanos() % step.as_nanos(),
                0,
                "{offset_ms} ms"
            );
        }
        // Two checks due within one slot wake up together.
        assert_eq!(
            on_grid(base + Duration::from_millis(1), interval),
            on_grid(base + Duration::from_millis(99), interval)
        );
    }
}
