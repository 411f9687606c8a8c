//! The private directory a plugin's unix sockets live in.
//!
//! Plugins that run at the same time share one 0700 directory of the host:
//! on ext4 a directory made and removed for each start cost more than the
//! rest of the start's file-system work together (each new inode skips
//! those deleted in the last seconds, so a host restarting a thousand
//! plugins paid seconds of kernel time). A sandboxed plugin, which may
//! write where its sockets live, gets a directory of its own inside it.
//!
//! The directory's name carries the host's pid, so a host that was
//! SIGKILLed (and could not remove it) has it removed by the next host.

use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Once, Weak};

use tempfile::TempDir;

const PREFIX: &str = "plugvisor-";

/// The host's directory, removed (with whatever plugins left in it) when
/// the last plugin using it is gone.
#[derive(Debug)]
struct HostDir(TempDir);

/// Where one start's sockets go (`PLUGIN_UNIX_SOCKET_DIR`). Dropping it
/// removes the files named with [`SocketDir::owns`], or its own directory.
#[derive(Debug)]
pub(crate) struct SocketDir {
    path: PathBuf,
    /// A sandboxed plugin's own directory.
    own: Option<TempDir>,
    files: Vec<PathBuf>,
    _host: Arc<HostDir>,
}

impl SocketDir {
    /// The shared directory, or with `own`, a fresh directory inside it.
    pub(crate) fn create(own: bool) -> io::Result<SocketDir> {
        let host = host_dir()?;
        let own = match own {
            true => Some(private_dir("plugin-", host.0.path())?),
            false => None,
        };
        Ok(SocketDir {
            path: own.as_ref().map_or(host.0.path(), |d| d.path()).to_owned(),
            own,
            files: Vec::new(),
            _host: host,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// `file` (the plugin's socket) goes with this start, if it is here.
    pub(crate) fn owns(&mut self, file: &Path) {
        if self.own.is_none() && file.parent() == Some(&self.path) {
            self.files.push(file.to_owned());
        }
    }
}

impl Drop for SocketDir {
    fn drop(&mut self) {
        for file in &self.files {
            let _ = std::fs::remove_file(file);
        }
        if let Some(own) = self.own.take() {
            // Empty once its sockets are gone: one rmdir, not a walk of it.
            let path = own.keep();
            let removed = std::fs::remove_dir(&path).or_else(|error| match error.kind() {
                io::ErrorKind::NotFound => Ok(()),
                _ => std::fs::remove_dir_all(&path),
            });
            if let Err(error) = removed {
                tracing::warn!(path = %self.path.display(), %error, "cannot remove a plugin's socket directory");
            }
        }
    }
}

/// The host's directory in use, or a new one under the temporary directory.
fn host_dir() -> io::Result<Arc<HostDir>> {
    static CURRENT: Mutex<Weak<HostDir>> = Mutex::new(Weak::new());
    static SWEEP: Once = Once::new();
    let mut current = CURRENT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(dir) = current.upgrade() {
        return Ok(dir);
    }
    let root = std::env::temp_dir();
    SWEEP.call_once(|| remove_stale(&root));
    let dir = Arc::new(HostDir(private_dir(
        &format!("{PREFIX}{}-", std::process::id()),
        &root,
    )?));
    *current = Arc::downgrade(&dir);
    Ok(dir)
}

fn private_dir(prefix: &str, parent: &Path) -> io::Result<TempDir> {
    tempfile::Builder::new()
        .prefix(prefix)
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir_in(parent)
}

/// Removes our directories whose host process is gone.
fn remove_stale(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    let uid = nix::unistd::getuid().as_raw();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(host_pid) else {
            continue;
        };
        let ours = entry.metadata().is_ok_and(|m| m.is_dir() && m.uid() == uid);
        if ours && !alive(pid) {
            let path = entry.path();
            match std::fs::remove_dir_all(&path) {
                Ok(()) => {
                    tracing::debug!(path = %path.display(), "removed a dead host's socket directory")
                }
                Err(e) => {
                    tracing::debug!(path = %path.display(), "cannot remove a dead host's socket directory: {e}")
                }
            }
        }
    }
}

/// The host pid in a name `plugvisor-<pid>-<random>`.
fn host_pid(name: &str) -> Option<i32> {
    let (pid, random) = name.strip_prefix(PREFIX)?.split_once('-')?;
    (!random.is_empty()).then_some(())?;
    pid.parse().ok().filter(|pid| *pid > 0)
}

fn alive(pid: i32) -> bool {
    // EPERM means the pid exists under someone else: not ours to judge.
    !matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
        Err(nix::errno::Errno::ESRCH)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_host_pid() {
        assert_eq!(host_pid("plugvisor-1234-abcDEF"), Some(1234));
        assert_eq!(host_pid("plugvisor-abc"), None);
        assert_eq!(host_pid("plugvisor-12-"), None);
        assert_eq!(host_pid("plugvisor-0-x"), None);
        assert_eq!(host_pid("other-12-x"), None);
    }

    #[test]
    fn plugins_share_the_hosts_directory_until_the_last_is_gone() {
        let mut first = SocketDir::create(false).unwrap();
        let second = SocketDir::create(false).unwrap();
        let shared = first.path().to_owned();
        assert_eq!(second.path(), shared);
        let mode = std::fs::metadata(&shared).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        let own = SocketDir::create(true).unwrap();
        assert_eq!(own.path().parent(), Some(shared.as_path()));
        let socket = shared.join("plugin-a.sock");
        std::fs::write(&socket, b"").unwrap();
        first.owns(&socket);
        first.owns(Path::new("/elsewhere/not-ours.sock"));
        drop(first);
        assert!(!socket.exists(), "the start's socket went with it");
        let own_path = own.path().to_owned();
        drop(own);
        assert!(!own_path.exists());
        assert!(shared.exists(), "a plugin still uses it");
        drop(second);
        assert!(
            !shared.exists(),
            "the last plugin took the directory with it"
        );
    }

    #[test]
    fn a_dead_hosts_directory_goes_and_a_live_ones_stays() {
        let root = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let stale = root.path().join(format!("{PREFIX}{dead}-xyz"));
        let live = root
            .path()
            .join(format!("{PREFIX}{}-xyz", std::process::id()));
        for dir in [&stale, &live] {
            std::fs::create_dir(dir).unwrap();
            std::fs::write(dir.join("plugin.sock"), b"").unwrap();
        }
        remove_stale(root.path());
        assert!(!stale.exists());
        assert!(live.exists());
    }
}
