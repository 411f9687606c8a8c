//! systemd's service notifications (sd_notify) for `run`: READY=1 once the
//! first start of every plugin is done, STOPPING=1 when the shutdown begins,
//! and WATCHDOG=1 while the host's event loop runs. Without NOTIFY_SOCKET
//! (not under systemd, or not Type=notify) nothing is sent.

use std::time::Duration;

use sd_notify::NotifyState;
use tokio::task::JoinHandle;

/// READY=1, with a STATUS= line for `systemctl status`.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// STOPPING=1: the service manager waits for the exit instead of counting
/// it as a crash.
pub fn stopping(status: &str) {
    send(&[NotifyState::Stopping, NotifyState::Status(status)]);
}

/// A STATUS= line alone.
pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

/// When the service manager asks for a watchdog (WATCHDOG_USEC, for this
/// pid if WATCHDOG_PID says), a task that sends WATCHDOG=1 at half that
/// period. It runs on `run`'s one-thread event loop, the loop that keeps
/// the plugins: if the loop hangs the pings stop, and systemd kills and
/// restarts the host instead of leaving it hung.
pub fn watchdog() -> Option<JoinHandle<()>> {
    let period = sd_notify::watchdog_enabled()?;
    let every = (period / 2).max(Duration::from_millis(1));
    tracing::info!(?period, "systemd watchdog: pinging every {every:?}");
    Some(tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        // A late tick is one ping, not a burst that hides the delay.
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            send(&[NotifyState::Watchdog]);
        }
    }))
}

fn send(states: &[NotifyState]) {
    if let Err(error) = sd_notify::notify(states) {
        tracing::warn!(%error, "cannot notify the service manager (NOTIFY_SOCKET)");
    }
}
