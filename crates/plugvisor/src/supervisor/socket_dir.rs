//! The private directory a plugin's unix sockets live in.
//!
//! Its name carries the host's pid, so a host that was SIGKILLed (and could
//! not remove its directories) has them removed by the next host to start.

use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::Once;

use tempfile::TempDir;

const PREFIX: &str = "plugvisor-";

/// A fresh 0700 directory under the temporary directory.
pub(super) fn create() -> io::Result<TempDir> {
    static SWEEP: Once = Once::new();
    let root = std::env::temp_dir();
    SWEEP.call_once(|| remove_stale(&root));
    tempfile::Builder::new()
        .prefix(&format!("{PREFIX}{}-", std::process::id()))
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir_in(root)
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
