//! `plugvisor lock`: pin the sha256 of every bundle's files in a lock file.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use plugvisor::{Bundle, LOCK_FILE, Lock, Sha256, check_pins, lock_entry, plan_launch};

use super::settings::Settings;

/// How a pinned file compares with the lock being replaced.
fn change(old: Option<&Sha256>, new: &Sha256) -> String {
    match old {
        None => "new".to_string(),
        Some(old) if old == new => "unchanged".to_string(),
        Some(old) => format!("changed, was {old}"),
    }
}

pub fn lock(plugins_dir: &Path, settings: &Settings) -> anyhow::Result<ExitCode> {
    let path = settings
        .lock
        .clone()
        .unwrap_or_else(|| plugins_dir.join(LOCK_FILE));
    // The lock being replaced is not in force here: it would refuse exactly
    // the files that are being pinned anew.
    let options = settings.launch_options()?;
    let (bundles, invalid) = Bundle::scan(plugins_dir)?;
    let mut failures: Vec<String> = invalid.iter().map(ToString::to_string).collect();
    let old = std::fs::read_to_string(&path)
        .ok()
        .and_then(|text| Lock::parse(&text).ok())
        .unwrap_or_default();
    let mut lock = Lock::new();
    let mut lines = Vec::new();
    for bundle in &bundles {
        let at = |e: &dyn std::fmt::Display| format!("{}: {e}", bundle.manifest_path().display());
        let entry = plan_launch(bundle, &options)
            .map_err(|e| at(&e))
            .and_then(|plan| {
                // A file that fails its manifest's server.sha256 is not pinned.
                check_pins(&plan).map_err(|e| at(&e))?;
                lock_entry(&plan).map_err(|e| at(&e))
            });
        let entry = match entry {
            Ok(entry) => entry,
            Err(failure) => {
                failures.push(failure);
                continue;
            }
        };
        let id = bundle.id();
        let before = old.plugins.get(id);
        for (file, sha256) in &entry.files {
            let was = before.and_then(|b| b.files.get(file));
            lines.push(format!("{id}  {file}  {sha256}  ({})", change(was, sha256)));
        }
        if let Some(interpreter) = &entry.interpreter {
            let was = before
                .and_then(|b| b.interpreter.as_ref())
                .map(|i| &i.sha256);
            lines.push(format!(
                "{id}  interpreter {}  {}  ({})",
                interpreter.path.display(),
                interpreter.sha256,
                change(was, &interpreter.sha256)
            ));
        }
        lock.plugins.insert(id.to_string(), entry);
    }
    if !failures.is_empty() {
        for failure in &failures {
            eprintln!("plugvisor: {failure}");
        }
        anyhow::bail!(
            "{} bundle(s) in {} cannot be pinned; fix or remove them and lock again ({} was not written)",
            failures.len(),
            plugins_dir.display(),
            path.display()
        );
    }
    for id in old
        .plugins
        .keys()
        .filter(|id| !lock.plugins.contains_key(*id))
    {
        lines.push(format!(
            "{id}  (dropped: no longer in {})",
            plugins_dir.display()
        ));
    }
    // Written aside and renamed, so a running host never reads half a lock.
    let partial = path.with_extension("lock.partial");
    std::fs::write(&partial, lock.to_text())
        .and_then(|()| std::fs::rename(&partial, &path))
        .with_context(|| format!("cannot write lock file {}", path.display()))?;
    for line in lines {
        println!("{line}");
    }
    println!(
        "pinned {} plugin(s) in {}",
        lock.plugins.len(),
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}
