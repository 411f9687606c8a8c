//! Attaching to a plugin started by hand (go-plugin's reattach): plugvisor
//! supervises it (health checks, hooks, configuration, HTTP) without owning
//! its process, which it never signals, kills or restarts.

use std::path::Path;

use plugvisor::{
    AttachTarget, ConfigApplied, ConfigChange, Environment, EnvironmentConfig, EventKind,
    PluginState,
};
use plugvisor_testkit::*;

/// A bundle for `id` (its executable is the same plugin, for a start that
/// spawns it), with a `greeting` setting.
fn bundle(root: &Path, id: &str) {
    let dir = root.join(id);
    std::fs::create_dir_all(&dir).unwrap();
    let manifest = serde_json::json!({
        "id": id,
        "version": "1.0.0",
        "server": {"executable": "plugin"},
        "settings_schema": {"settings": [
            {"key": "greeting", "type": "text", "default": "Hello"},
            {"key": "refuse", "type": "text", "default": ""},
        ]},
    });
    std::fs::write(dir.join("plugin.json"), manifest.to_string()).unwrap();
    std::fs::copy(built_artifact("target/go/sdkplugin"), dir.join("plugin")).unwrap();
}

fn environment(root: &Path) -> Environment {
    Environment::new(EnvironmentConfig::new(root)).unwrap()
}

/// Serves the environment's HTTP on a free port; returns its base URL.
async fn serve_http(env: &Environment) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let router = plugvisor::http::router(env.clone(), plugvisor::http::HttpLimits::default());
    tokio::spawn(plugvisor::http::serve(
        listener,
        router,
        std::future::pending(),
    ));
    base
}

/// The greeting the plugin has (from OnActivate or OnConfigurationChange)
/// and the one it fetches through the host API, over HTTP.
async fn greetings_over_http(base: &str, id: &str) -> (String, String) {
    let config: serde_json::Value = reqwest::get(format!("{base}/plugins/{id}/config"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
    (
        text(&config["settings"]["greeting"]),
        text(&config["fetched"]["greeting"]),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attached_plugin_is_supervised_but_its_process_is_never_signalled() {
    let root = tempfile::tempdir().unwrap();
    let sockets = tempfile::tempdir().unwrap();
    bundle(root.path(), "go-attached");
    let mut plugin = ByHand::start(&built_artifact("target/go/sdkplugin"), sockets.path());
    let env = environment(root.path());
    let base = serve_http(&env).await;
    let mut events = env.subscribe();

    let target = AttachTarget::new(&plugin.address, Some(plugin.pid())).unwrap();
    let status = env.attach("go-attached", target).await.unwrap();
    assert_eq!(status.state, PluginState::Running);
    assert_eq!(status.pid, Some(plugin.pid()));
    assert_eq!(
        status.attached,
        Some(format!("{} (pid {})", plugin.address, plugin.pid()))
    );
    // Health checks, OnActivate's configuration, HTTP, configuration changes.
    env.perform_health_check("go-attached").await.unwrap();
    let hello = ("Hello".to_string(), "Hello".to_string());
    assert_eq!(greetings_over_http(&base, "go-attached").await, hello);
    let applied = env
        .set_configuration("go-attached", [ConfigChange::set("greeting", "Howdy")])
        .await
        .unwrap();
    assert_eq!(applied, ConfigApplied::Live);
    let howdy = ("Howdy".to_string(), "Howdy".to_string());
    assert_eq!(greetings_over_http(&base, "go-attached").await, howdy);

    // A stop disconnects; the process is left running.
    env.deactivate("go-attached").await.unwrap();
    let stopped = next_event(&mut events, "go-attached", |k, _| {
        matches!(k, EventKind::Stopped { .. })
    })
    .await;
    assert_eq!(
        stopped.kind,
        EventKind::Stopped {
            method: Some(plugvisor::StopMethod::Detached),
            exit: None
        }
    );
    assert_eq!(stopped.status.state, PluginState::NotRunning);
    assert!(plugin.alive(), "a stop must not end an attached plugin");

    // go-plugin's broker closes with the first host connection
    // (gRPCBrokerServer.StartStream), so a plugin that uses the host API is
    // attached again as a new process started by hand.
    let mut second = ByHand::start(&built_artifact("target/go/sdkplugin"), sockets.path());
    let target = AttachTarget::new(&second.address, Some(second.pid())).unwrap();
    let status = env.attach("go-attached", target).await.unwrap();
    assert_eq!(status.pid, Some(second.pid()));
    assert!(plugin.alive());

    // Killed by hand: seen at once on its pid, and not restarted.
    let pid = second.pid();
    second.kill();
    let gave_up = next_event(&mut events, "go-attached", |k, _| {
        matches!(k, EventKind::Disabled { .. })
    })
    .await;
    assert_eq!(gave_up.status.state, PluginState::FailedToStayRunning);
    assert_eq!(gave_up.status.restarts, 0);
    let error = gave_up.status.last_error.clone().unwrap();
    assert!(
        error.starts_with(&format!(
            "attached plugin went away: its process {pid} exited; not restarted: plugvisor does not own its process"
        )),
        "{error}"
    );
    assert!(gave_up.status.attached.is_some());
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_pid_its_end_is_told_by_its_stdio_stream_and_detach_spawns_the_bundle_again() {
    let root = tempfile::tempdir().unwrap();
    let sockets = tempfile::tempdir().unwrap();
    bundle(root.path(), "go-nopid");
    let mut plugin = ByHand::start(&built_artifact("target/go/sdkplugin"), sockets.path());
    let env = environment(root.path());
    let mut events = env.subscribe();
    let target = AttachTarget::new(&plugin.address, None).unwrap();
    let status = env.attach("go-nopid", target).await.unwrap();
    assert_eq!((status.state, status.pid), (PluginState::Running, None));
    plugin.kill();
    let gave_up = next_event(&mut events, "go-nopid", |k, _| {
        matches!(k, EventKind::Disabled { .. })
    })
    .await;
    let error = gave_up.status.last_error.unwrap();
    let address = plugin.address.trim_start_matches("unix:");
    assert!(
        error.starts_with(&format!(
            "attached plugin went away: its connection at unix:{address} closed; not restarted"
        )),
        "{error}"
    );

    // Detached: the next start spawns the bundle's own process.
    let status = env.detach("go-nopid").await.unwrap();
    assert_eq!(
        (status.state, status.attached),
        (PluginState::NotRunning, None)
    );
    let status = env.activate("go-nopid").await.unwrap();
    let spawned = status.pid.unwrap();
    assert_ne!(spawned, plugin.pid());
    env.shutdown().await;
    assert_no_leftovers(spawned);
}

#[tokio::test]
async fn what_cannot_be_attached_to_is_refused_and_not_retried() {
    let root = tempfile::tempdir().unwrap();
    bundle(root.path(), "go-nowhere");
    let env = environment(root.path());
    let remote = AttachTarget::new("tcp:192.0.2.1:4321", None).unwrap();
    let error = env
        .attach("go-nowhere", remote)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("cannot attach to the plugin at tcp:192.0.2.1:4321: 192.0.2.1:4321 is not a loopback address"),
        "{error}"
    );
    let nobody = root.path().join("nobody.sock");
    let target = AttachTarget::new(format!("unix:{}", nobody.display()), None).unwrap();
    let error = env
        .attach("go-nowhere", target)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("cannot attach to the plugin at unix:"),
        "{error}"
    );
    let status = env.status("go-nowhere").unwrap();
    assert_eq!(status.state, PluginState::FailedToStart);
    let no_process = AttachTarget::new("unix:/tmp/x.sock", Some(u32::MAX / 2)).unwrap();
    let error = env
        .attach("go-nowhere", no_process)
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("there is no process"), "{error}");
    assert!(
        env.attach(
            "no-such-plugin",
            AttachTarget::new("/tmp/x.sock", None).unwrap()
        )
        .await
        .is_err()
    );
    env.shutdown().await;
}
