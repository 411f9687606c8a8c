//! The host <-> zygote messages: one JSON object per SOCK_SEQPACKET message,
//! a request carrying the plugin's descriptors with SCM_RIGHTS.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use nix::sys::socket::{ControlMessage, MsgFlags, recv, sendmsg};
use serde::{Deserialize, Serialize};
use tokio::io::unix::AsyncFd;

/// What a forked plugin must be made into.
#[derive(Debug, Serialize)]
pub(crate) struct Request {
    /// `[interpreter, script]`, as the exec would have had them.
    pub(crate) argv: Vec<String>,
    /// Its whole environment, in order.
    pub(crate) env: Vec<(String, String)>,
    pub(crate) cwd: String,
    pub(crate) umask: u32,
    /// Every resource limit: (resource, soft, hard), -1 for unlimited.
    pub(crate) rlimits: Vec<(i32, i64, i64)>,
    /// The names of the descriptors sent with the request, in order:
    /// `stdin`, `stdout`, `stderr`, then `landlock` and `cgroup` if any.
    pub(crate) fds: Vec<&'static str>,
    pub(crate) host_pid: u32,
}

/// The zygote's first message, once its imports are done.
#[derive(Debug, Deserialize)]
pub(crate) struct Ready {
    pub(crate) ready: bool,
    /// The directories of the preloaded packages (grpc, grpc_health, the SDK).
    pub(crate) package_dirs: Vec<std::path::PathBuf>,
}

/// The answer to a request: the plugin's pid, or why there is none (a pid
/// with an error is a child that failed its set-up and exited).
#[derive(Debug, Deserialize)]
pub(crate) struct Answer {
    pub(crate) pid: Option<u32>,
    pub(crate) error: Option<String>,
}

/// The host's end of the socketpair.
pub(crate) struct Channel(AsyncFd<OwnedFd>);

/// A socketpair: (the host's end, non-blocking; the zygote's end).
pub(crate) fn socketpair() -> io::Result<(Channel, OwnedFd)> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType};
    let (host, zygote) = nix::sys::socket::socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?;
    nix::fcntl::fcntl(
        &host,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    )?;
    // SAFETY: an OwnedFd keeps its one descriptor open for as long as it lives.
    let host = unsafe { AsyncFd::register(host) }.map_err(|e| e.into_parts().1)?;
    Ok((Channel(host), zygote))
}

impl Channel {
    pub(crate) async fn send(&self, message: &[u8], fds: &[RawFd]) -> io::Result<()> {
        let iov = [io::IoSlice::new(message)];
        let rights = [ControlMessage::ScmRights(fds)];
        let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &rights };
        loop {
            let mut ready = self.0.writable().await?;
            match sendmsg::<()>(
                self.0.as_raw_fd(),
                &iov,
                cmsgs,
                MsgFlags::MSG_NOSIGNAL,
                None,
            ) {
                Ok(_) => return Ok(()),
                Err(nix::errno::Errno::EAGAIN) => ready.clear_ready(),
                Err(errno) => return Err(errno.into()),
            }
        }
    }

    /// The next message; an empty one when the zygote has closed its end.
    pub(crate) async fn recv(&self) -> io::Result<Vec<u8>> {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let mut ready = self.0.readable().await?;
            match recv(self.0.as_raw_fd(), &mut buffer, MsgFlags::empty()) {
                Ok(n) => {
                    buffer.truncate(n);
                    return Ok(buffer);
                }
                Err(nix::errno::Errno::EAGAIN) => ready.clear_ready(),
                Err(errno) => return Err(errno.into()),
            }
        }
    }
}
