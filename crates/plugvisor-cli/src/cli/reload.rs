//! `plugvisor reload`: what a rescan of the running `run`'s plugins folder
//! changed, one line each, then the status table.

use std::process::ExitCode;

use plugvisor::ReloadIssue;

use super::control::Response;

pub fn print(response: Response, json: bool) -> anyhow::Result<ExitCode> {
    if let Some(error) = response.error {
        eprintln!("plugvisor: {error}");
        return Ok(ExitCode::FAILURE);
    }
    let report = response.reload.unwrap_or_default();
    let code = match report.is_clean() {
        true => ExitCode::SUCCESS,
        false => ExitCode::FAILURE,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(code);
    }
    if report.is_empty() {
        println!("nothing changed");
    }
    for id in &report.added {
        println!("added      {id}");
    }
    for id in &report.restarted {
        println!("restarted  {id} (new version)");
    }
    for id in &report.removed {
        println!("removed    {id}");
    }
    for issue in &report.refused {
        let kept = match &issue.kept_version {
            Some(version) => format!("; {version} stays"),
            None => String::new(),
        };
        println!("refused    {}: {}{kept}", name(issue), issue.reason);
    }
    for issue in &report.failed {
        println!("failed     {}: {}", name(issue), first_line(&issue.reason));
    }
    println!();
    super::print_table(&response.statuses);
    Ok(code)
}

/// The plugin's id, or its directory when its manifest cannot be read.
fn name(issue: &ReloadIssue) -> String {
    issue
        .id
        .clone()
        .unwrap_or_else(|| issue.dir.display().to_string())
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default()
}
