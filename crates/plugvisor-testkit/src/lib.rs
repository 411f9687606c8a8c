//! Shared helpers for plugvisor's integration tests: bundles around the fake
//! plugin, the real Python and Go plugins, and /proc checks for leftover
//! processes. Never published.

pub mod browser;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The repository's root directory.
pub fn repo_root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .canonicalize()
        .expect("the repository root exists")
}

/// A binary of this workspace, next to the running test in the target
/// directory (`cargo test --workspace` builds every one of them), or in
/// `$PLUGVISOR_TEST_BIN_DIR` when that is set (a copy of the binaries, for a
/// target directory that other builds share).
pub fn workspace_bin(name: &str) -> &'static str {
    if let Some(dir) = std::env::var_os("PLUGVISOR_TEST_BIN_DIR") {
        let path = Path::new(&dir).join(name);
        assert!(path.is_file(), "{} is missing", path.display());
        return Box::leak(path.to_string_lossy().into_owned().into_boxed_str());
    }
    let exe = std::env::current_exe().expect("the test knows its own path");
    // target/debug/deps/<test> -> target/debug/<name>
    let path = exe
        .ancestors()
        .find(|dir| dir.join(name).is_file())
        .map(|dir| dir.join(name))
        .unwrap_or_else(|| {
            panic!("{name} is not built: run `cargo build --workspace --bins` (./scripts/setup does) first")
        });
    Box::leak(path.to_string_lossy().into_owned().into_boxed_str())
}

/// The misbehaving-on-request test plugin (`src/bin/plugvisor-fake-plugin.rs`).
pub fn fake_plugin() -> &'static str {
    static PATH: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();
    PATH.get_or_init(|| workspace_bin("plugvisor-fake-plugin"))
}

/// The `plugvisor` command.
pub fn plugvisor_bin() -> &'static str {
    static PATH: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();
    PATH.get_or_init(|| workspace_bin("plugvisor"))
}

/// An artifact built by `./scripts/setup`; fails clearly when it is missing.
pub fn built_artifact(relative: &str) -> PathBuf {
    let path = repo_root().join(relative);
    assert!(
        path.exists(),
        "{} is missing: run ./scripts/setup (the README's test command does) first",
        path.display()
    );
    path
}

/// The test venv's interpreter (grpcio installed).
pub fn test_python() -> PathBuf {
    built_artifact(".venv/bin/python")
}

/// The test venv: the directory of `bin/python`'s `bin`.
pub fn test_venv() -> PathBuf {
    test_python()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf()
}

fn write_file(path: &Path, text: &str, mode: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A native bundle whose executable runs the fake plugin with `flags`.
pub fn native_fake_bundle(root: &Path, id: &str, flags: &str) -> PathBuf {
    let dir = root.join(id);
    write_file(
        &dir.join("plugin.json"),
        &format!(r#"{{"id":"{id}","version":"1.0.0","server":{{"executable":"bin/plugin"}}}}"#),
        0o644,
    );
    let quoted: Vec<String> = flags.split_whitespace().map(|f| format!("'{f}'")).collect();
    write_file(
        &dir.join("bin/plugin"),
        &format!("#!/bin/sh\nexec {} {}\n", fake_plugin(), quoted.join(" ")),
        0o755,
    );
    dir
}

/// The seed's fake interpreter: a Python-shaped bundle (`plugin.py`) whose
/// `venv/bin/python` is the fake plugin; `flags` go in plugin.py's first line.
pub fn python_fake_bundle(root: &Path, id: &str, flags: &str) -> PathBuf {
    let dir = root.join(id);
    write_file(
        &dir.join("plugin.json"),
        &format!(r#"{{"id":"{id}","version":"1.0.0","server":{{"executable":"plugin.py"}}}}"#),
        0o644,
    );
    write_file(&dir.join("plugin.py"), &format!("# fake: {flags}\n"), 0o644);
    std::fs::create_dir_all(dir.join("venv/bin")).unwrap();
    std::os::unix::fs::symlink(fake_plugin(), dir.join("venv/bin/python")).unwrap();
    dir
}

/// A copy of a bundle from the repository (examples or test plugins).
pub fn copy_bundle(from: &Path, to: &Path) -> PathBuf {
    assert!(from.is_dir(), "{} is missing", from.display());
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_bundle(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
    to.to_path_buf()
}

/// Fields of /proc/PID/stat after the command name: (state, ppid, pgrp, session).
fn proc_stat(pid: i32) -> Option<(char, i32, i32, i32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &text[text.rfind(')')? + 2..];
    let mut fields = after.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    let session = fields.next()?.parse().ok()?;
    Some((state, ppid, pgrp, session))
}

fn all_pids() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// Whether the process exists at all (a zombie counts: it was not reaped).
pub fn exists(pid: u32) -> bool {
    proc_stat(pid as i32).is_some()
}

/// The parent of a process, while it exists.
pub fn parent_of(pid: u32) -> Option<u32> {
    proc_stat(pid as i32).map(|(_, ppid, ..)| ppid as u32)
}

pub fn is_zombie(pid: u32) -> bool {
    matches!(proc_stat(pid as i32), Some(('Z', ..)))
}

/// Processes (zombies included) whose process group or session is `pid`.
pub fn group_or_session_members(pid: u32) -> Vec<i32> {
    let pid = pid as i32;
    all_pids()
        .into_iter()
        .filter(|&p| matches!(proc_stat(p), Some((_, _, pgrp, session)) if pgrp == pid || session == pid))
        .collect()
}

/// Zombie children of this test process.
pub fn my_zombies() -> Vec<i32> {
    let me = std::process::id() as i32;
    all_pids()
        .into_iter()
        .filter(|&p| matches!(proc_stat(p), Some(('Z', ppid, ..)) if ppid == me))
        .collect()
}

/// Polls `condition` until it holds or `timeout` passes.
pub fn eventually(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Asserts that nothing of the plugin (group, session, zombie) is left.
pub fn assert_no_leftovers(pid: u32) {
    assert!(
        eventually(Duration::from_secs(5), || group_or_session_members(pid)
            .is_empty()),
        "processes left in group/session {pid}: {:?}",
        group_or_session_members(pid)
    );
    assert!(
        !exists(pid),
        "plugin {pid} still exists (zombie: {})",
        is_zombie(pid)
    );
}

/// Pids written one per line by the fake plugin's --pid-file / --spawn-log.
pub fn read_pids(path: &Path) -> Vec<u32> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Every log line of this test binary, as the tests see them. A global
/// subscriber, because tracing caches per-callsite interest across threads;
/// tests that run in parallel share it, so assert on lines that name your
/// own plugin id.
#[derive(Clone, Default)]
pub struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

/// Installs the capturing subscriber (once per test binary) and returns it.
pub fn captured_logs() -> Captured {
    static LOGS: std::sync::OnceLock<Captured> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Captured::default();
        let writer = logs.clone();
        tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .init();
        logs
    })
    .clone()
}

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// Everything logged so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// Everything logged so far, a line each.
    pub fn lines(&self) -> Vec<String> {
        self.text().lines().map(str::to_string).collect()
    }
}

/// Adds (or replaces) a top-level field of a bundle's plugin.json.
pub fn set_manifest_field(bundle: &Path, field: &str, value: serde_json::Value) {
    let path = bundle.join("plugin.json");
    let mut manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    manifest[field] = value;
    std::fs::write(&path, manifest.to_string()).unwrap();
}

/// The lines of a file the fake plugin appends to (`--hook-log`).
pub fn lines_of(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Waits until a line of `path` starts with `prefix`, and returns it.
pub fn wait_for_line(path: &Path, prefix: &str) -> String {
    let mut found = None;
    let ok = eventually(Duration::from_secs(10), || {
        found = lines_of(path).into_iter().find(|l| l.starts_with(prefix));
        found.is_some()
    });
    assert!(
        ok,
        "no line starting with {prefix:?} in {}: {:?}",
        path.display(),
        lines_of(path)
    );
    found.unwrap()
}

/// Waits (10 s at most) for an event about `id` that matches.
pub async fn next_event(
    events: &mut tokio::sync::broadcast::Receiver<plugvisor::Event>,
    id: &str,
    mut wanted: impl FnMut(&plugvisor::EventKind, plugvisor::PluginState) -> bool,
) -> plugvisor::Event {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let event = events.recv().await.expect("event channel closed");
            if event.status.id == id && wanted(&event.kind, event.status.state) {
                return event;
            }
        }
    })
    .await
    .expect("the expected event did not come")
}

/// A go-plugin plugin started the way a developer would, by hand: with the
/// handshake environment a host gives (Mattermost's cookie), its address read
/// from its handshake line. Killed when dropped.
pub struct ByHand {
    child: std::process::Child,
    /// `unix:PATH`, from its handshake line.
    pub address: String,
    // Kept open: a plugin writing to a closed stdout would get SIGPIPE.
    _stdout: std::io::BufReader<std::process::ChildStdout>,
}

impl ByHand {
    /// Starts `program` with its unix socket in `socket_dir`.
    pub fn start(program: &Path, socket_dir: &Path) -> ByHand {
        use std::io::BufRead;
        let mut child = std::process::Command::new(program)
            .env("MATTERMOST_PLUGIN", "Securely message teams, anywhere.")
            .env("PLUGIN_PROTOCOL_VERSIONS", "1")
            .env("PLUGIN_UNIX_SOCKET_DIR", socket_dir)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        // CORE|APP|NETWORK|ADDRESS|PROTOCOL
        let fields: Vec<&str> = line.trim().split('|').collect();
        assert_eq!(fields[2], "unix", "{line}");
        ByHand {
            address: format!("unix:{}", fields[3]),
            child,
            _stdout: stdout,
        }
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it still runs (not reaped).
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// SIGKILLs and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ByHand {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The lines `reader` gives, collected by a thread of their own as they come
/// (a child's stderr, say, which must be drained so that the child never
/// blocks on it).
pub fn collect_lines(
    reader: impl std::io::Read + Send + 'static,
) -> std::sync::Arc<std::sync::Mutex<Vec<String>>> {
    use std::io::BufRead;
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(reader)
            .lines()
            .map_while(Result::ok)
        {
            sink.lock().unwrap().push(line);
        }
    });
    lines
}

/// A `plugvisor run --json --http ADDR` of its own (data directory and
/// control socket in a temporary directory), its stderr collected, its
/// address read from its log. SIGTERMed and reaped when dropped.
pub struct HttpRun {
    /// The `plugvisor run` process.
    pub child: std::process::Child,
    /// `127.0.0.1:PORT`, where it serves HTTP.
    pub address: String,
    /// Its control socket.
    pub socket: PathBuf,
    /// Its stderr, line by line.
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl HttpRun {
    /// Runs `plugins` with `--http http` and the `extra` flags, and waits
    /// until it says where it serves HTTP.
    pub fn start(plugins: &Path, http: &str, extra: &[&str]) -> HttpRun {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("control.sock");
        let mut child = std::process::Command::new(plugvisor_bin())
            .args(["run", "--json", "--http", http, "--data-dir"])
            .arg(dir.path().join("data"))
            .arg("--control-socket")
            .arg(&socket)
            .args(extra)
            .arg(plugins)
            .env("PLUGVISOR_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let log = collect_lines(child.stderr.take().unwrap());
        let mut port = None;
        let found = eventually(Duration::from_secs(20), || {
            port = log.lock().unwrap().iter().find_map(|l| {
                let rest = l.split("HTTP on http://").nth(1)?;
                let address = rest.split(&[' ', ','][..]).next()?.trim_end_matches(':');
                address.rsplit(':').next()?.parse::<u16>().ok()
            });
            port.is_some()
        });
        assert!(
            found,
            "no HTTP address in the log: {:?}",
            log.lock().unwrap()
        );
        HttpRun {
            child,
            address: format!("127.0.0.1:{}", port.unwrap()),
            socket,
            log,
            _dir: dir,
        }
    }

    /// `http://127.0.0.1:PORT` and `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// The first log line holding `text`, waiting up to 5 s for it.
    pub fn logged(&self, text: &str) -> Option<String> {
        let mut found = None;
        eventually(Duration::from_secs(5), || {
            found = self
                .log
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains(text))
                .cloned();
            found.is_some()
        });
        found
    }
}

impl Drop for HttpRun {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.child.wait();
    }
}

/// Restarts 20 ms after a failure, never more than 100 ms apart: tests
/// that watch restarts need not wait for the real backoff.
pub fn fast_restarts() -> plugvisor::RestartPolicy {
    plugvisor::RestartPolicy::builder()
        .initial_backoff(Duration::from_millis(20))
        .max_backoff(Duration::from_millis(100))
        .build()
        .unwrap()
}

/// A venv of its own, cheap to make: `pyvenv.cfg` and the base interpreter
/// linked from the test venv, its site-packages entries linked one by one,
/// but `grpc`, a directory of links (so that adding a file to it is a grpc
/// "upgrade" the test venv does not see). Returns its `bin/python`: an
/// interpreter path no other test shares, so it gets a zygote of its own.
pub fn own_venv(root: &Path) -> PathBuf {
    let test_venv = test_venv();
    let real_python = std::fs::canonicalize(test_python()).unwrap();
    let venv = root.join("venv");
    std::fs::create_dir_all(venv.join("bin")).unwrap();
    std::fs::copy(test_venv.join("pyvenv.cfg"), venv.join("pyvenv.cfg")).unwrap();
    std::os::unix::fs::symlink(&real_python, venv.join("bin/python")).unwrap();
    let lib = std::fs::read_dir(test_venv.join("lib"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .file_name();
    let from = test_venv.join("lib").join(&lib).join("site-packages");
    let to = venv.join("lib").join(&lib).join("site-packages");
    std::fs::create_dir_all(&to).unwrap();
    for entry in std::fs::read_dir(&from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() == "grpc" {
            std::fs::create_dir(to.join("grpc")).unwrap();
            for inner in std::fs::read_dir(entry.path()).unwrap() {
                let inner = inner.unwrap();
                std::os::unix::fs::symlink(inner.path(), to.join("grpc").join(inner.file_name()))
                    .unwrap();
            }
        } else {
            std::os::unix::fs::symlink(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
    venv.join("bin/python")
}

/// The zygotes among this process's children: (pid, its interpreter).
pub fn my_zygotes() -> Vec<(u32, String)> {
    zygotes_of(std::process::id())
}

/// The zygotes among `parent`'s children: (pid, its interpreter).
pub fn zygotes_of(parent: u32) -> Vec<(u32, String)> {
    let me = parent as i32;
    all_pids()
        .into_iter()
        .filter(|&p| matches!(proc_stat(p), Some((state, ppid, ..)) if ppid == me && state != 'Z'))
        .filter_map(|p| {
            let cmdline = std::fs::read(format!("/proc/{p}/cmdline")).ok()?;
            let args: Vec<String> = cmdline
                .split(|&b| b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            (args.get(1).map(String::as_str) == Some("-c")
                && args.get(2).is_some_and(|a| a.contains("plugvisor_zygote")))
            .then(|| (p as u32, args[0].clone()))
        })
        .collect()
}

/// The fake plugin as a Python plugin that the zygote forks: `plugin.py`
/// (run by the interpreter the test configures, e.g. [`test_python`])
/// checks that it was forked (grpc already imported), then execs
/// `bin/plugin`, the same script [`native_fake_bundle`] writes. So the
/// hostile matrix runs on forked processes.
pub fn forked_fake_bundle(root: &Path, id: &str, flags: &str) -> PathBuf {
    let dir = native_fake_bundle(root, id, flags);
    write_file(
        &dir.join("plugin.json"),
        &format!(r#"{{"id":"{id}","version":"1.0.0","server":{{"executable":"plugin.py"}}}}"#),
        0o644,
    );
    write_file(
        &dir.join("plugin.py"),
        "import os, sys\n\
         if 'grpc' not in sys.modules:\n    sys.exit('plugin.py was exec\\'d, not forked from the zygote')\n\
         os.execv('bin/plugin', ['bin/plugin'])\n",
        0o644,
    );
    dir
}
