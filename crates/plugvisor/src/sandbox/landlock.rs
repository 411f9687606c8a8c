//! The Landlock ruleset of one start, made in the host before the spawn;
//! the child only enforces it (no_new_privs, then landlock_restrict_self),
//! since it may make nothing but system calls until it execs.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use landlock::{
    ABI, Access, AccessFs, AccessNet, BitFlags, CompatLevel, Compatible, NetPort, PathBeneath,
    PathFd, RulesetAttr, RulesetCreatedAttr, Scope,
};
use nix::libc;
use serde::{Deserialize, Serialize};

use super::SandboxPolicy;

/// The newest Landlock ABI this code knows how to use.
const NEWEST_KNOWN_ABI: i32 = 7;

/// A plugin cannot be sandboxed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
#[allow(missing_docs)] // each variant is its message
pub enum SandboxError {
    #[error(
        "the sandbox needs Landlock, which this kernel {0}; run without --sandbox, or on Linux 5.13 or later with landlock in the lsm= boot parameter"
    )]
    Unsupported(&'static str),
    #[error("cannot make the Landlock ruleset: {0}")]
    Ruleset(#[from] landlock::RulesetError),
}

/// The Landlock ABI of the running kernel, if it has Landlock enabled.
pub fn landlock_abi() -> Result<u32, SandboxError> {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_long = 1;
    // SAFETY: with a null attribute, zero size and the VERSION flag, the
    // system call only returns the ABI version.
    let version = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    match version {
        v if v > 0 => Ok(v as u32),
        _ => Err(SandboxError::Unsupported(
            match std::io::Error::last_os_error().raw_os_error() {
                Some(libc::EOPNOTSUPP) => "has but does not enable",
                _ => "does not have",
            },
        )),
    }
}

/// What the sandbox enforces on this kernel; an error without Landlock, so
/// that asking for a sandbox never silently runs plugins without one.
pub fn require_landlock() -> Result<SandboxStatus, SandboxError> {
    landlock_abi().map(SandboxStatus::for_abi)
}

/// What a sandboxed plugin's Landlock domain covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SandboxStatus {
    /// The Landlock ABI used.
    pub abi: u32,
    /// TCP bind and connect are limited too (ABI 4 and later).
    pub tcp: bool,
    /// Signals to, and abstract unix sockets of, processes outside the
    /// sandbox are refused (ABI 6 and later).
    pub scoped: bool,
}

impl SandboxStatus {
    fn for_abi(abi: u32) -> SandboxStatus {
        let abi = abi.min(NEWEST_KNOWN_ABI as u32);
        SandboxStatus {
            abi,
            tcp: abi >= 4,
            scoped: abi >= 6,
        }
    }
}

impl std::fmt::Display for SandboxStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "landlock v{} (files", self.abi)?;
        if self.tcp {
            f.write_str(", tcp")?;
        }
        if self.scoped {
            f.write_str(", signals")?;
        }
        f.write_str(")")
    }
}

/// A created Landlock ruleset, ready for the child to enforce.
pub(crate) struct Ruleset {
    pub(crate) fd: OwnedFd,
    pub(crate) status: SandboxStatus,
}

impl Ruleset {
    /// The ruleset of `policy`, with the start's own directories (`writable`:
    /// the socket directory, the temporary and the data directory) writable.
    pub(crate) fn build(
        policy: &SandboxPolicy,
        writable: &[&Path],
    ) -> Result<Ruleset, SandboxError> {
        let status = require_landlock()?;
        let abi = ABI::from(status.abi as i32);
        let all = AccessFs::from_all(abi);
        let read = AccessFs::from_read(abi);
        let mut ruleset = landlock::Ruleset::default()
            .set_compatibility(CompatLevel::HardRequirement)
            .handle_access(all)?;
        if status.tcp {
            ruleset = ruleset.handle_access(AccessNet::BindTcp | AccessNet::ConnectTcp)?;
        }
        if status.scoped {
            ruleset = ruleset.scope(Scope::AbstractUnixSocket | Scope::Signal)?;
        }
        let mut created = ruleset.create()?;
        let writable = writable.iter().map(|p| p.to_path_buf());
        let rules = (policy.read.iter().map(|p| (p.clone(), read)))
            .chain(policy.write.iter().map(|p| (p.clone(), all)))
            .chain(writable.map(|p| (p, all)));
        for (path, access) in rules {
            if let Some(rule) = path_rule(&path, access, abi) {
                created = created.add_rule(rule)?;
            }
        }
        if status.tcp {
            // Port 0: an ephemeral port the kernel picks, never a chosen one.
            for port in std::iter::once(0).chain(policy.bind_ports.iter().copied()) {
                created = created.add_rule(NetPort::new(port, AccessNet::BindTcp))?;
            }
            for &port in &policy.connect_ports {
                created = created.add_rule(NetPort::new(port, AccessNet::ConnectTcp))?;
            }
        }
        let fd: Option<OwnedFd> = created.into();
        let fd = fd.ok_or(SandboxError::Unsupported("does not have"))?;
        Ok(Ruleset { fd, status })
    }
}

/// A rule for `path` and what beneath it, with only the rights that fit a
/// file when it is one; `None` when it does not exist (a system path this
/// machine lacks).
fn path_rule(path: &PathBuf, access: BitFlags<AccessFs>, abi: ABI) -> Option<PathBeneath<PathFd>> {
    let fd = PathFd::new(path).ok()?;
    let access = match std::fs::metadata(path) {
        Ok(meta) if !meta.is_dir() => access & AccessFs::from_file(abi),
        Ok(_) => access,
        Err(_) => return None,
    };
    Some(PathBeneath::new(fd, access))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_names_what_the_abi_covers() {
        assert_eq!(SandboxStatus::for_abi(3).to_string(), "landlock v3 (files)");
        assert_eq!(
            SandboxStatus::for_abi(4).to_string(),
            "landlock v4 (files, tcp)"
        );
        assert_eq!(
            SandboxStatus::for_abi(9).to_string(),
            "landlock v7 (files, tcp, signals)"
        );
    }

    #[test]
    fn the_missing_kernel_feature_is_said_plainly() {
        let message = SandboxError::Unsupported("does not have").to_string();
        assert!(message.contains("needs Landlock, which this kernel does not have"));
        assert!(message.contains("run without --sandbox"));
    }
}
