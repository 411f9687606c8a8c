//! `plugvisor ping`: start one bundle, wait for healthy, stop it, and time both.

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use plugvisor::{Bundle, Supervisor, plan_launch};
use serde_json::json;

use super::settings::Settings;

pub async fn ping(dir: &Path, settings: &Settings, json: bool) -> anyhow::Result<ExitCode> {
    let bundle = Bundle::load(dir)?;
    let id = bundle.id().to_string();
    let outcome = async {
        let options = settings.launch_options_for(&super::check::parent_dir(dir))?;
        let plan = plan_launch(&bundle, &options)
            .map_err(|e| anyhow::anyhow!("{}: {e}", bundle.manifest_path().display()))?;
        let started = Instant::now();
        let supervisor = Supervisor::start(&id, &plan, &settings.supervisor_config()?).await?;
        let start_ms = started.elapsed().as_secs_f64() * 1000.0;
        let stop = supervisor.stop().await;
        anyhow::Ok((start_ms, stop))
    }
    .await;
    match outcome {
        Ok((start_ms, stop)) => {
            let stop_ms = stop.took.as_secs_f64() * 1000.0;
            if json {
                let method = serde_json::to_value(stop.method)?;
                println!(
                    "{}",
                    json!({"id": id, "healthy": true, "start_ms": round(start_ms), "stop_ms": round(stop_ms), "stop": method})
                );
            } else {
                println!(
                    "{id}: healthy in {start_ms:.1} ms, stopped in {stop_ms:.1} ms ({})",
                    stop.method
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            if json {
                println!(
                    "{}",
                    json!({"id": id, "healthy": false, "error": format!("{error:#}")})
                );
            } else {
                eprintln!("{id}: not healthy: {error:#}");
            }
            Ok(ExitCode::FAILURE)
        }
    }
}

fn round(ms: f64) -> f64 {
    (ms * 10.0).round() / 10.0
}
