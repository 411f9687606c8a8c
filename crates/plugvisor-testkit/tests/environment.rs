//! Many plugins: activation, restarts, crash loops, health checks and shutdown,
//! against real processes.

use std::path::Path;
use std::time::{Duration, Instant};

use plugvisor::{Environment, EnvironmentConfig, EventKind, PluginState};
use plugvisor::{
    EnvironmentConfigBuilder, HealthPolicy, LaunchOptions, RestartPolicy, SupervisorConfig,
};
use plugvisor_testkit::*;

fn fast_builder(root: &Path) -> EnvironmentConfigBuilder {
    let launch = LaunchOptions::builder()
        .native_start_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    EnvironmentConfig::builder(root)
        .restart(fast_restarts())
        .launch(launch)
}

fn fast_config(root: &Path) -> EnvironmentConfig {
    fast_builder(root).build().unwrap()
}

#[tokio::test]
async fn activate_and_deactivate_without_hooks() {
    let root = tempfile::tempdir().unwrap();
    python_fake_bundle(root.path(), "fake-python", "");
    let env = Environment::new(fast_config(root.path())).unwrap();
    assert!(!env.is_active("fake-python"));
    let status = env.activate("fake-python").await.unwrap();
    assert_eq!(status.state, PluginState::Running);
    assert!(env.is_active("fake-python"));
    env.perform_health_check("fake-python").await.unwrap();
    let pid = status.pid.unwrap();
    env.deactivate("fake-python").await.unwrap();
    assert_eq!(
        env.status("fake-python").unwrap().state,
        PluginState::NotRunning
    );
    assert_no_leftovers(pid);
    assert!(env.perform_health_check("fake-python").await.is_err());
    // And again: a deactivated plugin can be activated.
    env.activate("fake-python").await.unwrap();
    env.shutdown().await;
}

#[tokio::test]
async fn unknown_plugin_is_an_error() {
    let root = tempfile::tempdir().unwrap();
    native_fake_bundle(root.path(), "known", "");
    let env = Environment::new(fast_config(root.path())).unwrap();
    let error = env.activate("unknown").await.unwrap_err();
    assert!(error.to_string().contains("\"unknown\""), "{error}");
}

#[tokio::test]
async fn concurrent_activations_start_one_process() {
    let root = tempfile::tempdir().unwrap();
    let spawns = root.path().join("spawns");
    native_fake_bundle(
        root.path(),
        "once",
        &format!("--spawn-log {}", spawns.display()),
    );
    let env = Environment::new(fast_config(root.path())).unwrap();
    let results = futures::future::join_all((0..8).map(|_| env.activate("once"))).await;
    let pids: Vec<_> = results.into_iter().map(|r| r.unwrap().pid).collect();
    assert!(pids.iter().all(|p| *p == pids[0]), "{pids:?}");
    assert_eq!(read_pids(&spawns).len(), 1);
    env.shutdown().await;
}

#[tokio::test]
async fn a_killed_plugin_is_restarted_at_once() {
    let root = tempfile::tempdir().unwrap();
    native_fake_bundle(root.path(), "victim", "");
    let env = Environment::new(fast_config(root.path())).unwrap();
    let mut events = env.subscribe();
    let first = env.activate("victim").await.unwrap().pid.unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let crashed = next_event(&mut events, "victim", |k, _| {
        matches!(k, EventKind::Crashed { .. })
    })
    .await;
    match crashed.kind {
        EventKind::Crashed { exit } => assert!(exit.contains("SIGKILL"), "{exit}"),
        _ => unreachable!(),
    }
    let running = next_event(&mut events, "victim", |_, s| s == PluginState::Running).await;
    assert_eq!(running.status.restarts, 1);
    let second = running.status.pid.unwrap();
    assert_ne!(first, second);
    assert!(!exists(first));
    assert_eq!(env.status("victim").unwrap().state, PluginState::Running);
    env.shutdown().await;
    assert_no_leftovers(second);
}

#[tokio::test]
async fn a_crash_loop_ends_in_failed_to_stay_running() {
    let root = tempfile::tempdir().unwrap();
    let spawns = root.path().join("spawns");
    let flags = format!("--crash-after-ms 300 --spawn-log {}", spawns.display());
    native_fake_bundle(root.path(), "looper", &flags);
    let env = Environment::new(fast_config(root.path())).unwrap();
    let mut events = env.subscribe();
    env.activate("looper").await.unwrap();
    let disabled = next_event(&mut events, "looper", |_, s| {
        s == PluginState::FailedToStayRunning
    })
    .await;
    let reason = disabled.status.last_error.unwrap();
    assert!(reason.contains("disabled after 4 failures"), "{reason}");
    assert!(reason.contains("exit status 3"), "{reason}");
    // One start and three restarts, and no more after that.
    assert_eq!(read_pids(&spawns).len(), 4);
    // A spawn that does not happen is no event to wait for: give it the time
    // a few restarts would take.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(read_pids(&spawns).len(), 4);
    for pid in read_pids(&spawns) {
        assert_no_leftovers(pid);
    }
    assert_eq!(
        env.status("looper").unwrap().state,
        PluginState::FailedToStayRunning
    );
}

#[tokio::test]
async fn a_hung_plugin_is_restarted_by_the_health_check() {
    let root = tempfile::tempdir().unwrap();
    native_fake_bundle(root.path(), "hangs", "--unhealthy-after-ms 100");
    let config = fast_builder(root.path())
        .health(HealthPolicy::new(Duration::from_millis(50), 2).unwrap())
        .build()
        .unwrap();
    let env = Environment::new(config).unwrap();
    let mut events = env.subscribe();
    let first = env.activate("hangs").await.unwrap().pid.unwrap();
    let unhealthy = next_event(&mut events, "hangs", |k, _| {
        matches!(k, EventKind::Unhealthy { .. })
    })
    .await;
    let error = unhealthy.status.last_error.unwrap();
    assert!(error.contains("NOT_SERVING"), "{error}");
    let running = next_event(&mut events, "hangs", |_, s| s == PluginState::Running).await;
    assert_ne!(running.status.pid.unwrap(), first);
    assert_no_leftovers(first);
    env.shutdown().await;
}

#[tokio::test]
async fn deactivate_during_backoff_cancels_the_restart() {
    let root = tempfile::tempdir().unwrap();
    let spawns = root.path().join("spawns");
    let flags = format!("--crash-after-ms 100 --spawn-log {}", spawns.display());
    native_fake_bundle(root.path(), "backoff", &flags);
    let slow_restarts = RestartPolicy::builder()
        .initial_backoff(Duration::from_secs(30))
        .max_backoff(Duration::from_secs(30))
        .build()
        .unwrap();
    let config = fast_builder(root.path())
        .restart(slow_restarts)
        .build()
        .unwrap();
    let env = Environment::new(config).unwrap();
    let mut events = env.subscribe();
    env.activate("backoff").await.unwrap();
    // First restart is immediate; the second waits ~30 s.
    next_event(
        &mut events,
        "backoff",
        |k, _| matches!(k, EventKind::RestartScheduled { delay_ms, .. } if *delay_ms > 1000),
    )
    .await;
    let started = Instant::now();
    env.deactivate("backoff").await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "deactivate waited out the backoff"
    );
    assert_eq!(
        env.status("backoff").unwrap().state,
        PluginState::NotRunning
    );
    let spawned = read_pids(&spawns).len();
    assert_eq!(spawned, 2);
    // No event to wait for: the cancelled restart must simply not happen.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(read_pids(&spawns).len(), spawned);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_of_twenty_plugins_meets_its_deadline() {
    let root = tempfile::tempdir().unwrap();
    for i in 0..19 {
        native_fake_bundle(root.path(), &format!("plugin-{i:02}"), "");
    }
    native_fake_bundle(root.path(), "stubborn", "--ignore-sigterm");
    // A stop grace longer than the deadline, so only the deadline's SIGKILL ends "stubborn".
    let patient = SupervisorConfig::builder()
        .stop_grace(Duration::from_secs(60))
        .build()
        .unwrap();
    let config = fast_builder(root.path())
        .supervisor(patient)
        .shutdown_deadline(Duration::from_secs(2))
        .build()
        .unwrap();
    let env = Environment::new(config).unwrap();
    let ids = env.plugin_ids();
    assert_eq!(ids.len(), 20);
    let results = futures::future::join_all(ids.iter().map(|id| env.activate(id))).await;
    let pids: Vec<u32> = results
        .into_iter()
        .map(|r| r.unwrap().pid.unwrap())
        .collect();
    let started = Instant::now();
    env.shutdown().await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(10), "shutdown took {took:?}");
    for pid in pids {
        assert_no_leftovers(pid);
    }
    assert!(
        env.statuses()
            .iter()
            .all(|s| s.state == PluginState::NotRunning)
    );
    assert!(matches!(
        env.activate("plugin-00").await,
        Err(plugvisor::EnvironmentError::ShuttingDown)
    ));
}

// Two workers: the keeper reaps the killed plugin while the test blocks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_last_handle_kills_the_plugins() {
    let root = tempfile::tempdir().unwrap();
    native_fake_bundle(root.path(), "orphan", "--ignore-sigterm");
    let env = Environment::new(fast_config(root.path())).unwrap();
    let pid = env.activate("orphan").await.unwrap().pid.unwrap();
    let clone = env.clone();
    drop(env);
    assert!(exists(pid), "a clone still holds the environment");
    drop(clone);
    // SIGKILL of the group, not the stop sequence: it ignores SIGTERM.
    assert_no_leftovers(pid);
}

#[test]
fn the_embedding_example_runs_on_the_crate_roots_api() {
    let root = tempfile::tempdir().unwrap();
    native_fake_bundle(root.path(), "embedded-one", "--controller");
    python_fake_bundle(root.path(), "embedded-two", "");
    let output = std::process::Command::new(workspace_bin("plugvisor-example-embedding"))
        .arg(root.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for id in ["embedded-one", "embedded-two"] {
        assert!(stdout.contains(&format!("{id}: Running")), "{stdout}");
        assert!(stdout.contains(&format!("{id}: healthy")), "{stdout}");
    }
    assert!(
        stdout.contains("shut down; 0 plugin(s) not stopped"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_plugins_started_at_once_wait_their_turn_and_all_run() {
    let root = tempfile::tempdir().unwrap();
    for i in 0..60 {
        native_fake_bundle(root.path(), &format!("many-{i:02}"), "");
    }
    let env = Environment::new(fast_config(root.path())).unwrap();
    let mut events = env.subscribe();
    let ids = env.plugin_ids();
    let results = futures::future::join_all(ids.iter().map(|id| env.activate(id))).await;
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
    let mut queued = Vec::new();
    while let Ok(event) = events.try_recv() {
        if event.kind == EventKind::Queued {
            queued.push(event.status);
        }
    }
    // More plugins than start slots: some waited, and said why.
    assert!(!queued.is_empty(), "no plugin was queued");
    let note = queued[0].note.as_deref().unwrap();
    assert!(
        note.starts_with("queued: ") && note.contains("at a time"),
        "{note}"
    );
    assert_eq!(queued[0].state, PluginState::Starting);
    assert!(
        env.statuses()
            .iter()
            .all(|s| s.state == PluginState::Running && s.note.is_none())
    );
    env.shutdown().await;
}
