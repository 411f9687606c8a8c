//! The `plugvisor` binary, driven as a user would: check, ping, run, status,
//! restart, signals, the control socket and the live table.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use plugvisor_testkit::*;

const PLUGVISOR: &str = env!("CARGO_BIN_EXE_plugvisor");
use serde_json::Value;

fn plugvisor(args: &[&str]) -> Output {
    Command::new(PLUGVISOR)
        .args(args)
        .env("PLUGVISOR_LOG", "warn")
        .output()
        .expect("run plugvisor")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn fixtures() -> PathBuf {
    repo_root().join("tests/fixtures/bundles")
}

#[test]
fn check_reports_every_bundle_precisely() {
    let dirs: Vec<PathBuf> = std::fs::read_dir(fixtures())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let mut args = vec!["check".to_string(), "--json".to_string()];
    args.extend(dirs.iter().map(|d| d.display().to_string()));
    let output = Command::new(PLUGVISOR).args(&args).output().unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    let results: Vec<Value> = serde_json::from_slice(&output.stdout).unwrap();
    let by_dir = |name: &str| -> &Value {
        results
            .iter()
            .find(|r| r["dir"].as_str().unwrap().ends_with(&format!("/{name}")))
            .unwrap_or_else(|| panic!("no result for {name}"))
    };
    assert_eq!(by_dir("good-native")["ok"], true);
    assert_eq!(by_dir("good-native")["launch"]["runtime"], "native");
    let python = by_dir("good-python");
    assert_eq!(python["ok"], true);
    assert_eq!(python["launch"]["runtime"], "python");
    assert_eq!(python["launch"]["args"][0], "plugin.py");
    assert_eq!(python["launch"]["start_timeout"], 10000);
    for (name, expected) in [
        (
            "bad-json",
            "bad-json/plugin.json: invalid JSON at line 6, column 0",
        ),
        ("bad-id", "bad-id/plugin.json: field `id`"),
        (
            "bad-semver",
            "field `version`: \"1.0\" is not a semantic version",
        ),
        ("traversal", "climbs out of the bundle"),
        ("not-executable", "is not executable"),
        ("no-platform", "no executable for platform"),
        ("symlink-escape", "outside the bundle"),
        ("missing-executable", "server/plugin does not exist"),
    ] {
        let result = by_dir(name);
        assert_eq!(result["ok"], false, "{name}");
        let error = result["error"].as_str().unwrap();
        assert!(error.contains(expected), "{name}: {error}");
    }
    // Human output, and the exit code when all are valid.
    let good = fixtures().join("good-native");
    let output = plugvisor(&["check", good.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0));
    assert!(text(&output.stdout).starts_with("ok    good-native 1.0.0 (native)"));
}

#[test]
fn check_without_an_interpreter_lists_the_candidates() {
    let output = Command::new(PLUGVISOR)
        .args(["check", fixtures().join("good-python").to_str().unwrap()])
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let out = text(&output.stdout);
    assert!(
        out.contains("venv/bin/python") && out.contains("python3 on PATH"),
        "{out}"
    );
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(plugvisor(&["check"]).status.code(), Some(2));
    assert_eq!(plugvisor(&["run"]).status.code(), Some(2));
    assert_eq!(
        plugvisor(&["run", "x", "--health-interval", "soon"])
            .status
            .code(),
        Some(2)
    );
    let help = text(&plugvisor(&["run", "--help"]).stdout);
    assert!(help.contains("Examples:") && help.contains("--max-failures"));
}

#[test]
fn ping_the_examples_and_a_broken_bundle() {
    for example in ["hello-go", "hello-python"] {
        let dir = repo_root().join("examples/plugins").join(example);
        let output = plugvisor(&["ping", "--json", dir.to_str().unwrap()]);
        assert_eq!(
            output.status.code(),
            Some(0),
            "{example}: {}",
            text(&output.stderr)
        );
        let result: Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(result["id"], example);
        assert_eq!(result["healthy"], true);
        assert!(result["start_ms"].as_f64().unwrap() > 0.0);
        assert!(result["stop_ms"].as_f64().is_some());
    }
    let root = tempfile::tempdir().unwrap();
    let broken = native_fake_bundle(
        root.path(),
        "broken",
        "--exit-before 3 --stderr ImportError:_nope",
    );
    let output = plugvisor(&["ping", "--json", broken.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    let result: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(result["healthy"], false);
    let error = result["error"].as_str().unwrap();
    assert!(
        error.contains("exit status 3") && error.contains("ImportError"),
        "{error}"
    );
}

fn collect_output(child: &mut Child) -> Output {
    use std::io::Read;
    let status = child.wait().unwrap();
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    // A test that streams stdout has taken it.
    if let Some(mut out) = child.stdout.take() {
        out.read_to_end(&mut stdout).unwrap();
    }
    child
        .stderr
        .take()
        .unwrap()
        .read_to_end(&mut stderr)
        .unwrap();
    Output {
        status,
        stdout,
        stderr,
    }
}

/// A `plugvisor run` in the background, with its own control socket.
struct Running {
    child: Child,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Running {
    fn start(plugins: &Path, extra: &[&str]) -> Running {
        Running::start_in(tempfile::tempdir().unwrap(), plugins, extra)
    }

    fn start_in(dir: tempfile::TempDir, plugins: &Path, extra: &[&str]) -> Running {
        let socket = dir.path().join("control.sock");
        let mut command = Command::new(PLUGVISOR);
        command
            .arg("run")
            .args(extra)
            .arg("--control-socket")
            .arg(&socket);
        // Never the user's own data directory.
        if !extra.contains(&"--data-dir") {
            command.arg("--data-dir").arg(dir.path().join("data"));
        }
        let child = command
            .arg(plugins)
            .env("PLUGVISOR_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Running {
            child,
            socket,
            _dir: dir,
        }
    }

    fn ctl(&self, args: &[&str]) -> Output {
        let mut all: Vec<&str> = args.to_vec();
        let socket = self.socket.to_str().unwrap();
        all.extend(["--control-socket", socket]);
        plugvisor(&all)
    }

    fn statuses(&self) -> Vec<Value> {
        let output = self.ctl(&["status", "--json"]);
        if !output.status.success() {
            return Vec::new();
        }
        serde_json::from_slice(&output.stdout).unwrap()
    }

    fn wait_until(&self, what: &str, condition: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let mut last = Vec::new();
        let ok = eventually(Duration::from_secs(20), || {
            last = self.statuses();
            condition(&last)
        });
        assert!(ok, "timed out waiting for {what}; last status: {last:?}");
        last
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), signal).unwrap();
    }

    fn wait_exit(mut self) -> (i32, String, String) {
        let ok = eventually(Duration::from_secs(15), || {
            self.child.try_wait().unwrap().is_some()
        });
        if !ok {
            let _ = self.child.kill();
        }
        let output = collect_output(&mut self.child);
        assert!(ok, "plugvisor run did not exit: {}", text(&output.stderr));
        (
            output.status.code().unwrap_or(-1),
            text(&output.stdout),
            text(&output.stderr),
        )
    }
}

impl Drop for Running {
    /// A failed test still leaves nothing running.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn all_running(statuses: &[Value], n: usize) -> bool {
    statuses.len() == n && statuses.iter().all(|s| s["state"] == "Running")
}

#[test]
fn run_status_kill_restart_and_sigterm() {
    let root = tempfile::tempdir().unwrap();
    native_fake_bundle(root.path(), "native-one", "--network unix --controller");
    python_fake_bundle(root.path(), "python-two", "");
    let run = Running::start(root.path(), &[]);
    let statuses = run.wait_until("both Running", |s| all_running(s, 2));
    let victim = statuses.iter().find(|s| s["id"] == "native-one").unwrap();
    let first_pid = victim["pid"].as_u64().unwrap() as u32;
    let other_pid = statuses[1]["pid"].as_u64().unwrap() as u32;

    // kill -9 a plugin: it comes back with restarts=1.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first_pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let statuses = run.wait_until("native-one back", |s| {
        s.iter().any(|p| {
            p["id"] == "native-one"
                && p["state"] == "Running"
                && p["restarts"] == 1
                && p["pid"].as_u64() != Some(first_pid as u64)
        })
    });
    let second_pid = statuses[0]["pid"].as_u64().unwrap() as u32;
    assert!(text(&run.ctl(&["status"]).stdout).contains("killed by signal 9"));

    // stop / start / restart through the control socket.
    assert!(run.ctl(&["stop", "native-one"]).status.success());
    assert_eq!(run.statuses()[0]["state"], "NotRunning");
    assert_no_leftovers(second_pid);
    assert!(run.ctl(&["start", "native-one"]).status.success());
    let restarted = run.ctl(&["restart", "python-two"]);
    assert!(restarted.status.success(), "{}", text(&restarted.stderr));
    assert_no_leftovers(other_pid);
    let unknown = run.ctl(&["restart", "nope"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(text(&unknown.stderr).contains("no plugin with id \"nope\""));

    let pids: Vec<u32> = run
        .wait_until("both Running again", |s| all_running(s, 2))
        .iter()
        .map(|s| s["pid"].as_u64().unwrap() as u32)
        .collect();
    run.signal(nix::sys::signal::Signal::SIGTERM);
    let socket = run.socket.clone();
    let (code, stdout, stderr) = run.wait_exit();
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("native-one: crashed (killed by signal 9 (SIGKILL))"),
        "{stdout}"
    );
    assert!(stderr.contains("all plugins stopped"), "{stderr}");
    for pid in pids {
        assert_no_leftovers(pid);
    }
    assert!(!socket.exists(), "control socket left behind");
}

#[test]
fn run_the_examples_and_stop_with_ctrl_c() {
    let run = Running::start(&repo_root().join("examples/plugins"), &["--json"]);
    let statuses = run.wait_until("examples Running", |s| all_running(s, 2));
    let ids: Vec<&str> = statuses.iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec!["hello-go", "hello-python"]);
    let pids: Vec<u32> = statuses
        .iter()
        .map(|s| s["pid"].as_u64().unwrap() as u32)
        .collect();
    run.signal(nix::sys::signal::Signal::SIGINT);
    let (code, stdout, stderr) = run.wait_exit();
    assert_eq!(code, 0, "{stderr}");
    let events: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let count = |kind: &str| events.iter().filter(|e| e["event"] == kind).count();
    // Every state change is shown, from the first.
    assert_eq!(count("starting"), 2, "{stdout}");
    assert_eq!(count("running"), 2, "{stdout}");
    assert_eq!(count("stopped"), 2, "{stdout}");
    for pid in pids {
        assert_no_leftovers(pid);
    }
}

#[test]
fn a_second_ctrl_c_kills_what_ignores_sigterm() {
    let root = tempfile::tempdir().unwrap();
    native_fake_bundle(root.path(), "stubborn", "--ignore-sigterm");
    let run = Running::start(
        root.path(),
        &["--stop-grace", "60s", "--shutdown-deadline", "60s"],
    );
    let pid = run.wait_until("Running", |s| all_running(s, 1))[0]["pid"]
        .as_u64()
        .unwrap() as u32;
    run.signal(nix::sys::signal::Signal::SIGINT);
    // The first Ctrl-C waits out the 60 s grace; the second ends it now.
    assert!(eventually(Duration::from_secs(5), || {
        run.statuses()
            .first()
            .is_some_and(|s| s["state"] == "Stopping")
    }));
    // Signals within 50 ms of each other count as one Ctrl-C.
    std::thread::sleep(Duration::from_millis(100));
    run.signal(nix::sys::signal::Signal::SIGINT);
    let (code, _, stderr) = run.wait_exit();
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("second signal: killing all plugins"),
        "{stderr}"
    );
    assert_no_leftovers(pid);
}

#[test]
fn one_ctrl_c_delivered_twice_still_stops_gracefully() {
    let root = tempfile::tempdir().unwrap();
    let marker = root.path().join("marker");
    let flags = format!("--controller --marker {}", marker.display());
    native_fake_bundle(root.path(), "graceful", &flags);
    let run = Running::start(root.path(), &[]);
    let pid = run.wait_until("Running", |s| all_running(s, 1))[0]["pid"]
        .as_u64()
        .unwrap() as u32;
    // What GNU `timeout` and some shells do with one Ctrl-C.
    run.signal(nix::sys::signal::Signal::SIGINT);
    run.signal(nix::sys::signal::Signal::SIGINT);
    let (code, _, stderr) = run.wait_exit();
    assert_eq!(code, 0, "{stderr}");
    assert!(!stderr.contains("second signal"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap(),
        "controller",
        "the plugin was stopped through its controller, not killed"
    );
    assert_no_leftovers(pid);
}

#[test]
fn config_file_settings_apply() {
    let root = tempfile::tempdir().unwrap();
    native_fake_bundle(root.path(), "strict", "");
    let config = root.path().join("plugvisor.toml");
    std::fs::write(&config, "max-failures = 0\n").unwrap();
    let plugins = root.path().to_path_buf();
    let run = Running::start(&plugins, &["--config", config.to_str().unwrap()]);
    let pid = run
        .wait_until("Running", |s| s.iter().any(|p| p["state"] == "Running"))
        .iter()
        .find_map(|s| s["pid"].as_u64())
        .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    // max-failures = 0: the first crash disables it.
    run.wait_until("FailedToStayRunning", |s| {
        s.iter().any(|p| p["state"] == "FailedToStayRunning")
    });
    let bad = root.path().join("bad.toml");
    std::fs::write(&bad, "max-failure = 0\n").unwrap();
    let output = plugvisor(&[
        "run",
        "--config",
        bad.to_str().unwrap(),
        plugins.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output.stderr).contains("unknown field `max-failure`"),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn run_exits_non_zero_when_nothing_activates() {
    let root = tempfile::tempdir().unwrap();
    native_fake_bundle(root.path(), "dies", "--exit-before 1");
    let run = Running::start(root.path(), &[]);
    let (code, _, stderr) = run.wait_exit();
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("no plugin could be activated"), "{stderr}");
    let empty = tempfile::tempdir().unwrap();
    let output = plugvisor(&["run", empty.path().to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output.stderr).contains("holds no plugin bundles"));
}

#[test]
fn control_socket_is_private_and_refuses_other_users() {
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().unwrap();
    native_fake_bundle(root.path(), "private", "");
    // Another user must be able to reach the socket's directory (this /tmp may be 0700).
    let shared = ["/dev/shm", "/var/tmp"]
        .into_iter()
        .find(|d| std::fs::metadata(d).is_ok_and(|m| m.permissions().mode() & 0o777 == 0o777))
        .expect("no world-writable directory for the socket");
    let run = Running::start_in(tempfile::tempdir_in(shared).unwrap(), root.path(), &[]);
    run.wait_until("Running", |s| all_running(s, 1));
    let mode = std::fs::metadata(&run.socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    if nix::unistd::geteuid().is_root() {
        use std::os::unix::process::CommandExt;
        // Open the file permissions, so only the peer-uid check stands in the way.
        let dir = run.socket.parent().unwrap();
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&run.socket, std::fs::Permissions::from_mode(0o777)).unwrap();
        // Another user's client: python3 from the system (our binary may sit
        // in a directory that user cannot enter).
        let client = "import socket, sys\n\
            s = socket.socket(socket.AF_UNIX)\n\
            s.connect(sys.argv[1])\n\
            s.sendall(b'{\"command\":\"status\"}\\n')\n\
            print(s.makefile().readline())";
        let python = ["/usr/bin/python3", "/usr/local/bin/python3"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .unwrap_or("python3");
        let output = Command::new(python)
            .args(["-c", client, run.socket.to_str().unwrap()])
            .current_dir("/")
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap();
        let answer = text(&output.stdout);
        assert!(output.status.success(), "{}", text(&output.stderr));
        assert!(
            answer.contains("\"ok\":false") && answer.contains("refused"),
            "{answer}"
        );
        assert!(
            !answer.contains("\"statuses\":[{"),
            "statuses leaked: {answer}"
        );
    }
    run.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(run.wait_exit().0, 0);
}

#[test]
fn live_table_renders_in_a_narrow_terminal() {
    let root = tempfile::tempdir().unwrap();
    native_fake_bundle(root.path(), "tty-plugin", "");
    let socket_dir = tempfile::tempdir().unwrap();
    let socket = socket_dir.path().join("control.sock");
    let command = format!(
        "stty cols 30 rows 12; exec {PLUGVISOR} run --control-socket {} --data-dir {} {}",
        socket.display(),
        socket_dir.path().join("data").display(),
        root.path().display()
    );
    let mut child = Command::new("script")
        .args(["-qfec", &command, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let screen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let reader = {
        let screen = screen.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let mut screen = screen.lock().unwrap();
                screen.push_str(&line.unwrap_or_default());
                screen.push('\n');
            }
        })
    };
    // A frame that shows the plugin Running (the state is cut to the 30 columns).
    let drawn = eventually(Duration::from_secs(20), || {
        screen
            .lock()
            .unwrap()
            .lines()
            .any(|l| l.contains("tty-plugin") && l.contains("Run"))
    });
    assert!(
        drawn,
        "no frame with the plugin running: {}",
        screen.lock().unwrap()
    );
    // SIGTERM to plugvisor itself: the child of `script`.
    let children =
        std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", child.id())).unwrap();
    let plugvisor: i32 = children
        .split_whitespace()
        .next()
        .expect("script runs plugvisor")
        .parse()
        .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(plugvisor),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    reader.join().unwrap();
    let screen = screen.lock().unwrap().clone();
    assert!(status.success(), "{screen}");
    assert!(!screen.contains("panicked"), "{screen}");
    assert!(screen.contains("ID"), "{screen}");
    assert!(
        screen
            .lines()
            .any(|l| l.starts_with("all plugins stopped in")),
        "the table mode says how long the stop took: {screen}"
    );
    for line in screen.lines() {
        let visible = line.replace("\x1b[H\x1b[2J", "");
        if visible.starts_with("all plugins stopped") {
            continue; // printed below the table, not part of it
        }
        assert!(
            visible.trim_end_matches('\r').chars().count() <= 30,
            "line wider than 30: {visible:?}"
        );
    }
}

#[test]
fn config_set_reaches_the_running_plugin_and_survives_a_restart_of_the_host() {
    let root = tempfile::tempdir().unwrap();
    let log = root.path().join("hooks.log");
    let flags = format!(
        "--hooks OnActivate,OnConfigurationChange --broker --refuse-config-key refuse --hook-log {}",
        log.display()
    );
    let plugins = root.path().join("plugins");
    let dir = native_fake_bundle(&plugins, "settable", &flags);
    set_manifest_field(
        &dir,
        "settings_schema",
        serde_json::json!({"settings": [
            {"key": "greeting", "type": "text", "default": "Hello"},
            {"key": "refuse", "type": "bool", "default": false}
        ]}),
    );
    std::fs::write(
        root.path().join("plugvisor.toml"),
        "[plugins.settable]\ngreeting = \"From the file\"\n",
    )
    .unwrap();
    let config = root.path().join("plugvisor.toml");
    let data_dir = root.path().join("data");
    let args = [
        "--config",
        config.to_str().unwrap(),
        "--data-dir",
        data_dir.to_str().unwrap(),
    ];
    let run = Running::start(&plugins, &args);
    run.wait_until("Running", |s| all_running(s, 1));

    let got = run.ctl(&["config", "get", "settable"]);
    let table = text(&got.stdout);
    assert!(
        table.contains("greeting  \"From the file\"  config file"),
        "{table}"
    );
    assert!(
        table.contains("refuse    false            default"),
        "{table}"
    );

    let set = run.ctl(&["config", "set", "settable", "greeting=Bonjour"]);
    assert!(set.status.success(), "{}", text(&set.stderr));
    assert!(
        text(&set.stdout).contains("the running plugin accepted it"),
        "{}",
        text(&set.stdout)
    );
    assert!(wait_for_line(&log, "OnConfigurationChange ").contains(r#""greeting":"Bonjour""#));

    let refused = run.ctl(&["config", "set", "settable", "refuse=true"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        text(&refused.stderr).contains("refuse must not be true"),
        "{}",
        text(&refused.stderr)
    );
    let bad = run.ctl(&["config", "set", "settable", "refuse=perhaps"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        text(&bad.stderr).contains("setting \"refuse\": expected true or false"),
        "{}",
        text(&bad.stderr)
    );

    let json = run.ctl(&["config", "get", "settable", "--json"]);
    let values: Vec<Value> = serde_json::from_slice(&json.stdout).unwrap();
    let greeting = values.iter().find(|v| v["key"] == "greeting").unwrap();
    assert_eq!(greeting["value"], "Bonjour");
    assert_eq!(greeting["source"], "operator");
    let refuse = values.iter().find(|v| v["key"] == "refuse").unwrap();
    assert_eq!(refuse["value"], false, "the refused change did not stick");

    // A new host on the same data directory keeps the operator's value.
    run.signal(nix::sys::signal::Signal::SIGTERM);
    let (code, _, stderr) = run.wait_exit();
    assert_eq!(code, 0, "{stderr}");
    let again = Running::start(&plugins, &args);
    again.wait_until("Running", |s| all_running(s, 1));
    let activations: Vec<String> = lines_of(&log)
        .into_iter()
        .filter(|l| l.starts_with("OnActivate"))
        .collect();
    assert!(
        activations
            .last()
            .unwrap()
            .contains(r#""greeting":"Bonjour""#),
        "{activations:?}"
    );
    let unset = again.ctl(&["config", "unset", "settable", "greeting"]);
    assert!(unset.status.success(), "{}", text(&unset.stderr));
    assert!(
        text(&unset.stdout).contains("\"From the file\"  config file"),
        "{}",
        text(&unset.stdout)
    );
    again.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(again.wait_exit().0, 0);
}

#[test]
fn debug_mode_from_the_flag_and_the_control_socket() {
    let root = tempfile::tempdir().unwrap();
    // Both turn NOT_SERVING soon after they start.
    native_fake_bundle(root.path(), "debugged", "--unhealthy-after-ms 200");
    native_fake_bundle(root.path(), "plain", "--unhealthy-after-ms 200");
    let args = [
        "--debug",
        "debugged",
        "--health-interval",
        "100ms",
        "--health-fail-limit",
        "2",
    ];
    let run = Running::start(root.path(), &args);
    let by_id = |statuses: &[Value], id: &str| -> Value {
        statuses.iter().find(|s| s["id"] == id).unwrap().clone()
    };
    let first = run.wait_until("debugged Running", |s| {
        s.len() == 2 && by_id(s, "debugged")["state"] == "Running"
    });
    let pid = by_id(&first, "debugged")["pid"].clone();
    assert_eq!(by_id(&first, "debugged")["debug"], true);
    assert_eq!(by_id(&first, "plain")["debug"], false);
    // The plain one is restarted for its failed checks; the debugged one stays.
    run.wait_until("plain restarted twice", |s| {
        by_id(s, "plain")["restarts"].as_u64() >= Some(2)
    });
    let now = by_id(&run.statuses(), "debugged");
    assert_eq!(now["state"], "Running");
    assert_eq!(now["pid"], pid);
    assert_eq!(now["restarts"], 0);
    let table = text(&run.ctl(&["status"]).stdout);
    assert!(table.contains("Running (debug)"), "{table}");

    let off = run.ctl(&["debug", "debugged", "--off"]);
    assert!(off.status.success(), "{}", text(&off.stderr));
    run.wait_until("debugged restarted once out of debug mode", |s| {
        let debugged = by_id(s, "debugged");
        debugged["debug"] == false && debugged["restarts"].as_u64() >= Some(1)
    });
    let on = run.ctl(&["debug", "plain"]);
    assert!(on.status.success(), "{}", text(&on.stderr));
    assert_eq!(by_id(&run.statuses(), "plain")["debug"], true);
    let unknown = run.ctl(&["debug", "nope"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(text(&unknown.stderr).contains("no plugin with id \"nope\""));
    run.signal(nix::sys::signal::Signal::SIGTERM);
    let (code, _, stderr) = run.wait_exit();
    assert_eq!(code, 0, "{stderr}");

    let typo = Running::start(root.path(), &["--debug", "debuged"]);
    let (code, _, stderr) = typo.wait_exit();
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("--debug debuged"), "{stderr}");
    let help = text(&plugvisor(&["debug", "--help"]).stdout);
    assert!(
        help.contains("--off") && help.contains("debugger"),
        "{help}"
    );
}

/// A bundle around the Go `healthy` plugin, copied in (a symlink out of the
/// bundle is refused).
fn go_bundle(root: &Path, id: &str) -> PathBuf {
    let dir = root.join(id);
    std::fs::create_dir_all(&dir).unwrap();
    let manifest = format!(r#"{{"id":"{id}","server":{{"executable":"plugin"}}}}"#);
    std::fs::write(dir.join("plugin.json"), manifest).unwrap();
    std::fs::copy(built_artifact("target/go/healthy"), dir.join("plugin")).unwrap();
    dir
}

fn sha256(path: &Path) -> String {
    plugvisor::Sha256::of_file(path).unwrap().to_string()
}

#[test]
fn lock_then_run_refuses_a_swapped_binary_until_it_is_locked_again() {
    let root = tempfile::tempdir().unwrap();
    let go = go_bundle(root.path(), "go-pinned");
    python_fake_bundle(root.path(), "py-pinned", "");
    let plugins = root.path().to_str().unwrap();
    let old = sha256(&go.join("plugin"));

    let locked = plugvisor(&["lock", plugins]);
    assert!(locked.status.success(), "{}", text(&locked.stderr));
    let stdout = text(&locked.stdout);
    assert!(
        stdout.contains(&format!("go-pinned  plugin  {old}  (new)")),
        "{stdout}"
    );
    assert!(stdout.contains("py-pinned  plugin.py  "), "{stdout}");
    assert!(stdout.contains("py-pinned  interpreter "), "{stdout}");
    assert!(stdout.contains("pinned 2 plugin(s)"), "{stdout}");
    let lock: Value =
        serde_json::from_str(&std::fs::read_to_string(root.path().join("plugvisor.lock")).unwrap())
            .unwrap();
    assert_eq!(
        lock["plugins"]["go-pinned"]["files"]["plugin"],
        old.as_str()
    );
    let again = text(&plugvisor(&["lock", plugins]).stdout);
    assert!(
        again.contains(&format!("go-pinned  plugin  {old}  (unchanged)")),
        "{again}"
    );
    let checked = plugvisor(&["check", plugins]);
    assert!(checked.status.success(), "{}", text(&checked.stdout));
    assert!(text(&checked.stdout).contains("pinned: plugin by the lock file"));

    let run = Running::start(root.path(), &[]);
    run.wait_until("both Running", |s| all_running(s, 2));
    // Swapped under the running host: noticed at its next start.
    let mut bytes = std::fs::read(go.join("plugin")).unwrap();
    bytes.extend_from_slice(b"\0tampered");
    std::fs::write(go.join("plugin.new"), bytes).unwrap();
    let mode = std::fs::metadata(go.join("plugin")).unwrap().permissions();
    std::fs::set_permissions(go.join("plugin.new"), mode).unwrap();
    std::fs::rename(go.join("plugin.new"), go.join("plugin")).unwrap();
    let new = sha256(&go.join("plugin"));
    let restarted = run.ctl(&["restart", "go-pinned"]);
    assert_eq!(restarted.status.code(), Some(1));
    let statuses = run.wait_until("go-pinned refused", |s| {
        s.iter()
            .any(|p| p["id"] == "go-pinned" && p["state"] == "FailedToStart")
    });
    let error = statuses[0]["last_error"].as_str().unwrap();
    for part in [
        "plugin does not match the lock file",
        &old,
        &new,
        "plugvisor lock",
    ] {
        assert!(error.contains(part), "{part:?} missing: {error}");
    }
    let checked = plugvisor(&["check", plugins]);
    assert_eq!(checked.status.code(), Some(1));
    let report = text(&checked.stdout);
    assert!(
        report.contains("FAIL") && report.contains(&old) && report.contains(&new),
        "{report}"
    );

    // Trusted after all: lock again, and it starts.
    let relocked = text(&plugvisor(&["lock", plugins]).stdout);
    assert!(
        relocked.contains(&format!("{new}  (changed, was {old})")),
        "{relocked}"
    );
    assert!(run.ctl(&["start", "go-pinned"]).status.success());
    let pids: Vec<u32> = run
        .wait_until("both Running again", |s| all_running(s, 2))
        .iter()
        .map(|s| s["pid"].as_u64().unwrap() as u32)
        .collect();
    run.signal(nix::sys::signal::Signal::SIGTERM);
    let (code, _, stderr) = run.wait_exit();
    assert_eq!(code, 0, "{stderr}");
    for pid in pids {
        assert_no_leftovers(pid);
    }
}

#[test]
fn lock_refuses_a_bad_dir_and_invalid_bundles_and_check_names_unlocked_ones() {
    let missing = plugvisor(&["lock", "/nonexistent/plugins"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(text(&missing.stderr).contains("/nonexistent/plugins does not exist"));

    let root = tempfile::tempdir().unwrap();
    native_fake_bundle(root.path(), "fine", "");
    let broken = root.path().join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(broken.join("plugin.json"), "{").unwrap();
    let plugins = root.path().to_str().unwrap();
    let refused = plugvisor(&["lock", plugins]);
    assert_eq!(refused.status.code(), Some(1));
    let stderr = text(&refused.stderr);
    assert!(
        stderr.contains("broken/plugin.json: invalid JSON"),
        "{stderr}"
    );
    assert!(stderr.contains("was not written"), "{stderr}");
    assert!(!root.path().join("plugvisor.lock").exists());

    std::fs::remove_dir_all(&broken).unwrap();
    assert!(plugvisor(&["lock", plugins]).status.success());
    native_fake_bundle(root.path(), "newcomer", "");
    let checked = plugvisor(&["check", plugins]);
    assert_eq!(checked.status.code(), Some(1));
    let report = text(&checked.stdout);
    assert!(
        report.contains("has no hash for plugin \"newcomer\""),
        "{report}"
    );
    assert!(report.contains("ok    fine"), "{report}");
    // An explicit lock elsewhere is what `lock` writes and `check` reads.
    let elsewhere = root.path().join("other.lock");
    let elsewhere = elsewhere.to_str().unwrap();
    assert!(
        plugvisor(&["lock", "--lock", elsewhere, plugins])
            .status
            .success()
    );
    assert!(
        plugvisor(&["check", "--lock", elsewhere, plugins])
            .status
            .success()
    );
    // A plugin removed from the folder leaves the lock at the next lock.
    std::fs::remove_dir_all(root.path().join("newcomer")).unwrap();
    let relocked = text(&plugvisor(&["lock", "--lock", elsewhere, plugins]).stdout);
    assert!(
        relocked.contains("newcomer  (dropped: no longer in"),
        "{relocked}"
    );
    assert!(relocked.contains("pinned 1 plugin(s)"), "{relocked}");
    let help = text(&plugvisor(&["lock", "--help"]).stdout);
    assert!(
        help.contains("FailedToStart") && help.contains("--lock"),
        "{help}"
    );
    // A lock named but missing: `run` refuses to start at all.
    let data = root.path().join("data");
    let missing_lock = plugvisor(&[
        "run",
        "--lock",
        "/nonexistent/plugvisor.lock",
        "--data-dir",
        data.to_str().unwrap(),
        plugins,
    ]);
    assert_eq!(missing_lock.status.code(), Some(1));
    let stderr = text(&missing_lock.stderr);
    assert!(
        stderr.contains("lock file /nonexistent/plugvisor.lock does not exist"),
        "{stderr}"
    );
}

/// A child's stdout lines as they come, each with when it came.
type Lines = std::sync::Arc<std::sync::Mutex<Vec<(std::time::Instant, String)>>>;

fn stream_lines(child: &mut Child) -> Lines {
    let out = child.stdout.take().unwrap();
    let lines = Lines::default();
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            sink.lock().unwrap().push((std::time::Instant::now(), line));
        }
    });
    lines
}

/// `run --json` events about `id`, with when each came.
fn events_of(lines: &Lines, id: &str) -> Vec<(std::time::Instant, Value)> {
    let lines = lines.lock().unwrap();
    lines
        .iter()
        .filter_map(|(at, line)| Some((*at, serde_json::from_str::<Value>(line).ok()?)))
        .filter(|(_, event)| event["status"]["id"] == id)
        .collect()
}

fn count_events(lines: &Lines, id: &str, kind: &str) -> usize {
    events_of(lines, id)
        .iter()
        .filter(|(_, e)| e["event"] == kind)
        .count()
}

#[test]
fn run_watches_the_plugins_dir_and_reloads_what_changed() {
    let root = tempfile::tempdir().unwrap();
    let plugins = root.path().join("plugins");
    let first = native_fake_bundle(&plugins, "first", "");
    // Debug for the reloads, to count those that changed nothing.
    let logs = "info,plugvisor::environment::reload=debug";
    let mut run = Running::start(&plugins, &["--json", "--log-level", logs]);
    let lines = stream_lines(&mut run.child);
    run.wait_until("first Running", |s| all_running(s, 1));
    let step = || std::thread::sleep(Duration::from_millis(100));

    // A bundle copied in pieces, manifest first: started once, when whole.
    let staged = native_fake_bundle(root.path(), "second", "");
    let second = plugins.join("second");
    std::fs::create_dir_all(second.join("bin")).unwrap();
    std::fs::copy(staged.join("plugin.json"), second.join("plugin.json")).unwrap();
    step();
    std::fs::copy(staged.join("bin/plugin"), second.join("bin/plugin")).unwrap();
    let statuses = run.wait_until("second Running", |s| all_running(s, 2));
    let second_pid = statuses[1]["pid"].as_u64().unwrap() as u32;

    // A slow copy: refused while its executable (and the directory that
    // holds it) is missing, loaded once it is there.
    let staged = native_fake_bundle(root.path(), "third", "");
    let third = plugins.join("third");
    std::fs::create_dir_all(&third).unwrap();
    std::fs::copy(staged.join("plugin.json"), third.join("plugin.json")).unwrap();
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(run.statuses().len(), 2);
    std::fs::create_dir_all(third.join("bin")).unwrap();
    std::thread::sleep(Duration::from_millis(400));
    std::fs::copy(staged.join("bin/plugin"), third.join("bin/plugin")).unwrap();
    run.wait_until("third Running", |s| all_running(s, 3));
    std::fs::remove_dir_all(&third).unwrap();
    run.wait_until("third gone", |s| all_running(s, 2));

    // A new version in pieces: manifest, executable, manifest again.
    set_manifest_field(&first, "version", "2.0.0".into());
    step();
    let executable = first.join("bin/plugin");
    let script = std::fs::read_to_string(&executable).unwrap();
    std::fs::write(&executable, format!("{script}# v2\n")).unwrap();
    step();
    set_manifest_field(&first, "description", "the second version".into());
    let changed = std::time::Instant::now();
    let statuses = run.wait_until("first 2.0.0 Running", |s| {
        s.iter()
            .any(|p| p["id"] == "first" && p["version"] == "2.0.0" && p["state"] == "Running")
    });
    let first_pid = statuses[0]["pid"].as_u64().unwrap();
    let at = |kind: &str| {
        events_of(&lines, "first")
            .into_iter()
            .rev()
            .find(|(_, e)| e["event"] == kind)
            .map(|(at, _)| at.saturating_duration_since(changed).as_secs_f64() * 1000.0)
            .unwrap()
    };
    eprintln!(
        "reload latency, last write -> Reloaded {:.0} ms -> Running {:.0} ms (quiet period 300 ms)",
        at("reloaded"),
        at("running")
    );
    // Quiet for several quiet periods: no second reload comes (nor, below,
    // a reload that changes nothing).
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(count_events(&lines, "first", "reloaded"), 1);
    assert_eq!(count_events(&lines, "first", "starting"), 2);
    assert_eq!(count_events(&lines, "second", "added"), 1);
    assert_eq!(count_events(&lines, "second", "starting"), 1);
    assert_eq!(count_events(&lines, "second", "reload_refused"), 0);

    // A broken manifest is refused; the running version stays.
    std::fs::write(first.join("plugin.json"), "{").unwrap();
    let refused = eventually(Duration::from_secs(10), || {
        count_events(&lines, "first", "reload_refused") == 1
    });
    assert!(refused, "no reload_refused event");
    let (_, event) = events_of(&lines, "first").pop().unwrap();
    assert!(
        event["reason"].as_str().unwrap().contains("invalid JSON"),
        "{event}"
    );
    let statuses = run.statuses();
    assert_eq!(statuses[0]["state"], "Running");
    assert_eq!(statuses[0]["pid"].as_u64(), Some(first_pid));

    // A removed bundle is stopped and dropped from the status.
    std::fs::remove_dir_all(&second).unwrap();
    run.wait_until("second gone", |s| s.len() == 1 && s[0]["id"] == "first");
    assert_no_leftovers(second_pid);
    assert_eq!(count_events(&lines, "second", "removed"), 1);

    run.signal(nix::sys::signal::Signal::SIGTERM);
    let (code, _, stderr) = run.wait_exit();
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("new version refused"), "{stderr}");
    // Reads (a reload reads every manifest, a start opens the executable)
    // must not trigger reloads: that would loop every quiet period.
    let idle_reloads = stderr.matches("reload: nothing changed").count();
    assert!(
        idle_reloads <= 1,
        "{idle_reloads} reloads that changed nothing"
    );
    assert_no_leftovers(first_pid as u32);
}

#[test]
fn reload_command_prints_what_changed_and_fails_on_a_refusal() {
    let root = tempfile::tempdir().unwrap();
    let a = native_fake_bundle(root.path(), "alpha", "");
    let run = Running::start(root.path(), &["--no-watch"]);
    run.wait_until("alpha Running", |s| all_running(s, 1));
    let reload = |args: &[&str]| {
        let mut all = vec!["reload"];
        all.extend(args);
        let output = run.ctl(&all);
        (output.status.code(), text(&output.stdout))
    };
    let (code, out) = reload(&[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.starts_with("nothing changed"), "{out}");

    let b = native_fake_bundle(root.path(), "beta", "");
    set_manifest_field(&a, "version", "1.1.0".into());
    // --no-watch: nothing happens on its own.
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(run.statuses().len(), 1);
    let (code, out) = reload(&[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("added      beta\n") && out.contains("restarted  alpha"),
        "{out}"
    );
    assert!(all_running(&run.statuses(), 2));

    std::fs::write(b.join("plugin.json"), "{").unwrap();
    let (code, out) = reload(&[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("refused    beta: ")
            && out.contains("invalid JSON")
            && out.contains("1.0.0 stays"),
        "{out}"
    );
    let (code, json) = reload(&["--json"]);
    assert_eq!(code, Some(1));
    let report: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(report["refused"][0]["id"], "beta");
    assert_eq!(report["refused"][0]["kept_version"], "1.0.0");

    std::fs::remove_dir_all(&a).unwrap();
    let (code, out) = reload(&[]);
    assert_eq!(code, Some(1), "beta is still refused: {out}");
    assert!(out.contains("removed    alpha"), "{out}");
    let statuses = run.statuses();
    assert_eq!(statuses.len(), 1);
    assert_eq!(statuses[0]["state"], "Running");

    run.signal(nix::sys::signal::Signal::SIGTERM);
    let (code, stdout, stderr) = run.wait_exit();
    assert_eq!(code, 0, "{stderr}");
    for line in [
        "beta: new bundle",
        "alpha: new version 1.1.0 (was 1.0.0)",
        "beta: new version refused, 1.0.0 Running stays",
        "alpha: bundle removed",
    ] {
        assert!(stdout.contains(line), "{line:?} not in {stdout}");
    }
}

#[test]
fn a_flood_of_idle_control_connections_does_not_hold_up_a_request() {
    use std::io::Read;
    use std::os::unix::net::UnixStream;
    let root = tempfile::tempdir().unwrap();
    native_fake_bundle(root.path(), "flooded", "");
    let run = Running::start(root.path(), &[]);
    run.wait_until("Running", |s| all_running(s, 1));
    // Four times the connections that may wait for their request line.
    let idle: Vec<UnixStream> = (0..1024)
        .map(|_| UnixStream::connect(&run.socket).unwrap())
        .collect();
    // The request is answered while every idle connection is still within
    // its 5 s to send a line: it waited for none of them to time out.
    let (done, answered) = std::sync::mpsc::channel();
    let socket = run.socket.clone();
    std::thread::spawn(move || {
        let output = plugvisor(&[
            "status",
            "--json",
            "--control-socket",
            socket.to_str().unwrap(),
        ]);
        let _ = done.send(output);
    });
    let output = answered
        .recv_timeout(Duration::from_secs(4))
        .expect("status waited for the idle connections");
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(text(&output.stdout).contains("\"flooded\""));
    // Room was made by closing the oldest idle connections.
    let mut oldest = &idle[0];
    oldest
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    assert_eq!(oldest.read(&mut [0; 16]).unwrap(), 0, "not closed");
    drop(idle);
    run.signal(nix::sys::signal::Signal::SIGTERM);
    let (code, _, stderr) = run.wait_exit();
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn run_sandbox_shows_each_plugins_sandbox_and_transport_and_check_shows_the_policy() {
    let root = tempfile::tempdir().unwrap();
    native_fake_bundle(root.path(), "tcp-plain", "--network tcp");
    let checked = plugvisor(&["check", "--sandbox", root.path().to_str().unwrap()]);
    let out = text(&checked.stdout);
    assert!(checked.status.success(), "{out}{}", text(&checked.stderr));
    assert!(
        out.contains("sandbox: read ") && out.contains("/usr"),
        "{out}"
    );
    assert!(out.contains("tcp connect none"), "{out}");
    assert!(text(&checked.stderr).contains("sandbox: landlock v"));

    // The fake plugin's wrapper runs the binary from the build directory,
    // which its sandbox must be given.
    let build_dir = Path::new(fake_plugin()).parent().unwrap().to_path_buf();
    set_manifest_field(
        &root.path().join("tcp-plain"),
        "server",
        serde_json::json!({"executable": "bin/plugin", "sandbox": {"read": [build_dir]}}),
    );
    let run = Running::start(root.path(), &["--sandbox"]);
    let statuses = run.wait_until("Running", |s| all_running(s, 1));
    assert_eq!(statuses[0]["transport"], "tcp", "{statuses:?}");
    assert!(
        statuses[0]["sandbox"]["abi"].as_u64().unwrap() >= 1,
        "{statuses:?}"
    );
    let table = text(&run.ctl(&["status"]).stdout);
    assert!(
        table.contains("TRANSPORT") && table.contains("SANDBOX"),
        "{table}"
    );
    assert!(
        table.contains("tcp ") && table.contains("landlock v"),
        "{table}"
    );
    run.signal(nix::sys::signal::Signal::SIGINT);
    let (code, _, stderr) = run.wait_exit();
    assert_eq!(code, 0, "{stderr}");
    // Plaintext tcp under the default --tls auto: accepted, with a warning.
    assert!(stderr.contains("serves plaintext tcp"), "{stderr}");
}

#[test]
fn tls_modes_are_named_and_checked() {
    let output = plugvisor(&["run", "x", "--tls", "yes"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("expected auto, require or off"));
    let help = text(&plugvisor(&["run", "--help"]).stdout);
    assert!(
        help.contains("--tls <MODE>") && help.contains("--sandbox"),
        "{help}"
    );
}

/// Makes the process (and what it execs) see a kernel without Landlock:
/// a seccomp filter answers landlock_create_ruleset with ENOSYS.
fn without_landlock(command: &mut Command) {
    use nix::libc;
    use std::os::unix::process::CommandExt;
    const NR_OFFSET: u32 = 0; // seccomp_data.nr
    let filter = [
        libc::sock_filter {
            code: (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16,
            jt: 0,
            jf: 0,
            k: NR_OFFSET,
        },
        libc::sock_filter {
            code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
            jt: 0,
            jf: 1,
            k: libc::SYS_landlock_create_ruleset as u32,
        },
        libc::sock_filter {
            code: (libc::BPF_RET | libc::BPF_K) as u16,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32,
        },
        libc::sock_filter {
            code: (libc::BPF_RET | libc::BPF_K) as u16,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ALLOW,
        },
    ];
    // SAFETY: only prctl, which is async-signal-safe, between fork and exec;
    // the filter lives until the exec (the closure owns it).
    unsafe {
        command.pre_exec(move || {
            let program = libc::sock_fprog {
                len: filter.len() as u16,
                filter: filter.as_ptr() as *mut libc::sock_filter,
            };
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::prctl(
                    libc::PR_SET_SECCOMP,
                    libc::SECCOMP_MODE_FILTER,
                    &program as *const libc::sock_fprog,
                ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[test]
fn sandbox_on_a_kernel_without_landlock_fails_at_start_and_runs_nothing() {
    let root = tempfile::tempdir().unwrap();
    let spawn_log = root.path().join("spawns");
    native_fake_bundle(
        root.path(),
        "never-started",
        &format!("--spawn-log {}", spawn_log.display()),
    );
    let data = root.path().join("data");
    let mut command = Command::new(PLUGVISOR);
    command
        .args(["run", "--sandbox", "--no-watch", "--data-dir"])
        .arg(&data)
        .arg("--control-socket")
        .arg(root.path().join("control.sock"))
        .arg(root.path())
        .env("PLUGVISOR_LOG", "warn");
    without_landlock(&mut command);
    let output = command.output().unwrap();
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("the sandbox needs Landlock, which this kernel does not have"),
        "{stderr}"
    );
    assert!(!spawn_log.exists(), "a plugin was started unsandboxed");

    // check says so too (and run_sandbox_shows_each_plugins_sandbox... runs the same plugins without the filter).
    let mut command = Command::new(PLUGVISOR);
    command.args(["check", "--sandbox"]).arg(root.path());
    without_landlock(&mut command);
    let checked = command.output().unwrap();
    assert!(
        text(&checked.stderr).contains("needs Landlock"),
        "{}",
        text(&checked.stderr)
    );
}
/// A Go bundle whose plugin.json sets `server.limits`.
fn limited_bundle(root: &Path, id: &str, limits: Value) -> PathBuf {
    let dir = go_bundle(root, id);
    let manifest = serde_json::json!({
        "id": id,
        "server": {"executable": "plugin", "limits": limits},
    });
    std::fs::write(dir.join("plugin.json"), manifest.to_string()).unwrap();
    dir
}

#[test]
fn check_prints_the_limits_the_config_file_overrides_and_refuses_bad_ones() {
    let root = tempfile::tempdir().unwrap();
    let plugins = root.path().join("plugins");
    let good = limited_bundle(
        &plugins,
        "limited",
        serde_json::json!({"memory": "1GiB", "open_files": 64, "cpu_seconds": 600}),
    );
    let output = plugvisor(&["check", good.to_str().unwrap()]);
    let report = text(&output.stdout);
    assert!(output.status.success(), "{report}");
    for line in [
        "      limit: memory 1 GiB (RLIMIT_AS)",
        "      limit: open files 64 (RLIMIT_NOFILE)",
        "      limit: cpu seconds 600 s (RLIMIT_CPU)",
    ] {
        assert!(report.contains(line), "{line:?} in {report}");
    }

    // ./plugvisor.toml replaces the limits it names.
    let cwd = root.path().join("cwd");
    std::fs::create_dir_all(&cwd).unwrap();
    std::fs::write(
        cwd.join("plugvisor.toml"),
        "[limits.limited]\nopen_files = 32\nprocesses = 500\n",
    )
    .unwrap();
    let output = Command::new(PLUGVISOR)
        .args(["check", "--json", good.to_str().unwrap()])
        .current_dir(&cwd)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    let results: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        results[0]["limits"],
        serde_json::json!([
            {"limit": "memory", "value": 1u64 << 30, "by": "setrlimit"},
            {"limit": "open_files", "value": 32, "by": "setrlimit"},
            {"limit": "processes", "value": 500, "by": "setrlimit"},
            {"limit": "cpu_seconds", "value": 600, "by": "setrlimit"},
        ])
    );
    std::fs::write(
        cwd.join("plugvisor.toml"),
        "[limits.limited]\nmemory = \"huge\"\n",
    )
    .unwrap();
    let output = Command::new(PLUGVISOR)
        .args(["check", good.to_str().unwrap()])
        .current_dir(&cwd)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output.stdout).contains(
            "invalid [limits.limited] in the config file: `memory`: \"huge\" is not a size"
        ),
        "{}",
        text(&output.stdout)
    );

    for (id, limits, message) in [
        (
            "bad-size",
            serde_json::json!({"memory": "lots"}),
            "field `server.limits.memory`: \"lots\" is not a size; write bytes or a number with a unit",
        ),
        (
            "bad-zero",
            serde_json::json!({"open_files": 0}),
            "field `server.limits.open_files`: must be more than 0 (omit it for no limit)",
        ),
        (
            "bad-name",
            serde_json::json!({"cpu_second": 5}),
            "field `server.limits.cpu_second`: unknown limit (did you mean `cpu_seconds`?)",
        ),
    ] {
        let dir = limited_bundle(&plugins, id, limits);
        let output = plugvisor(&["check", dir.to_str().unwrap()]);
        assert_eq!(output.status.code(), Some(1));
        let report = text(&output.stdout);
        assert!(report.starts_with("FAIL  "), "{report}");
        assert!(report.contains(message), "{message:?} in {report}");
    }
}

#[test]
fn attach_over_the_control_socket_and_from_the_config_file_never_signals_the_plugin() {
    let root = tempfile::tempdir().unwrap();
    let plugins = root.path().join("plugins");
    go_bundle(&plugins, "dev");
    let sockets = tempfile::tempdir().unwrap();
    let mut by_hand = ByHand::start(&built_artifact("target/go/healthy"), sockets.path());
    let (address, hand_pid) = (by_hand.address.clone(), by_hand.pid());
    let run = Running::start(&plugins, &[]);
    let own = run.wait_until("dev Running", |s| all_running(s, 1))[0]["pid"]
        .as_u64()
        .unwrap() as u32;

    let pid = hand_pid.to_string();
    let attached = run.ctl(&["attach", "dev", &address, "--pid", &pid]);
    assert!(attached.status.success(), "{}", text(&attached.stderr));
    let table = text(&attached.stdout);
    assert!(table.contains("Running (attached)"), "{table}");
    let status = &run.statuses()[0];
    assert_eq!(status["pid"], hand_pid);
    assert_eq!(status["attached"], format!("{address} (pid {hand_pid})"));
    assert!(!exists(own), "its own process was stopped first");

    // stop disconnects; start attaches again (this plugin has no broker,
    // so the same process can be attached again).
    let stopped = run.ctl(&["stop", "dev"]);
    assert!(stopped.status.success(), "{}", text(&stopped.stderr));
    assert_eq!(run.statuses()[0]["state"], "NotRunning");
    assert!(by_hand.alive(), "stop killed it");
    let started = run.ctl(&["start", "dev"]);
    assert!(started.status.success(), "{}", text(&started.stderr));
    assert_eq!(run.statuses()[0]["pid"], hand_pid);

    // --off: detached, and the next start spawns the bundle.
    let off = run.ctl(&["attach", "dev", "--off"]);
    assert!(off.status.success(), "{}", text(&off.stderr));
    let status = &run.statuses()[0];
    assert_eq!(status["state"], "NotRunning");
    assert!(status.get("attached").is_none(), "{status}");
    assert!(by_hand.alive());
    let bad = run.ctl(&["attach", "dev", "tcp:192.0.2.1:80"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        text(&bad.stderr).contains("192.0.2.1:80 is not a loopback address"),
        "{}",
        text(&bad.stderr)
    );
    run.signal(nix::sys::signal::Signal::SIGTERM);
    let (code, _, stderr) = run.wait_exit();
    assert_eq!(code, 0, "{stderr}");

    // [attach] in the config file: attached from the start; the host's
    // shutdown leaves it running too.
    let config = root.path().join("plugvisor.toml");
    std::fs::write(&config, format!("[attach]\ndev = \"{address}\"\n")).unwrap();
    let run = Running::start(&plugins, &["--config", config.to_str().unwrap()]);
    let status = run.wait_until("dev attached", |s| all_running(s, 1))[0].clone();
    assert_eq!(status["attached"], address);
    assert_eq!(status["pid"], Value::Null);
    run.signal(nix::sys::signal::Signal::SIGTERM);
    let (code, _, stderr) = run.wait_exit();
    assert_eq!(code, 0, "{stderr}");
    assert!(by_hand.alive(), "shutdown killed it");
    by_hand.kill();
    let help = text(&plugvisor(&["attach", "--help"]).stdout);
    assert!(
        help.contains("PLUGIN_PROTOCOL_VERSIONS") && help.contains("--pid"),
        "{help}"
    );
}
