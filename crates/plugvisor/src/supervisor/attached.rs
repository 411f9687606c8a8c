//! A plugin someone else started (go-plugin's reattach): where it listens,
//! and the watch that tells when it has gone away. plugvisor never signals,
//! kills or reaps such a process.

use std::os::fd::{FromRawFd, OwnedFd};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::unix::AsyncFd;
use tokio::sync::watch;

use crate::handshake::{Handshake, Network};
use crate::transport::PluginChannel;

/// Where an attached plugin listens, and its pid if it was given: `unix:/path`
/// (or an absolute path), or `tcp:HOST:PORT` (or `HOST:PORT`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AttachTarget {
    /// The address as given (`unix:/tmp/plugin.sock`, `127.0.0.1:4321`).
    pub address: String,
    /// The plugin's process, if known: its exit is then seen at once, and
    /// the host API accepts only that process's group.
    pub pid: Option<u32>,
}

impl AttachTarget {
    /// Checks the address's form (a loopback check comes at the dial).
    pub fn new(address: impl Into<String>, pid: Option<u32>) -> Result<AttachTarget, String> {
        let target = AttachTarget {
            address: address.into(),
            pid,
        };
        target.handshake()?;
        Ok(target)
    }

    /// The handshake a plugin at this address would have printed.
    pub(crate) fn handshake(&self) -> Result<Handshake, String> {
        let text = self.address.trim();
        let (network, address) = if let Some(path) = text.strip_prefix("unix:") {
            (Network::Unix, path)
        } else if let Some(address) = text.strip_prefix("tcp:") {
            (Network::Tcp, address)
        } else if text.starts_with('/') {
            (Network::Unix, text)
        } else {
            (Network::Tcp, text)
        };
        match network {
            Network::Unix if !address.starts_with('/') => {
                return Err(format!(
                    "{text:?}: a unix socket path must be absolute (unix:/path/to/plugin.sock)"
                ));
            }
            Network::Tcp if address.parse::<std::net::SocketAddr>().is_err() => {
                return Err(format!(
                    "{text:?} is not unix:/path or tcp:IP:PORT (such as 127.0.0.1:4321)"
                ));
            }
            _ => {}
        }
        Ok(Handshake {
            app_version: 1,
            network,
            address: address.to_string(),
            server_cert: None,
            multiplexed: false,
        })
    }
}

impl std::fmt::Display for AttachTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.pid {
            Some(pid) => write!(f, "{} (pid {pid})", self.address),
            None => f.write_str(&self.address),
        }
    }
}

/// The watch over an attached plugin: `gone` says why once it has gone away.
#[derive(Debug)]
pub(crate) struct Attached {
    pub(crate) pid: Option<u32>,
    gone: watch::Receiver<Option<String>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Attached {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How often a plugin without GRPCStdio and without a known pid is checked
/// for being gone.
const GONE_POLL: Duration = Duration::from_secs(1);

impl Attached {
    /// Opens a pidfd on `pid` (which must exist), so its exit is seen.
    pub(crate) fn open_pid(pid: u32) -> std::io::Result<OwnedFd> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor.
        let fd = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, pid as i32, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: the descriptor was just opened and is owned by nobody else.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
    }

    /// Watches the plugin: through its pidfd when the pid is known, else
    /// through its GRPCStdio stream (which lives as long as the plugin's
    /// server and its connection), else, for a plugin without one, by
    /// dialling it every second. Logs its GRPCStdio lines.
    pub(crate) fn watch(
        pid: Option<(u32, OwnedFd)>,
        channel: PluginChannel,
        address: String,
    ) -> Attached {
        let (tell, gone) = watch::channel(None);
        let pid_number = pid.as_ref().map(|(pid, _)| *pid);
        let task = tokio::spawn(async move {
            let why = match pid {
                Some((pid, fd)) => {
                    // In this task, so that a detach (which aborts it) ends
                    // the stream too.
                    let stdio = async {
                        let _ = super::consume_stdio_stream(channel).await;
                        std::future::pending::<()>().await
                    };
                    let exit = async {
                        // SAFETY: an OwnedFd keeps its descriptor open while it lives.
                        match unsafe { AsyncFd::register(fd) }.map_err(|e| e.into_parts().1) {
                            Ok(fd) => {
                                let _ = fd.readable().await;
                                format!("its process {pid} exited")
                            }
                            Err(error) => format!("its process {pid} cannot be watched: {error}"),
                        }
                    };
                    tokio::select! {
                        () = stdio => unreachable!("pending"),
                        why = exit => why,
                    }
                }
                None => match super::consume_stdio_stream(channel.clone()).await {
                    Err(status) if status.code() == tonic::Code::Unimplemented => {
                        dial_until_refused(channel, &address).await
                    }
                    _ => format!("its connection at {address} closed"),
                },
            };
            let _ = tell.send(Some(why));
        });
        Attached {
            pid: pid_number,
            gone,
            task,
        }
    }

    /// Why it went away, once it has.
    pub(crate) fn gone_now(&self) -> Option<String> {
        self.gone.borrow().clone()
    }

    /// Resolves when it has gone away, with why.
    pub(crate) async fn gone(&self) -> String {
        let mut gone = self.gone.clone();
        match gone.wait_for(Option::is_some).await {
            Ok(why) => why.clone().unwrap_or_default(),
            Err(_) => "its watch ended".to_string(),
        }
    }
}

/// A plugin without GRPCStdio: gone once a health check finds nobody
/// listening (a check that only times out may be a paused debugger).
async fn dial_until_refused(channel: PluginChannel, address: &str) -> String {
    loop {
        tokio::time::sleep(GONE_POLL).await;
        let check = super::health_check::check(channel.clone(), super::HEALTH_SERVICE);
        if let Ok(Err(status)) = tokio::time::timeout(GONE_POLL, check).await
            && status.code() == tonic::Code::Unavailable
        {
            return format!("nothing answers at {address} any more");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_unix_and_tcp() {
        let unix = AttachTarget::new("unix:/tmp/p.sock", None).unwrap();
        let handshake = unix.handshake().unwrap();
        assert_eq!(
            (handshake.network, handshake.address.as_str()),
            (Network::Unix, "/tmp/p.sock")
        );
        let bare = AttachTarget::new("/tmp/p.sock", Some(7)).unwrap();
        assert_eq!(bare.handshake().unwrap().network, Network::Unix);
        assert_eq!(bare.to_string(), "/tmp/p.sock (pid 7)");
        for tcp in ["tcp:127.0.0.1:4321", "127.0.0.1:4321", "[::1]:80"] {
            let handshake = AttachTarget::new(tcp, None).unwrap().handshake().unwrap();
            assert_eq!(handshake.network, Network::Tcp, "{tcp}");
        }
        assert!(
            AttachTarget::new("unix:relative.sock", None)
                .unwrap_err()
                .contains("absolute")
        );
        assert!(
            AttachTarget::new("localhost:80", None)
                .unwrap_err()
                .contains("tcp:IP:PORT")
        );
    }
}
