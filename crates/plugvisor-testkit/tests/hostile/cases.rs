// The hostile matrix, included by `hostile.rs` (native plugins, exec'd) and
// `hostile_forked.rs` (the same fake plugin behind a Python plugin.py that
// the zygote forks, which execs it in the forked process): `FORKED` says which.

use std::path::PathBuf;
use std::time::Duration;

use plugvisor::{
    Environment, EnvironmentConfig, EnvironmentConfigBuilder, EventKind, HookTimeouts,
    LaunchOptions, PluginState, PluginStatus, RestartPolicy, SupervisorConfig,
};
use plugvisor_testkit::*;

struct Case {
    _root: tempfile::TempDir,
    env: Environment,
    spawns: PathBuf,
    dir: PathBuf,
}

const ID: &str = "hostile";

/// The fake plugin with `flags`: native, or forked (see the top).
fn fake_bundle(root: &std::path::Path, id: &str, flags: &str) -> PathBuf {
    match FORKED {
        true => forked_fake_bundle(root, id, flags),
        false => native_fake_bundle(root, id, flags),
    }
}

/// The `plugvisor run` arguments that make `fake_bundle`'s plugins run.
fn run_args() -> Vec<std::ffi::OsString> {
    match FORKED {
        true => vec!["--interpreter".into(), test_python().into()],
        false => Vec::new(),
    }
}

/// One bundle around the fake plugin with `flags` (plus a spawn log).
fn case(flags: &str) -> Case {
    case_with(flags, |config| config)
}

/// The same, with the environment's configuration adjusted.
fn case_with(
    flags: &str,
    adjust: impl FnOnce(EnvironmentConfigBuilder) -> EnvironmentConfigBuilder,
) -> Case {
    let root = tempfile::tempdir().unwrap();
    let spawns = root.path().join("spawns");
    let dir = fake_bundle(
        root.path(),
        ID,
        &format!("{flags} --spawn-log {}", spawns.display()),
    );
    let launch = LaunchOptions::builder()
        .native_start_timeout(Duration::from_millis(1500))
        .python_start_timeout(Duration::from_millis(1500))
        .interpreter(test_python())
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
    let hooks = HookTimeouts::builder()
        .implemented(Duration::from_secs(1))
        .on_activate(Duration::from_secs(1))
        .build()
        .unwrap();
    let config = EnvironmentConfig::builder(root.path())
        .launch(launch)
        .supervisor(supervisor)
        .restart(restart)
        .hook_timeouts(hooks)
        .data_dir(root.path().join(".data"));
    let config = adjust(config).build().unwrap();
    Case {
        env: Environment::new(config).unwrap(),
        _root: root,
        spawns,
        dir,
    }
}

/// A plugin with the lifecycle service and go-plugin's broker, logging its
/// hooks and host API results to `Case::hook_log`.
fn hooked_case(flags: &str) -> Case {
    let flags = format!(
        "--hooks OnActivate,OnDeactivate --broker --hook-log {} {flags}",
        hook_log_path().display()
    );
    // Floods take a while; the activation must not time out meanwhile.
    case_with(&flags, |config| {
        config.hook_timeouts(HookTimeouts::default())
    })
}

/// Where `hooked_case` plugins log: the hook log path must be known before
/// the bundle is written, so it lives beside the test binary's own temp dir.
fn hook_log_path() -> PathBuf {
    thread_local! {
        static DIR: tempfile::TempDir = tempfile::tempdir().unwrap();
    }
    DIR.with(|dir| dir.path().join("hooks.log"))
}

impl Case {
    fn hook_log(&self) -> PathBuf {
        hook_log_path()
    }

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

#[test]
fn case_15_a_1gb_stderr_flood_keeps_memory_bounded() {
    // The host is a `plugvisor run` process of its own, so that its memory is
    // the host's alone (this test binary runs other tests in parallel).
    let root = tempfile::tempdir().unwrap();
    let done = root.path().join("flood-done");
    let plugins = root.path().join("plugins");
    fake_bundle(
        &plugins,
        ID,
        &format!("--flood-stderr 1073741824 --marker {}", done.display()),
    );
    let socket = root.path().join("control.sock");
    let mut host = std::process::Command::new(plugvisor_bin())
        .arg("run")
        .args(run_args())
        .args(["--json", "--data-dir"])
        .arg(root.path().join("data"))
        .arg("--control-socket")
        .arg(&socket)
        .arg(&plugins)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = std::io::BufReader::new(host.stdout.take().unwrap());
    use std::io::BufRead;
    let events =
        std::thread::spawn(move || stdout.lines().map_while(Result::ok).collect::<Vec<_>>());
    let host_pid = host.id();
    let running = eventually(Duration::from_secs(20), || {
        std::process::Command::new(plugvisor_bin())
            .args(["status", "--json", "--control-socket"])
            .arg(&socket)
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("Running"))
    });
    assert!(running, "the flooding plugin did not start");
    let before = status_kib(host_pid, "VmRSS");
    // The plugin is never blocked for good: its flood completes.
    let finished = eventually(Duration::from_secs(120), || done.exists());
    assert!(finished, "the flood did not complete in 120 s");
    let peak = status_kib(host_pid, "VmHWM");
    assert!(
        peak - before < 64 * 1024,
        "host RSS grew from {before} KiB to a peak of {peak} KiB during the flood"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(host_pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(host.wait().unwrap().success());
    let events = events.join().unwrap();
    let pid = events
        .iter()
        .find_map(|e| serde_json::from_str::<serde_json::Value>(e).ok()?["status"]["pid"].as_u64())
        .expect("a Running event with the pid") as u32;
    assert_no_leftovers(pid);
}

/// A `VmRSS`/`VmHWM` line of /proc/PID/status, in KiB.
fn status_kib(pid: u32, field: &str) -> i64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

#[tokio::test]
async fn case_16_closing_stdout_after_the_handshake_is_fine() {
    let case = case("--close-stdout");
    case.env.activate(ID).await.unwrap();
    // A while after the close, the plugin is still there (no event marks that).
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
    fake_bundle(root.path(), "native-b", "--network unix --controller");
    python_fake_bundle(root.path(), "python-c", "");
    let socket = root.path().join("control.sock");
    let tmp = tempfile::tempdir().unwrap();
    let mut host = std::process::Command::new(plugvisor_bin())
        .arg("run")
        .args(run_args())
        .arg("--control-socket")
        .arg(&socket)
        .arg(root.path())
        .env("TMPDIR", tmp.path())
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
    let zygotes: Vec<u32> = zygotes_of(host.id()).into_iter().map(|(pid, _)| pid).collect();
    assert_eq!(zygotes.is_empty(), !FORKED, "zygotes: {zygotes:?}");
    pids.extend(zygotes.iter().map(|&pid| pid as u64));
    host.kill().unwrap(); // SIGKILL: no cleanup code of ours runs.
    host.wait().unwrap();
    let gone = eventually(Duration::from_secs(1), || {
        pids.iter()
            .all(|&p| !exists(p as u32) || is_zombie(p as u32))
    });
    assert!(gone, "plugins outlived the host by more than 1 s: {pids:?}");

    // The dead host's socket directories are the next host's to remove.
    let dirs = || std::fs::read_dir(tmp.path()).unwrap().count();
    assert_eq!(dirs(), 1, "one socket directory for the host's plugins");
    let ping = std::process::Command::new(plugvisor_bin())
        .arg("ping")
        .arg(root.path().join("native-a"))
        .env("TMPDIR", tmp.path())
        .output()
        .unwrap();
    assert!(ping.status.success(), "{ping:?}");
    assert_eq!(dirs(), 0, "the dead host's socket directories were left");
}

// Hooks and the host API under hostile plugins.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_19_a_plugin_that_claims_a_broker_it_lacks_runs_with_a_warning() {
    let logs = captured_logs();
    let case = case("--hooks OnActivate --services plugin.GRPCBroker");
    let status = case.env.activate(ID).await.unwrap();
    assert_eq!(status.state, PluginState::Running);
    assert!(eventually(Duration::from_secs(5), || logs
        .lines()
        .iter()
        .any(|l| l.contains(ID)
            && l.contains("WARN")
            && l.contains("StartStream"))));
    case.shutdown().await;
}

#[tokio::test]
async fn case_20_a_hook_answered_with_garbage_fails_the_start_for_good() {
    let case = case("--hooks OnActivate --hook-garbage OnActivate");
    case.fails_to_start_with("OnActivate failed: Internal")
        .await;
    assert_eq!(case.pids().len(), 1, "not restarted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_21_a_hook_that_never_answers_fails_at_its_timeout_and_holds_up_nobody() {
    let case = case("--hooks OnActivate --hook-hang OnActivate");
    // A second, well-behaved plugin in the same environment.
    let root = case.dir.parent().unwrap().to_path_buf();
    native_fake_bundle(&root, "bystander", "--hooks OnActivate");
    // Default timeouts, but the interpreter the forked matrix needs.
    let launch = LaunchOptions::builder()
        .interpreter(test_python())
        .build()
        .unwrap();
    let config = EnvironmentConfig::builder(&root).launch(launch);
    let env = Environment::new(config.build().unwrap()).unwrap();
    let hanging = env.activate(ID);
    let bystander = async {
        let started = std::time::Instant::now();
        env.activate("bystander").await.unwrap();
        started.elapsed()
    };
    let (hanging, bystander_took) = futures::join!(hanging, bystander);
    assert!(
        bystander_took < Duration::from_secs(5),
        "held up {bystander_took:?}"
    );
    let error = hanging.unwrap_err().to_string();
    assert!(
        error.contains("OnActivate did not answer within 10s"),
        "{error}"
    );
    env.shutdown().await;
    // And under the case's own 1 s timeout: FailedToStart, not restarted.
    case.fails_to_start_with("OnActivate did not answer within 1s")
        .await;
}

#[tokio::test]
async fn case_22_implemented_that_never_answers_fails_the_start() {
    let case = case("--hooks OnActivate --hook-hang Implemented");
    case.fails_to_start_with("Implemented did not answer within 1s")
        .await;
    assert_eq!(case.pids().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_23_values_over_the_limit_are_refused_and_nothing_is_lost() {
    let case = hooked_case("--kv-oversize 2000000 --kv-flood 500");
    case.env.activate(ID).await.unwrap();
    let oversize = wait_for_line(&case.hook_log(), "OVERSIZE");
    assert!(
        oversize.contains("ResourceExhausted")
            && oversize
                .contains("value of 2000000 bytes is over the limit of 1048576 bytes per value"),
        "{oversize}"
    );
    let flood = wait_for_line(&case.hook_log(), "FLOOD");
    assert!(flood.starts_with("FLOOD ok=500 err=0"), "{flood}");
    // Every acknowledged write is in the database, and the oversized one is not.
    let db =
        rusqlite::Connection::open(case.dir.parent().unwrap().join(".data/plugvisor.db")).unwrap();
    let stored: i64 = db
        .query_row(
            "SELECT count(*) FROM kv WHERE plugin = ?1 AND key LIKE 'flood/%'",
            [ID],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(stored, 500);
    let oversized: i64 = db
        .query_row("SELECT count(*) FROM kv WHERE key = 'oversize'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(oversized, 0);
    assert_eq!(case.env.status(ID).unwrap().state, PluginState::Running);
    case.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_24_a_flood_of_log_lines_is_rate_limited() {
    let logs = captured_logs();
    let case = hooked_case("--log-flood 5000");
    case.env.activate(ID).await.unwrap();
    let flood = wait_for_line(&case.hook_log(), "LOGFLOOD");
    let counts: Vec<u32> = flood
        .split_whitespace()
        .skip(1)
        .take(3)
        .map(|kv| kv.split_once('=').unwrap().1.parse().unwrap())
        .collect();
    let (ok, exhausted, ms) = (counts[0], counts[1], counts[2]);
    assert_eq!(ok + exhausted, 5000, "{flood}");
    // A burst of 1000, then 1000 a second while the flood lasted: never more
    // (a machine too loaded to send faster than that has nothing refused).
    assert!(ok as f64 <= 1000.0 + f64::from(ms) + 1.0, "{flood}");
    if exhausted > 0 {
        assert!(
            logs.lines()
                .iter()
                .any(|l| l.contains(ID) && l.contains("lines are dropped"))
        );
    }
    case.env.perform_health_check(ID).await.unwrap();
    case.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_25_many_host_api_connections_are_bounded() {
    let logs = captured_logs();
    let case = hooked_case("--connections 20");
    case.env.activate(ID).await.unwrap();
    // The plugin's first connection holds one of the 8.
    assert_eq!(
        wait_for_line(&case.hook_log(), "CONNECTIONS"),
        "CONNECTIONS ok=7 refused=13"
    );
    assert!(
        logs.lines()
            .iter()
            .any(|l| l.contains(ID) && l.contains("already holds 8"))
    );
    case.env.perform_health_check(ID).await.unwrap();
    case.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_26_services_a_plugin_announces_on_the_broker_are_ignored() {
    let case = hooked_case("--announce-junk 1000 --kv-counter n");
    case.env.activate(ID).await.unwrap();
    assert_eq!(wait_for_line(&case.hook_log(), "COUNT"), "COUNT 1");
    case.env.perform_health_check(ID).await.unwrap();
    case.shutdown().await;
}

#[tokio::test]
async fn case_27_a_handshake_naming_a_non_loopback_address_is_refused_before_any_dial() {
    // The plugin listens on 127.0.0.1; 0.0.0.0 would reach it on Linux, so
    // only the check can make this fail.
    for address in ["0.0.0.0:{port}", "192.0.2.1:{port}", "[::]:{port}"] {
        let case = case(&format!("--handshake 1|1|tcp|{address}|grpc"));
        let status = case
            .fails_to_start_with("which is not a loopback address")
            .await;
        let error = status.last_error.unwrap();
        assert!(error.contains("--allow-remote-plugins"), "{error}");
    }
}

#[tokio::test]
async fn case_28_a_non_loopback_address_is_dialled_when_the_operator_allows_it() {
    let case = case_with("--handshake 1|1|tcp|0.0.0.0:{port}|grpc", |config| {
        config.supervisor(
            SupervisorConfig::builder()
                .allow_remote(true)
                .stop_grace(Duration::from_millis(300))
                .build()
                .unwrap(),
        )
    });
    case.env.activate(ID).await.unwrap();
    case.env.perform_health_check(ID).await.unwrap();
    case.shutdown().await;
}

// What plugins leave behind: the host is a child subreaper, so their orphans
// are its own children, found and reaped without a look at the rest of /proc.

#[tokio::test]
async fn case_34_a_daemon_and_its_own_child_are_both_killed_at_the_stop() {
    let root = tempfile::tempdir().unwrap();
    let daemons = root.path().join("daemons");
    let case = case(&format!("--daemon-tree --pid-file {}", daemons.display()));
    case.env.activate(ID).await.unwrap();
    assert!(
        eventually(Duration::from_secs(5), || read_pids(&daemons).len() == 2),
        "the daemon tree did not start"
    );
    let (child, daemon) = (read_pids(&daemons)[0], read_pids(&daemons)[1]);
    assert_eq!(parent_of(child), Some(daemon), "the child is the daemon's");
    assert_eq!(
        parent_of(daemon),
        Some(case.pids()[0]),
        "the daemon is the plugin's"
    );
    assert!(!group_or_session_members(case.pids()[0]).contains(&(daemon as i32)));
    case.env.deactivate(ID).await.unwrap();
    plugvisor::internals::sweep_settled().await;
    for pid in [daemon, child] {
        assert!(
            eventually(Duration::from_secs(5), || !exists(pid)),
            "{pid} survived (zombie: {})",
            is_zombie(pid)
        );
    }
    case.assert_clean();
}

#[tokio::test]
async fn case_35_an_orphan_that_exits_while_its_plugin_runs_is_reaped() {
    let root = tempfile::tempdir().unwrap();
    let orphans = root.path().join("orphans");
    let case = case(&format!(
        "--orphan-exits-after 1 --pid-file {}",
        orphans.display()
    ));
    case.env.activate(ID).await.unwrap();
    let orphan = read_pids(&orphans)[0];
    assert_eq!(
        parent_of(orphan),
        Some(std::process::id()),
        "the orphan was not adopted by the host"
    );
    // It exits on its own; nothing stops or sweeps meanwhile but SIGCHLD.
    assert!(
        eventually(Duration::from_secs(5), || !exists(orphan)),
        "orphan {orphan} was left a zombie: {}",
        is_zombie(orphan)
    );
    assert_eq!(case.env.status(ID).unwrap().state, PluginState::Running);
    case.shutdown().await;
}

#[tokio::test]
async fn case_36_the_applications_own_children_are_never_reaped_by_the_host() {
    let case = case("--grandchild --pid-file /dev/null");
    case.env.activate(ID).await.unwrap();
    // A child of the application, exiting while plugins stop and SIGCHLDs
    // come: its exit status is still the application's to collect.
    let mut own = std::process::Command::new("sh")
        .args(["-c", "exit 7"])
        .spawn()
        .unwrap();
    assert!(eventually(Duration::from_secs(5), || is_zombie(own.id())));
    case.env.deactivate(ID).await.unwrap();
    plugvisor::internals::sweep_settled().await;
    assert_eq!(own.wait().unwrap().code(), Some(7));
    case.assert_clean();
}
