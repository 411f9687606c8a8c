//! A cgroup v2 of each plugin's own, where one can be made, to enforce its
//! memory and process limits in place of setrlimit: memory.max (resident
//! memory and page cache, not address space) and pids.max (the plugin's own
//! processes and threads, not its user's).
//!
//! That needs a delegated subtree: a cgroup2 mount holding the host's cgroup
//! (the `0::` line of /proc/self/cgroup), with the memory and pids
//! controllers enabled in the `cgroup.subtree_control` of a directory the host
//! may create cgroups in. Because a non-root cgroup with processes of its own
//! cannot hand controllers to children, that directory is the parent of the
//! host's cgroup (systemd's `Delegate=yes` with the host moved into a leaf
//! such as `.../host`), or the host's cgroup if it is the root.
//!
//! A plugin's cgroup is made before its spawn; the spawned child writes
//! itself into its `cgroup.procs` before exec (`process/spawn.rs`); the
//! cgroup is killed and removed when dropped, after the plugin is reaped;
//! `memory.events`' `oom_kill` tells a kill at memory.max. The parsers are
//! pure and unit-tested. The machine this was written on has cgroup v1 for
//! memory and a cgroup2 mount with only hugetlb: the detection says so and
//! everything falls back to setrlimit; the cgroup path itself has never run
//! against a real delegated cgroup.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

/// What the detection found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CgroupSupport {
    /// Plugin cgroups could be made in this directory.
    Delegated(PathBuf),
    /// Why not, for people.
    Unavailable(String),
}

/// The controllers the limits would need.
const NEEDED: [&str; 2] = ["memory", "pids"];

/// The detection for this host, made once.
pub fn cgroup_support() -> &'static CgroupSupport {
    static SUPPORT: std::sync::OnceLock<CgroupSupport> = std::sync::OnceLock::new();
    SUPPORT.get_or_init(|| {
        let read = |path: &Path| std::fs::read_to_string(path).ok();
        let writable =
            |path: &Path| nix::unistd::access(path, nix::unistd::AccessFlags::W_OK).is_ok();
        match (
            read(Path::new("/proc/self/cgroup")),
            read(Path::new("/proc/self/mountinfo")),
        ) {
            (Some(cgroup), Some(mountinfo)) => detect(&cgroup, &mountinfo, read, writable),
            _ => CgroupSupport::Unavailable(
                "/proc/self/cgroup or /proc/self/mountinfo cannot be read".into(),
            ),
        }
    })
}

/// One plugin process's cgroup: made with its limits, joined by the child
/// before exec, killed and removed when dropped.
#[derive(Debug)]
pub(crate) struct PluginCgroup {
    dir: PathBuf,
    /// `cgroup.procs`, open for the child to write itself into.
    procs: OwnedFd,
}

static CGROUPS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl PluginCgroup {
    /// Makes a cgroup for plugin `id` under the delegated directory, with
    /// memory.max and pids.max from `limits`; `None` when no cgroup can be
    /// used or neither limit is set (the limits then go to setrlimit).
    pub(crate) fn for_limits(id: &str, limits: &crate::ResourceLimits) -> Option<PluginCgroup> {
        if limits.memory.is_none() && limits.processes.is_none() {
            return None;
        }
        let CgroupSupport::Delegated(parent) = cgroup_support() else {
            return None;
        };
        let n = CGROUPS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = parent.join(format!("plugvisor.{}.{n}.{id}", std::process::id()));
        match PluginCgroup::create(dir.clone(), limits) {
            Ok(cgroup) => Some(cgroup),
            Err(error) => {
                tracing::warn!(plugin = id, %error, dir = %dir.display(), "cannot make the plugin's cgroup; its limits are set with setrlimit");
                let _ = std::fs::remove_dir(&dir);
                None
            }
        }
    }

    fn create(dir: PathBuf, limits: &crate::ResourceLimits) -> std::io::Result<PluginCgroup> {
        std::fs::create_dir(&dir)?;
        if let Some(bytes) = limits.memory {
            std::fs::write(dir.join("memory.max"), bytes.to_string())?;
            // No swap either, or memory.max only moves pages to swap.
            let _ = std::fs::write(dir.join("memory.swap.max"), "0");
        }
        if let Some(count) = limits.processes {
            std::fs::write(dir.join("pids.max"), count.to_string())?;
        }
        let procs = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.join("cgroup.procs"))?
            .into();
        Ok(PluginCgroup { dir, procs })
    }

    /// The descriptor the child writes `0` to, to join the cgroup.
    pub(crate) fn procs(&self) -> &OwnedFd {
        &self.procs
    }

    /// How many processes the kernel killed at memory.max.
    pub(crate) fn oom_kills(&self) -> u64 {
        std::fs::read_to_string(self.dir.join("memory.events"))
            .map(|text| oom_kills(&text))
            .unwrap_or(0)
    }
}

impl Drop for PluginCgroup {
    /// Kills what is left in it (cgroup.kill, Linux 5.14) and removes it,
    /// retrying while its last processes exit.
    fn drop(&mut self) {
        let _ = std::fs::write(self.dir.join("cgroup.kill"), "1");
        if std::fs::remove_dir(&self.dir).is_ok() {
            return;
        }
        let dir = self.dir.clone();
        let retry = async move {
            for _ in 0..50 {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                if std::fs::remove_dir(&dir).is_ok() {
                    return;
                }
            }
            tracing::warn!(dir = %dir.display(), "cannot remove a plugin's cgroup");
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(retry);
        }
    }
}

/// `oom_kill N` of a memory.events file.
fn oom_kills(memory_events: &str) -> u64 {
    memory_events
        .lines()
        .find_map(|line| line.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// The host's cgroup v2 path: the `0::PATH` line.
fn unified_path(proc_self_cgroup: &str) -> Option<&str> {
    proc_self_cgroup
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
}

/// The first cgroup2 mount: (its root within the hierarchy, its mount point).
fn cgroup2_mount(mountinfo: &str) -> Option<(PathBuf, PathBuf)> {
    mountinfo.lines().find_map(|line| {
        // ID PARENT MAJ:MIN ROOT MOUNT_POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER
        let (before, after) = line.split_once(" - ")?;
        if after.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        let mut fields = before.split_whitespace();
        let root = fields.nth(3)?;
        let point = fields.next()?;
        Some((
            PathBuf::from(unescape(root)),
            PathBuf::from(unescape(point)),
        ))
    })
}

/// mountinfo writes space, tab, newline and backslash as octal escapes.
fn unescape(field: &str) -> String {
    field
        .replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

fn missing<'a>(listed: &str, needed: &[&'a str]) -> Vec<&'a str> {
    let have: Vec<&str> = listed.split_whitespace().collect();
    needed
        .iter()
        .filter(|c| !have.contains(c))
        .copied()
        .collect()
}

/// The decision, from the two /proc files and two ways to look at the tree.
fn detect(
    proc_self_cgroup: &str,
    mountinfo: &str,
    read: impl Fn(&Path) -> Option<String>,
    writable: impl Fn(&Path) -> bool,
) -> CgroupSupport {
    let no = |why: String| CgroupSupport::Unavailable(why);
    let Some(own) = unified_path(proc_self_cgroup) else {
        return no("the host is in no cgroup v2 hierarchy (cgroup v1 only)".into());
    };
    let Some((root, point)) = cgroup2_mount(mountinfo) else {
        return no("no cgroup2 file system is mounted".into());
    };
    let Ok(relative) = Path::new(own).strip_prefix(&root) else {
        return no(format!(
            "the host's cgroup {own} is outside the mounted cgroup2 tree ({})",
            root.display()
        ));
    };
    let own_dir = match relative.as_os_str().is_empty() {
        true => point.clone(),
        false => point.join(relative),
    };
    let controllers = read(&own_dir.join("cgroup.controllers")).unwrap_or_default();
    let lacking = missing(&controllers, &NEEDED);
    if !lacking.is_empty() {
        return no(format!(
            "the host's cgroup v2 ({}) offers {} but not {} (cgroup.controllers)",
            own_dir.display(),
            match controllers.trim() {
                "" => "no controller",
                listed => listed,
            },
            lacking.join(", ")
        ));
    }
    // Children of the host's own cgroup need its subtree_control, which a
    // cgroup with processes cannot set unless it is the root: its parent is
    // where plugin cgroups go, beside the host's.
    let at_root = relative.as_os_str().is_empty() && root == Path::new("/");
    let parent = match at_root {
        true => own_dir.clone(),
        false => match own_dir.parent() {
            Some(parent) if parent.starts_with(&point) => parent.to_path_buf(),
            _ => {
                return no(format!(
                    "{} has no parent in the cgroup2 mount",
                    own_dir.display()
                ));
            }
        },
    };
    let subtree = read(&parent.join("cgroup.subtree_control")).unwrap_or_default();
    let lacking = missing(&subtree, &NEEDED);
    if !lacking.is_empty() {
        return no(format!(
            "{} is not enabled in {} (delegate it, e.g. systemd's Delegate=yes, with the host in a leaf cgroup of its own)",
            lacking.join(", "),
            parent.join("cgroup.subtree_control").display()
        ));
    }
    if !writable(&parent) {
        return no(format!(
            "{} is not writable by the host (not delegated)",
            parent.display()
        ));
    }
    CgroupSupport::Delegated(parent)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// This machine: cgroup v1 for memory, a cgroup2 mount with hugetlb only.
    const V1_CGROUP: &str = "9:name=systemd:/\n4:memory:/process_api/f54\n1:cpu:/\n0::/\n";
    const HYBRID_MOUNTS: &str = "\
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const UNIFIED_MOUNTS: &str = "\
30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate
";

    fn tree(
        files: &[(&str, &str)],
        writable: &'static [&'static str],
    ) -> (impl Fn(&Path) -> Option<String>, impl Fn(&Path) -> bool) {
        let files: HashMap<PathBuf, String> = files
            .iter()
            .map(|(p, t)| (PathBuf::from(p), t.to_string()))
            .collect();
        (
            move |p: &Path| files.get(p).cloned(),
            move |p: &Path| writable.iter().any(|w| Path::new(w) == p),
        )
    }

    #[test]
    fn memory_events_tell_oom_kills() {
        let events = "low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(oom_kills(events), 1);
        assert_eq!(oom_kills("low 0\n"), 0);
    }

    #[test]
    fn parses_proc_self_cgroup_and_mountinfo() {
        assert_eq!(unified_path(V1_CGROUP), Some("/"));
        assert_eq!(unified_path("4:memory:/x\n"), None);
        assert_eq!(
            cgroup2_mount(HYBRID_MOUNTS),
            Some(("/".into(), "/sys/fs/cgroup/unified".into()))
        );
        assert_eq!(
            cgroup2_mount("35 31 0:32 / /m rw - cgroup cgroup rw,memory\n"),
            None
        );
        assert_eq!(
            cgroup2_mount("1 2 0:1 /a\\040b /mnt/c\\040g rw shared:1 - cgroup2 none rw\n"),
            Some(("/a b".into(), "/mnt/c g".into()))
        );
    }

    #[test]
    fn this_machines_hybrid_layout_has_no_usable_cgroup() {
        let (read, writable) = tree(
            &[("/sys/fs/cgroup/unified/cgroup.controllers", "hugetlb\n")],
            &["/sys/fs/cgroup/unified"],
        );
        let found = detect(V1_CGROUP, HYBRID_MOUNTS, read, writable);
        assert_eq!(
            found,
            CgroupSupport::Unavailable(
                "the host's cgroup v2 (/sys/fs/cgroup/unified) offers hugetlb but not memory, pids (cgroup.controllers)".into()
            )
        );
        let (read, writable) = tree(&[], &[]);
        assert!(matches!(
            detect("4:memory:/x\n", HYBRID_MOUNTS, &read, &writable),
            CgroupSupport::Unavailable(why) if why.contains("cgroup v1 only")
        ));
        assert!(matches!(
            detect("0::/\n", "", &read, &writable),
            CgroupSupport::Unavailable(why) if why.contains("no cgroup2")
        ));
    }

    #[test]
    fn a_delegated_subtree_is_the_parent_of_the_hosts_leaf() {
        let cgroup = "0::/system.slice/plugvisor.service/host\n";
        let service = "/sys/fs/cgroup/system.slice/plugvisor.service";
        let files = [
            (
                "/sys/fs/cgroup/system.slice/plugvisor.service/host/cgroup.controllers",
                "cpu io memory pids\n",
            ),
            (
                "/sys/fs/cgroup/system.slice/plugvisor.service/cgroup.subtree_control",
                "memory pids\n",
            ),
        ];
        let (read, writable) = tree(&files, &["/sys/fs/cgroup/system.slice/plugvisor.service"]);
        assert_eq!(
            detect(cgroup, UNIFIED_MOUNTS, read, writable),
            CgroupSupport::Delegated(service.into())
        );
        // The same, not writable: not delegated.
        let (read, writable) = tree(&files, &[]);
        assert!(matches!(
            detect(cgroup, UNIFIED_MOUNTS, read, writable),
            CgroupSupport::Unavailable(why) if why.contains("not writable")
        ));
        // Controllers offered but not enabled for children.
        let (read, writable) = tree(
            &files[..1],
            &["/sys/fs/cgroup/system.slice/plugvisor.service"],
        );
        assert!(matches!(
            detect(cgroup, UNIFIED_MOUNTS, read, writable),
            CgroupSupport::Unavailable(why) if why.contains("memory, pids is not enabled in")
        ));
    }

    #[test]
    fn the_root_cgroup_hands_out_its_own_controllers() {
        let files = [
            ("/sys/fs/cgroup/cgroup.controllers", "memory pids\n"),
            ("/sys/fs/cgroup/cgroup.subtree_control", "memory pids\n"),
        ];
        let (read, writable) = tree(&files, &["/sys/fs/cgroup"]);
        assert_eq!(
            detect("0::/\n", UNIFIED_MOUNTS, read, writable),
            CgroupSupport::Delegated("/sys/fs/cgroup".into())
        );
    }
}
