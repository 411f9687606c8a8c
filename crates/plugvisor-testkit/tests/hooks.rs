//! Lifecycle hooks, configuration and the host API, against real plugin
//! processes: the fake plugin (which misbehaves on request) and the Go
//! example built with the Go SDK on go-plugin's own broker. Multi-threaded
//! runtimes: the tests wait for files and logs with blocking polls while the
//! host keeps working on the other thread.

use std::path::Path;
use std::time::Duration;

use plugvisor::{
    ConfigApplied, ConfigChange, ConfigSource, Environment, EnvironmentConfig,
    EnvironmentConfigBuilder, EnvironmentError, HookTimeouts, LaunchOptions, PluginState,
};
use plugvisor_testkit::*;
use serde_json::json;

fn settings() -> serde_json::Value {
    json!({"settings": [
        {"key": "greeting", "type": "text", "default": "Hello"},
        {"key": "shout", "type": "bool", "default": false},
        {"key": "refuse", "type": "bool", "default": false}
    ]})
}

fn builder(root: &Path) -> EnvironmentConfigBuilder {
    let launch = LaunchOptions::builder()
        .native_start_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let hooks = HookTimeouts::builder()
        .on_activate(Duration::from_secs(2))
        .on_configuration_change(Duration::from_secs(1))
        .on_deactivate(Duration::from_millis(500))
        .build()
        .unwrap();
    EnvironmentConfig::builder(root.join("plugins"))
        .launch(launch)
        .hook_timeouts(hooks)
        .data_dir(root.join("data"))
}

/// A fake plugin with every hook, the broker, a settings schema and a hook log.
fn hooked(root: &Path, id: &str, flags: &str) -> std::path::PathBuf {
    let log = root.join(format!("{id}.log"));
    let flags = format!(
        "--hooks OnActivate,OnDeactivate,OnConfigurationChange --broker --refuse-config-key refuse --hook-log {} {flags}",
        log.display()
    );
    let dir = native_fake_bundle(&root.join("plugins"), id, &flags);
    set_manifest_field(&dir, "settings_schema", settings());
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activation_delivers_the_configuration_and_the_host_api() {
    let root = tempfile::tempdir().unwrap();
    let log = hooked(root.path(), "counter", "--kv-counter activations");
    let file = json!({"greeting": "Hi from the file"});
    let config = builder(root.path())
        .plugin_configuration("counter", file.as_object().unwrap().clone())
        .build()
        .unwrap();
    let env = Environment::new(config).unwrap();
    env.activate("counter").await.unwrap();
    let activated = wait_for_line(&log, "OnActivate ");
    assert!(
        activated.contains(r#""greeting":"Hi from the file""#)
            && activated.contains(r#""shout":false"#),
        "{activated}"
    );
    assert!(!activated.ends_with("broker=0"), "{activated}");
    assert_eq!(wait_for_line(&log, "COUNT"), "COUNT 1");

    // A crash restart activates the new process again; the count goes on.
    let pid = env.status("counter").unwrap().pid.unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert!(eventually(Duration::from_secs(10), || lines_of(&log)
        .contains(&"COUNT 2".to_string())));
    assert!(
        !lines_of(&log).contains(&"OnDeactivate".to_string()),
        "a crashed plugin is not deactivated"
    );
    assert!(eventually(Duration::from_secs(5), || env.is_active("counter")));
    env.deactivate("counter").await.unwrap();
    assert_eq!(lines_of(&log).last().unwrap(), "OnDeactivate");
    env.shutdown().await;
    drop(env);

    // The store is durable: a new host on the same data directory counts on.
    let config = builder(root.path()).build().unwrap();
    let env = Environment::new(config).unwrap();
    env.activate("counter").await.unwrap();
    assert!(eventually(Duration::from_secs(5), || lines_of(&log)
        .contains(&"COUNT 3".to_string())));
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_activation_is_failed_to_start_and_not_restarted() {
    let root = tempfile::tempdir().unwrap();
    let spawns = root.path().join("spawns");
    hooked(
        root.path(),
        "refuser",
        &format!(
            "--refuse-activation 'greeting_missing' --spawn-log {}",
            spawns.display()
        ),
    );
    let env = Environment::new(builder(root.path()).build().unwrap()).unwrap();
    let error = env.activate("refuser").await.unwrap_err();
    assert!(matches!(error, EnvironmentError::Refused { .. }), "{error}");
    assert!(error.to_string().contains("greeting_missing"), "{error}");
    let status = env.status("refuser").unwrap();
    assert_eq!(status.state, PluginState::FailedToStart);
    assert_eq!(status.last_error.as_deref(), Some("greeting_missing"));
    let pids = read_pids(&spawns);
    assert_eq!(pids.len(), 1, "not restarted on its own");
    assert_no_leftovers(pids[0]);
    // `start` tries again.
    assert!(env.activate("refuser").await.is_err());
    assert_eq!(read_pids(&spawns).len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_changes_reach_the_plugin_or_are_refused() {
    let root = tempfile::tempdir().unwrap();
    let log = hooked(root.path(), "configurable", "");
    let env = Environment::new(builder(root.path()).build().unwrap()).unwrap();
    env.activate("configurable").await.unwrap();

    let applied = env
        .set_configuration(
            "configurable",
            [
                ConfigChange::set("greeting", "Howdy"),
                ConfigChange::set("shout", "true"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(applied, ConfigApplied::Live);
    let changed = wait_for_line(&log, "OnConfigurationChange ");
    assert!(
        changed.contains(r#""greeting":"Howdy""#) && changed.contains(r#""shout":true"#),
        "{changed}"
    );
    let values = env.configuration("configurable").unwrap();
    let greeting = values.iter().find(|v| v.key == "greeting").unwrap();
    assert_eq!(
        (greeting.value.clone(), greeting.source),
        (json!("Howdy"), ConfigSource::Operator)
    );
    let refuse = values.iter().find(|v| v.key == "refuse").unwrap();
    assert_eq!(refuse.source, ConfigSource::Default);

    // The plugin says no: its message, and nothing changes.
    let error = env
        .set_configuration(
            "configurable",
            [
                ConfigChange::set("greeting", "Bad"),
                ConfigChange::set("refuse", true),
            ],
        )
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("refuse must not be true"),
        "{error}"
    );
    let greeting = env
        .configuration("configurable")
        .unwrap()
        .into_iter()
        .find(|v| v.key == "greeting")
        .unwrap();
    assert_eq!(greeting.value, json!("Howdy"));

    // A value of the wrong type is refused by the schema, naming the key.
    let error = env
        .set_configuration("configurable", [ConfigChange::set("shout", "loudly")])
        .await
        .unwrap_err();
    assert!(
        matches!(error, EnvironmentError::InvalidSetting { .. }),
        "{error}"
    );
    assert!(
        error.to_string().contains("\"shout\"") && error.to_string().contains("true or false"),
        "{error}"
    );
    let error = env
        .set_configuration("configurable", [ConfigChange::set("volume", "11")])
        .await
        .unwrap_err();
    assert!(error.to_string().contains("no such setting"), "{error}");

    // Values outlive the plugin: a stopped plugin gets them at its next activation.
    env.deactivate("configurable").await.unwrap();
    let applied = env
        .set_configuration("configurable", [ConfigChange::unset("shout")])
        .await
        .unwrap();
    assert_eq!(applied, ConfigApplied::AtNextActivation);
    env.activate("configurable").await.unwrap();
    let reactivated = lines_of(&log)
        .into_iter()
        .rfind(|l| l.starts_with("OnActivate "))
        .unwrap();
    assert!(
        reactivated.contains(r#""greeting":"Howdy""#) && reactivated.contains(r#""shout":false"#),
        "{reactivated}"
    );
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_without_the_hook_gets_the_change_at_its_next_restart() {
    let root = tempfile::tempdir().unwrap();
    let log = root.path().join("log");
    let flags = format!("--hooks OnActivate --hook-log {}", log.display());
    let dir = native_fake_bundle(&root.path().join("plugins"), "no-change-hook", &flags);
    set_manifest_field(&dir, "settings_schema", settings());
    let env = Environment::new(builder(root.path()).build().unwrap()).unwrap();
    env.activate("no-change-hook").await.unwrap();
    let applied = env
        .set_configuration("no-change-hook", [ConfigChange::set("greeting", "Later")])
        .await
        .unwrap();
    assert_eq!(applied, ConfigApplied::AtNextRestart);
    assert!(
        !lines_of(&log)
            .iter()
            .any(|l| l.starts_with("OnConfigurationChange"))
    );
    env.restart("no-change-hook").await.unwrap();
    let reactivated = lines_of(&log)
        .into_iter()
        .rfind(|l| l.starts_with("OnActivate "))
        .unwrap();
    assert!(
        reactivated.contains(r#""greeting":"Later""#),
        "{reactivated}"
    );
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_value_in_the_config_file_names_the_plugin_and_key() {
    let root = tempfile::tempdir().unwrap();
    hooked(root.path(), "strict", "");
    let file = json!({"shout": "sometimes"});
    let config = builder(root.path())
        .plugin_configuration("strict", file.as_object().unwrap().clone())
        .build()
        .unwrap();
    let error = Environment::new(config)
        .err()
        .expect("the bad value is refused");
    let message = error.to_string();
    assert!(
        message.contains("\"strict\"") && message.contains("\"shout\""),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_plugin_sees_only_its_own_keys() {
    let root = tempfile::tempdir().unwrap();
    let log_a = hooked(
        root.path(),
        "plugin-a",
        "--kv-write shared=from-a --kv-read shared",
    );
    let log_b = hooked(root.path(), "plugin-b", "--kv-read shared");
    let env = Environment::new(builder(root.path()).build().unwrap()).unwrap();
    env.activate("plugin-a").await.unwrap();
    env.activate("plugin-b").await.unwrap();
    assert_eq!(
        wait_for_line(&log_a, "READ"),
        "READ false ",
        "a reads before it writes"
    );
    assert_eq!(wait_for_line(&log_a, "WRITE"), "WRITE true");
    assert_eq!(
        wait_for_line(&log_b, "READ"),
        "READ false ",
        "b cannot see a's key"
    );
    env.restart("plugin-a").await.unwrap();
    let reads: Vec<String> = lines_of(&log_a)
        .into_iter()
        .filter(|l| l.starts_with("READ"))
        .collect();
    assert_eq!(reads.last().unwrap(), "READ true from-a");
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_api_answers_only_the_plugins_own_processes() {
    let logs = captured_logs();
    let root = tempfile::tempdir().unwrap();
    hooked(root.path(), "guarded", "");
    let env = Environment::new(builder(root.path()).build().unwrap()).unwrap();
    let status = env.activate("guarded").await.unwrap();
    // Find the plugin's host API socket in its socket directory.
    let environ = std::fs::read(format!("/proc/{}/environ", status.pid.unwrap())).unwrap();
    let dir = environ
        .split(|&b| b == 0)
        .find_map(|v| {
            std::str::from_utf8(v)
                .ok()?
                .strip_prefix("PLUGIN_UNIX_SOCKET_DIR=")
        })
        .unwrap()
        .to_string();
    let prefix = format!("host-api-{}-", status.pid.unwrap());
    let socket = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&prefix)
        })
        .expect("the plugin's host API socket");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // This test process runs as the same user, but is not in the plugin's process group.
    let mut stream = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    use std::io::{Read, Write};
    let _ = stream.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    assert!(
        answer.is_empty(),
        "the host API answered a stranger: {answer:?}"
    );
    assert!(eventually(Duration::from_secs(5), || logs
        .lines()
        .iter()
        .any(|l| l.contains("guarded")
            && l.contains("refused a host API connection")
            && l.contains("is not one of the plugin's"))));
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_api_logs_land_in_the_plugins_span() {
    let logs = captured_logs();
    let root = tempfile::tempdir().unwrap();
    let log = hooked(
        root.path(),
        "talker",
        "--log-line hello-through-the-host-api",
    );
    let env = Environment::new(builder(root.path()).build().unwrap()).unwrap();
    env.activate("talker").await.unwrap();
    assert_eq!(wait_for_line(&log, "LOGLINE"), "LOGLINE true");
    let line = logs
        .lines()
        .into_iter()
        .find(|l| l.contains("hello-through-the-host-api"))
        .expect("the line was logged");
    assert!(
        line.contains("WARN") && line.contains("talker") && line.contains("source=fake"),
        "{line}"
    );
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_go_sdk_plugin_reaches_the_host_api_through_go_plugins_broker() {
    let logs = captured_logs();
    let root = tempfile::tempdir().unwrap();
    let plugins = root.path().join("plugins");
    copy_bundle(
        &repo_root().join("examples/plugins/hello-go"),
        &plugins.join("hello-go"),
    );
    for tls in [false, true] {
        let mode = match tls {
            true => plugvisor::TlsMode::Require,
            false => plugvisor::TlsMode::Off,
        };
        let supervisor = plugvisor::SupervisorConfig::builder()
            .tls(mode)
            .build()
            .unwrap();
        let env =
            Environment::new(builder(root.path()).supervisor(supervisor).build().unwrap()).unwrap();
        env.activate("hello-go").await.unwrap();
        // hello-go counts its activations in the store (through broker.Dial) and says so in the host's log.
        let expected = format!("activations={}", if tls { 2 } else { 1 });
        assert!(
            eventually(Duration::from_secs(5), || logs
                .lines()
                .iter()
                .any(|l| l.contains("hello-go activated") && l.contains(&expected))),
            "tls={tls}: no activation line with {expected}:\n{}",
            logs.text()
        );
        let applied = env
            .set_configuration("hello-go", [ConfigChange::set("greeting", "Guten Tag")])
            .await
            .unwrap();
        assert_eq!(applied, ConfigApplied::Live);
        let refused = env
            .set_configuration("hello-go", [ConfigChange::set("greeting", "")])
            .await
            .unwrap_err();
        assert!(
            matches!(refused, EnvironmentError::Refused { .. }),
            "{refused}"
        );
        env.shutdown().await;
    }
}
