//! Hostile plugins: each case states the status and error it must end in, and
//! that nothing of the plugin (group, session, descendants, zombies) is left.

use std::path::PathBuf;
use std::time::Duration;

use plugvisor::{
    Environment, EnvironmentConfig, EventKind, LaunchOptions, PluginState, PluginStatus,
    RestartPolicy, SupervisorConfig,
};
use plugvisor_testkit::*;

struct Case {
    _root: tempfile::TempDir,
    env: Environment,
    spawns: PathBuf,
    dir: PathBuf,
}

const ID: &str = "hostile";

/// One native bundle around the fake plugin with `flags` (plus a spawn log).
fn case(flags: &str) -> Case {
    let root = tempfile::tempdir().unwrap();
    let spawns = root.path().join("spawns");
    let dir = native_fake_bundle(
        root.path(),
        ID,
        &format!("{flags} --spawn-log {}", spawns.display()),
    );
    let launch = LaunchOptions::builder()
        .native_start_timeout(Duration::from_millis(1500))
        .build()
        .unwrap();
    let supervisor = SupervisorConfig::builder()
        .stop_grace(Duration::from_millis(300))
        .build()
        .unwrap();
    let restart = RestartPolicy::builder()
        .initial_backoff(Duration::from_millis(20))
        .max_backoff(Duration::from_millis(50))
        .build()
        .unwrap();
    let config = EnvironmentConfig::builder(root.path())
        .launch(launch)
        .supervisor(supervisor)
        .restart(restart)
        .build()
        .unwrap();
    Case {
        env: Environment::new(config).unwrap(),
        _root: root,
        spawns,
        dir,
    }
}

impl Case {
    fn pids(&self) -> Vec<u32> {
        read_pids(&self.spawns)
    }

    /// Activation must fail with a status carrying `expected`.
    async fn fails_to_start_with(&self, expected: &str) -> PluginStatus {
        let error = self.env.activate(ID).await.unwrap_err().to_string();
        assert!(
            error.contains(expected),
            "expected {expected:?} in: {error}"
        );
        let status = self.env.status(ID).unwrap();
        assert_eq!(status.state, PluginState::FailedToStart);
        assert!(status.last_error.as_deref().unwrap().contains(expected));
        self.assert_clean();
        status
    }

    fn assert_clean(&self) {
        for pid in self.pids() {
            assert_no_leftovers(pid);
        }
        assert!(
            eventually(Duration::from_secs(2), || my_zombies().is_empty()),
            "zombies: {:?}",
            my_zombies()
        );
    }

    async fn shutdown(&self) {
        self.env.shutdown().await;
        self.assert_clean();
    }
}

#[tokio::test]
async fn case_01_garbage_then_a_valid_handshake_runs() {
    let case = case("--garbage 5");
    let status = case.env.activate(ID).await.unwrap();
    assert_eq!(status.state, PluginState::Running);
    case.env.perform_health_check(ID).await.unwrap();
    case.shutdown().await;
}

#[tokio::test]
async fn case_02_only_garbage_times_out_naming_the_lines() {
    let case = case("--garbage 3 --no-handshake");
    let status = case
        .fails_to_start_with("printed no handshake within 1.5s")
        .await;
    let error = status.last_error.unwrap();
    assert!(
        error.contains("3 stdout line(s)") && error.contains("garbage line 0"),
        "{error}"
    );
}

#[tokio::test]
async fn case_03_a_10mb_line_without_newline_is_refused() {
    let case = case("--huge-line 10485760");
    case.fails_to_start_with("longer than 65536 bytes before its handshake")
        .await;
}

#[tokio::test]
async fn case_04_wrong_core_version() {
    let case = case("--handshake 7|1|tcp|{addr}|grpc");
    case.fails_to_start_with("core protocol 7, but plugvisor speaks 1")
        .await;
}

#[tokio::test]
async fn case_05_unsupported_app_version() {
    let case = case("--handshake 1|4|tcp|{addr}|grpc");
    case.fails_to_start_with("app protocol version 4, but this host accepts only 1")
        .await;
}

#[tokio::test]
async fn case_06_netrpc() {
    let case = case("--handshake 1|1|tcp|{addr}|netrpc");
    case.fails_to_start_with("plugin speaks netrpc; plugvisor supports gRPC plugins only")
        .await;
}

#[tokio::test]
async fn case_07_unix_socket_that_does_not_exist() {
    let case = case("--handshake 1|1|unix|/nonexistent/plugin.sock|grpc");
    case.fails_to_start_with("unix socket /nonexistent/plugin.sock, which does not exist")
        .await;
}

#[tokio::test]
async fn case_08_tcp_address_where_nothing_listens() {
    // Port 1 on loopback: nothing listens there.
    let case = case("--handshake 1|1|tcp|127.0.0.1:1|grpc");
    case.fails_to_start_with("cannot connect to 127.0.0.1:1")
        .await;
}

#[tokio::test]
async fn case_09_exit_0_before_the_handshake() {
    let case = case("--exit-before 0");
    case.fails_to_start_with("exited before its handshake (exit status 0)")
        .await;
}

// Multi-threaded: `eventually` blocks its thread while the keeper restarts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_10_segfault_after_the_handshake_is_restarted() {
    let case = case("--crash-after-ms 300 --segv");
    let mut events = case.env.subscribe();
    case.env.activate(ID).await.unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let EventKind::Crashed { exit } = events.recv().await.unwrap().kind {
                return exit;
            }
        }
    })
    .await
    .unwrap();
    assert!(exit.contains("SIGSEGV"), "{exit}");
    assert!(
        eventually(Duration::from_secs(5), || case.pids().len() >= 2),
        "not restarted: {:?}",
        case.env.status(ID)
    );
    case.shutdown().await;
}

#[tokio::test]
async fn case_11_health_that_never_answers() {
    let case = case("--health hang");
    case.fails_to_start_with("did not become healthy within")
        .await;
}

#[tokio::test]
async fn case_12_not_serving_forever() {
    let case = case("--health not_serving");
    case.fails_to_start_with("health status is NOT_SERVING")
        .await;
}

#[tokio::test]
async fn case_13_ignoring_sigterm_ends_in_sigkill() {
    let case = case("--ignore-sigterm");
    let mut events = case.env.subscribe();
    case.env.activate(ID).await.unwrap();
    case.env.deactivate(ID).await.unwrap();
    assert_eq!(case.env.status(ID).unwrap().state, PluginState::NotRunning);
    let stopped = loop {
        match events.recv().await.unwrap().kind {
            EventKind::Stopped { method, exit } => break (method, exit),
            _ => continue,
        }
    };
    assert_eq!(stopped.0, Some(plugvisor::StopMethod::Kill));
    assert_eq!(
        stopped.1.as_deref(),
        Some("killed by signal 9 (SIGKILL)"),
        "it ended by SIGKILL"
    );
    case.assert_clean();
}

#[tokio::test]
async fn case_14_daemonized_grandchild_is_cleaned_up() {
    let root = tempfile::tempdir().unwrap();
    let daemons = root.path().join("daemons");
    let case = case(&format!(
        "--daemon-grandchild --pid-file {}",
        daemons.display()
    ));
    case.env.activate(ID).await.unwrap();
    let daemon = read_pids(&daemons)[0];
    let plugin = case.pids()[0];
    // It really left the plugin's group and session.
    assert!(!group_or_session_members(plugin).contains(&(daemon as i32)));
    assert!(exists(daemon));
    case.env.deactivate(ID).await.unwrap();
    assert!(
        eventually(Duration::from_secs(5), || !exists(daemon)
            || is_zombie(daemon)),
        "daemon {daemon} survived"
    );
    case.assert_clean();
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_15_a_1gb_stderr_flood_keeps_memory_bounded() {
    let root = tempfile::tempdir().unwrap();
    let done = root.path().join("flood-done");
    let case = case(&format!(
        "--flood-stderr 1073741824 --marker {}",
        done.display()
    ));
    let before = rss_kib();
    case.env.activate(ID).await.unwrap();
    // The plugin is never blocked for good: its flood completes.
    let mut peak = before;
    let finished = tokio::time::timeout(Duration::from_secs(120), async {
        while !done.exists() {
            peak = peak.max(rss_kib());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(finished.is_ok(), "the flood did not complete in 120 s");
    assert!(
        peak - before < 64 * 1024,
        "host RSS grew by {} KiB during the flood",
        peak - before
    );
    case.env.perform_health_check(ID).await.unwrap();
    case.shutdown().await;
}

#[tokio::test]
async fn case_16_closing_stdout_after_the_handshake_is_fine() {
    let case = case("--close-stdout");
    case.env.activate(ID).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    case.env.perform_health_check(ID).await.unwrap();
    assert_eq!(case.env.status(ID).unwrap().state, PluginState::Running);
    case.shutdown().await;
}

#[tokio::test]
async fn case_17_binary_replaced_while_running() {
    let case = case("");
    let first = case.env.activate(ID).await.unwrap().pid.unwrap();
    // Replace the executable the way a deploy does: write a new file, rename over.
    let marker = case.dir.join("new-binary-ran");
    let executable = case.dir.join("bin/plugin");
    let replacement = case.dir.join("bin/plugin.new");
    std::fs::write(
        &replacement,
        format!(
            "#!/bin/sh\ntouch {}\nexec {}\n",
            marker.display(),
            fake_plugin()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&replacement, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::rename(&replacement, &executable).unwrap();
    // The running plugin is untouched...
    case.env.perform_health_check(ID).await.unwrap();
    assert!(exists(first));
    // ...and a restart runs the new binary.
    let second = case.env.restart(ID).await.unwrap().pid.unwrap();
    assert_ne!(first, second);
    assert!(marker.exists(), "the restart did not run the new binary");
    assert_no_leftovers(first);
    case.env.shutdown().await;
    assert_no_leftovers(second);
}

#[test]
fn case_18_host_sigkilled_takes_every_plugin_with_it() {
    let root = tempfile::tempdir().unwrap();
    native_fake_bundle(root.path(), "native-a", "");
    native_fake_bundle(root.path(), "native-b", "--network unix --controller");
    python_fake_bundle(root.path(), "python-c", "");
    let socket = root.path().join("control.sock");
    let mut host = std::process::Command::new(plugvisor_bin())
        .args(["run", "--control-socket"])
        .arg(&socket)
        .arg(root.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut pids = Vec::new();
    let running = eventually(Duration::from_secs(20), || {
        let output = std::process::Command::new(plugvisor_bin())
            .args(["status", "--json", "--control-socket"])
            .arg(&socket)
            .output()
            .unwrap();
        let statuses: Vec<serde_json::Value> =
            serde_json::from_slice(&output.stdout).unwrap_or_default();
        pids = statuses.iter().filter_map(|s| s["pid"].as_u64()).collect();
        statuses.len() == 3 && statuses.iter().all(|s| s["state"] == "Running")
    });
    assert!(running, "plugins did not start");
    host.kill().unwrap(); // SIGKILL: no cleanup code of ours runs.
    host.wait().unwrap();
    let gone = eventually(Duration::from_secs(1), || {
        pids.iter()
            .all(|&p| !exists(p as u32) || is_zombie(p as u32))
    });
    assert!(gone, "plugins outlived the host by more than 1 s: {pids:?}");
}
