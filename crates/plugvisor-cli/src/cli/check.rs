//! `plugvisor check`: validate bundles and show how each would be launched.

use std::path::PathBuf;
use std::process::ExitCode;

use plugvisor::bundle::Bundle;
use plugvisor::runtime::{LaunchPlan, plan_launch};
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
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

pub fn check(dirs: &[PathBuf], settings: &Settings, json: bool) -> anyhow::Result<ExitCode> {
    let options = settings.launch_options();
    let results: Vec<CheckResult> = dirs
        .iter()
        .map(|dir| {
            let loaded = Bundle::load(dir)
                .map_err(|e| e.to_string())
                .and_then(|bundle| {
                    let plan = plan_launch(&bundle, &options)
                        .map_err(|e| format!("{}: {e}", dir.join("plugin.json").display()))?;
                    Ok((bundle, plan))
                });
            match loaded {
                Ok((bundle, plan)) => CheckResult {
                    dir: dir.clone(),
                    ok: true,
                    id: Some(bundle.id().to_string()),
                    version: bundle.manifest.version.clone(),
                    launch: Some(plan),
                    error: None,
                },
                Err(error) => CheckResult {
                    dir: dir.clone(),
                    ok: false,
                    id: None,
                    version: None,
                    launch: None,
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
                }
                (None, Some(error)) => println!("FAIL  {error}"),
                (None, None) => unreachable!("a result is a plan or an error"),
            }
        }
    }
    Ok(if results.iter().all(|r| r.ok) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
