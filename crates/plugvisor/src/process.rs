//! One plugin OS process: spawned in its own process group with a parent-death
//! signal, reaped by a watcher task, signalled as a group.

use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::{ChildStderr, ChildStdout, Command};
use tokio::sync::watch;

/// What to run and with which extra environment.
#[derive(Debug, Clone)]
pub struct SpawnSpec {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub working_dir: PathBuf,
    pub env: Vec<(String, String)>,
}

/// The environment variable that marks every process a plugin starts, so its
/// descendants can be found even after they leave its process group.
pub const INSTANCE_ENV: &str = "PLUGVISOR_PLUGIN_INSTANCE";

static INSTANCES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A running (or exited) plugin process. Dropping it SIGKILLs the group and
/// tagged descendants if the process has not been seen to exit, so a cancelled
/// start leaks nothing.
#[derive(Debug)]
pub struct PluginProcess {
    pid: u32,
    exit: watch::Receiver<Option<ExitStatus>>,
    /// `INSTANCE_ENV=value`, as it appears in /proc/PID/environ.
    tag: String,
}

/// The pipes of a freshly spawned process.
pub struct ProcessPipes {
    pub stdout: ChildStdout,
    pub stderr: ChildStderr,
}

impl PluginProcess {
    /// Spawns the process. Must run on a thread that outlives the plugin (any
    /// tokio worker or `block_on` thread): Linux delivers the parent-death
    /// signal when the spawning *thread* exits.
    pub fn spawn(spec: &SpawnSpec) -> std::io::Result<(PluginProcess, ProcessPipes)> {
        let host_pid = std::process::id();
        let instance = INSTANCES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tag_value = format!("{host_pid}.{instance}");
        let mut command = Command::new(&spec.program);
        command
            .args(&spec.args)
            .current_dir(&spec.working_dir)
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .env(INSTANCE_ENV, &tag_value)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        // SAFETY: the closure runs between fork and exec and only makes
        // async-signal-safe system calls (prctl, getppid).
        unsafe {
            command.pre_exec(move || {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
                // The host may have died before prctl took effect.
                if nix::unistd::getppid().as_raw() as u32 != host_pid {
                    return Err(std::io::Error::other("host exited during spawn"));
                }
                Ok(())
            });
        }
        let mut child = command.spawn()?;
        let pid = child.id().expect("a just-spawned child has a pid");
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        let (exit_tx, exit) = watch::channel(None);
        tokio::spawn(async move {
            let status = match child.wait().await {
                Ok(status) => status,
                Err(error) => {
                    tracing::error!(pid, %error, "waiting for plugin process failed");
                    ExitStatus::from_raw(-1)
                }
            };
            let _ = exit_tx.send(Some(status));
        });
        let tag = format!("{INSTANCE_ENV}={tag_value}");
        Ok((
            PluginProcess { pid, exit, tag },
            ProcessPipes { stdout, stderr },
        ))
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The exit status, once the process has been reaped.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        *self.exit.borrow()
    }

    /// Resolves when the process has exited and been reaped.
    pub async fn exited(&self) -> ExitStatus {
        let mut exit = self.exit.clone();
        match exit.wait_for(Option::is_some).await {
            Ok(status) => status.expect("wait_for returned Some"),
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

    /// SIGKILLs every process that carries this plugin's instance tag: the
    /// plugin and all its descendants, even daemons that left its process
    /// group with setsid. (A descendant that scrubs its environment escapes.)
    /// Returns the pids signalled.
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
            self.signal_group(Signal::SIGKILL);
            crate::sweep::kill_tagged_in_background(&self.tag);
        }
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
