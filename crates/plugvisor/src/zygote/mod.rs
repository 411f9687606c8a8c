//! Python plugins forked from a warm interpreter: one zygote per venv
//! (`pool.rs`, `process.rs`, the Python side in `zygote.py`), which has
//! imported grpcio, the health service and the SDK. A forked plugin is made
//! what an exec'd one would be (its environment, argv, working directory,
//! limits, umask, signals, descriptors, its sandbox last) and re-parented to
//! the host, which adopts it as if it had spawned it. Whenever a fork cannot
//! be had, the start execs as before, with one warning.

mod fingerprint;
mod pool;
mod process;
mod wire;

use std::os::fd::OwnedFd;
use std::sync::Arc;

use std::time::Duration;

use crate::process::{INSTANCE_ENV, PluginProcess, ProcessPipes, SpawnSpec};

/// Why a start could not be forked (it execs instead).
#[derive(Debug, thiserror::Error)]
pub(crate) enum ZygoteError {
    #[error("the zygote did not start: {0}")]
    Start(String),
    #[error("this interpreter's zygote failed to start before; exec'ing")]
    Unfit,
    #[error("the zygote is gone: {0}")]
    Gone(String),
    #[error("the forked plugin failed its set-up: {0}")]
    Setup(String),
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Io(std::io::Error),
}

/// How long a zygote has to answer one request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a new zygote has for its imports (the plugin's start timeout
/// runs from its fork, after that).
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Forks the plugin `spec` describes from its interpreter's zygote (started
/// now if need be, through `spec.exec_fd`, the verified interpreter).
pub(crate) async fn fork(
    spec: &SpawnSpec,
    preload: &[String],
) -> Result<(PluginProcess, ProcessPipes), ZygoteError> {
    let (tag_name, tag_value) = crate::process::new_instance_tag();
    let request = request(spec, (&tag_name, &tag_value))?;
    let devnull: OwnedFd = std::fs::File::open("/dev/null")
        .map_err(ZygoteError::Io)?
        .into();
    let (stdout_read, stdout_write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| ZygoteError::Io(e.into()))?;
    let (stderr_read, stderr_write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| ZygoteError::Io(e.into()))?;
    let fds = Descriptors {
        stdio: [devnull, stdout_write, stderr_write],
        landlock: spec.landlock.clone(),
        cgroup: spec.cgroup.clone(),
    };
    let interpreter = venv_interpreter(&spec.program);
    let exec_fd = spec.exec_fd.clone();
    let preload = preload.to_vec();
    // No orphan is reaped until the plugin is among the live ones.
    let _claim = crate::sweep::claim();
    // Zygotes live on the background runtime, which outlives this one.
    let answer = crate::process::background()
        .spawn(async move {
            pool::with_zygote(
                &interpreter,
                exec_fd,
                &preload,
                READY_TIMEOUT,
                async |zygote| {
                    let mut sent: Vec<&OwnedFd> = fds.stdio.iter().collect();
                    sent.extend(fds.landlock.as_deref());
                    sent.extend(fds.cgroup.as_deref().map(|c| c.procs()));
                    zygote.request(&request, &sent, REQUEST_TIMEOUT).await
                },
            )
            .await
        })
        .await
        .map_err(|e| ZygoteError::Io(std::io::Error::other(e)))??;
    let tag = format!("{INSTANCE_ENV}={tag_value}");
    match (answer.pid, answer.error) {
        (Some(pid), None) => {
            PluginProcess::adopt(pid, stdout_read, stderr_read, tag).map_err(ZygoteError::Io)
        }
        (Some(pid), Some(error)) => {
            // Exited or about to: adopted, so that it is killed and reaped.
            drop(PluginProcess::adopt(pid, stdout_read, stderr_read, tag));
            Err(ZygoteError::Setup(error))
        }
        (None, error) => Err(ZygoteError::Refused(
            error.unwrap_or_else(|| "no pid in its answer".into()),
        )),
    }
}

/// The interpreter as its venv's real directory names it: bundles that link
/// the same venv (`venv -> ../shared/venv`) share one zygote. (Its forked
/// plugins' `sys.executable` is that path, not the link's.)
fn venv_interpreter(program: &std::path::Path) -> std::path::PathBuf {
    let dir = program
        .parent()
        .and_then(|dir| std::fs::canonicalize(dir).ok());
    match (dir, program.file_name()) {
        (Some(dir), Some(name)) => dir.join(name),
        _ => program.to_path_buf(),
    }
}

/// What a request sends with SCM_RIGHTS.
struct Descriptors {
    stdio: [OwnedFd; 3],
    landlock: Option<Arc<OwnedFd>>,
    cgroup: Option<Arc<crate::cgroup::PluginCgroup>>,
}

/// The request for `spec`: everything the exec would have given it.
fn request(spec: &SpawnSpec, tag: (&str, &str)) -> Result<wire::Request, ZygoteError> {
    let text = |what: &str, s: &std::ffi::OsStr| {
        s.to_str()
            .map(str::to_string)
            .ok_or_else(|| ZygoteError::Refused(format!("{what} {s:?} is not UTF-8")))
    };
    let mut env = Vec::new();
    for (key, value) in std::env::vars_os() {
        let key = text("the variable", &key)?;
        if key != tag.0 && !spec.env.iter().any(|(k, _)| *k == key) {
            env.push((key, text("a variable's value", &value)?));
        }
    }
    env.extend(spec.env.iter().cloned());
    env.push((tag.0.to_string(), tag.1.to_string()));
    let mut argv = vec![text("the interpreter", spec.program.as_os_str())?];
    for arg in &spec.args {
        argv.push(text("the argument", arg)?);
    }
    let mut fds = vec!["stdin", "stdout", "stderr"];
    if spec.landlock.is_some() {
        fds.push("landlock");
    }
    if spec.cgroup.is_some() {
        fds.push("cgroup");
    }
    Ok(wire::Request {
        argv,
        env,
        cwd: text("the working directory", spec.working_dir.as_os_str())?,
        umask: umask(),
        rlimits: rlimits(spec),
        fds,
        host_pid: std::process::id(),
    })
}

/// The host's umask, which an exec'd plugin inherits (read, not set: umask(2)
/// would change it for the host's other threads meanwhile).
fn umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("Umask:"))?;
            u32::from_str_radix(line.split_whitespace().nth(1)?, 8).ok()
        })
        .unwrap_or(0o022)
}

/// The host's limits, which an exec'd plugin inherits, with the plugin's own
/// in their place.
fn rlimits(spec: &SpawnSpec) -> Vec<(i32, i64, i64)> {
    let signed = |value: u64| if value == u64::MAX { -1 } else { value as i64 };
    let own = crate::process::rlimits_of(spec);
    // RLIMIT_AS .. RLIMIT_RTTIME: every limit Linux has.
    (0..16)
        .filter_map(|resource| {
            if let Some(&(_, soft, hard)) = own.iter().find(|(r, _, _)| *r == resource) {
                return Some((resource, signed(soft), signed(hard)));
            }
            let mut limit = nix::libc::rlimit64 {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: getrlimit64 fills the struct for a valid resource.
            let got = unsafe { nix::libc::getrlimit64(resource as _, &mut limit) };
            (got == 0).then(|| (resource, signed(limit.rlim_cur), signed(limit.rlim_max)))
        })
        .collect()
}
