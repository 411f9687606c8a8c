//! Reloading the plugins directory: a new bundle is added and activated, a
//! new version (its plugin.json or its executable changed) replaces the
//! plugin's process, a removed bundle is deactivated and forgotten. A new
//! version that cannot be launched is refused and the running one is left
//! alone, so a half-copied bundle never takes a working plugin down.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};

use super::slot::{Slot, Version};
use super::{Environment, EnvironmentError, EventKind, configuration};
use crate::bundle::{Bundle, Scan, ScanError, scan_plugins_dir};
use crate::launch::{LaunchOptions, RuntimeKind, plan_launch};
use crate::manifest::Manifest;

/// What a bundle was when it was loaded: a reload starts a new version only
/// when this differs.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Fingerprint {
    dir: PathBuf,
    manifest: Manifest,
    /// Device, inode, size, mtime and mode of the executable: a copy, a
    /// rename over it, an edit in place or a chmod each change one of them.
    executable: Option<(u64, u64, u64, i64, i64, u32)>,
}

impl Fingerprint {
    fn of(bundle: &Bundle, launch: &LaunchOptions) -> Fingerprint {
        let executable = bundle
            .manifest
            .executable_for(launch.platform())
            .ok()
            .and_then(|(_, relative)| std::fs::metadata(bundle.dir.join(relative)).ok())
            .map(|m| {
                let mtime = (m.mtime(), m.mtime_nsec());
                (m.dev(), m.ino(), m.len(), mtime.0, mtime.1, m.mode())
            });
        Fingerprint {
            dir: bundle.dir.clone(),
            manifest: bundle.manifest.clone(),
            executable,
        }
    }
}

impl Version {
    pub(crate) fn of(bundle: Bundle, launch: &LaunchOptions) -> Version {
        Version {
            fingerprint: Fingerprint::of(&bundle, launch),
            // The manifest was validated, its schema with it.
            settings: bundle.manifest.settings().unwrap_or_default(),
            bundle,
        }
    }
}

/// What [`Environment::reload`] changed, each list sorted by id.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ReloadReport {
    /// New bundles: added, and activated.
    pub added: Vec<String>,
    /// Plugins whose new version was loaded, and restarted if they were
    /// activated.
    pub restarted: Vec<String>,
    /// Plugins whose bundle is gone: stopped and forgotten.
    pub removed: Vec<String>,
    /// New versions and new bundles that cannot be launched; a running
    /// version of the plugin is left running.
    pub refused: Vec<ReloadIssue>,
    /// Added or restarted plugins whose start failed (their status says
    /// more).
    pub failed: Vec<ReloadIssue>,
}

impl ReloadReport {
    /// Nothing was refused and every start succeeded.
    pub fn is_clean(&self) -> bool {
        self.refused.is_empty() && self.failed.is_empty()
    }

    /// Nothing changed and nothing was refused.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.restarted.is_empty()
            && self.removed.is_empty()
            && self.is_clean()
    }
}

/// A bundle a reload refused or could not start, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ReloadIssue {
    /// The plugin's id, when its manifest could be read.
    pub id: Option<String>,
    /// The bundle directory.
    pub dir: PathBuf,
    /// Why, with the file and field at fault.
    pub reason: String,
    /// For a refused new version of a known plugin: the version it keeps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kept_version: Option<String>,
}

/// What a reload will do with one plugin id.
enum Change {
    Add(Version, Option<RuntimeKind>),
    Replace(Arc<Slot>, Version, Option<RuntimeKind>),
}

impl Environment {
    /// Scans the plugins directory again and applies what changed: a new
    /// bundle is added and activated; a bundle whose plugin.json or
    /// executable changed gets its new version (an activated plugin is
    /// stopped gracefully and started again); a bundle that is gone is
    /// deactivated and forgotten. A new version that cannot be launched (a
    /// bad manifest, a missing executable, a configured value its
    /// settings_schema refuses) is refused: the plugin keeps running the
    /// version it has, with a warning and an [`EventKind::ReloadRefused`].
    /// Unchanged plugins are not touched. Returns when every start has
    /// succeeded or failed; reloads run one at a time.
    pub async fn reload(&self) -> Result<ReloadReport, EnvironmentError> {
        let _one_at_a_time = self.inner.reloading.lock().await;
        let shared = &self.inner.shared;
        if shared.closing.is_cancelled() {
            return Err(EnvironmentError::ShuttingDown);
        }
        let scan = scan_again(&shared.config.plugins_dir)?;
        let launch = &shared.config.launch;
        let current: BTreeMap<String, Arc<Slot>> = self
            .inner
            .slots()
            .into_iter()
            .map(|slot| (slot.id().to_string(), slot))
            .collect();
        let mut report = ReloadReport::default();
        let mut said = BTreeMap::new();
        let mut seen = BTreeSet::new();
        let mut changes = Vec::new();
        for bundle in scan.bundles {
            let id = bundle.id().to_string();
            seen.insert(id.clone());
            let existing = current.get(&id);
            let version = Version::of(bundle, launch);
            if let Some(slot) = existing.filter(|s| s.version().fingerprint == version.fingerprint)
            {
                // Back to the version it runs: a later bad one is news again.
                *lock(&slot.refused) = None;
                continue;
            }
            match self.launchable(&version) {
                Err(reason) => {
                    let (dir, report) = (version.bundle.dir, &mut report);
                    self.refuse(existing, Some(id), dir, reason, report, &mut said)
                }
                Ok(runtime) => changes.push(match existing {
                    None => Change::Add(version, Some(runtime)),
                    Some(slot) => Change::Replace(slot.clone(), version, Some(runtime)),
                }),
            }
        }
        let mut broken_dirs = BTreeSet::new();
        for error in &scan.errors {
            broken_dirs.insert(error.dir.clone());
            // A known plugin whose bundle is broken now keeps running.
            let slot = current
                .values()
                .find(|slot| !seen.contains(slot.id()) && slot.version().bundle.dir == error.dir);
            let id = slot.map(|slot| slot.id().to_string());
            let (dir, reason) = (error.dir.clone(), error.to_string());
            self.refuse(slot, id, dir, reason, &mut report, &mut said);
        }
        let gone: Vec<Arc<Slot>> = current
            .values()
            .filter(|slot| {
                !seen.contains(slot.id()) && !broken_dirs.contains(&slot.version().bundle.dir)
            })
            .cloned()
            .collect();
        *lock(&self.inner.invalid) = scan.errors;
        *lock(&self.inner.refused_new) = said;

        report.removed = gone.iter().map(|slot| slot.id().to_string()).collect();
        futures::future::join_all(gone.iter().map(|slot| self.remove(slot))).await;
        let outcomes =
            futures::future::join_all(changes.into_iter().map(|change| self.apply(change))).await;
        for (id, dir, added, outcome) in outcomes {
            match added {
                true => report.added.push(id.clone()),
                false => report.restarted.push(id.clone()),
            }
            if let Err(error) = outcome {
                report.failed.push(ReloadIssue {
                    id: Some(id),
                    dir,
                    reason: error.to_string(),
                    kept_version: None,
                });
            }
        }
        report.added.sort();
        report.restarted.sort();
        match report.is_empty() {
            true => tracing::debug!("reload: nothing changed"),
            false => tracing::info!(
                added = ?report.added,
                restarted = ?report.restarted,
                removed = ?report.removed,
                refused = report.refused.len(),
                failed = report.failed.len(),
                "reloaded the plugins directory"
            ),
        }
        Ok(report)
    }

    /// The directories whose changes a reload would see, for a file watcher
    /// that watches each without recursion (`plugvisor run` does, with
    /// inotify): the plugins directory, each bundle directory (valid or
    /// not) and the directory of each bundle's executable.
    pub fn reload_watch_paths(&self) -> Vec<PathBuf> {
        let config = &self.inner.shared.config;
        let mut paths = BTreeSet::from([config.plugins_dir.clone()]);
        let Ok(scan) = scan_again(&config.plugins_dir) else {
            return paths.into_iter().collect();
        };
        for bundle in &scan.bundles {
            paths.insert(bundle.dir.clone());
            let executable = bundle.manifest.executable_for(config.launch.platform());
            if let Some(parent) = executable
                .ok()
                .and_then(|(_, rel)| bundle.dir.join(rel).parent().map(|p| p.to_path_buf()))
            {
                paths.insert(parent);
            }
        }
        paths.extend(scan.errors.into_iter().map(|error| error.dir));
        paths.into_iter().collect()
    }

    /// Whether the version can be launched, and how (checked before anything
    /// running is stopped).
    fn launchable(&self, version: &Version) -> Result<RuntimeKind, String> {
        let config = &self.inner.shared.config;
        let plan = plan_launch(&version.bundle, &config.launch)
            .map_err(|error| format!("{}: {error}", version.bundle.manifest_path().display()))?;
        let id = version.bundle.id();
        if let Some(values) = config.plugin_configuration.get(id) {
            let file = BTreeMap::from([(id.to_string(), values.clone())]);
            configuration::check_file_values(&file, |_| Some(version.settings.clone()))
                .map_err(|(_, error)| format!("the configured values: {error}"))?;
        }
        Ok(plan.runtime)
    }

    fn refuse(
        &self,
        slot: Option<&Arc<Slot>>,
        id: Option<String>,
        dir: PathBuf,
        reason: String,
        report: &mut ReloadReport,
        said: &mut BTreeMap<PathBuf, String>,
    ) {
        let kept_version = slot.map(|slot| {
            let version = slot.version();
            version.bundle.manifest.display_version().to_string()
        });
        match slot {
            Some(slot) if lock(&slot.refused).as_ref() == Some(&reason) => {
                tracing::debug!(plugin = slot.id(), "new version still refused: {reason}");
            }
            Some(slot) => {
                tracing::warn!(
                    plugin = slot.id(),
                    "new version refused, the old one stays: {reason}"
                );
                *lock(&slot.refused) = Some(reason.clone());
                let kind = EventKind::ReloadRefused {
                    reason: reason.clone(),
                };
                slot.update(&self.inner.shared, kind, |_| {});
            }
            None => {
                let before = lock(&self.inner.refused_new);
                match before.get(&dir) == Some(&reason) {
                    true => tracing::debug!("bundle still refused: {reason}"),
                    false => tracing::warn!("new bundle refused: {reason}"),
                }
                said.insert(dir.clone(), reason.clone());
            }
        }
        report.refused.push(ReloadIssue {
            id,
            dir,
            reason,
            kept_version,
        });
    }

    /// Stops a plugin whose bundle is gone and forgets it.
    async fn remove(&self, slot: &Arc<Slot>) {
        slot.wanted.store(false, Ordering::Relaxed);
        if let Some(keeper) = slot.lock().life.keeper() {
            keeper.stop.cancel();
        }
        let _op = slot.op.lock().await;
        slot.removed.store(true, Ordering::Relaxed);
        Self::stop_locked(slot).await;
        let shared = &self.inner.shared;
        self.inner
            .slots
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(slot.id());
        tracing::info!(
            plugin = slot.id(),
            "bundle removed: plugin stopped and forgotten"
        );
        slot.update(shared, EventKind::Removed, |_| {});
        shared.metrics.plugin_removed(slot.id());
    }

    /// Adds a new plugin, or replaces one's version; then (re)starts it.
    async fn apply(&self, change: Change) -> (String, PathBuf, bool, Result<(), EnvironmentError>) {
        let shared = &self.inner.shared;
        match change {
            Change::Add(version, runtime) => {
                let id = version.bundle.id().to_string();
                let dir = version.bundle.dir.clone();
                for hint in version.bundle.manifest.unknown_field_hints() {
                    tracing::warn!(plugin = %id, "{}: {hint}", version.bundle.manifest_path().display());
                }
                tracing::info!(plugin = %id, "new bundle {}", dir.display());
                let slot = Arc::new(Slot::new(version, runtime));
                self.inner
                    .slots
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(id.clone(), slot.clone());
                shared.metrics.plugin_added(&id);
                slot.update(shared, EventKind::Added, |_| {});
                let started = self.activate(&id).await.map(drop);
                (id, dir, true, started)
            }
            Change::Replace(slot, version, runtime) => {
                let id = slot.id().to_string();
                let dir = version.bundle.dir.clone();
                let was_wanted = slot.wanted.load(Ordering::Relaxed);
                if let Some(keeper) = slot.lock().life.keeper() {
                    keeper.stop.cancel();
                }
                let _op = slot.op.lock().await;
                Self::stop_locked(&slot).await;
                let previous = slot.version().bundle.manifest.display_version().to_string();
                let next = version.bundle.manifest.display_version().to_string();
                slot.replace_version(version, runtime);
                *lock(&slot.refused) = None;
                tracing::info!(plugin = %id, "new version {next} (was {previous}) from {}", dir.display());
                slot.update(
                    shared,
                    EventKind::Reloaded {
                        previous_version: previous,
                    },
                    |_| {},
                );
                let started = match was_wanted {
                    true => self.activate_locked(&slot).await.map(drop),
                    false => Ok(()),
                };
                (id, dir, false, started)
            }
        }
    }
}

fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// The scan of a reload: a plugins directory that was emptied holds no
/// plugins, which is not an error here.
fn scan_again(plugins_dir: &std::path::Path) -> Result<Scan, EnvironmentError> {
    match scan_plugins_dir(plugins_dir) {
        Ok(scan) => Ok(scan),
        Err(ScanError::Empty(_)) => Ok(Scan::default()),
        Err(error) => Err(error.into()),
    }
}
