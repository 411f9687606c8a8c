//! Python plugins forked from their venv's zygote: what a forked plugin
//! observes of itself is what an exec'd one observes, the host reaps it with
//! its true exit, the zygote is a single thread with no gRPC state, and a
//! dead zygote, an upgraded venv and the opt-outs each fall back to exec.

use std::path::{Path, PathBuf};
use std::time::Duration;

use plugvisor::{Bundle, LaunchOptions, Supervisor, SupervisorConfig, plan_launch};
use plugvisor_testkit::*;
use serde_json::Value;

/// A plugin that records what it finds at its first line, before it imports
/// anything, to `facts.json`, then does what `ACTION` in its environment says.
const PROBE: &str = r#"
import sys
preloaded = "grpc" in sys.modules
import ctypes, json, os, resource, signal

def fd_kind(fd):
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return "closed"  # the listing's own
    return target.split(":")[0] if ":" in target else target

main = sys.modules["__main__"]
pdeathsig = ctypes.c_int()
ctypes.CDLL(None).prctl(2, ctypes.byref(pdeathsig), 0, 0, 0)
umask = os.umask(0)
os.umask(umask)
with open("/proc/self/environ", "rb") as f:
    proc_environ = sorted(e.decode() for e in f.read().split(b"\0") if e)
with open("/proc/self/cmdline", "rb") as f:
    proc_cmdline = [a.decode() for a in f.read().split(b"\0") if a]
fds = sorted(os.listdir("/proc/self/fd"), key=int)
with open("/proc/self/status") as f:
    no_new_privs = [line.split()[1] for line in f if line.startswith("NoNewPrivs:")]
def attempt(call):
    try:
        call()
        return "allowed"
    except OSError as error:
        return type(error).__name__
outside = os.path.join(os.path.dirname(os.getcwd()), "outside")
facts = {
    "preloaded": preloaded,
    "pid": os.getpid(),
    "ppid": os.getppid(),
    "pgid": os.getpgid(0),
    "sid": os.getsid(0),
    "pdeathsig": pdeathsig.value,
    "environ": dict(os.environ),
    "proc_environ": proc_environ,
    "proc_cmdline": proc_cmdline,
    "argv": sys.argv,
    "orig_argv": sys.orig_argv,
    "executable": sys.executable,
    "cwd": os.getcwd(),
    "path": sys.path,
    "name": __name__,
    "file": __file__,
    "main_keys": sorted(k for k in vars(main) if k.startswith("__")),
    "loader": type(main.__loader__).__name__,
    "signals": {str(n): str(signal.getsignal(n)) for n in range(1, signal.NSIG) if n not in (9, 19, 32, 33)},
    "mask": sorted(int(s) for s in signal.pthread_sigmask(signal.SIG_BLOCK, [])),
    "umask": umask,
    "rlimits": [resource.getrlimit(r) for r in range(16)],
    "fds": {fd: fd_kind(int(fd)) for fd in fds},
    "stdout": os.readlink("/proc/self/fd/1"),
    "threads": len(os.listdir("/proc/self/task")),
    "flags": str(sys.flags),
    "no_new_privs": no_new_privs,
    "read_outside": attempt(lambda: open(os.path.join(outside, "secret")).close()),
    "write_outside": attempt(lambda: open(os.path.join(outside, "written"), "w").close()),
}
with open("facts.json", "w") as f:
    json.dump(facts, f)
action = os.environ.get("ACTION", "exit 3").split()
if action[0] == "exit":
    sys.exit(int(action[1]))
if action[0] == "signal":
    os.kill(os.getpid(), int(action[1]))
if action[0] == "raise":
    raise ValueError("probe raised")
"#;

/// A probe bundle under `root/id`, run by `python`; `server` extra fields.
fn probe_bundle(root: &Path, id: &str, server: Value) -> PathBuf {
    let dir = root.join(id);
    std::fs::create_dir_all(&dir).unwrap();
    let mut section = serde_json::json!({"executable": "probe.py"});
    for (key, value) in server.as_object().unwrap() {
        section[key] = value.clone();
    }
    let manifest = serde_json::json!({"id": id, "version": "1.0.0", "server": section});
    std::fs::write(dir.join("plugin.json"), manifest.to_string()).unwrap();
    std::fs::write(dir.join("probe.py"), PROBE).unwrap();
    dir
}

fn options(python: &Path, zygote: bool) -> LaunchOptions {
    LaunchOptions::builder()
        .interpreter(python)
        .zygote(zygote)
        .build()
        .unwrap()
}

/// Starts the probe (which never serves, so the start fails with its exit)
/// and returns its facts and the start's error.
async fn probe(dir: &Path, options: &LaunchOptions, action: &str) -> (Value, String) {
    let _ = std::fs::remove_file(dir.join("facts.json"));
    let plan = plan_launch(&Bundle::load(dir).unwrap(), options).unwrap();
    // The probe reads its action from the environment it is given: the host's.
    let config = SupervisorConfig::builder()
        .tls(plugvisor::TlsMode::Off)
        .build()
        .unwrap();
    let error = {
        let _guard = ACTION.lock().await;
        // SAFETY: tests that read ACTION hold the lock; no other thread of
        // this binary reads the environment meanwhile.
        unsafe { std::env::set_var("ACTION", action) };
        let result = Supervisor::start("probe", &plan, &config).await;
        unsafe { std::env::remove_var("ACTION") };
        result.expect_err("the probe never serves").to_string()
    };
    let facts = std::fs::read_to_string(dir.join("facts.json"))
        .unwrap_or_else(|e| panic!("the probe did not run ({e}): {error}"));
    (serde_json::from_str(&facts).unwrap(), error)
}

static ACTION: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// What differs between two starts of the same plugin whatever launched it.
const PER_START: [&str; 3] = [
    "PLUGIN_UNIX_SOCKET_DIR",
    "PLUGVISOR_PLUGIN_INSTANCE",
    "TMPDIR",
];

fn without_per_start(facts: &mut Value) {
    let pid = facts["pid"].as_i64().unwrap().to_string();
    for key in PER_START {
        facts["environ"].as_object_mut().unwrap().remove(key);
    }
    let environ = facts["proc_environ"].as_array_mut().unwrap();
    environ.retain(|e| {
        !PER_START
            .iter()
            .any(|k| e.as_str().unwrap().starts_with(&format!("{k}=")))
    });
    for key in ["pid", "stdout"] {
        facts.as_object_mut().unwrap().remove(key);
    }
    assert_eq!(
        facts["pgid"].as_i64().unwrap().to_string(),
        pid,
        "its own process group"
    );
    facts.as_object_mut().unwrap().remove("pgid");
}

/// The facts of an exec'd and then a forked start of `dir` (the probe exits
/// with status 3), the `preloaded` fact checked and taken out.
async fn exec_d_and_forked(dir: &Path, options: impl Fn(bool) -> LaunchOptions) -> (Value, Value) {
    let (mut exec, exec_error) = probe(dir, &options(false), "exit 3").await;
    let (mut forked, forked_error) = probe(dir, &options(true), "exit 3").await;
    assert_eq!(
        exec["preloaded"], false,
        "the exec'd probe imported grpc itself"
    );
    assert_eq!(
        forked["preloaded"], true,
        "the forked probe found grpc loaded"
    );
    for error in [&exec_error, &forked_error] {
        assert!(error.contains("exit status 3"), "{error}");
    }
    exec["preloaded"] = Value::Null;
    forked["preloaded"] = Value::Null;
    (exec, forked)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forked_plugin_finds_itself_as_an_exec_d_one_would() {
    let root = tempfile::tempdir().unwrap();
    let python = own_venv(root.path());
    let dir = probe_bundle(root.path(), "probe", serde_json::json!({}));
    let (mut exec, mut forked) = exec_d_and_forked(&dir, |zygote| options(&python, zygote)).await;
    for facts in [&exec, &forked] {
        assert_eq!(facts["ppid"], std::process::id(), "the host is its parent");
        assert_eq!(facts["pdeathsig"], 9);
        assert_eq!(facts["threads"], 1);
        // Its own stdout pipe: not the zygote's.
        assert!(facts["stdout"].as_str().unwrap().starts_with("pipe:"));
        // The environment the kernel shows is the one it runs with.
        let mut environ: Vec<String> = facts["environ"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap()))
            .collect();
        environ.sort();
        let proc_environ: Vec<String> =
            serde_json::from_value(facts["proc_environ"].clone()).unwrap();
        assert_eq!(environ, proc_environ);
        assert_eq!(facts["proc_cmdline"], facts["orig_argv"]);
    }
    let zygote_stdout = my_zygotes()
        .into_iter()
        .find(|(_, interpreter)| Path::new(interpreter) == python)
        .map(|(pid, _)| std::fs::read_link(format!("/proc/{pid}/fd/1")).unwrap())
        .expect("the venv's zygote runs");
    assert_ne!(
        forked["stdout"].as_str().unwrap(),
        zygote_stdout.to_str().unwrap()
    );
    // Nothing but its own stdin, stdout and stderr (and the listing's own
    // descriptor). An exec'd plugin also has whatever the host left open
    // without close-on-exec (under cargo test: its jobserver's pipe).
    let fds = forked["fds"].as_object().unwrap();
    assert_eq!(
        fds.keys().collect::<Vec<_>>(),
        ["0", "1", "2", "3"],
        "{fds:?}"
    );
    for (fd, kind) in fds {
        assert_eq!(&exec["fds"][fd], kind, "fd {fd}");
    }
    exec["fds"] = Value::Null;
    forked["fds"] = Value::Null;
    without_per_start(&mut exec);
    without_per_start(&mut forked);
    for (key, value) in exec.as_object().unwrap() {
        assert_eq!(
            &forked[key], value,
            "{key} differs between exec'd and forked"
        );
    }
    assert_eq!(exec, forked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forked_plugin_gets_the_exec_d_one_s_sandbox_and_resource_limits() {
    let root = tempfile::tempdir().unwrap();
    let python = own_venv(root.path());
    let outside = root.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("secret"), "not the plugin's").unwrap();
    // Its own limits, and a sandbox that lets it write its facts in its
    // bundle and read the test venv, which own_venv's files link to.
    let server = serde_json::json!({
        "limits": {"open_files": 333, "processes": 4321, "cpu_seconds": 600},
        "sandbox": {"write": ["."], "read": [test_venv()]},
    });
    let dir = probe_bundle(root.path(), "probe", server);
    let sandboxed = |zygote| {
        LaunchOptions::builder()
            .interpreter(&python)
            .zygote(zygote)
            .sandbox(true)
            .build()
            .unwrap()
    };
    let (mut exec, mut forked) = exec_d_and_forked(&dir, sandboxed).await;
    without_per_start(&mut exec);
    without_per_start(&mut forked);
    for facts in [&exec, &forked] {
        assert_eq!(facts["no_new_privs"], serde_json::json!(["1"]));
        assert_eq!(
            facts["read_outside"], "PermissionError",
            "Landlock lets it read"
        );
        assert_eq!(
            facts["write_outside"], "PermissionError",
            "Landlock lets it write"
        );
        let rlimits = facts["rlimits"].as_array().unwrap();
        // RLIMIT_NOFILE (7), RLIMIT_NPROC (6), RLIMIT_CPU (0): soft and hard.
        assert_eq!(rlimits[7], serde_json::json!([333, 333]));
        assert_eq!(rlimits[6], serde_json::json!([4321, 4321]));
        // SIGXCPU at the soft limit, SIGKILL a second later.
        assert_eq!(rlimits[0], serde_json::json!([600, 601]));
    }
    for (key, value) in exec.as_object().unwrap() {
        if key != "fds" {
            assert_eq!(
                &forked[key], value,
                "{key} differs between exec'd and forked"
            );
        }
    }
    // Unsandboxed, the same reads and writes are allowed: the refusals are Landlock's.
    let (exec, forked) = exec_d_and_forked(&dir, |zygote| options(&python, zygote)).await;
    for facts in [&exec, &forked] {
        assert_eq!(facts["no_new_privs"], serde_json::json!(["0"]));
        assert_eq!(
            (&facts["read_outside"], &facts["write_outside"]),
            (&"allowed".into(), &"allowed".into())
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_sees_a_forked_plugin_s_true_exit_signal_and_traceback() {
    let root = tempfile::tempdir().unwrap();
    let python = own_venv(root.path());
    let dir = probe_bundle(root.path(), "probe", serde_json::json!({}));
    for zygote in [false, true] {
        let options = options(&python, zygote);
        let (facts, error) = probe(&dir, &options, "exit 0").await;
        assert_eq!(facts["preloaded"], zygote);
        assert!(error.contains("exit status 0"), "{error}");
        let (_, error) = probe(&dir, &options, "signal 11").await;
        assert!(error.contains("killed by signal 11 (SIGSEGV)"), "{error}");
        let (_, error) = probe(&dir, &options, "raise").await;
        assert!(error.contains("exit status 1"), "{error}");
        assert!(error.contains("ValueError: probe raised"), "{error}");
        assert!(error.contains("probe.py\", line"), "{error}");
        assert!(
            !error.contains("plugvisor_zygote"),
            "zygote frames shown: {error}"
        );
        assert!(my_zombies().is_empty(), "zombies: {:?}", my_zombies());
    }
}

/// The zygote's threads and descriptors: one thread, no gRPC socket, epoll
/// or eventfd, nothing but its socket with the host and its log pipes.
fn zygote_of(python: &Path) -> u32 {
    my_zygotes()
        .into_iter()
        .find(|(_, interpreter)| Path::new(interpreter) == python)
        .map(|(pid, _)| pid)
        .expect("the venv's zygote runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_zygote_is_one_thread_without_grpc_state_and_is_replaced_when_it_dies() {
    let logs = captured_logs();
    let root = tempfile::tempdir().unwrap();
    let python = own_venv(root.path());
    let dir = probe_bundle(root.path(), "probe", serde_json::json!({}));
    let options = options(&python, true);
    let (facts, _) = probe(&dir, &options, "exit 0").await;
    assert_eq!(facts["preloaded"], true, "{}", logs.text());
    let zygote = zygote_of(&python);
    let tasks = std::fs::read_dir(format!("/proc/{zygote}/task"))
        .unwrap()
        .count();
    assert_eq!(tasks, 1, "the zygote has threads");
    let fds: Vec<(String, String)> = std::fs::read_dir(format!("/proc/{zygote}/fd"))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let target = std::fs::read_link(e.path()).unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                target.to_string_lossy().into_owned(),
            )
        })
        .collect();
    for (fd, target) in &fds {
        let allowed = match fd.as_str() {
            "0" => target.starts_with("socket:"),
            "1" | "2" => target.starts_with("pipe:"),
            _ => {
                !target.starts_with("socket:")
                    && !target.contains("eventfd")
                    && !target.contains("eventpoll")
            }
        };
        assert!(allowed, "the zygote holds fd {fd} -> {target}");
    }

    // Killed: the next start execs with a warning, the one after forks again.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(zygote as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert!(eventually(Duration::from_secs(5), || !exists(zygote)
        || is_zombie(zygote)));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (facts, _) = probe(&dir, &options, "exit 0").await;
    assert_eq!(facts["preloaded"], false, "exec'd while the zygote is gone");
    assert!(
        logs.text()
            .contains(&format!("the zygote (pid {zygote}) has exited")),
        "no warning"
    );
    let (facts, _) = probe(&dir, &options, "exit 0").await;
    assert_eq!(
        facts["preloaded"],
        true,
        "a new zygote forked it: {}",
        logs.text()
    );
    let new = zygote_of(&python);
    assert_ne!(new, zygote);

    // An upgraded venv: grpc's directory changes, then the interpreter.
    let site = python.parent().unwrap().parent().unwrap().join("lib");
    let lib = std::fs::read_dir(&site)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::write(lib.join("site-packages/grpc/upgraded.txt"), "").unwrap();
    let (facts, _) = probe(&dir, &options, "exit 0").await;
    assert_eq!(facts["preloaded"], true);
    let after_grpc = zygote_of(&python);
    assert_ne!(
        after_grpc, new,
        "the zygote was not replaced after grpc changed"
    );
    assert!(
        eventually(Duration::from_secs(5), || !exists(new)),
        "the stale zygote lives on"
    );
    let real = std::fs::read_link(&python).unwrap();
    std::fs::remove_file(&python).unwrap();
    std::os::unix::fs::symlink(&real, &python).unwrap();
    let (facts, _) = probe(&dir, &options, "exit 0").await;
    assert_eq!(facts["preloaded"], true);
    assert_ne!(
        zygote_of(&python),
        after_grpc,
        "not replaced after the interpreter changed"
    );
    assert!(my_zombies().is_empty(), "zombies: {:?}", my_zombies());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_opts_out_and_the_host_turns_it_off() {
    let root = tempfile::tempdir().unwrap();
    let python = own_venv(root.path());
    let out = probe_bundle(root.path(), "out", serde_json::json!({"zygote": false}));
    let (facts, _) = probe(&out, &options(&python, true), "exit 0").await;
    assert_eq!(facts["preloaded"], false, "server.zygote: false was forked");
    let dir = probe_bundle(root.path(), "inside", serde_json::json!({}));
    let (facts, _) = probe(&dir, &options(&python, false), "exit 0").await;
    assert_eq!(
        facts["preloaded"], false,
        "LaunchOptions::zygote(false) forked"
    );
    assert!(
        my_zygotes().iter().all(|(_, i)| Path::new(i) != python),
        "a zygote was started"
    );
    // The opt-in preload list: the zygote imports it.
    let preloading = probe_bundle(
        root.path(),
        "preloading",
        serde_json::json!({"preload": ["json.decoder", "email.mime.text"]}),
    );
    std::fs::write(
        preloading.join("probe.py"),
        format!("import sys\nassert 'email.mime.text' in sys.modules, 'not preloaded'\n{PROBE}"),
    )
    .unwrap();
    let (facts, error) = probe(&preloading, &options(&python, true), "exit 4").await;
    assert_eq!(facts["preloaded"], true);
    assert!(error.contains("exit status 4"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_class_based_sdk_plugin_runs_forked_and_exec_d() {
    // hello-python (`run(Plugin)`, hooks, host API), with its own venv linked in.
    let example = repo_root().join("examples/plugins/hello-python");
    for zygote in [true, false] {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("hello-python");
        std::fs::create_dir_all(&dir).unwrap();
        for file in ["plugin.json", "plugin.py"] {
            std::fs::copy(example.join(file), dir.join(file)).unwrap();
        }
        std::os::unix::fs::symlink(
            built_artifact("examples/plugins/hello-python/venv"),
            dir.join("venv"),
        )
        .unwrap();
        let launch = LaunchOptions::builder().zygote(zygote).build().unwrap();
        let config = plugvisor::EnvironmentConfig::builder(root.path())
            .launch(launch)
            .data_dir(root.path().join(".data"))
            .build()
            .unwrap();
        let env = plugvisor::Environment::new(config).unwrap();
        let status = env.activate("hello-python").await.unwrap();
        assert_eq!(status.state, plugvisor::PluginState::Running);
        let pid = status.pid.unwrap();
        // A forked plugin's argv strings are NUL-padded (the zygote's were longer).
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
        assert_eq!(cmdline.ends_with(b"\0\0"), zygote, "{cmdline:?}");
        // The venv is linked: its zygote runs from the venv's real path.
        let venv = std::fs::canonicalize(dir.join("venv/bin")).unwrap();
        let shared = my_zygotes()
            .iter()
            .any(|(_, i)| Path::new(i) == venv.join("python"));
        assert!(shared || !zygote, "no zygote for {}", venv.display());
        env.perform_health_check("hello-python").await.unwrap();
        env.shutdown().await;
        assert_no_leftovers(pid);
    }
}
