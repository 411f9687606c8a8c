//! `plugvisor config get|set|unset`: a running plugin's configuration, over
//! the control socket of `plugvisor run`.

use std::process::ExitCode;

use clap::Subcommand;
use plugvisor::{ConfigApplied, ConfigValue};

use super::ControlSocket;
use super::control::{self, Request};

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Show a plugin's effective configuration and where each value comes from
    /// (its settings_schema's default, the config file, or `config set`).
    Get {
        /// The plugin's id.
        id: String,
        /// Print the values as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        control: ControlSocket,
    },
    /// Set values: checked against the plugin's settings_schema, offered to the
    /// running plugin (OnConfigurationChange), and kept in the data directory.
    #[command(
        after_help = "A plugin that refuses the change says why, and the previous values stay.

Examples:
  plugvisor config set hello-python greeting=Bonjour
  plugvisor config set hello-python shout=true greeting='Hi there'"
    )]
    Set {
        /// The plugin's id.
        id: String,
        /// KEY=VALUE pairs; each VALUE is read as its setting's type (text, number, true/false, an option).
        #[arg(required = true, value_name = "KEY=VALUE", value_parser = key_value)]
        values: Vec<(String, String)>,
        #[command(flatten)]
        control: ControlSocket,
    },
    /// Forget values set with `config set`: the config file's or the default applies again.
    Unset {
        /// The plugin's id.
        id: String,
        /// The keys.
        #[arg(required = true, value_name = "KEY")]
        keys: Vec<String>,
        #[command(flatten)]
        control: ControlSocket,
    },
}

fn key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("expected KEY=VALUE, not {text:?}")),
    }
}

pub async fn run(command: ConfigCommand) -> anyhow::Result<ExitCode> {
    let (control, request, json) = match command {
        ConfigCommand::Get { id, json, control } => (control, Request::ConfigGet { id }, json),
        ConfigCommand::Set {
            id,
            values,
            control,
        } => (control, Request::ConfigSet { id, values }, false),
        ConfigCommand::Unset { id, keys, control } => {
            (control, Request::ConfigUnset { id, keys }, false)
        }
    };
    let response = control::request(&control.path(), &request).await?;
    if let Some(error) = response.error {
        eprintln!("plugvisor: {error}");
        return Ok(ExitCode::FAILURE);
    }
    let values = response.configuration.unwrap_or_default();
    if json {
        println!("{}", serde_json::to_string_pretty(&values)?);
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(applied) = response.applied {
        println!(
            "{}",
            match applied {
                ConfigApplied::Live => "changed: the running plugin accepted it",
                ConfigApplied::AtNextActivation =>
                    "stored: the plugin is not running and gets it when it starts",
                ConfigApplied::AtNextRestart =>
                    "stored: the plugin has no OnConfigurationChange hook; it takes effect when the plugin restarts (plugvisor restart ID)",
                _ => "stored",
            }
        );
    }
    for line in render(&values) {
        println!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}

/// KEY, VALUE, SOURCE columns.
fn render(values: &[ConfigValue]) -> Vec<String> {
    let cells: Vec<[String; 3]> = values
        .iter()
        .map(|v| [v.key.clone(), v.value.to_string(), v.source.to_string()])
        .collect();
    let width = |i: usize, title: &str| {
        cells
            .iter()
            .map(|c| c[i].chars().count())
            .chain([title.len()])
            .max()
            .unwrap_or(0)
    };
    let (k, v) = (width(0, "KEY"), width(1, "VALUE"));
    let mut lines = vec![format!("{:k$}  {:v$}  SOURCE", "KEY", "VALUE")];
    if cells.is_empty() {
        lines.push("(no settings and no values)".into());
    }
    lines.extend(
        cells
            .iter()
            .map(|[key, value, source]| format!("{key:k$}  {value:v$}  {source}")),
    );
    lines
}
