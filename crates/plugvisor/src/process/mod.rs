//! One plugin OS process: spawned in its own process group with a parent-death
//! signal (`spawn.rs`), or forked by a zygote and adopted (`adopt`), reaped
//! by a watcher task on its pidfd, signalled as a group.

mod spawn;

use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::ExitStatus;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::unix::AsyncFd;
use tokio::net::unix::pipe;
use tokio::sync::watch;

/// What to run and with which extra environment.
#[derive(Debug, Clone)]
pub struct SpawnSpec {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub working_dir: PathBuf,
    pub env: Vec<(String, String)>,
    /// The verified `program`, opened: exec'd through this descriptor, so
    /// that what runs is what was hashed (see `integrity.rs`).
    pub exec_fd: Option<std::sync::Arc<std::os::fd::OwnedFd>>,
    /// A Landlock ruleset the child enforces on itself before the exec.
    pub landlock: Option<std::sync::Arc<std::os::fd::OwnedFd>>,
    /// Set with setrlimit in the child, before its exec, but for those its
    /// cgroup takes.
    pub limits: crate::ResourceLimits,
    /// The plugin's own cgroup, which the child joins before its exec.
    pub cgroup: Option<std::sync::Arc<crate::cgroup::PluginCgroup>>,
    /// The child's stdin instead of /dev/null (a zygote's socket).
    pub stdin: Option<std::sync::Arc<std::os::fd::OwnedFd>>,
}

/// The setrlimit values of a spawn: (resource, soft, hard).
pub(crate) fn rlimits_of(spec: &SpawnSpec) -> Vec<(nix::libc::c_int, u64, u64)> {
    crate::limits::rlimits(&spec.limits, spec.cgroup.is_some())
        .into_iter()
        .map(|(kind, soft, hard)| (resource(kind), soft, hard))
        .collect()
}

/// A new instance tag: `(name, value)`.
pub(crate) fn new_instance_tag() -> (String, String) {
    let host_pid = std::process::id();
    let instance = INSTANCES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    (INSTANCE_ENV.to_string(), format!("{host_pid}.{instance}"))
}

/// The setrlimit resource of a limit.
fn resource(kind: crate::LimitKind) -> nix::libc::c_int {
    use nix::libc;
    (match kind {
        crate::LimitKind::Memory => libc::RLIMIT_AS,
        crate::LimitKind::OpenFiles => libc::RLIMIT_NOFILE,
        crate::LimitKind::Processes => libc::RLIMIT_NPROC,
        crate::LimitKind::CpuSeconds => libc::RLIMIT_CPU,
    }) as libc::c_int
}

/// The environment variable that marks every process a plugin starts, so its
/// descendants can be found even after they leave its process group.
pub const INSTANCE_ENV: &str = "PLUGVISOR_PLUGIN_INSTANCE";

static INSTANCES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The plugin processes of this host that have not been reaped yet. A sweep
/// for what a stopped plugin left behind skips them without opening
/// anything, and never reaps them: their pidfds do.
static LIVE: std::sync::Mutex<std::collections::BTreeSet<u32>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

fn live() -> std::sync::MutexGuard<'static, std::collections::BTreeSet<u32>> {
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

/// The pids of this host's plugin processes that have not been reaped.
pub(crate) fn live_plugin_pids() -> std::collections::BTreeSet<u32> {
    live().clone()
}

/// A running (or exited) plugin process. Dropping it SIGKILLs the group and
/// tagged descendants if the process has not been seen to exit, so a cancelled
/// start leaks nothing.
#[derive(Debug)]
pub struct PluginProcess {
    pid: u32,
    /// The exit, and the CPU time the process had used.
    exit: watch::Receiver<Option<(ExitStatus, std::time::Duration)>>,
    /// `INSTANCE_ENV=value`, as it appears in /proc/PID/environ.
    tag: String,
    /// Set when it is dropped unreaped: its watcher sweeps after the reap.
    dropped: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// The pipes of a freshly spawned process.
pub struct ProcessPipes {
    pub stdout: pipe::Receiver,
    pub stderr: pipe::Receiver,
}

impl PluginProcess {
    /// Spawns the process. Must run on a thread that outlives the plugin (any
    /// tokio worker or `block_on` thread): Linux delivers the parent-death
    /// signal when the spawning *thread* exits.
    pub fn spawn(spec: &SpawnSpec) -> std::io::Result<(PluginProcess, ProcessPipes)> {
        crate::sweep::adopt_orphans();
        let (_, tag_value) = new_instance_tag();
        let mut env: Vec<(OsString, OsString)> = spec
            .env
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect();
        env.push((INSTANCE_ENV.into(), tag_value.clone().into()));
        let exec_fd = spec.exec_fd.as_deref();
        let rlimits = rlimits_of(spec);
        // No orphan reaping between the clone and the pid's entry in LIVE.
        let _claim = crate::sweep::claim();
        let spawned = spawn::spawn(
            &spec.program,
            exec_fd,
            &spec.args,
            &spec.working_dir,
            &env,
            &spawn::Confinement {
                rlimits: &rlimits,
                cgroup_procs: spec.cgroup.as_deref().map(|cgroup| cgroup.procs()),
                landlock: spec.landlock.as_deref(),
            },
            spec.stdin.as_deref(),
        )?;
        live().insert(spawned.pid);
        let tag = format!("{INSTANCE_ENV}={tag_value}");
        Self::watch(
            spawned.pid,
            spawned.pidfd,
            spawned.stdout,
            spawned.stderr,
            tag,
        )
    }

    /// Takes over a child that a zygote forked and that was re-parented to
    /// this host: from here it is watched, reaped and signalled exactly like
    /// a spawned one. `tag` is its `INSTANCE_ENV=value`. The caller holds a
    /// `sweep::claim()` from before the fork.
    pub(crate) fn adopt(
        pid: u32,
        stdout: std::os::fd::OwnedFd,
        stderr: std::os::fd::OwnedFd,
        tag: String,
    ) -> std::io::Result<(PluginProcess, ProcessPipes)> {
        let pidfd = pidfd_open(pid)?;
        live().insert(pid);
        Self::watch(pid, pidfd, stdout, stderr, tag)
    }

    fn watch(
        pid: u32,
        pidfd: std::os::fd::OwnedFd,
        stdout: std::os::fd::OwnedFd,
        stderr: std::os::fd::OwnedFd,
        tag: String,
    ) -> std::io::Result<(PluginProcess, ProcessPipes)> {
        let stdout = pipe::Receiver::from_owned_fd(stdout)?;
        let stderr = pipe::Receiver::from_owned_fd(stderr)?;
        // SAFETY: an OwnedFd keeps its one descriptor open for as long as it lives.
        let pidfd = unsafe { AsyncFd::register(pidfd) }.map_err(|e| e.into_parts().1)?;
        let (exit_tx, exit) = watch::channel(None);
        let dropped = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sweep_when_reaped = (tag.clone(), dropped.clone());
        tokio::spawn(async move {
            let status = match reap(&pidfd).await {
                Ok(status) => status,
                Err(error) => {
                    tracing::error!(pid, %error, "waiting for plugin process failed");
                    (ExitStatus::from_raw(-1), std::time::Duration::ZERO)
                }
            };
            live().remove(&pid);
            // Dropped while it ran: its setsid daemons became the host's
            // children only now.
            let (tag, dropped) = sweep_when_reaped;
            if dropped.load(std::sync::atomic::Ordering::SeqCst) {
                crate::sweep::kill_tagged_in_background(&tag);
            }
            let _ = exit_tx.send(Some(status));
        });
        Ok((
            PluginProcess {
                pid,
                exit,
                tag,
                dropped,
            },
            ProcessPipes { stdout, stderr },
        ))
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The exit status, once the process has been reaped.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.exit.borrow().map(|(status, _)| status)
    }

    /// The user and system CPU time it used, once it has been reaped.
    pub fn cpu_time(&self) -> Option<std::time::Duration> {
        self.exit.borrow().map(|(_, cpu)| cpu)
    }

    /// Resolves when the process has exited and been reaped.
    pub async fn exited(&self) -> ExitStatus {
        let mut exit = self.exit.clone();
        match exit.wait_for(Option::is_some).await {
            Ok(exit) => exit.expect("wait_for returned Some").0,
            // The watcher ended without a status: only when the runtime is shutting down.
            Err(_) => ExitStatus::from_raw(-1),
        }
    }

    /// Sends `signal` to the whole process group. The group outlives its leader
    /// while any member lives, so this also reaches leftover grandchildren.
    pub fn signal_group(&self, signal: Signal) {
        match killpg(Pid::from_raw(self.pid as i32), signal) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
            Err(error) => {
                tracing::warn!(pid = self.pid, %error, ?signal, "cannot signal plugin process group")
            }
        }
    }

    /// SIGKILLs every orphan that carries this plugin's instance tag, once
    /// the plugin is reaped: its descendants, even daemons that left its
    /// process group with setsid, are the host's children then (see
    /// `sweep.rs`). (A descendant that scrubs its environment escapes, and so
    /// do the descendants it still parents.) Returns the pids signalled.
    pub async fn kill_tagged(&self) -> Vec<i32> {
        let killed = crate::sweep::kill_tagged(&self.tag).await;
        if !killed.is_empty() {
            tracing::warn!(pids = ?killed, "killed processes the plugin left behind");
        }
        killed
    }

    /// The same, in the next sweep pass, without waiting for it.
    pub fn kill_tagged_later(&self) {
        crate::sweep::kill_tagged_in_background(&self.tag);
    }
}

impl Drop for PluginProcess {
    fn drop(&mut self) {
        if self.exit_status().is_none() {
            self.dropped
                .store(true, std::sync::atomic::Ordering::SeqCst);
            self.signal_group(Signal::SIGKILL);
            crate::sweep::kill_tagged_in_background(&self.tag);
        }
    }
}

/// A runtime on a thread of its own that lives as long as the host: for what
/// must outlive the caller's runtime (the orphan reaper, the zygotes, whose
/// parent-death signal is tied to the thread that spawned them).
pub(crate) fn background() -> &'static tokio::runtime::Handle {
    static HANDLE: std::sync::OnceLock<tokio::runtime::Handle> = std::sync::OnceLock::new();
    HANDLE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("plugvisor-background")
            .build()
            .expect("a runtime for plugvisor's background tasks");
        let handle = runtime.handle().clone();
        std::thread::Builder::new()
            .name("plugvisor-background".into())
            .spawn(move || runtime.block_on(std::future::pending::<()>()))
            .expect("a thread for plugvisor's background tasks");
        handle
    })
}

/// A pidfd for `pid` (close-on-exec).
pub(crate) fn pidfd_open(pid: u32) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor.
    let fd = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, pid as nix::libc::pid_t, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the descriptor was just returned to us and is owned by nobody else.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) })
}

/// Waits until the process exits (its pidfd turns readable), then reaps it;
/// with its CPU time (the kernel's rusage of the reaped process, which a
/// CPU time limit is told by).
async fn reap(
    pidfd: &AsyncFd<std::os::fd::OwnedFd>,
) -> std::io::Result<(ExitStatus, std::time::Duration)> {
    use std::os::fd::AsRawFd;
    loop {
        let mut ready = pidfd.readable().await?;
        // SAFETY: siginfo_t and rusage are plain data that waitid fills; the
        // pidfd is ours. The raw call: glibc's waitid has no rusage argument.
        let mut info: nix::libc::siginfo_t = unsafe { std::mem::zeroed() };
        let mut usage: nix::libc::rusage = unsafe { std::mem::zeroed() };
        let reaped = unsafe {
            nix::libc::syscall(
                nix::libc::SYS_waitid,
                nix::libc::P_PIDFD,
                pidfd.as_raw_fd() as nix::libc::id_t,
                &mut info as *mut nix::libc::siginfo_t,
                nix::libc::WEXITED | nix::libc::WNOHANG,
                &mut usage as *mut nix::libc::rusage,
            )
        };
        if reaped != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: waitid succeeded; si_pid is 0 when the child has not exited yet.
        if unsafe { info.si_pid() } == 0 {
            ready.clear_ready();
            continue;
        }
        let time = |t: nix::libc::timeval| {
            std::time::Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000)
        };
        let cpu = time(usage.ru_utime) + time(usage.ru_stime);
        return Ok((ExitStatus::from_raw(spawn::wait_status(&info)), cpu));
    }
}

/// `exit status 3` or `killed by signal 9 (SIGKILL)`.
pub fn describe_exit(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exit status {code}");
    }
    match status.signal() {
        Some(number) => match Signal::try_from(number) {
            Ok(signal) => format!("killed by signal {number} ({signal})"),
            Err(_) => format!("killed by signal {number}"),
        },
        None => "unknown exit".to_string(),
    }
}
