//! Resource limits against real Go plugins: set in plugin.json's
//! `server.limits` or by the operator, in force in the running process
//! (/proc/PID/limits), shown in the status, and named as the reason when
//! the plugin dies at one of them, with the restart policy applied.

use std::path::{Path, PathBuf};
use std::time::Duration;

use plugvisor::{
    Enforcement, Environment, EnvironmentConfig, EventKind, LaunchOptions, LimitKind, PluginState,
};
use plugvisor_testkit::*;

/// The healthy Go test plugin with `limits` as its `server.limits`, and a
/// trigger file it obeys once serving (see tests/goplugins/healthy).
fn go_bundle(root: &Path, id: &str, limits: serde_json::Value) -> (PathBuf, PathBuf) {
    let dir = root.join(id);
    std::fs::create_dir_all(&dir).unwrap();
    let manifest = serde_json::json!({
        "id": id,
        "version": "1.0.0",
        "server": {"executable": "plugin", "limits": limits},
    });
    std::fs::write(dir.join("plugin.json"), manifest.to_string()).unwrap();
    std::fs::copy(built_artifact("target/go/healthy"), dir.join("plugin")).unwrap();
    (dir, root.join(format!("{id}.trigger")))
}

fn environment(root: &Path, launch: plugvisor::LaunchOptionsBuilder) -> Environment {
    let restart = fast_restarts();
    let config = EnvironmentConfig::builder(root)
        .launch(
            launch
                .native_start_timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
        )
        .restart(restart)
        .build()
        .unwrap();
    Environment::new(config).unwrap()
}

/// Wraps the bundle's Go binary in a script that sets its trigger file, so
/// that parallel tests do not share one environment variable.
fn with_trigger(dir: &Path, trigger: &Path) {
    std::fs::rename(dir.join("plugin"), dir.join("healthy")).unwrap();
    let script = format!(
        "#!/bin/sh\nPLUGVISOR_TEST_TRIGGER='{}' exec '{}' \"$@\"\n",
        trigger.display(),
        dir.join("healthy").display()
    );
    std::fs::write(dir.join("plugin"), script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.join("plugin"), std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// The soft and hard values of one row of /proc/PID/limits.
fn proc_limit(pid: u32, row: &str) -> (String, String) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with(row))
        .unwrap_or_else(|| panic!("no {row:?} in {text}"));
    let mut values = line[row.len()..].split_whitespace();
    (
        values.next().unwrap().to_string(),
        values.next().unwrap().to_string(),
    )
}

#[tokio::test]
async fn the_limits_of_the_manifest_and_the_operator_are_in_force_in_the_plugin_process() {
    let root = tempfile::tempdir().unwrap();
    let (dir, trigger) = go_bundle(
        root.path(),
        "go-limited",
        serde_json::json!({"memory": "2GiB", "open_files": 100, "processes": 4096, "cpu_seconds": 3600}),
    );
    with_trigger(&dir, &trigger);
    // The operator's value replaces the manifest's open_files only.
    let over =
        plugvisor::ResourceLimits::from_json(&serde_json::json!({"open_files": 77})).unwrap();
    let env = environment(
        root.path(),
        LaunchOptions::builder().limits("go-limited", over),
    );
    let status = env.activate("go-limited").await.unwrap();
    assert_eq!(status.state, PluginState::Running);
    let pid = status.pid.unwrap();
    assert_eq!(
        proc_limit(pid, "Max open files"),
        ("77".into(), "77".into())
    );
    assert_eq!(
        proc_limit(pid, "Max address space"),
        ((2u64 << 30).to_string(), (2u64 << 30).to_string())
    );
    // The CPU limit's hard value is a second later: SIGXCPU, then SIGKILL.
    assert_eq!(
        proc_limit(pid, "Max cpu time"),
        ("3600".into(), "3601".into())
    );
    // Set, whether or not the kernel enforces it for this user (not for root).
    assert_eq!(
        proc_limit(pid, "Max processes"),
        ("4096".into(), "4096".into())
    );
    assert_eq!(
        proc_limit(pid, "Max stack size"),
        proc_limit(std::process::id(), "Max stack size"),
        "a limit not set is the host's"
    );
    let shown: Vec<(LimitKind, u64, Enforcement)> = status
        .limits
        .iter()
        .map(|l| (l.limit, l.value, l.by))
        .collect();
    assert_eq!(
        shown,
        [
            (LimitKind::Memory, 2 << 30, Enforcement::Setrlimit),
            (LimitKind::OpenFiles, 77, Enforcement::Setrlimit),
            (LimitKind::Processes, 4096, Enforcement::Setrlimit),
            (LimitKind::CpuSeconds, 3600, Enforcement::Setrlimit),
        ]
    );
    env.deactivate("go-limited").await.unwrap();
    assert!(env.status("go-limited").unwrap().limits.is_empty());
    env.shutdown().await;
    assert_no_leftovers(pid);
}

#[tokio::test]
async fn a_plugin_that_allocates_past_its_memory_limit_is_reported_so_and_restarted() {
    let root = tempfile::tempdir().unwrap();
    let (dir, trigger) = go_bundle(
        root.path(),
        "go-hungry",
        serde_json::json!({"memory": "1GiB"}),
    );
    with_trigger(&dir, &trigger);
    let env = environment(root.path(), LaunchOptions::builder());
    let mut events = env.subscribe();
    let status = env.activate("go-hungry").await.unwrap();
    let first = status.pid.unwrap();
    std::fs::write(&trigger, "allocate").unwrap();
    let crashed = next_event(&mut events, "go-hungry", |k, _| {
        matches!(k, EventKind::Crashed { .. })
    })
    .await;
    let error = crashed.status.last_error.unwrap();
    assert!(
        error.starts_with("plugin crashed at its memory limit (1 GiB, RLIMIT_AS: its stderr says \"fatal error: out of memory\") (exit status 2)"),
        "{error}"
    );
    // The restart policy applies: the first restart is immediate.
    next_event(&mut events, "go-hungry", |k, _| {
        matches!(k, EventKind::RestartScheduled { attempt: 1, .. })
    })
    .await;
    let running = next_event(&mut events, "go-hungry", |k, _| {
        matches!(k, EventKind::Running { .. })
    })
    .await;
    assert_eq!(running.status.restarts, 1);
    let second = running.status.pid.unwrap();
    assert_ne!(first, second);
    assert!(!trigger.exists(), "the first process took the trigger");
    env.shutdown().await;
    assert_no_leftovers(second);
}

#[tokio::test]
async fn a_spinning_plugin_is_killed_at_its_cpu_time_limit_and_says_so() {
    let root = tempfile::tempdir().unwrap();
    let (dir, trigger) = go_bundle(
        root.path(),
        "go-spinner",
        serde_json::json!({"cpu_seconds": 1}),
    );
    with_trigger(&dir, &trigger);
    let env = environment(root.path(), LaunchOptions::builder());
    let mut events = env.subscribe();
    let status = env.activate("go-spinner").await.unwrap();
    let pid = status.pid.unwrap();
    std::fs::write(&trigger, "spin").unwrap();
    let crashed = next_event(&mut events, "go-spinner", |k, _| {
        matches!(k, EventKind::Crashed { .. })
    })
    .await;
    let error = crashed.status.last_error.unwrap();
    // Go ignores SIGXCPU; the hard limit's SIGKILL ends it.
    assert!(
        error.starts_with("plugin crashed at its CPU time limit (1 s, RLIMIT_CPU: it had used"),
        "{error}"
    );
    assert!(error.contains("(killed by signal 9 (SIGKILL))"), "{error}");
    next_event(&mut events, "go-spinner", |k, _| {
        matches!(k, EventKind::Running { .. })
    })
    .await;
    env.shutdown().await;
    assert_no_leftovers(pid);
}

#[tokio::test]
async fn a_crash_with_no_limit_reached_names_no_limit() {
    let root = tempfile::tempdir().unwrap();
    let (_dir, _trigger) = go_bundle(
        root.path(),
        "go-crasher",
        serde_json::json!({"memory": "2GiB", "cpu_seconds": 600}),
    );
    let env = environment(root.path(), LaunchOptions::builder());
    let mut events = env.subscribe();
    let status = env.activate("go-crasher").await.unwrap();
    let pid = status.pid.unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let crashed = next_event(&mut events, "go-crasher", |k, _| {
        matches!(k, EventKind::Crashed { .. })
    })
    .await;
    let error = crashed.status.last_error.unwrap();
    assert!(
        error.starts_with("plugin crashed (killed by signal 9 (SIGKILL))"),
        "{error}"
    );
    env.shutdown().await;
}

#[tokio::test]
async fn a_memory_limit_too_small_for_the_runtime_fails_the_start_and_says_why() {
    let root = tempfile::tempdir().unwrap();
    go_bundle(
        root.path(),
        "go-cramped",
        serde_json::json!({"memory": "300MiB"}),
    );
    let env = environment(root.path(), LaunchOptions::builder());
    let error = env.activate("go-cramped").await.unwrap_err().to_string();
    assert!(
        error.contains("plugin stopped at its memory limit (300 MiB, RLIMIT_AS: its stderr says \"fatal error: failed to reserve page summary memory\") during its start: plugin exited before its handshake (exit status 2)"),
        "{error}"
    );
    let status = env.status("go-cramped").unwrap();
    assert_eq!(status.state, PluginState::FailedToStart);
    assert!(status.last_error.unwrap().contains("at its memory limit"));
    env.shutdown().await;
}

#[tokio::test]
async fn a_python_plugin_that_raises_memory_error_at_its_limit_says_so() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("py-hungry");
    std::fs::create_dir_all(&dir).unwrap();
    let manifest = serde_json::json!({
        "id": "py-hungry",
        "server": {"executable": "plugin.py", "limits": {"memory": "512MiB"}},
    });
    std::fs::write(dir.join("plugin.json"), manifest.to_string()).unwrap();
    // More than the limit at once: the interpreter raises MemoryError.
    std::fs::write(dir.join("plugin.py"), "data = bytearray(1 << 30)\n").unwrap();
    let env = environment(
        root.path(),
        LaunchOptions::builder().interpreter(test_python()),
    );
    let error = env.activate("py-hungry").await.unwrap_err().to_string();
    assert!(
        error.contains("plugin stopped at its memory limit (512 MiB, RLIMIT_AS: its stderr says \"MemoryError\") during its start: plugin exited before its handshake (exit status 1)"),
        "{error}"
    );
    env.shutdown().await;
}
