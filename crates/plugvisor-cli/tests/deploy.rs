//! `plugvisor run` as a service: systemd's notifications (READY, WATCHDOG,
//! STOPPING) from the real binary, and the files in deploy/ checked against
//! what the binary accepts and serves.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use plugvisor_testkit::*;
use serde_json::Value;

const PLUGVISOR: &str = env!("CARGO_BIN_EXE_plugvisor");

/// A `plugvisor run` that is stopped like a service at the end of its test
/// (SIGTERM, so it removes its plugins' socket directories), and killed if
/// that does not work.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            eventually(Duration::from_secs(10), || {
                !matches!(self.0.try_wait(), Ok(None))
            });
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn statuses(socket: &Path) -> Vec<Value> {
    let output = Command::new(PLUGVISOR)
        .args(["status", "--json", "--control-socket"])
        .arg(socket)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    serde_json::from_slice(&output.stdout).unwrap()
}

/// The next notification, or None after `within`.
fn receive(socket: &UnixDatagram, within: Duration) -> Option<String> {
    socket.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 4096];
    match socket.recv(&mut buf) {
        Ok(n) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
        Err(_) => None,
    }
}

/// Notifications until one holds `line`; all of them, that one last.
fn receive_until(socket: &UnixDatagram, line: &str, within: Duration) -> Vec<String> {
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        let Some(message) = receive(socket, left) else {
            break;
        };
        let done = message.lines().any(|l| l == line);
        seen.push(message);
        if done {
            return seen;
        }
    }
    panic!("no {line} within {within:?}; got {seen:?}");
}

#[test]
fn run_notifies_systemd_ready_watchdog_and_stopping() {
    let root = tempfile::tempdir().unwrap();
    let plugins = root.path().join("plugins");
    native_fake_bundle(&plugins, "quick", "");
    // A plugin that takes a second to start: READY=1 must wait for it.
    let slow = native_fake_bundle(&plugins, "slow", "");
    let script = std::fs::read_to_string(slow.join("bin/plugin")).unwrap();
    std::fs::write(
        slow.join("bin/plugin"),
        script.replace("exec ", "sleep 1\nexec "),
    )
    .unwrap();
    let notify_path = root.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    let control = root.path().join("control.sock");
    // As systemd does: WATCHDOG_PID is the service's own pid ($$ survives exec).
    let child = Command::new("sh")
        .args(["-c", r#"WATCHDOG_PID=$$ exec "$0" "$@""#, PLUGVISOR, "run"])
        .arg("--control-socket")
        .arg(&control)
        .arg("--data-dir")
        .arg(root.path().join("data"))
        .args(["--start-timeout", "10s"])
        .arg(&plugins)
        .env("NOTIFY_SOCKET", &notify_path)
        .env("WATCHDOG_USEC", "200000")
        .env("PLUGVISOR_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut run = Reaped(child);

    let before_ready = receive_until(&notify, "READY=1", Duration::from_secs(20));
    let ready = before_ready.last().unwrap();
    // Both are Running at the moment READY=1 is sent, the slow one too.
    let now = statuses(&control);
    assert!(
        now.len() == 2 && now.iter().all(|s| s["state"] == "Running"),
        "READY=1 before every plugin was Running: {now:?}"
    );
    assert!(
        ready.lines().any(|l| l == "STATUS=2 of 2 plugins running"),
        "{ready:?}"
    );
    // The slow start took a second: the watchdog pinged meanwhile.
    assert!(
        before_ready.iter().any(|m| m == "WATCHDOG=1\n"),
        "no watchdog ping during the start: {before_ready:?}"
    );

    // Every 100 ms (half of 200 ms), from the running host.
    let started = Instant::now();
    let mut pings = 0;
    while started.elapsed() < Duration::from_millis(600) {
        if receive(&notify, Duration::from_millis(300)).as_deref() == Some("WATCHDOG=1\n") {
            pings += 1;
        }
    }
    assert!((3..=9).contains(&pings), "{pings} pings in 600 ms");

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(run.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let stopping = receive_until(&notify, "STOPPING=1", Duration::from_secs(5));
    assert!(
        stopping
            .last()
            .unwrap()
            .contains("STATUS=stopping all plugins"),
        "{stopping:?}"
    );
    let status = run.0.wait().unwrap();
    let mut stderr = String::new();
    run.0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(status.success(), "{stderr}");
}

#[test]
fn a_watchdog_meant_for_another_pid_is_not_pinged() {
    let root = tempfile::tempdir().unwrap();
    let plugins = root.path().join("plugins");
    native_fake_bundle(&plugins, "quick", "");
    let notify_path = root.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    let child = Command::new(PLUGVISOR)
        .arg("run")
        .arg("--control-socket")
        .arg(root.path().join("control.sock"))
        .arg("--data-dir")
        .arg(root.path().join("data"))
        .arg(&plugins)
        .env("NOTIFY_SOCKET", &notify_path)
        .env("WATCHDOG_USEC", "100000")
        // systemd's watchdog of a parent: the child must not answer it.
        .env("WATCHDOG_PID", "1")
        .env("PLUGVISOR_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let run = Reaped(child);
    let seen = receive_until(&notify, "READY=1", Duration::from_secs(20));
    let later = receive(&notify, Duration::from_millis(300));
    assert!(
        !seen.iter().chain(&later).any(|m| m.contains("WATCHDOG=1")),
        "{seen:?} {later:?}"
    );
    drop(run);
}

/// The unit's ExecStart, continuation lines joined, split into words.
fn exec_start(unit: &str) -> Vec<String> {
    let joined = unit.replace("\\\n", " ");
    let line = joined
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("the unit has an ExecStart");
    line.split_whitespace().map(str::to_string).collect()
}

fn unit_value<'a>(unit: &'a str, key: &str) -> &'a str {
    let prefix = format!("{key}=");
    unit.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("the unit has no {key}"))
}

/// The value after `flag` in `args`.
fn flag<'a>(args: &'a [String], flag: &str) -> &'a str {
    let at = args.iter().position(|a| a == flag);
    let at = at.unwrap_or_else(|| panic!("no {flag} in {args:?}"));
    &args[at + 1]
}

fn seconds(text: &str) -> u64 {
    let digits = text.trim_end_matches('s');
    digits
        .parse()
        .unwrap_or_else(|_| panic!("{text:?} is not N or Ns"))
}

/// `plugvisor` takes these arguments: it gets past parsing them to the
/// plugins folder, which does not exist here.
fn assert_accepted(args: &[String]) {
    let output = Command::new(PLUGVISOR)
        .args(args)
        .env("PLUGVISOR_LOG", "warn")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
    let folder = args.last().unwrap();
    assert!(stderr.contains(folder.as_str()), "{args:?}: {stderr}");
}

fn deploy() -> std::path::PathBuf {
    repo_root().join("deploy")
}

#[test]
fn the_systemd_unit_verifies_and_its_command_line_works() {
    let unit = std::fs::read_to_string(deploy().join("plugvisor.service")).unwrap();
    let args = exec_start(&unit);
    assert_eq!(args[0], "/usr/local/bin/plugvisor");
    assert_accepted(&args[1..]);
    assert_eq!(unit_value(&unit, "Type"), "notify");
    assert_eq!(unit_value(&unit, "KillMode"), "mixed");
    assert!(unit_value(&unit, "WatchdogSec").ends_with('s'));
    // systemd's SIGKILL comes only after plugvisor's own deadline.
    let deadline = seconds(flag(&args, "--shutdown-deadline"));
    assert!(seconds(unit_value(&unit, "TimeoutStopSec")) > deadline);

    let Ok(analyze) = which("systemd-analyze") else {
        eprintln!("note: no systemd-analyze on this machine; the unit was not verified");
        return;
    };
    // verify wants ExecStart's program to exist: the plugvisor just built.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("plugvisor.service");
    std::fs::write(&copy, unit.replace("/usr/local/bin/plugvisor", PLUGVISOR)).unwrap();
    let output = Command::new(analyze)
        .arg("verify")
        .arg(&copy)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    // A misspelt key or value is only a warning, with the file's name.
    let about_ours: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("plugvisor.service"))
        .collect();
    assert!(about_ours.is_empty(), "{about_ours:#?}");
}

fn which(program: &str) -> Result<std::path::PathBuf, ()> {
    let path = std::env::var_os("PATH").ok_or(())?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
        .ok_or(())
}

/// One plain HTTP/1.0 GET: the status code.
fn get(port: u16, path: &str) -> u16 {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    // The Host a client of 127.0.0.1:PORT sends (the status page refuses others).
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n"
    )
    .unwrap();
    let mut head = String::new();
    BufReader::new(stream).read_line(&mut head).unwrap();
    let code = head.split_whitespace().nth(1).unwrap_or_default();
    code.parse()
        .unwrap_or_else(|_| panic!("bad answer to {path}: {head:?}"))
}

#[test]
fn the_pod_probes_what_run_http_serves() {
    let text = std::fs::read_to_string(deploy().join("kubernetes/pod.yaml")).unwrap();
    let pod: Value = serde_yaml_ng::from_str(&text).unwrap();
    assert_eq!(pod["kind"], "Pod");
    let container = &pod["spec"]["containers"][0];
    let args: Vec<String> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    assert_eq!(args[0], "run");
    let http = flag(&args, "--http");
    let port: u16 = http.strip_prefix("0.0.0.0:").unwrap().parse().unwrap();
    let ports = container["ports"].as_array().unwrap();
    let named = ports
        .iter()
        .find(|p| p["containerPort"] == port)
        .unwrap_or_else(|| panic!("port {port} is not declared: {ports:?}"));
    let probe_port = |probe: &str| -> Value { container[probe]["httpGet"]["port"].clone() };
    for probe in ["livenessProbe", "readinessProbe"] {
        let target = probe_port(probe);
        assert!(
            target == port || target == named["name"],
            "{probe} probes {target}, not {port}"
        );
    }
    let liveness = container["livenessProbe"]["httpGet"]["path"]
        .as_str()
        .unwrap();
    let readiness = container["readinessProbe"]["httpGet"]["path"]
        .as_str()
        .unwrap();
    // The kubelet's SIGKILL comes only after plugvisor's own deadline.
    let deadline = seconds(flag(&args, "--shutdown-deadline"));
    let grace = pod["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap();
    assert!(grace > deadline, "grace {grace} s <= deadline {deadline} s");
    let mut args_here = args.clone();
    *args_here
        .iter_mut()
        .find(|a| *a == "/var/lib/plugvisor")
        .unwrap() = "/nonexistent/data".into();
    assert_accepted(&args_here);

    // The same `run --http`, on a free port here: both paths answer 200.
    let root = tempfile::tempdir().unwrap();
    let plugins = root.path().join("plugins");
    native_fake_bundle(&plugins, "quick", "");
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let here = free.local_addr().unwrap().port();
    drop(free);
    let child = Command::new(PLUGVISOR)
        .arg("run")
        .args(["--http", &format!("127.0.0.1:{here}")])
        .arg("--control-socket")
        .arg(root.path().join("control.sock"))
        .arg("--data-dir")
        .arg(root.path().join("data"))
        .arg(&plugins)
        .env("PLUGVISOR_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _run = Reaped(child);
    assert!(
        eventually(Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", here)).is_ok() && get(here, readiness) == 200
        }),
        "{readiness} never answered 200"
    );
    assert_eq!(get(here, liveness), 200);
    assert_eq!(get(here, "/no-such-probe"), 404, "any path would answer");
}
