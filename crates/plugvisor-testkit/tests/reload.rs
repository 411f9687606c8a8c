//! Hot reload: `Environment::reload` against real processes, as bundles are
//! added, changed, broken and removed under a running environment.

use std::path::Path;
use std::time::Duration;

use plugvisor::{Environment, EnvironmentConfig, EnvironmentError, EventKind, LaunchOptions};
use plugvisor::{Event, PluginState};
use plugvisor_testkit::*;
use tokio::sync::broadcast::Receiver;

fn config(root: &Path) -> EnvironmentConfig {
    let launch = LaunchOptions::builder()
        .native_start_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    EnvironmentConfig::builder(root)
        .launch(launch)
        .build()
        .unwrap()
}

/// The events sent so far (a reload has sent all of its own when it returns).
fn drain(events: &mut Receiver<Event>) -> Vec<Event> {
    std::iter::from_fn(|| events.try_recv().ok()).collect()
}

fn count(events: &[Event], id: &str, kind: fn(&EventKind) -> bool) -> usize {
    events
        .iter()
        .filter(|e| e.status.id == id && kind(&e.kind))
        .count()
}

fn pid(env: &Environment, id: &str) -> u32 {
    let status = env.status(id).unwrap();
    assert_eq!(status.state, PluginState::Running, "{status:?}");
    status.pid.unwrap()
}

#[tokio::test]
async fn reload_adds_restarts_and_removes_bundles() {
    let root = tempfile::tempdir().unwrap();
    let keep = native_fake_bundle(root.path(), "keep", "");
    native_fake_bundle(root.path(), "gone", "");
    let env = Environment::new(config(root.path())).unwrap();
    env.activate("keep").await.unwrap();
    env.activate("gone").await.unwrap();
    let (keep_pid, gone_pid) = (pid(&env, "keep"), pid(&env, "gone"));
    let mut events = env.subscribe();

    // Nothing changed: nothing is touched.
    let report = env.reload().await.unwrap();
    assert!(report.is_empty(), "{report:?}");
    assert!(drain(&mut events).is_empty());
    assert_eq!(pid(&env, "keep"), keep_pid);

    // A new bundle is added and activated.
    native_fake_bundle(root.path(), "fresh", "");
    let report = env.reload().await.unwrap();
    assert_eq!(report.added, ["fresh"], "{report:?}");
    assert!(report.is_clean() && report.restarted.is_empty());
    pid(&env, "fresh");
    let seen = drain(&mut events);
    assert_eq!(count(&seen, "fresh", |k| *k == EventKind::Added), 1);

    // A changed manifest restarts the plugin once, with its new version.
    set_manifest_field(&keep, "version", "2.0.0".into());
    let report = env.reload().await.unwrap();
    assert_eq!(report.restarted, ["keep"], "{report:?}");
    let status = env.status("keep").unwrap();
    assert_eq!(
        (status.state, status.version.as_str()),
        (PluginState::Running, "2.0.0")
    );
    assert_ne!(status.pid, Some(keep_pid));
    assert_no_leftovers(keep_pid);
    let seen = drain(&mut events);
    let reloaded = |k: &EventKind| matches!(k, EventKind::Reloaded { previous_version } if previous_version == "1.0.0");
    assert_eq!(count(&seen, "keep", reloaded), 1, "{seen:?}");
    assert_eq!(count(&seen, "keep", |k| *k == EventKind::Starting), 1);
    assert_eq!(count(&seen, "gone", |_| true), 0, "{seen:?}");

    // So does a changed executable.
    let keep_pid = pid(&env, "keep");
    let executable = keep.join("bin/plugin");
    let script = std::fs::read_to_string(&executable).unwrap();
    std::fs::write(&executable, format!("{script}# rebuilt\n")).unwrap();
    let report = env.reload().await.unwrap();
    assert_eq!(report.restarted, ["keep"], "{report:?}");
    assert_ne!(pid(&env, "keep"), keep_pid);
    assert_no_leftovers(keep_pid);

    // A removed bundle is stopped and forgotten.
    drain(&mut events);
    std::fs::remove_dir_all(root.path().join("gone")).unwrap();
    let report = env.reload().await.unwrap();
    assert_eq!(report.removed, ["gone"], "{report:?}");
    assert_no_leftovers(gone_pid);
    assert_eq!(env.plugin_ids(), ["fresh", "keep"]);
    assert!(matches!(
        env.status("gone"),
        Err(EnvironmentError::UnknownPlugin(_))
    ));
    let metrics = env.metrics();
    assert!(
        !metrics
            .lines()
            .any(|l| l.starts_with("plugvisor_plugin_state{") && l.contains("\"gone\"")),
        "{metrics}"
    );
    let seen = drain(&mut events);
    assert_eq!(count(&seen, "gone", |k| *k == EventKind::Removed), 1);
    env.shutdown().await;
}

#[tokio::test]
async fn an_invalid_new_version_is_refused_and_the_old_one_keeps_running() {
    let root = tempfile::tempdir().unwrap();
    let steady = native_fake_bundle(root.path(), "steady", "");
    let env = Environment::new(config(root.path())).unwrap();
    env.activate("steady").await.unwrap();
    let steady_pid = pid(&env, "steady");
    let mut events = env.subscribe();
    let manifest = steady.join("plugin.json");
    let good = std::fs::read_to_string(&manifest).unwrap();

    // A manifest being rewritten: not valid JSON.
    std::fs::write(&manifest, "{").unwrap();
    let report = env.reload().await.unwrap();
    assert_eq!(report.refused.len(), 1, "{report:?}");
    let refused = &report.refused[0];
    assert_eq!(refused.id.as_deref(), Some("steady"));
    assert_eq!(refused.kept_version.as_deref(), Some("1.0.0"));
    assert!(
        refused.reason.contains("steady/plugin.json") && refused.reason.contains("invalid JSON"),
        "{}",
        refused.reason
    );
    assert!(!report.is_clean() && report.removed.is_empty());
    assert_eq!(pid(&env, "steady"), steady_pid);
    let seen = drain(&mut events);
    let refusal = |k: &EventKind| matches!(k, EventKind::ReloadRefused { reason } if reason.contains("invalid JSON"));
    assert_eq!(count(&seen, "steady", refusal), 1, "{seen:?}");
    // Refused again, but announced once.
    assert_eq!(env.reload().await.unwrap().refused.len(), 1);
    let seen = drain(&mut events);
    assert!(seen.is_empty(), "{seen:?}");

    // A valid manifest naming an executable that is not there (yet).
    std::fs::write(&manifest, good.replace("bin/plugin", "bin/next")).unwrap();
    let report = env.reload().await.unwrap();
    let reason = &report.refused[0].reason;
    assert!(reason.contains("bin/next does not exist"), "{reason}");
    assert_eq!(pid(&env, "steady"), steady_pid);
    assert_eq!(env.status("steady").unwrap().version, "1.0.0");

    // Once it is, the new version is loaded.
    std::fs::copy(steady.join("bin/plugin"), steady.join("bin/next")).unwrap();
    let report = env.reload().await.unwrap();
    assert_eq!(report.restarted, ["steady"], "{report:?}");
    assert!(report.is_clean());
    assert_no_leftovers(steady_pid);

    // A new bundle that cannot be launched is not added; the warning comes
    // once, the report every time.
    let logs = captured_logs();
    let warnings = || {
        (logs.lines().into_iter())
            .filter(|l| l.contains("WARN") && l.contains("newbie/plugin.json"))
            .count()
    };
    let newbie = native_fake_bundle(root.path(), "newbie", "");
    std::fs::remove_file(newbie.join("bin/plugin")).unwrap();
    let report = env.reload().await.unwrap();
    assert_eq!(report.refused.len(), 1, "{report:?}");
    assert_eq!(report.refused[0].id.as_deref(), Some("newbie"));
    assert_eq!(report.refused[0].kept_version, None);
    assert_eq!(env.plugin_ids(), ["steady"]);
    assert_eq!(warnings(), 1, "{}", logs.text());
    assert_eq!(env.reload().await.unwrap().refused.len(), 1);
    assert_eq!(warnings(), 1, "{}", logs.text());
    env.shutdown().await;
}

#[tokio::test]
async fn a_deactivated_plugin_gets_its_new_version_without_starting() {
    let root = tempfile::tempdir().unwrap();
    let idle = native_fake_bundle(root.path(), "idle", "");
    let env = Environment::new(config(root.path())).unwrap();
    env.activate("idle").await.unwrap();
    env.deactivate("idle").await.unwrap();
    set_manifest_field(&idle, "version", "3.0.0".into());
    let report = env.reload().await.unwrap();
    assert_eq!(report.restarted, ["idle"], "{report:?}");
    let status = env.status("idle").unwrap();
    assert_eq!(
        (status.state, status.version.as_str()),
        (PluginState::NotRunning, "3.0.0")
    );
    env.activate("idle").await.unwrap();
    env.shutdown().await;
}

#[tokio::test]
async fn a_new_version_whose_schema_refuses_the_configured_values_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let typed = native_fake_bundle(root.path(), "typed", "");
    let schema = |kind: &str| serde_json::json!({"settings": [{"key": "shout", "type": kind}]});
    set_manifest_field(&typed, "settings_schema", schema("bool"));
    let file = serde_json::json!({"shout": true});
    let config = EnvironmentConfig::builder(root.path())
        .plugin_configuration("typed", file.as_object().unwrap().clone())
        .build()
        .unwrap();
    let env = Environment::new(config).unwrap();
    env.activate("typed").await.unwrap();
    let typed_pid = pid(&env, "typed");

    set_manifest_field(&typed, "version", "2.0.0".into());
    set_manifest_field(&typed, "settings_schema", schema("text"));
    let report = env.reload().await.unwrap();
    assert_eq!(report.refused.len(), 1, "{report:?}");
    let reason = &report.refused[0].reason;
    assert!(
        reason.contains("configured values") && reason.contains("shout"),
        "{reason}"
    );
    assert_eq!(pid(&env, "typed"), typed_pid);
    assert_eq!(env.status("typed").unwrap().version, "1.0.0");
    env.shutdown().await;
}
