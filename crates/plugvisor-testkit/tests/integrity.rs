//! Integrity pins against real plugins: a lock file (`plugvisor.lock`) and the
//! manifest's `server.sha256`, checked at every start, restarts included.

use std::path::{Path, PathBuf};
use std::time::Duration;

use plugvisor::{
    Bundle, Environment, EnvironmentConfig, LOCK_FILE, LaunchOptions, Lock, PluginState, Sha256,
    lock_entry, plan_launch,
};
use plugvisor_testkit::*;

/// `plugvisor lock`'s work, through the library: every bundle of `root` pinned.
fn write_lock(root: &Path, only: &[&str]) -> PathBuf {
    write_lock_with(root, only, &LaunchOptions::default())
}

fn write_lock_with(root: &Path, only: &[&str], options: &LaunchOptions) -> PathBuf {
    let mut lock = Lock::new();
    let (bundles, invalid) = Bundle::scan(root).unwrap();
    assert!(invalid.is_empty(), "{invalid:?}");
    for bundle in bundles.iter().filter(|b| only.contains(&b.id())) {
        let plan = plan_launch(bundle, options).unwrap();
        lock.plugins
            .insert(bundle.id().to_string(), lock_entry(&plan).unwrap());
    }
    let path = root.join(LOCK_FILE);
    std::fs::write(&path, lock.to_text()).unwrap();
    path
}

fn environment(root: &Path, lock: Option<&Path>) -> Environment {
    environment_with(root, lock, LaunchOptions::builder())
}

fn environment_with(
    root: &Path,
    lock: Option<&Path>,
    launch: plugvisor::LaunchOptionsBuilder,
) -> Environment {
    let mut launch = launch.native_start_timeout(Duration::from_secs(5));
    if let Some(lock) = lock {
        launch = launch.lock_file(lock);
    }
    let restart = fast_restarts();
    let config = EnvironmentConfig::builder(root)
        .launch(launch.build().unwrap())
        .restart(restart)
        .build()
        .unwrap();
    Environment::new(config).unwrap()
}

fn go_bundle(root: &Path, id: &str) -> PathBuf {
    let dir = root.join(id);
    std::fs::create_dir_all(&dir).unwrap();
    let manifest =
        format!(r#"{{"id":"{id}","version":"1.0.0","server":{{"executable":"plugin"}}}}"#);
    std::fs::write(dir.join("plugin.json"), manifest).unwrap();
    std::fs::copy(built_artifact("target/go/healthy"), dir.join("plugin")).unwrap();
    dir
}

fn sha256(path: &Path) -> String {
    Sha256::of_file(path).unwrap().to_string()
}

/// Replaces `path` the way a deployment (or an attacker) does: a new file
/// renamed over it, which a running process does not notice.
fn swap_in_modified_copy(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes.extend_from_slice(b"\0tampered");
    let new = path.with_extension("new");
    std::fs::write(&new, bytes).unwrap();
    let mode = std::fs::metadata(path).unwrap().permissions();
    std::fs::set_permissions(&new, mode).unwrap();
    std::fs::rename(&new, path).unwrap();
}

/// Waits until the plugin's state is `state`, and returns its status.
async fn wait_state(env: &Environment, id: &str, state: PluginState) -> plugvisor::PluginStatus {
    for _ in 0..200 {
        let status = env.status(id).unwrap();
        if status.state == state {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{id} never became {state:?}: {:?}", env.status(id));
}

#[tokio::test]
async fn a_locked_go_plugin_runs_and_a_binary_swapped_under_it_is_refused_at_its_restart() {
    let root = tempfile::tempdir().unwrap();
    let dir = go_bundle(root.path(), "go-locked");
    let lock = write_lock(root.path(), &["go-locked"]);
    let env = environment(root.path(), Some(&lock));
    let status = env.activate("go-locked").await.unwrap();
    assert_eq!(status.state, PluginState::Running);
    let pid = status.pid.unwrap();
    // Exec'd through the hashed descriptor, which is the bundle's file.
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    assert_eq!(exe, dir.join("plugin").canonicalize().unwrap());

    let expected = sha256(&dir.join("plugin"));
    swap_in_modified_copy(&dir.join("plugin"));
    let actual = sha256(&dir.join("plugin"));
    // A crash: the keeper restarts it, and the restart checks the new file.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let status = wait_state(&env, "go-locked", PluginState::FailedToStart).await;
    let error = status.last_error.unwrap();
    for part in [
        "plugin does not match the lock file",
        &expected,
        &actual,
        "plugvisor lock",
    ] {
        assert!(error.contains(part), "{part:?} missing: {error}");
    }
    // Refused for good: no restart on its own.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let status = env.status("go-locked").unwrap();
    assert_eq!(status.state, PluginState::FailedToStart);
    assert_eq!(status.pid, None);
    assert_no_leftovers(pid);
    env.shutdown().await;
}

#[tokio::test]
async fn a_manifest_sha256_is_checked_without_a_lock() {
    let root = tempfile::tempdir().unwrap();
    let dir = native_fake_bundle(root.path(), "pinned-script", "");
    let actual = sha256(&dir.join("bin/plugin"));
    let wrong = "ab".repeat(32);
    let server = serde_json::json!({"executable": "bin/plugin", "sha256": wrong});
    set_manifest_field(&dir, "server", server);
    let env = environment(root.path(), None);
    let error = env.activate("pinned-script").await.unwrap_err().to_string();
    for part in [
        "bin/plugin does not match plugin.json's server.sha256",
        &wrong,
        &actual,
    ] {
        assert!(error.contains(part), "{part:?} missing: {error}");
    }
    let status = env.status("pinned-script").unwrap();
    assert_eq!(status.state, PluginState::FailedToStart);
    env.shutdown().await;

    // The right hash starts it (a `#!` script, exec'd by path).
    let server = serde_json::json!({"executable": "bin/plugin", "sha256": actual});
    set_manifest_field(&dir, "server", server);
    let env = environment(root.path(), None);
    let status = env.activate("pinned-script").await.unwrap();
    assert_eq!(status.state, PluginState::Running);
    env.shutdown().await;
    assert_no_leftovers(status.pid.unwrap());
}

#[tokio::test]
async fn a_bundle_missing_from_the_lock_is_refused() {
    let root = tempfile::tempdir().unwrap();
    native_fake_bundle(root.path(), "locked-one", "");
    native_fake_bundle(root.path(), "newcomer", "");
    let lock = write_lock(root.path(), &["locked-one"]);
    let env = environment(root.path(), Some(&lock));
    let status = env.activate("locked-one").await.unwrap();
    assert_eq!(status.state, PluginState::Running);
    let error = env.activate("newcomer").await.unwrap_err().to_string();
    assert!(
        error.contains("has no hash for plugin \"newcomer\"") && error.contains("plugvisor lock"),
        "{error}"
    );
    assert_eq!(
        env.status("newcomer").unwrap().state,
        PluginState::FailedToStart
    );
    // A lock that disappears while in force refuses, too.
    std::fs::remove_file(&lock).unwrap();
    env.deactivate("locked-one").await.unwrap();
    let error = env.activate("locked-one").await.unwrap_err().to_string();
    assert!(error.contains("does not exist"), "{error}");
    env.shutdown().await;
    assert_no_leftovers(status.pid.unwrap());
}

#[tokio::test]
async fn a_python_plugin_whose_script_changed_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let dir = python_fake_bundle(root.path(), "py-locked", "");
    let lock = write_lock(root.path(), &["py-locked"]);
    let env = environment(root.path(), Some(&lock));
    let status = env.activate("py-locked").await.unwrap();
    assert_eq!(status.state, PluginState::Running);
    env.deactivate("py-locked").await.unwrap();

    let expected = sha256(&dir.join("plugin.py"));
    std::fs::write(dir.join("plugin.py"), "# fake: \nimport evil\n").unwrap();
    let actual = sha256(&dir.join("plugin.py"));
    let error = env.activate("py-locked").await.unwrap_err().to_string();
    for part in ["plugin.py does not match the lock file", &expected, &actual] {
        assert!(error.contains(part), "{part:?} missing: {error}");
    }
    assert_eq!(
        env.status("py-locked").unwrap().state,
        PluginState::FailedToStart
    );
    env.shutdown().await;
    assert_no_leftovers(status.pid.unwrap());
}

#[tokio::test]
async fn a_python_plugin_whose_interpreter_changed_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let dir = python_fake_bundle(root.path(), "py-interp", "");
    let lock = write_lock(root.path(), &["py-interp"]);
    // The venv's python now points elsewhere: another program.
    let python = dir.join("venv/bin/python");
    std::fs::remove_file(&python).unwrap();
    std::os::unix::fs::symlink("/bin/true", &python).unwrap();
    let env = environment(root.path(), Some(&lock));
    let error = env.activate("py-interp").await.unwrap_err().to_string();
    let expected = sha256(Path::new(fake_plugin()));
    let actual = sha256(Path::new("/bin/true"));
    for part in ["venv/bin/python does not match", &expected, &actual] {
        assert!(error.contains(part), "{part:?} missing: {error}");
    }
    env.shutdown().await;
}

#[tokio::test]
async fn a_real_python_plugin_runs_locked_through_its_venv_interpreter() {
    // The interpreter is exec'd through its descriptor: the venv (grpcio, the
    // SDK) must still be found from argv[0]. Forked from the zygote (which
    // was started through that descriptor) and exec'd.
    let python = built_artifact("examples/plugins/hello-python/venv/bin/python");
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("sdk-locked");
    std::fs::create_dir_all(&dir).unwrap();
    let manifest = r#"{"id":"sdk-locked","server":{"executable":"plugin.py"}}"#;
    std::fs::write(dir.join("plugin.json"), manifest).unwrap();
    let script = "import plugvisor_plugin\nplugvisor_plugin.serve(lambda server: None)\n";
    std::fs::write(dir.join("plugin.py"), script).unwrap();
    let options = LaunchOptions::builder().interpreter(&python);
    let lock = write_lock_with(
        root.path(),
        &["sdk-locked"],
        &options.clone().build().unwrap(),
    );
    for zygote in [true, false] {
        let env = environment_with(root.path(), Some(&lock), options.clone().zygote(zygote));
        let status = env.activate("sdk-locked").await.unwrap();
        assert_eq!(status.state, PluginState::Running);
        let pid = status.pid.unwrap();
        // A forked plugin's argv strings are NUL-padded (the zygote's were longer).
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
        assert_eq!(cmdline.ends_with(b"\0\0"), zygote, "{cmdline:?}");
        env.shutdown().await;
        assert_no_leftovers(pid);
    }
}
