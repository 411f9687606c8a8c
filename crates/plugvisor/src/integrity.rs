//! Integrity pins: the sha256 a plugin's files must have, from the lock file
//! or the manifest's `server.sha256`, checked right before every spawn.
//!
//! The check hashes an open descriptor, and a native executable is then
//! exec'd through that same descriptor (`execveat(fd, "", AT_EMPTY_PATH)`),
//! so a file renamed over the path between the check and the exec is not what
//! runs. What the descriptor cannot cover: a `#!` script and a Python plugin's
//! script are opened again by their interpreter, by path, a few milliseconds
//! later; and a writer that rewrites the same file in place between the hash
//! and the exec (only the file's owner can) is not caught.

use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::digest::Sha256;
use crate::launch::LaunchPlan;
use crate::lock::{LockedInterpreter, LockedPlugin};

/// Where an expected hash comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum PinSource {
    /// This lock file.
    Lock(PathBuf),
    /// The manifest's `server.sha256`.
    Manifest,
}

impl std::fmt::Display for PinSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PinSource::Lock(path) => write!(f, "the lock file {}", path.display()),
            PinSource::Manifest => f.write_str("plugin.json's server.sha256"),
        }
    }
}

impl PinSource {
    fn next_step(&self) -> &'static str {
        match self {
            PinSource::Lock(_) => {
                "if the new file is trusted, pin it again with `plugvisor lock` on the plugins directory"
            }
            PinSource::Manifest => {
                "if the new file is trusted, update server.sha256 in plugin.json"
            }
        }
    }
}

/// One file a start must find unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Pin {
    /// The file as the operator knows it: bundle-relative, or the interpreter's path.
    pub file: String,
    /// The file that is opened and hashed.
    pub path: PathBuf,
    /// What its content must hash to.
    pub sha256: Sha256,
    /// Who says so.
    pub source: PinSource,
}

/// A pinned file that does not match, or cannot be read to find out.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
#[allow(missing_docs)] // each variant is its message
pub enum IntegrityError {
    #[error("{file} does not match {pinned_by}: expected sha256 {expected}, found {actual}; the plugin is not started; {}", pinned_by.next_step())]
    Mismatch {
        file: String,
        expected: Sha256,
        actual: Sha256,
        pinned_by: PinSource,
    },
    #[error("cannot read {file} to check it against {pinned_by}: {error}")]
    Unreadable {
        file: String,
        pinned_by: PinSource,
        error: std::io::Error,
    },
}

/// Hashes every pinned file of `plan` from one open descriptor each. Returns
/// the descriptor of `plan.program` when it is pinned and can be exec'd
/// through it (not a `#!` script, which its interpreter reopens by path).
pub(crate) fn verify(plan: &LaunchPlan) -> Result<Option<OwnedFd>, IntegrityError> {
    let mut opened: Vec<(&Path, Sha256, std::fs::File)> = Vec::new();
    for pin in &plan.pins {
        let unreadable = |error| IntegrityError::Unreadable {
            file: pin.file.clone(),
            pinned_by: pin.source.clone(),
            error,
        };
        let actual = match opened.iter().find(|(path, ..)| *path == pin.path) {
            Some((_, digest, _)) => *digest,
            None => {
                let file = std::fs::File::open(&pin.path).map_err(unreadable)?;
                let digest = Sha256::of_reader(&file).map_err(unreadable)?;
                opened.push((&pin.path, digest, file));
                digest
            }
        };
        if actual != pin.sha256 {
            return Err(IntegrityError::Mismatch {
                file: pin.file.clone(),
                expected: pin.sha256,
                actual,
                pinned_by: pin.source.clone(),
            });
        }
    }
    let Some((_, _, file)) = opened.into_iter().find(|(path, ..)| *path == plan.program) else {
        return Ok(None);
    };
    let mut magic = [0u8; 2];
    let is_script = file.read_at(&mut magic, 0).is_ok_and(|n| n == 2) && magic == *b"#!";
    Ok((!is_script).then(|| file.into()))
}

/// Checks `plan`'s pins by hashing its files, as a start would: for
/// `plugvisor check`, which starts nothing.
pub fn check_pins(plan: &LaunchPlan) -> Result<(), IntegrityError> {
    verify(plan).map(drop)
}

/// What a lock file pins for the plugin `plan` launches: the file its
/// manifest names and, for a Python plugin, the interpreter found.
pub fn lock_entry(plan: &LaunchPlan) -> Result<LockedPlugin, IntegrityError> {
    let hash = |file: String, path: &Path| {
        Sha256::of_file(path).map_err(|error| IntegrityError::Unreadable {
            file,
            pinned_by: PinSource::Lock(PathBuf::from(crate::lock::LOCK_FILE)),
            error,
        })
    };
    let mut entry = LockedPlugin::default();
    let shown = plan.bundle_file.to_string_lossy().into_owned();
    let digest = hash(shown.clone(), &plan.working_dir.join(&plan.bundle_file))?;
    entry.files.insert(shown, digest);
    if plan.runtime == crate::RuntimeKind::Python {
        entry.interpreter = Some(LockedInterpreter {
            path: plan.program.clone(),
            sha256: hash(plan.program.display().to_string(), &plan.program)?,
        });
    }
    Ok(entry)
}
