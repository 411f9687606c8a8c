//! One zygote process: started with a venv's interpreter, its socket on its
//! stdin, watched like a plugin process (pidfd, parent-death signal, its own
//! process group), its output relayed to the host's log.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncBufReadExt;

use super::ZygoteError;
use super::wire::{Answer, Channel, Ready, Request};
use crate::process::{PluginProcess, SpawnSpec};

/// The zygote's code, written to a private file for its interpreter to import.
const SCRIPT: &str = include_str!("zygote.py");

/// Room in the zygote's argv and environment strings for what a forked
/// plugin writes over them (`/proc/PID/cmdline` and `/proc/PID/environ`).
const ARGV_ROOM: usize = 128;
const ENV_ROOM: usize = 60_000;

pub(crate) struct Zygote {
    process: PluginProcess,
    channel: Channel,
    pub(crate) package_dirs: Vec<PathBuf>,
}

impl Zygote {
    /// Starts one and waits until it has done its imports.
    pub(crate) async fn start(
        interpreter: &Path,
        exec_fd: Option<Arc<OwnedFd>>,
        preload: &[String],
        timeout: Duration,
    ) -> Result<Zygote, ZygoteError> {
        let dir = tempfile::Builder::new()
            .prefix("plugvisor-zygote-")
            .tempdir()
            .map_err(ZygoteError::Io)?;
        std::fs::write(dir.path().join("plugvisor_zygote.py"), SCRIPT).map_err(ZygoteError::Io)?;
        let bootstrap = format!(
            "import sys; sys.path[0] = {dir:?}; import plugvisor_zygote as z; del sys.path[0]; z.run(z.main())",
            dir = dir.path().to_string_lossy()
        );
        let mut args = vec![
            "-c".into(),
            bootstrap.into(),
            format!("--room={}", ".".repeat(ARGV_ROOM)).into(),
        ];
        args.extend(preload.iter().map(Into::into));
        let (channel, theirs) = super::wire::socketpair().map_err(ZygoteError::Io)?;
        let spec = SpawnSpec {
            program: interpreter.to_path_buf(),
            args,
            working_dir: PathBuf::from("/"),
            env: vec![("PLUGVISOR_ZYGOTE_ROOM".into(), ".".repeat(ENV_ROOM))],
            exec_fd,
            landlock: None,
            limits: crate::ResourceLimits::default(),
            cgroup: None,
            stdin: Some(Arc::new(theirs)),
        };
        let (process, pipes) = PluginProcess::spawn(&spec).map_err(ZygoteError::Io)?;
        let pid = process.pid();
        relay(pid, pipes.stdout);
        relay(pid, pipes.stderr);
        let ready = tokio::select! {
            ready = tokio::time::timeout(timeout, channel.recv()) => ready,
            status = process.exited() => {
                return Err(ZygoteError::Start(format!("it exited ({}) before it was ready", crate::process::describe_exit(status))));
            }
        };
        drop(dir); // imported: the file is no longer needed
        let message = match ready {
            Ok(Ok(message)) if !message.is_empty() => message,
            Ok(Ok(_)) => return Err(ZygoteError::Start("it closed its socket".into())),
            Ok(Err(error)) => return Err(ZygoteError::Io(error)),
            Err(_) => return Err(ZygoteError::Start(format!("not ready within {timeout:?}"))),
        };
        let ready: Ready = serde_json::from_slice(&message)
            .map_err(|e| ZygoteError::Start(format!("its first message: {e}")))?;
        if !ready.ready {
            return Err(ZygoteError::Start("not ready".into()));
        }
        tracing::debug!(pid, interpreter = %interpreter.display(), "zygote ready");
        Ok(Zygote {
            process,
            channel,
            package_dirs: ready.package_dirs,
        })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.process.pid()
    }

    pub(crate) fn alive(&self) -> bool {
        self.process.exit_status().is_none()
    }

    /// Sends one request with its descriptors; its answer.
    pub(crate) async fn request(
        &self,
        request: &Request,
        fds: &[&OwnedFd],
        timeout: Duration,
    ) -> Result<Answer, ZygoteError> {
        let message = serde_json::to_vec(request).expect("a request serializes");
        let raw: Vec<_> = fds.iter().map(|fd| fd.as_raw_fd()).collect();
        let exchange = async {
            self.channel.send(&message, &raw).await?;
            self.channel.recv().await
        };
        let answer = tokio::select! {
            answer = tokio::time::timeout(timeout, exchange) => answer,
            status = self.process.exited() => {
                return Err(ZygoteError::Gone(crate::process::describe_exit(status)));
            }
        };
        match answer {
            Ok(Ok(message)) if message.is_empty() => {
                Err(ZygoteError::Gone("it closed its socket".into()))
            }
            Ok(Ok(message)) => serde_json::from_slice(&message)
                .map_err(|e| ZygoteError::Gone(format!("its answer: {e}"))),
            Ok(Err(error)) => Err(ZygoteError::Io(error)),
            Err(_) => Err(ZygoteError::Gone(format!("no answer within {timeout:?}"))),
        }
    }
}

/// The zygote's own output goes to the host's log.
fn relay(pid: u32, pipe: tokio::net::unix::pipe::Receiver) {
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(pipe).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            tracing::warn!(zygote = pid, "{line}");
        }
    });
}
