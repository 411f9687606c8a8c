//! `plugvisor check`: validate bundles and show how each would be launched.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use plugvisor::{Bundle, LaunchPlan, MANIFEST_FILE, SandboxPolicy, check_pins, plan_launch};
use serde::Serialize;

use super::settings::Settings;

#[derive(Serialize)]
struct CheckResult {
    dir: PathBuf,
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    launch: Option<LaunchPlan>,
    /// The plan's limits and how a start enforces each.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    limits: Vec<plugvisor::EnforcedLimit>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// A plugins folder (no manifest of its own, bundles below) stands for the
/// bundles in it; anything else is checked as one bundle.
fn expand(dirs: &[PathBuf]) -> Vec<PathBuf> {
    let mut expanded = Vec::new();
    for dir in dirs {
        let bundles = bundles_below(dir);
        if dir.join(MANIFEST_FILE).exists() || bundles.is_empty() {
            expanded.push(dir.clone());
        } else {
            eprintln!(
                "{} is a plugins folder: checking the {} bundle(s) in it",
                dir.display(),
                bundles.len()
            );
            expanded.extend(bundles);
        }
    }
    expanded
}

fn bundles_below(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut bundles: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join(MANIFEST_FILE).is_file())
        .collect();
    bundles.sort();
    bundles
}

/// The directory holding a bundle, whose plugvisor.lock is the bundle's.
pub fn parent_dir(bundle_dir: &Path) -> PathBuf {
    let absolute = std::path::absolute(bundle_dir).unwrap_or_else(|_| bundle_dir.to_path_buf());
    absolute
        .parent()
        .map_or_else(|| PathBuf::from("/"), Path::to_path_buf)
}

/// The sandbox a start would make, as `check --sandbox` shows it.
fn print_policy(policy: &SandboxPolicy) {
    let paths = |paths: &[PathBuf]| {
        let shown: Vec<String> = paths
            .iter()
            .filter(|p| p.exists())
            .map(|p| p.display().to_string())
            .collect();
        shown.join(" ")
    };
    let ports = |ports: &[u16]| ports.iter().map(u16::to_string).collect::<Vec<_>>();
    let mut bind = vec!["an ephemeral port (0)".to_string()];
    bind.extend(ports(&policy.bind_ports));
    let connect = match ports(&policy.connect_ports) {
        ports if ports.is_empty() => "none".to_string(),
        ports => ports.join(" "),
    };
    println!("      sandbox: read {}", paths(&policy.read));
    println!(
        "      sandbox: write {} and, at each start, its data directory (PLUGVISOR_DATA_DIR), socket directory and TMPDIR",
        paths(&policy.write)
    );
    println!(
        "      sandbox: tcp bind {}; tcp connect {connect}",
        bind.join(" ")
    );
}

/// How this host enforces the limits: a cgroup of each plugin's own for
/// memory and processes, or why not.
fn enforcement_note() -> String {
    match plugvisor::cgroup_support() {
        plugvisor::CgroupSupport::Delegated(dir) => format!(
            "memory and processes are enforced by a cgroup v2 of each plugin's own under {}, the others with setrlimit",
            dir.display()
        ),
        plugvisor::CgroupSupport::Unavailable(why) => {
            format!("limits are set with setrlimit; no cgroup v2 of their own: {why}")
        }
        _ => "limits are set with setrlimit".to_string(),
    }
}

pub fn check(dirs: &[PathBuf], settings: &Settings, json: bool) -> anyhow::Result<ExitCode> {
    if settings.sandbox {
        match plugvisor::require_landlock() {
            Ok(status) => eprintln!("sandbox: {status}"),
            Err(error) => eprintln!("sandbox: {error}"),
        }
    }
    let results: Vec<CheckResult> = expand(dirs)
        .into_iter()
        .map(|dir| {
            let options = settings
                .launch_options_for(&parent_dir(&dir))
                .map_err(|e| e.to_string());
            let loaded = options.and_then(|options| {
                let bundle = Bundle::load(&dir).map_err(|e| e.to_string())?;
                let at = |e: &dyn std::fmt::Display| {
                    format!("{}: {e}", bundle.manifest_path().display())
                };
                let plan = plan_launch(&bundle, &options).map_err(|e| at(&e))?;
                // What a start would refuse: files that do not match their pins.
                check_pins(&plan).map_err(|e| at(&e))?;
                Ok((bundle, plan))
            });
            match loaded {
                Ok((bundle, plan)) => {
                    let mut warnings = bundle.manifest.unknown_field_hints();
                    if plan.limits.processes.is_some() && nix::unistd::geteuid().is_root() {
                        warnings.push(
                            "limit `processes` (RLIMIT_NPROC) has no effect: the kernel does not enforce it for root"
                                .to_string(),
                        );
                    }
                    CheckResult {
                        ok: true,
                        id: Some(bundle.id().to_string()),
                        version: bundle.manifest.version.clone(),
                        limits: plan.enforced_limits(),
                        launch: Some(plan),
                        warnings,
                        error: None,
                        dir,
                    }
                }
                Err(error) => CheckResult {
                    dir,
                    ok: false,
                    id: None,
                    version: None,
                    launch: None,
                    limits: Vec::new(),
                    warnings: Vec::new(),
                    error: Some(error),
                },
            }
        })
        .collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&results)?);
    } else {
        for result in &results {
            match (&result.launch, &result.error) {
                (Some(plan), _) => {
                    println!(
                        "ok    {} {} ({}) in {}",
                        result.id.as_deref().unwrap_or_default(),
                        result.version.as_deref().unwrap_or("-"),
                        plan.runtime,
                        result.dir.display()
                    );
                    println!(
                        "      launch: {}  (working dir {}, start timeout {:?})",
                        plan.command_line(),
                        plan.working_dir.display(),
                        plan.start_timeout
                    );
                    for pin in &plan.pins {
                        println!("      pinned: {} by {}", pin.file, pin.source);
                    }
                    if let Some(policy) = &plan.sandbox {
                        print_policy(policy);
                    }
                    for limit in &result.limits {
                        println!("      limit: {limit}");
                    }
                    for warning in &result.warnings {
                        println!("      warning: {warning}");
                    }
                }
                (None, Some(error)) => println!("FAIL  {error}"),
                (None, None) => unreachable!("a result is a plan or an error"),
            }
        }
        if results.iter().any(|r| !r.limits.is_empty()) {
            println!("{}", enforcement_note());
        }
    }
    Ok(if results.iter().all(|r| r.ok) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
