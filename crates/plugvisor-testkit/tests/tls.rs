//! go-plugin AutoMTLS against real plugins: the Go plugin (go-plugin v1.7.0)
//! and the Python SDK example. A connection without the host's client
//! certificate must be refused.

use std::path::Path;
use std::time::Duration;

use plugvisor::Bundle;
use plugvisor::internals::connect;
use plugvisor::internals::{ClientIdentity, client_config};
use plugvisor::{LaunchOptions, plan_launch};
use plugvisor::{StopMethod, Supervisor, SupervisorConfig, SupervisorError, TlsMode, Transport};
use plugvisor_testkit::*;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

fn with(mode: TlsMode) -> SupervisorConfig {
    SupervisorConfig::builder().tls(mode).build().unwrap()
}

async fn start(dir: &Path, config: &SupervisorConfig) -> Result<Supervisor, SupervisorError> {
    let plan = plan_launch(&Bundle::load(dir).unwrap(), &LaunchOptions::default()).unwrap();
    Supervisor::start("tls", &plan, config).await
}

fn go_bundle(root: &Path) -> std::path::PathBuf {
    let dir = root.join("go-healthy");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("plugin.json"),
        r#"{"id":"go-healthy","server":{"executable":"plugin"}}"#,
    )
    .unwrap();
    std::fs::copy(built_artifact("target/go/healthy"), dir.join("plugin")).unwrap();
    dir
}

/// A health check over a fresh connection with the given TLS settings.
async fn health_over(
    supervisor: &Supervisor,
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
) -> Result<(), String> {
    let channel = connect(supervisor.handshake(), Duration::from_secs(2), tls)
        .await
        .map_err(|e| e.to_string())?;
    let mut client = HealthClient::new(channel);
    let check = client.check(HealthCheckRequest {
        service: "plugin".into(),
    });
    match tokio::time::timeout(Duration::from_secs(2), check).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(status)) => Err(status.to_string()),
        Err(_) => Err("timed out".into()),
    }
}

/// Under AutoMTLS the plugin answers with its certificate, is healthy over
/// TLS, and refuses clients without the host's certificate.
async fn assert_mutual_tls(supervisor: Supervisor) {
    assert!(
        supervisor.transport().is_mtls(),
        "{}",
        supervisor.transport()
    );
    let cert = supervisor
        .handshake()
        .server_cert
        .clone()
        .expect("the plugin announces its certificate under AutoMTLS");

    let without_client_cert = client_config(&cert, None).unwrap();
    let refused = health_over(&supervisor, Some(without_client_cert)).await;
    assert!(
        refused.is_err(),
        "a TLS client without a certificate got in"
    );

    let stranger = ClientIdentity::generate().unwrap();
    let wrong_cert = client_config(&cert, Some(&stranger)).unwrap();
    assert!(
        health_over(&supervisor, Some(wrong_cert)).await.is_err(),
        "a client with another certificate got in"
    );
    assert!(
        health_over(&supervisor, None).await.is_err(),
        "a plaintext client got in"
    );

    let pid = supervisor.pid().unwrap();
    let report = supervisor.stop().await;
    assert_eq!(report.method, StopMethod::Controller);
    assert_eq!(report.status.unwrap().code(), Some(0));
    assert_no_leftovers(pid);
}

#[tokio::test]
async fn go_plugin_speaks_tls_and_refuses_hosts_without_the_client_cert() {
    let root = tempfile::tempdir().unwrap();
    // Auto is the default: nothing to turn on.
    assert_eq!(SupervisorConfig::default().tls(), TlsMode::Auto);
    let supervisor = start(&go_bundle(root.path()), &SupervisorConfig::default())
        .await
        .unwrap();
    assert_eq!(supervisor.transport(), Transport::UnixMtls);
    assert_mutual_tls(supervisor).await;
}

#[tokio::test]
async fn python_sdk_plugin_speaks_tls_and_refuses_hosts_without_the_client_cert() {
    built_artifact("examples/plugins/hello-python/venv/bin/python");
    let dir = repo_root().join("examples/plugins/hello-python");
    let supervisor = start(&dir, &with(TlsMode::Require)).await.unwrap();
    assert_mutual_tls(supervisor).await;
}

#[tokio::test]
async fn plaintext_tcp_is_refused_under_require() {
    let root = tempfile::tempdir().unwrap();
    let dir = native_fake_bundle(root.path(), "plaintext-tcp", "--network tcp");
    let error = start(&dir, &with(TlsMode::Require)).await.unwrap_err();
    assert!(
        matches!(error, SupervisorError::PlaintextRefused { .. }),
        "{error}"
    );
}

#[tokio::test]
async fn plaintext_tcp_is_accepted_with_a_warning_under_auto() {
    let logs = captured_logs();
    let root = tempfile::tempdir().unwrap();
    let dir = native_fake_bundle(root.path(), "plaintext-tcp-auto", "--network tcp");
    let supervisor = start(&dir, &with(TlsMode::Auto)).await.unwrap();
    assert_eq!(supervisor.transport(), Transport::Tcp);
    supervisor.ping().await.unwrap();
    supervisor.stop().await;
    let warning = logs
        .lines()
        .into_iter()
        .find(|l| l.contains("WARN") && l.contains("plaintext tcp"))
        .unwrap_or_else(|| panic!("no warning; logs:\n{}", logs.text()));
    assert!(warning.contains("any local user"), "{warning}");
}

#[tokio::test]
async fn plaintext_on_the_private_unix_socket_needs_no_tls_in_any_mode() {
    let logs = captured_logs();
    let root = tempfile::tempdir().unwrap();
    let dir = native_fake_bundle(root.path(), "plaintext-unix", "--network unix");
    for mode in [TlsMode::Auto, TlsMode::Require] {
        let supervisor = start(&dir, &with(mode)).await.unwrap();
        assert_eq!(supervisor.transport(), Transport::Unix);
        supervisor.ping().await.unwrap();
        supervisor.stop().await;
    }
    let warnings: Vec<String> = logs
        .lines()
        .into_iter()
        // (Other tests of this binary warn of their plaintext tcp meanwhile.)
        .filter(|l| l.contains("WARN") && l.contains("outside its private directory"))
        .collect();
    assert!(warnings.is_empty(), "{warnings:?}");
}

#[tokio::test]
async fn tls_off_leaves_go_plugins_in_plaintext() {
    let root = tempfile::tempdir().unwrap();
    let supervisor = start(&go_bundle(root.path()), &with(TlsMode::Off))
        .await
        .unwrap();
    assert_eq!(supervisor.handshake().server_cert, None);
    assert_eq!(supervisor.transport(), Transport::Unix);
    supervisor.stop().await;
}
