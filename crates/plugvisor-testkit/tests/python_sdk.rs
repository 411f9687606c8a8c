//! The Python SDK under plugvisor: a real interpreter with grpcio, the SDK
//! installed in the example bundle's venv, stopped through the controller with
//! its cleanup run, and its print() output relayed over plugin.GRPCStdio.

use std::path::{Path, PathBuf};
use std::time::Duration;

use plugvisor::Bundle;
use plugvisor::{LaunchOptions, plan_launch};
use plugvisor::{StopMethod, Supervisor, SupervisorConfig};
use plugvisor_testkit::*;

/// The example bundle's venv: it has grpcio and the SDK (non-editable).
fn sdk_python() -> PathBuf {
    built_artifact("examples/plugins/hello-python/venv/bin/python")
}

/// A bundle whose plugin prints a line and writes `marker` on shutdown.
fn sdk_bundle(root: &Path, marker: &Path) -> PathBuf {
    let dir = root.join("sdk-plugin");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("plugin.json"),
        r#"{"id":"sdk-plugin","version":"0.1.0","server":{"executable":"plugin.py"}}"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("plugin.py"),
        format!(
            r#"
import plugvisor_plugin

def register(server):
    print("printed by the plugin " + {marker:?}, flush=True)

def cleanup():
    with open({marker:?}, "w") as f:
        f.write("cleanup ran")

plugvisor_plugin.serve(register, on_shutdown=cleanup)
"#,
            marker = marker.display().to_string()
        ),
    )
    .unwrap();
    dir
}

/// Starts the plugin, forked from the venv's zygote or exec'd.
async fn start(dir: &Path, config: &SupervisorConfig, zygote: bool) -> Supervisor {
    let options = LaunchOptions::builder()
        .interpreter(sdk_python())
        .zygote(zygote)
        .build()
        .unwrap();
    let plan = plan_launch(&Bundle::load(dir).unwrap(), &options).unwrap();
    assert_eq!(
        plan.program,
        sdk_python(),
        "the bundle has no venv of its own"
    );
    let supervisor = Supervisor::start("sdk-plugin", &plan, config)
        .await
        .unwrap();
    if zygote {
        let zygotes = my_zygotes();
        assert!(
            zygotes.iter().any(|(_, i)| Path::new(i) == sdk_python()),
            "no zygote forked it: {zygotes:?}"
        );
    }
    supervisor
}

#[tokio::test]
async fn sdk_plugin_stops_through_the_controller_with_cleanup_and_streams_stdio() {
    for zygote in [true, false] {
        stops_through_the_controller(zygote).await;
    }
}

async fn stops_through_the_controller(zygote: bool) {
    let logs = captured_logs();
    let root = tempfile::tempdir().unwrap();
    let marker = root.path().join("marker");
    let printed = format!("printed by the plugin {}", marker.display());
    let supervisor = start(
        &sdk_bundle(root.path(), &marker),
        &SupervisorConfig::default(),
        zygote,
    )
    .await;
    supervisor.ping().await.unwrap();
    let relayed = async {
        while !logs.text().contains(&printed) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), relayed)
        .await
        .unwrap_or_else(|_| panic!("print() was not relayed; logs:\n{}", logs.text()));
    let line = logs
        .text()
        .lines()
        .find(|l| l.contains(&printed))
        .unwrap()
        .to_string();
    assert!(line.contains("plugin::grpc_stdout"), "{line}");
    assert!(
        line.contains("sdk-plugin"),
        "the plugin id is missing: {line}"
    );

    let pid = supervisor.pid().unwrap();
    let report = supervisor.stop().await;
    assert_eq!(report.method, StopMethod::Controller);
    assert_eq!(report.status.unwrap().code(), Some(0));
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "cleanup ran");
    assert_no_leftovers(pid);
}

#[tokio::test]
async fn sdk_plugin_runs_its_cleanup_on_sigterm() {
    for zygote in [true, false] {
        cleanup_on_sigterm(zygote).await;
    }
}

async fn cleanup_on_sigterm(zygote: bool) {
    let root = tempfile::tempdir().unwrap();
    let marker = root.path().join("marker");
    let supervisor = start(
        &sdk_bundle(root.path(), &marker),
        &SupervisorConfig::default(),
        zygote,
    )
    .await;
    let pid = supervisor.pid().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(10), supervisor.exited())
        .await
        .expect("the plugin did not exit on SIGTERM");
    assert_eq!(status.code(), Some(0));
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "cleanup ran");
    supervisor.stop().await;
    assert_no_leftovers(pid);
}
