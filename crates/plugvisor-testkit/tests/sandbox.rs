//! The Landlock sandbox against real processes: a plugin that tries to read
//! another plugin's files, the store's database, a file in the operator's
//! home, to write outside its data directory, to dial and bind TCP ports and
//! to signal the host gets the kernel's refusal; the same plugin unsandboxed
//! gets everything, so each refusal is the sandbox's. (Hostile-matrix cases
//! 29 to 33; the non-loopback handshake is case 27 in hostile.rs.)

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use plugvisor::{Environment, EnvironmentConfig, LaunchOptions, PluginState, PluginStatus};
use plugvisor_testkit::*;

const EACCES: &str = "Permission denied (os error 13)";
const EPERM: &str = "Operation not permitted (os error 1)";

/// A native bundle whose executable is inside the bundle (a link to the
/// fake plugin), since a sandboxed plugin may read nothing outside it.
fn self_contained_fake_bundle(
    plugins: &Path,
    id: &str,
    flags: &[String],
    sandbox: serde_json::Value,
) -> PathBuf {
    let dir = plugins.join(id);
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    let binary = dir.join("bin/fake");
    if std::fs::hard_link(fake_plugin(), &binary).is_err() {
        std::fs::copy(fake_plugin(), &binary).unwrap();
    }
    let quoted: Vec<String> = flags.iter().map(|f| format!("'{f}'")).collect();
    std::fs::write(
        dir.join("bin/plugin"),
        format!(
            "#!/bin/sh\nexec \"$(dirname \"$0\")/fake\" {}\n",
            quoted.join(" ")
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        dir.join("bin/plugin"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let manifest = serde_json::json!({
        "id": id,
        "version": "1.0.0",
        "server": {"executable": "bin/plugin", "sandbox": sandbox},
    });
    std::fs::write(dir.join("plugin.json"), manifest.to_string()).unwrap();
    dir
}

fn environment(root: &Path, sandbox: bool) -> Environment {
    environment_of(&root.join("plugins"), &root.join("data"), sandbox)
}

fn environment_of(plugins: &Path, data: &Path, sandbox: bool) -> Environment {
    let launch = LaunchOptions::builder()
        .native_start_timeout(Duration::from_secs(10))
        .sandbox(sandbox)
        .build()
        .unwrap();
    let config = EnvironmentConfig::builder(plugins)
        .data_dir(data)
        .launch(launch)
        .build()
        .unwrap();
    Environment::new(config).unwrap()
}

/// Each attempt's outcome, from the report the probe wrote in its data directory.
fn report(root: &Path, id: &str) -> BTreeMap<String, String> {
    let path = root.join("data/plugins").join(id).join("probe.txt");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .map(|line| {
            let (what, outcome) = line.split_once(": ").unwrap();
            (what.to_string(), outcome.to_string())
        })
        .collect()
}

struct Scene {
    root: tempfile::TempDir,
    /// A file in the operator's home directory, removed at the end.
    home_file: tempfile::NamedTempFile,
    _host_tmp_file: tempfile::NamedTempFile,
    listener: std::net::TcpListener,
    attempts: Vec<(String, bool)>,
}

/// Two bundles, one with a secret; the probe's attempts, each with whether
/// the sandbox allows it.
fn scene() -> Scene {
    let root = tempfile::tempdir().unwrap();
    let plugins = root.path().join("plugins");
    let other = plugins.join("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("secret.txt"), "another plugin's secret").unwrap();
    std::fs::write(
        other.join("plugin.json"),
        r#"{"id":"other","server":{"executable":"missing"}}"#,
    )
    .unwrap();
    let home = std::env::var("HOME").expect("HOME is set");
    let home_file = tempfile::Builder::new()
        .prefix(".plugvisor-sandbox-test-")
        .tempfile_in(home)
        .unwrap();
    std::fs::write(home_file.path(), "the operator's file").unwrap();
    // Where the host makes the plugins' socket directories.
    let host_tmp_file = tempfile::Builder::new()
        .prefix("plugvisor-not-yours-")
        .tempfile_in(std::env::temp_dir())
        .unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let free_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let p = |path: &Path| path.display().to_string();
    let data = root.path().join("data");
    let bundle = plugins.join("probe");
    let attempts = vec![
        (format!("read {}", p(&other.join("secret.txt"))), false),
        (format!("list {}", p(&plugins)), false),
        (format!("read {}", p(&data.join("plugvisor.db"))), false),
        (format!("read {}", p(home_file.path())), false),
        (format!("write {}", p(&bundle.join("written.txt"))), false),
        (
            format!("write {}", p(&data.join("beside-the-store.txt"))),
            false,
        ),
        (
            format!("write {}", p(&root.path().join("outside.txt"))),
            false,
        ),
        // Beside its socket directory: the other plugins' socket directories.
        ("list {sockets}/..".to_string(), false),
        (format!("read {}", p(host_tmp_file.path())), false),
        (format!("connect 127.0.0.1:{port}"), false),
        (format!("bind {free_port}"), false),
        ("signal parent".to_string(), false),
        (format!("read {}", p(&bundle.join("plugin.json"))), true),
        ("write {data}/mine.txt".to_string(), true),
        (format!("write {{tmp}}/{}", scratch_name(root.path())), true),
    ];
    Scene {
        root,
        home_file,
        _host_tmp_file: host_tmp_file,
        listener,
        attempts,
    }
}

impl Scene {
    /// Runs the probe with the scene's attempts: the environment, its
    /// status (Running) and what it reported.
    async fn probe(&self, sandbox: bool) -> (Environment, PluginStatus, BTreeMap<String, String>) {
        let plugins = self.root.path().join("plugins");
        let flags = probe_flags(&self.attempts);
        self_contained_fake_bundle(&plugins, "probe", &flags, serde_json::json!({}));
        let env = environment(self.root.path(), sandbox);
        env.activate("probe").await.unwrap();
        let status = env.status("probe").unwrap();
        assert_eq!(status.state, PluginState::Running);
        let report = report(self.root.path(), "probe");
        (env, status, report)
    }
}

/// The file the probe writes in its TMPDIR: the private one when sandboxed,
/// else the test's own, from which the test removes it.
fn scratch_name(root: &Path) -> String {
    format!(
        "{}-scratch.txt",
        root.file_name().unwrap().to_string_lossy()
    )
}

/// The fake plugin's flags for the attempts.
fn probe_flags(attempts: &[(String, bool)]) -> Vec<String> {
    let mut flags = Vec::new();
    for (attempt, _) in attempts {
        let (verb, target) = attempt.split_once(' ').unwrap_or((attempt, ""));
        match verb {
            "signal" => flags.push("--try-signal-parent".to_string()),
            verb => flags.extend([format!("--try-{verb}"), target.to_string()]),
        }
    }
    flags.extend(["--probe-report".to_string(), "{data}/probe.txt".to_string()]);
    flags
}

/// The attempt as the report names it ({data} and {tmp} expanded).
fn reported<'a>(report: &'a BTreeMap<String, String>, attempt: &str) -> &'a str {
    let verb = attempt.split(' ').next().unwrap();
    let found = report.iter().find(|(what, _)| {
        *what == attempt
            || (attempt.contains('{')
                && what.starts_with(verb)
                && what.ends_with(attempt.rsplit('/').next().unwrap()))
    });
    found
        .map(|(_, outcome)| outcome.as_str())
        .unwrap_or_else(|| panic!("no outcome for {attempt:?} in {report:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cases_29_to_33_a_sandboxed_plugin_reaches_only_what_is_its_own() {
    let scene = scene();
    let (env, status, report) = scene.probe(true).await;
    let sandbox = status.sandbox.expect("the status says it is sandboxed");
    assert!(sandbox.abi >= 1);
    for (attempt, allowed) in &scene.attempts {
        let outcome = reported(&report, attempt);
        let expected = match (allowed, attempt.as_str()) {
            (true, _) => "ok",
            (false, "signal parent") if sandbox.scoped => EPERM,
            (false, a) if a.starts_with("connect") || a.starts_with("bind") => match sandbox.tcp {
                true => EACCES,
                false => "ok",
            },
            (false, _) => EACCES,
        };
        assert_eq!(outcome, expected, "{attempt}");
    }
    env.shutdown().await;
    drop((scene.listener, scene.home_file));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_sandbox_the_same_plugin_reaches_everything() {
    let scene = scene();
    let (env, status, report) = scene.probe(false).await;
    std::fs::remove_file(std::env::temp_dir().join(scratch_name(scene.root.path()))).unwrap();
    assert_eq!(status.sandbox, None);
    for (attempt, _) in &scene.attempts {
        assert_eq!(reported(&report, attempt), "ok", "{attempt}");
    }
    env.shutdown().await;
    drop((scene.listener, scene.home_file));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_gets_the_extra_paths_and_ports_its_manifest_asks_for() {
    let scene = scene();
    let plugins = scene.root.path().join("plugins");
    let shared = scene.root.path().join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    std::fs::write(shared.join("input.txt"), "shared input").unwrap();
    let port = scene.listener.local_addr().unwrap().port();
    let attempts = vec![
        (format!("read {}", shared.join("input.txt").display()), true),
        (
            format!("write {}", shared.join("output.txt").display()),
            false,
        ),
        (format!("connect 127.0.0.1:{port}"), true),
    ];
    let asked = serde_json::json!({"read": [shared], "connect_ports": [port]});
    self_contained_fake_bundle(&plugins, "probe", &probe_flags(&attempts), asked);
    let env = environment(scene.root.path(), true);
    env.activate("probe").await.unwrap();
    let report = report(scene.root.path(), "probe");
    for (attempt, allowed) in &attempts {
        let expected = if *allowed { "ok" } else { EACCES };
        assert_eq!(reported(&report, attempt), expected, "{attempt}");
    }
    env.shutdown().await;
    drop((scene.listener, scene.home_file));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_and_python_sdk_plugins_run_sandboxed_with_mutual_tls() {
    built_artifact("examples/plugins/hello-python/venv/bin/python");
    let logs = captured_logs();
    let data = tempfile::tempdir().unwrap();
    let env = environment_of(&repo_root().join("examples/plugins"), data.path(), true);
    for id in ["hello-go", "hello-python"] {
        env.activate(id).await.unwrap();
        let status = env.status(id).unwrap();
        assert!(status.sandbox.is_some(), "{status:?}");
        assert_eq!(
            status.transport.map(|t| t.to_string()).as_deref(),
            Some("unix+mtls")
        );
        // The host API works in the sandbox: each counts its activations in the store.
        assert!(
            eventually(Duration::from_secs(5), || logs.lines().iter().any(|l| l
                .contains(&format!("id={id}"))
                && l.contains("activations=1"))),
            "{id} did not count its activation; logs:\n{}",
            logs.text()
        );
    }
    env.shutdown().await;
}
