//! Debug mode: a plugin paused in a debugger (SIGSTOP here) is neither
//! killed by its health checks nor restarted when it exits, and its start
//! may take long; against real processes.

use std::path::Path;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use plugvisor::{
    Environment, EnvironmentConfig, EventKind, HealthPolicy, LaunchOptions, PluginState,
    SupervisorConfig,
};
use plugvisor_testkit::*;

/// Checks every 50 ms, each given up after 100 ms; two failures in a row
/// make a plugin hung. Restarts come fast.
fn config(root: &Path) -> EnvironmentConfig {
    let restart = fast_restarts();
    let supervisor = SupervisorConfig::builder()
        .ping_timeout(Duration::from_millis(100))
        .stop_grace(Duration::from_millis(200))
        .build()
        .unwrap();
    let launch = LaunchOptions::builder()
        .native_start_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    EnvironmentConfig::builder(root)
        .health(HealthPolicy::new(Duration::from_millis(50), 2).unwrap())
        .restart(restart)
        .supervisor(supervisor)
        .launch(launch)
        .build()
        .unwrap()
}

fn signal(pid: u32, signal: Signal) {
    kill(Pid::from_raw(pid as i32), signal).unwrap();
}

/// Health checks of `id` so far, from the metrics.
fn checks(env: &Environment, id: &str) -> u64 {
    let prefix = format!("plugvisor_plugin_health_check_seconds_count{{plugin=\"{id}\"}} ");
    env.metrics()
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .map_or(0, |n| n.trim().parse().unwrap())
}

#[tokio::test]
async fn a_paused_plugin_in_debug_mode_stays_and_without_it_is_restarted() {
    let root = tempfile::tempdir().unwrap();
    let spawns = root.path().join("spawns");
    let flags = format!("--spawn-log {}", spawns.display());
    native_fake_bundle(root.path(), "debugged", &flags);
    native_fake_bundle(root.path(), "plain", "");
    let env = Environment::new(config(root.path())).unwrap();
    let mut events = env.subscribe();
    let marked = env.set_debugging("debugged", true).unwrap();
    assert!(marked.debug);
    let kind = next_event(&mut events, "debugged", |_, _| true).await.kind;
    assert_eq!(kind, EventKind::Debugging { on: true });
    let debugged = env.activate("debugged").await.unwrap();
    assert!(debugged.debug);
    let debugged = debugged.pid.unwrap();
    let plain = env.activate("plain").await.unwrap().pid.unwrap();
    // Both pause, as at a breakpoint.
    signal(debugged, Signal::SIGSTOP);
    signal(plain, Signal::SIGSTOP);

    // The plain one is hung: killed and restarted.
    next_event(&mut events, "plain", |k, _| {
        matches!(k, EventKind::Unhealthy { .. })
    })
    .await;
    let restarted = next_event(&mut events, "plain", |_, s| s == PluginState::Running).await;
    assert_ne!(restarted.status.pid, Some(plain));
    assert_no_leftovers(plain);

    // The debugged one fails check after check, and stays.
    let before = checks(&env, "debugged");
    tokio::time::timeout(Duration::from_secs(10), async {
        while checks(&env, "debugged") < before + 6 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the health checks stopped running in debug mode");
    let status = env.status("debugged").unwrap();
    assert_eq!(status.state, PluginState::Running);
    assert_eq!(status.pid, Some(debugged));
    assert!(exists(debugged) && !is_zombie(debugged));
    assert_eq!(read_pids(&spawns).len(), 1, "restarted in debug mode");

    // Debug mode ends: the same pause now makes it hung.
    signal(debugged, Signal::SIGCONT);
    let ended = env.set_debugging("debugged", false).unwrap();
    assert!(!ended.debug);
    signal(debugged, Signal::SIGSTOP);
    next_event(&mut events, "debugged", |k, _| {
        matches!(k, EventKind::Unhealthy { .. })
    })
    .await;
    next_event(&mut events, "debugged", |_, s| s == PluginState::Running).await;
    assert_no_leftovers(debugged);
    assert_eq!(read_pids(&spawns).len(), 2);
    env.shutdown().await;
    for pid in read_pids(&spawns) {
        assert_no_leftovers(pid);
    }
}

#[tokio::test]
async fn a_plugin_in_debug_mode_that_exits_is_not_restarted() {
    let root = tempfile::tempdir().unwrap();
    let spawns = root.path().join("spawns");
    let flags = format!("--crash-after-ms 200 --spawn-log {}", spawns.display());
    native_fake_bundle(root.path(), "exits", &flags);
    let env = Environment::new(config(root.path())).unwrap();
    let mut events = env.subscribe();
    env.set_debugging("exits", true).unwrap();
    let pid = env.activate("exits").await.unwrap().pid.unwrap();
    next_event(&mut events, "exits", |k, _| {
        matches!(k, EventKind::Crashed { .. })
    })
    .await;
    let disabled = next_event(&mut events, "exits", |k, _| {
        matches!(k, EventKind::Disabled { .. })
    })
    .await;
    assert_eq!(disabled.status.state, PluginState::FailedToStayRunning);
    let error = disabled.status.last_error.unwrap();
    assert!(
        error.starts_with("not restarted in debug mode: plugin crashed (exit status 3)"),
        "{error}"
    );
    assert_no_leftovers(pid);
    // A restart would come within a few ms (the first is immediate).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(read_pids(&spawns).len(), 1);
    // Activating it again is how the developer starts it anew.
    env.activate("exits").await.unwrap();
    assert_eq!(read_pids(&spawns).len(), 2);
    env.shutdown().await;
    for pid in read_pids(&spawns) {
        assert_no_leftovers(pid);
    }
}

#[tokio::test]
async fn a_start_in_debug_mode_may_take_longer_than_the_start_timeout() {
    let root = tempfile::tempdir().unwrap();
    for id in ["slow-debugged", "slow"] {
        let bundle = native_fake_bundle(root.path(), id, "");
        let script = std::fs::read_to_string(bundle.join("bin/plugin")).unwrap();
        // A developer stepping through the start.
        std::fs::write(
            bundle.join("bin/plugin"),
            script.replace("exec ", "sleep 1\nexec "),
        )
        .unwrap();
    }
    let launch = LaunchOptions::builder()
        .native_start_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let config = EnvironmentConfig::builder(root.path())
        .launch(launch)
        .build()
        .unwrap();
    let env = Environment::new(config).unwrap();
    env.set_debugging("slow-debugged", true).unwrap();
    let (debugged, plain) = tokio::join!(env.activate("slow-debugged"), env.activate("slow"));
    let debugged = debugged.unwrap();
    assert_eq!(debugged.state, PluginState::Running);
    assert!(plain.is_err(), "the start timeout did not apply: {plain:?}");
    let pid = debugged.pid.unwrap();
    env.shutdown().await;
    assert_no_leftovers(pid);
}
