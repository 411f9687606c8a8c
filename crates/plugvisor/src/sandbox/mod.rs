//! What a sandboxed plugin may reach: its policy (pure data, from the bundle,
//! its interpreter and the manifest's `server.sandbox` section) and the
//! Landlock ruleset made of it at each start (`landlock.rs`).

mod landlock;
mod request;

use std::path::{Path, PathBuf};

use serde::Serialize;

pub(crate) use self::landlock::Ruleset;
pub use self::landlock::{SandboxError, SandboxStatus, landlock_abi, require_landlock};
pub use self::request::SandboxRequest;

/// Files of the system every program may need: libraries, certificates, the
/// dynamic loader's cache, time zones, name resolution, /proc of itself.
const SYSTEM_READ: &[&str] = &[
    "/usr",
    "/lib",
    "/lib64",
    "/lib32",
    "/bin",
    "/sbin",
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/pki",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    "/etc/timezone",
    "/etc/hosts",
    "/etc/host.conf",
    "/etc/resolv.conf",
    "/etc/nsswitch.conf",
    "/etc/gai.conf",
    "/etc/services",
    "/etc/protocols",
    "/etc/passwd",
    "/etc/group",
    "/etc/mime.types",
    "/etc/os-release",
    // Landlock's ptrace rule keeps /proc/PID of processes outside the
    // sandbox (the host, other plugins) out of reach.
    "/proc",
    // The Go runtime reads its CPU and memory limits here.
    "/sys/fs/cgroup",
    "/sys/devices/system/cpu",
    "/sys/kernel/mm/transparent_hugepage",
];

/// Devices a program may open for reading and writing.
const DEVICES: &[&str] = &[
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
];

/// What a sandboxed plugin may reach, apart from the directories made for
/// each start (its socket directory, a private temporary directory inside
/// it, and its data directory), which it may write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct SandboxPolicy {
    /// Read and execute, each with everything beneath it: the bundle, the
    /// interpreter and its venv, the system's files, what the manifest asks.
    pub read: Vec<PathBuf>,
    /// Read and write: what the manifest asks for, and the devices.
    pub write: Vec<PathBuf>,
    /// TCP ports the plugin may bind, besides an ephemeral port chosen by
    /// the kernel (bind to port 0).
    pub bind_ports: Vec<u16>,
    /// TCP ports the plugin may connect to (on any address).
    pub connect_ports: Vec<u16>,
}

impl SandboxPolicy {
    /// The policy of a plugin in `bundle_dir`, run by `program` (its
    /// executable, or its Python interpreter).
    pub(crate) fn new(
        bundle_dir: &Path,
        program: &Path,
        python: bool,
        request: &SandboxRequest,
    ) -> SandboxPolicy {
        let mut read = vec![bundle_dir.to_path_buf()];
        if python {
            read.extend(python_paths(program));
        } else if !program.starts_with(bundle_dir) {
            read.push(program.to_path_buf());
        }
        read.extend(SYSTEM_READ.iter().map(PathBuf::from));
        read.extend(request.read.iter().map(|p| bundle_dir.join(p)));
        let mut write: Vec<PathBuf> = DEVICES.iter().map(PathBuf::from).collect();
        write.extend(request.write.iter().map(|p| bundle_dir.join(p)));
        let mut policy = SandboxPolicy {
            read,
            write,
            bind_ports: request.bind_ports.clone(),
            connect_ports: request.connect_ports.clone(),
        };
        policy.read.dedup();
        policy.bind_ports.sort_unstable();
        policy.bind_ports.dedup();
        policy.connect_ports.sort_unstable();
        policy.connect_ports.dedup();
        policy
    }
}

/// The directories a Python interpreter reads: its venv, the installation
/// the venv was made from, and directories that the venv's `.pth` files add
/// to `sys.path` (editable installs).
fn python_paths(interpreter: &Path) -> Vec<PathBuf> {
    let mut paths = Vec::new();
    // bin/python → the venv (or installation) it is in.
    let prefix = |p: &Path| p.parent().and_then(Path::parent).map(Path::to_path_buf);
    if let Some(venv) = prefix(interpreter) {
        paths.push(venv.clone());
        for pth in pth_files(&venv) {
            paths.extend(pth_directories(&pth));
        }
        if let Some(home) = venv_home(&venv) {
            paths.extend(prefix(&home.join("python")));
        }
    }
    if let Ok(real) = std::fs::canonicalize(interpreter) {
        paths.extend(prefix(&real));
    }
    paths.dedup();
    paths
}

/// `home` of a venv's pyvenv.cfg: the base installation's bin directory.
fn venv_home(venv: &Path) -> Option<PathBuf> {
    let cfg = std::fs::read_to_string(venv.join("pyvenv.cfg")).ok()?;
    cfg.lines().find_map(|line| {
        let (key, value) = line.split_once('=')?;
        (key.trim() == "home").then(|| PathBuf::from(value.trim()))
    })
}

fn pth_files(venv: &Path) -> Vec<PathBuf> {
    let Ok(libs) = std::fs::read_dir(venv.join("lib")) else {
        return Vec::new();
    };
    libs.flatten()
        .filter_map(|lib| std::fs::read_dir(lib.path().join("site-packages")).ok())
        .flat_map(|entries| entries.flatten().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "pth"))
        .collect()
}

/// The absolute directories a `.pth` file names (not its `import` lines).
fn pth_directories(pth: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string(pth).unwrap_or_default();
    text.lines()
        .map(str::trim)
        .filter(|line| line.starts_with('/'))
        .map(PathBuf::from)
        .filter(|p| p.is_dir())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_native_plugin_reads_its_bundle_and_the_system_and_writes_nothing_of_its_own() {
        let request = SandboxRequest::default();
        let policy = SandboxPolicy::new(
            Path::new("/plugins/a"),
            Path::new("/plugins/a/bin/plugin"),
            false,
            &request,
        );
        assert_eq!(policy.read[0], Path::new("/plugins/a"));
        assert!(policy.read.contains(&PathBuf::from("/usr")));
        assert!(!policy.read.iter().any(|p| p.starts_with("/plugins/b")));
        assert!(policy.write.iter().all(|p| p.starts_with("/dev")));
        assert!(policy.bind_ports.is_empty() && policy.connect_ports.is_empty());
    }

    #[test]
    fn a_python_plugin_reads_its_venv_and_what_its_pth_files_add() {
        let root = tempfile::tempdir().unwrap();
        let venv = root.path().join("venv");
        let site = venv.join("lib/python3.11/site-packages");
        std::fs::create_dir_all(&site).unwrap();
        std::fs::create_dir_all(venv.join("bin")).unwrap();
        let editable = root.path().join("src");
        std::fs::create_dir_all(&editable).unwrap();
        std::fs::write(
            site.join("_editable.pth"),
            format!(
                "{}\nimport something\n/does/not/exist\n",
                editable.display()
            ),
        )
        .unwrap();
        std::fs::write(venv.join("pyvenv.cfg"), "home = /opt/python/bin\n").unwrap();
        let paths = python_paths(&venv.join("bin/python"));
        assert!(paths.contains(&venv), "{paths:?}");
        assert!(paths.contains(&editable), "{paths:?}");
        assert!(paths.contains(&PathBuf::from("/opt/python")), "{paths:?}");
        assert!(!paths.contains(&PathBuf::from("/does/not/exist")));
    }

    #[test]
    fn what_the_manifest_asks_for_is_added_relative_to_the_bundle() {
        let request: SandboxRequest = serde_json::from_value(serde_json::json!({
            "read": ["/srv/shared", "assets"],
            "write": ["/var/cache/a"],
            "bind_ports": [8080, 8080],
            "connect_ports": [5432],
        }))
        .unwrap();
        let policy = SandboxPolicy::new(
            Path::new("/plugins/a"),
            Path::new("/plugins/a/plugin"),
            false,
            &request,
        );
        assert!(policy.read.contains(&PathBuf::from("/srv/shared")));
        assert!(policy.read.contains(&PathBuf::from("/plugins/a/assets")));
        assert!(policy.write.contains(&PathBuf::from("/var/cache/a")));
        assert_eq!(policy.bind_ports, [8080]);
        assert_eq!(policy.connect_ports, [5432]);
    }
}
