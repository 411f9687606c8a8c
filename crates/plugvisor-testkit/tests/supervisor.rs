//! One plugin process, end to end: real processes, real signals, real gRPC.

use std::path::Path;
use std::time::Duration;

use plugvisor::Bundle;
use plugvisor::HandshakeLineError;
use plugvisor::{LaunchOptions, LaunchPlan, RuntimeKind, plan_launch};
use plugvisor::{PingError, StopMethod, Supervisor, SupervisorConfig, SupervisorError};
use plugvisor_testkit::*;

fn plan(dir: &Path, options: &LaunchOptions) -> LaunchPlan {
    plan_launch(&Bundle::load(dir).unwrap(), options).unwrap()
}

fn short_timeout(dir: &Path) -> LaunchPlan {
    let options = LaunchOptions::builder()
        .native_start_timeout(Duration::from_millis(1500))
        .build()
        .unwrap();
    plan(dir, &options)
}

async fn start(dir: &Path) -> Result<Supervisor, SupervisorError> {
    Supervisor::start("test", &short_timeout(dir), &SupervisorConfig::default()).await
}

/// Starts a plugin expected to fail, and checks it left nothing behind.
async fn start_failure(dir: &Path) -> SupervisorError {
    let error = start(dir)
        .await
        .expect_err("the plugin should fail to start");
    assert!(my_zombies().is_empty(), "zombies: {:?}", my_zombies());
    error
}

#[tokio::test]
async fn seed_fake_interpreter_serves_health_and_is_reaped() {
    // Seed 05-02 Task 3: a fake "python" in the bundle venv, serving only health over tcp.
    let root = tempfile::tempdir().unwrap();
    let dir = python_fake_bundle(root.path(), "fake-python", "--network tcp");
    let plan = plan(&dir, &LaunchOptions::default());
    assert_eq!(plan.runtime, RuntimeKind::Python);
    assert_eq!(plan.program, dir.join("venv/bin/python"));
    let supervisor = Supervisor::start("fake-python", &plan, &SupervisorConfig::default())
        .await
        .unwrap();
    supervisor.ping().await.unwrap();
    let pid = supervisor.pid().unwrap();
    assert!(exists(pid));
    let report = supervisor.stop().await;
    // No controller: straight to SIGTERM, which the fake honours.
    assert_eq!(report.method, StopMethod::Terminate);
    assert_no_leftovers(pid);
    // Idempotent.
    assert_eq!(supervisor.stop().await.method, StopMethod::Terminate);
}

#[tokio::test]
async fn unix_socket_plugin_stops_through_the_controller() {
    let root = tempfile::tempdir().unwrap();
    let marker = root.path().join("marker");
    let flags = format!("--network unix --controller --marker {}", marker.display());
    let dir = native_fake_bundle(root.path(), "unix-plugin", &flags);
    let supervisor = start(&dir).await.unwrap();
    let socket = supervisor.handshake().address.clone();
    let socket_dir = Path::new(&socket).parent().unwrap().to_path_buf();
    use std::os::unix::fs::PermissionsExt;
    let metadata = std::fs::metadata(&socket_dir).unwrap();
    assert_eq!(
        metadata.permissions().mode() & 0o777,
        0o700,
        "socket dir must be private"
    );
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        metadata.uid(),
        nix::unistd::geteuid().as_raw(),
        "socket dir owner"
    );
    let pid = supervisor.pid().unwrap();
    let report = supervisor.stop().await;
    assert_eq!(report.method, StopMethod::Controller);
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "controller");
    assert_no_leftovers(pid);
    // The directory is shared with the plugins of the other tests here.
    assert!(
        !Path::new(&socket).exists(),
        "the plugin's socket was not removed"
    );
}

#[tokio::test]
async fn channel_serves_the_embedders_own_clients() {
    let root = tempfile::tempdir().unwrap();
    let dir = native_fake_bundle(root.path(), "channel-plugin", "");
    let supervisor = start(&dir).await.unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(supervisor.channel());
    let response = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "plugin".into(),
        })
        .await
        .unwrap();
    assert_eq!(response.into_inner().status, 1 /* SERVING */);
    supervisor.stop().await;
}

#[tokio::test]
async fn garbage_before_the_handshake_is_skipped() {
    let root = tempfile::tempdir().unwrap();
    let dir = native_fake_bundle(root.path(), "garbage-first", "--garbage 3");
    let supervisor = start(&dir).await.unwrap();
    assert_eq!(supervisor.skipped_lines().count, 3);
    assert_eq!(
        supervisor.skipped_lines().first.as_deref(),
        Some("garbage line 0")
    );
    let pid = supervisor.pid().unwrap();
    supervisor.stop().await;
    assert_no_leftovers(pid);
}

#[tokio::test]
async fn core_version_2_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let dir = native_fake_bundle(
        root.path(),
        "core-two",
        "--stderr boot-message --handshake 2|1|tcp|{addr}|grpc",
    );
    let error = start_failure(&dir).await;
    match &error {
        SupervisorError::Handshake {
            source: HandshakeLineError::CoreVersion { got },
            stderr,
        } => {
            assert_eq!(got, "2");
            assert_eq!(stderr.0, vec!["boot-message".to_string()]);
        }
        other => panic!("unexpected error: {other}"),
    }
    assert!(error.to_string().contains("core protocol 2"));
}

#[tokio::test]
async fn exit_before_handshake_reports_status_and_stderr() {
    let root = tempfile::tempdir().unwrap();
    let dir = native_fake_bundle(
        root.path(),
        "exits-early",
        "--stderr ModuleNotFoundError:_grpc --exit-before 3",
    );
    let error = start_failure(&dir).await;
    match &error {
        SupervisorError::PluginExited { status, stderr, .. } => {
            assert_eq!(status.code(), Some(3));
            assert!(stderr.0.iter().any(|l| l.contains("ModuleNotFoundError")));
        }
        other => panic!("unexpected error: {other}"),
    }
    let message = error.to_string();
    assert!(message.contains("exit status 3"), "{message}");
    assert!(message.contains("ModuleNotFoundError"), "{message}");
}

#[tokio::test]
async fn no_handshake_times_out() {
    let root = tempfile::tempdir().unwrap();
    let pid_file = root.path().join("pids");
    let flags = format!(
        "--garbage 2 --no-handshake --spawn-log {}",
        pid_file.display()
    );
    let dir = native_fake_bundle(root.path(), "silent", &flags);
    let error = start_failure(&dir).await;
    match &error {
        SupervisorError::HandshakeTimeout { after, skipped, .. } => {
            assert_eq!(*after, Duration::from_millis(1500));
            assert_eq!(skipped.count, 2);
            assert_eq!(skipped.first.as_deref(), Some("garbage line 0"));
        }
        other => panic!("unexpected error: {other}"),
    }
    let pid = read_pids(&pid_file)[0];
    assert_no_leftovers(pid);
}

#[tokio::test]
async fn not_serving_is_unhealthy() {
    let root = tempfile::tempdir().unwrap();
    let pid_file = root.path().join("pids");
    let flags = format!("--health not_serving --spawn-log {}", pid_file.display());
    let dir = native_fake_bundle(root.path(), "not-serving", &flags);
    let error = start_failure(&dir).await;
    match &error {
        SupervisorError::Unhealthy { after, last, .. } => {
            assert_eq!(*after, Duration::from_millis(1500));
            assert_eq!(*last, PingError::NotServing("NOT_SERVING".into()));
        }
        other => panic!("unexpected error: {other}"),
    }
    assert!(error.to_string().contains("NOT_SERVING"), "{error}");
    assert_no_leftovers(read_pids(&pid_file)[0]);
}

#[tokio::test]
async fn sigterm_ignored_escalates_to_sigkill() {
    let root = tempfile::tempdir().unwrap();
    let dir = native_fake_bundle(root.path(), "stubborn", "--ignore-sigterm");
    let config = SupervisorConfig::builder()
        .stop_grace(Duration::from_millis(200))
        .build()
        .unwrap();
    let supervisor = Supervisor::start("stubborn", &short_timeout(&dir), &config)
        .await
        .unwrap();
    let pid = supervisor.pid().unwrap();
    let report = supervisor.stop().await;
    assert_eq!(report.method, StopMethod::Kill);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        report.status.unwrap().signal(),
        Some(9),
        "it ended by SIGKILL"
    );
    assert_no_leftovers(pid);
}

#[tokio::test]
async fn grandchildren_in_the_group_die_with_the_plugin() {
    let root = tempfile::tempdir().unwrap();
    let pid_file = root.path().join("grandchildren");
    let flags = format!("--grandchild --pid-file {}", pid_file.display());
    let dir = native_fake_bundle(root.path(), "forker", &flags);
    let supervisor = start(&dir).await.unwrap();
    let grandchild = read_pids(&pid_file)[0];
    assert!(exists(grandchild));
    let pid = supervisor.pid().unwrap();
    supervisor.stop().await;
    assert_no_leftovers(pid);
    assert!(
        eventually(Duration::from_secs(2), || !exists(grandchild)
            || is_zombie(grandchild)),
        "grandchild {grandchild} survived"
    );
}

#[tokio::test]
async fn crash_is_seen_at_once() {
    let root = tempfile::tempdir().unwrap();
    let dir = native_fake_bundle(root.path(), "crasher", "--crash-after-ms 50");
    let supervisor = start(&dir).await.unwrap();
    let status = tokio::time::timeout(Duration::from_secs(5), supervisor.exited())
        .await
        .expect("exit was not observed");
    assert_eq!(status.code(), Some(3));
    assert_eq!(supervisor.stop().await.method, StopMethod::AlreadyExited);
}

#[tokio::test]
async fn real_python_plugin_on_grpcio_without_sdk() {
    let root = tempfile::tempdir().unwrap();
    let dir = copy_bundle(
        &repo_root().join("tests/pyplugins/raw_grpcio"),
        &root.path().join("raw"),
    );
    let options = LaunchOptions::builder()
        .interpreter(test_python())
        .build()
        .unwrap();
    let plan = plan(&dir, &options);
    assert_eq!(plan.runtime, RuntimeKind::Python);
    let supervisor = Supervisor::start("raw-grpcio", &plan, &SupervisorConfig::default())
        .await
        .unwrap();
    let pid = supervisor.pid().unwrap();
    let report = supervisor.stop().await;
    // No controller in a raw grpcio plugin: SIGTERM at once, and it exits cleanly.
    assert_eq!(report.method, StopMethod::Terminate);
    assert_eq!(report.status.unwrap().code(), Some(0));
    assert_no_leftovers(pid);
}

#[tokio::test]
async fn real_go_plugin_built_with_go_plugin() {
    let root = tempfile::tempdir().unwrap();
    let binary = built_artifact("target/go/healthy");
    let dir = root.path().join("go-healthy");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("plugin.json"),
        r#"{"id":"go-healthy","version":"1.0.0","server":{"executable":"plugin"}}"#,
    )
    .unwrap();
    // A symlink out of the bundle would be refused by design, so copy the binary in.
    std::fs::copy(&binary, dir.join("plugin")).unwrap();
    let supervisor = start(&dir).await.unwrap();
    assert_eq!(supervisor.handshake().network, plugvisor::Network::Unix);
    let pid = supervisor.pid().unwrap();
    let report = supervisor.stop().await;
    assert_eq!(report.method, StopMethod::Controller);
    assert_no_leftovers(pid);
}
