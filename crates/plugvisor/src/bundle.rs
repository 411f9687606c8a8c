//! Plugin bundles on disk: one directory holding a `plugin.json`, and the scan of a
//! plugins directory. A bad bundle is reported and never stops the others.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::manifest::{Manifest, ManifestError};

/// The manifest's file name in a bundle.
pub const MANIFEST_FILE: &str = "plugin.json";

/// A plugin bundle: a directory with a valid `plugin.json`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Bundle {
    /// The bundle directory, as given or found by the scan.
    pub dir: PathBuf,
    /// Its manifest.
    pub manifest: Manifest,
}

impl Bundle {
    /// The manifest's id.
    pub fn id(&self) -> &str {
        &self.manifest.id
    }

    /// `dir/plugin.json`.
    pub fn manifest_path(&self) -> PathBuf {
        self.dir.join(MANIFEST_FILE)
    }

    /// Loads every bundle below `plugins_dir` as [`crate::Environment`]
    /// does: the valid ones, sorted by directory, and what is wrong with the others.
    pub fn scan(plugins_dir: &Path) -> Result<(Vec<Bundle>, Vec<BundleError>), ScanError> {
        let scan = scan_plugins_dir(plugins_dir)?;
        Ok((scan.bundles, scan.errors))
    }

    /// Reads and validates `dir/plugin.json`.
    pub fn load(dir: &Path) -> Result<Bundle, BundleError> {
        let manifest_path = dir.join(MANIFEST_FILE);
        let problem = |problem| BundleError {
            dir: dir.to_path_buf(),
            problem,
        };
        if !dir.exists() {
            return Err(problem(BundleProblem::Missing));
        }
        if !dir.is_dir() {
            return Err(problem(BundleProblem::NotADirectory));
        }
        let text = std::fs::read_to_string(&manifest_path).map_err(|source| {
            problem(if source.kind() == std::io::ErrorKind::NotFound {
                BundleProblem::NoManifest
            } else {
                BundleProblem::Unreadable(source.to_string())
            })
        })?;
        let manifest = Manifest::parse(&text).map_err(|e| problem(BundleProblem::Manifest(e)))?;
        Ok(Bundle {
            dir: dir.to_path_buf(),
            manifest,
        })
    }
}

/// A bundle that could not be loaded, with the path to show the operator.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}: {problem}", self.location().display())]
#[non_exhaustive]
pub struct BundleError {
    /// The bundle directory.
    pub dir: PathBuf,
    /// What is wrong.
    pub problem: BundleProblem,
}

impl BundleError {
    /// The file at fault: the manifest for manifest problems, else the directory.
    pub fn location(&self) -> PathBuf {
        match self.problem {
            BundleProblem::Missing
            | BundleProblem::NotADirectory
            | BundleProblem::DuplicateId { .. } => self.dir.clone(),
            _ => self.dir.join(MANIFEST_FILE),
        }
    }
}

/// Why a directory is not a valid bundle.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
#[allow(missing_docs)] // each variant is its message
pub enum BundleProblem {
    #[error("no such directory")]
    Missing,
    #[error("not a directory")]
    NotADirectory,
    #[error("no such file; every bundle needs a plugin.json manifest")]
    NoManifest,
    #[error("cannot read: {0}")]
    Unreadable(String),
    #[error(transparent)]
    Manifest(ManifestError),
    #[error("plugin id {id:?} is also used by {}; plugin ids must be unique, so neither is loaded", other.display())]
    DuplicateId { id: String, other: PathBuf },
}

/// The result of scanning a plugins directory.
#[derive(Debug, Default)]
pub(crate) struct Scan {
    pub bundles: Vec<Bundle>,
    pub errors: Vec<BundleError>,
}

/// Why a plugins directory cannot be scanned at all.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
#[allow(missing_docs)] // each variant is its message
pub enum ScanError {
    #[error("plugins directory {} does not exist", .0.display())]
    NotFound(PathBuf),
    #[error("{} is not a directory", .0.display())]
    NotADirectory(PathBuf),
    #[error("plugins directory {} holds no plugin bundles (subdirectories with a plugin.json)", .0.display())]
    Empty(PathBuf),
    #[error("cannot read plugins directory {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Loads every bundle below `plugins_dir`, sorted by directory name. Hidden
/// directories are skipped; any other subdirectory must be a valid bundle.
pub(crate) fn scan_plugins_dir(plugins_dir: &Path) -> Result<Scan, ScanError> {
    if !plugins_dir.exists() {
        return Err(ScanError::NotFound(plugins_dir.to_path_buf()));
    }
    if !plugins_dir.is_dir() {
        return Err(ScanError::NotADirectory(plugins_dir.to_path_buf()));
    }
    let io_error = |source| ScanError::Io {
        path: plugins_dir.to_path_buf(),
        source,
    };
    let mut dirs = Vec::new();
    for entry in std::fs::read_dir(plugins_dir).map_err(io_error)? {
        let entry = entry.map_err(io_error)?;
        let hidden = entry.file_name().to_string_lossy().starts_with('.');
        if !hidden && entry.path().is_dir() {
            dirs.push(entry.path());
        }
    }
    if dirs.is_empty() {
        return Err(ScanError::Empty(plugins_dir.to_path_buf()));
    }
    dirs.sort();

    let mut scan = Scan::default();
    let mut by_id: BTreeMap<String, Vec<Bundle>> = BTreeMap::new();
    for dir in dirs {
        match Bundle::load(&dir) {
            Ok(bundle) => by_id
                .entry(bundle.id().to_string())
                .or_default()
                .push(bundle),
            Err(error) => scan.errors.push(error),
        }
    }
    for (id, mut bundles) in by_id {
        if bundles.len() == 1 {
            scan.bundles.extend(bundles.pop());
            continue;
        }
        for (i, bundle) in bundles.iter().enumerate() {
            let other = &bundles[if i == 0 { 1 } else { 0 }];
            scan.errors.push(BundleError {
                dir: bundle.dir.clone(),
                problem: BundleProblem::DuplicateId {
                    id: id.clone(),
                    other: other.dir.clone(),
                },
            });
        }
    }
    scan.bundles.sort_by(|a, b| a.dir.cmp(&b.dir));
    scan.errors.sort_by(|a, b| a.dir.cmp(&b.dir));
    Ok(scan)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_bundle(root: &Path, name: &str, manifest: &str) -> PathBuf {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(MANIFEST_FILE), manifest).unwrap();
        dir
    }

    #[test]
    fn bad_bundles_do_not_stop_good_ones() {
        let root = tempfile::tempdir().unwrap();
        write_bundle(root.path(), "good", r#"{"id":"good-one"}"#);
        write_bundle(root.path(), "broken", "{");
        std::fs::create_dir(root.path().join("empty")).unwrap();
        std::fs::create_dir(root.path().join(".hidden")).unwrap();
        std::fs::write(root.path().join("README.txt"), "not a bundle").unwrap();
        let scan = scan_plugins_dir(root.path()).unwrap();
        assert_eq!(scan.bundles.len(), 1);
        assert_eq!(scan.bundles[0].id(), "good-one");
        assert_eq!(scan.errors.len(), 2);
        let broken = scan.errors[0].to_string();
        assert!(
            broken.contains("broken/plugin.json") && broken.contains("line 1"),
            "{broken}"
        );
        let empty = scan.errors[1].to_string();
        assert!(
            empty.contains("empty/plugin.json") && empty.contains("no such file"),
            "{empty}"
        );
    }

    #[test]
    fn duplicate_ids_name_both_paths() {
        let root = tempfile::tempdir().unwrap();
        write_bundle(root.path(), "a", r#"{"id":"same-id"}"#);
        write_bundle(root.path(), "b", r#"{"id":"same-id"}"#);
        let scan = scan_plugins_dir(root.path()).unwrap();
        assert!(scan.bundles.is_empty());
        assert_eq!(scan.errors.len(), 2);
        let message = scan.errors[0].to_string();
        assert!(
            message.contains("/a") && message.contains("/b"),
            "{message}"
        );
    }

    #[test]
    fn missing_and_empty_dirs_are_errors() {
        let root = tempfile::tempdir().unwrap();
        assert!(matches!(
            scan_plugins_dir(root.path()),
            Err(ScanError::Empty(_))
        ));
        assert!(matches!(
            scan_plugins_dir(&root.path().join("nope")),
            Err(ScanError::NotFound(_))
        ));
        let file = root.path().join("file");
        std::fs::write(&file, "").unwrap();
        assert!(matches!(
            scan_plugins_dir(&file),
            Err(ScanError::NotADirectory(_))
        ));
    }
}
