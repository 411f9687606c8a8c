//! Settings shared by `run`, `ping` and `check`: from flags, from an optional
//! `plugvisor.toml`, and the library defaults, in that order of precedence.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use plugvisor::environment::EnvironmentConfig;
use plugvisor::handshake::HandshakeConfig;
use plugvisor::runtime::LaunchOptions;
use plugvisor::supervisor::SupervisorConfig;
use serde::Deserialize;

/// A duration written like `500ms`, `10s` or `5m`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DurationArg(pub Duration);

impl FromStr for DurationArg {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        humantime::parse_duration(text)
            .map(DurationArg)
            .map_err(|e| format!("{e} (write durations like 500ms, 10s or 5m)"))
    }
}

impl<'de> Deserialize<'de> for DurationArg {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// `KEY=VALUE`.
#[derive(Debug, Clone, PartialEq)]
pub struct Cookie {
    pub key: String,
    pub value: String,
}

impl FromStr for Cookie {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.split_once('=') {
            Some((key, value)) if !key.is_empty() => Ok(Cookie {
                key: key.into(),
                value: value.into(),
            }),
            _ => Err("expected KEY=VALUE".into()),
        }
    }
}

impl<'de> Deserialize<'de> for Cookie {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Every setting that shapes how plugins are started and supervised. Each is
/// optional, so flags and the config file can be layered.
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Settings {
    /// Python interpreter tried after the bundle's own venv and before PATH.
    #[arg(long, value_name = "PATH")]
    pub interpreter: Option<PathBuf>,
    /// Time a native plugin has to print its handshake and become healthy [default: 3s].
    #[arg(long, value_name = "DURATION")]
    pub start_timeout: Option<DurationArg>,
    /// The same for Python plugins, which pay for interpreter start and imports [default: 10s].
    #[arg(long, value_name = "DURATION")]
    pub python_start_timeout: Option<DurationArg>,
    /// Magic cookie the plugins expect [default: MATTERMOST_PLUGIN=Securely message teams, anywhere.].
    #[arg(long, value_name = "KEY=VALUE")]
    pub magic_cookie: Option<Cookie>,
    /// Time between health checks of each running plugin [default: 10s].
    #[arg(long, value_name = "DURATION")]
    pub health_interval: Option<DurationArg>,
    /// Failed health checks in a row that trigger a restart [default: 3].
    #[arg(long, value_name = "N")]
    pub health_fail_limit: Option<u32>,
    /// Wait before the second restart in a row; it doubles each time [default: 1s].
    #[arg(long, value_name = "DURATION")]
    pub restart_backoff: Option<DurationArg>,
    /// Longest wait between restarts [default: 60s].
    #[arg(long, value_name = "DURATION")]
    pub restart_max_backoff: Option<DurationArg>,
    /// Failures tolerated within --failure-window; one more disables the plugin [default: 3].
    #[arg(long, value_name = "N")]
    pub max_failures: Option<u32>,
    /// Window for --max-failures [default: 60m].
    #[arg(long, value_name = "DURATION")]
    pub failure_window: Option<DurationArg>,
    /// Time a stopping plugin gets after SIGTERM before SIGKILL [default: 2s].
    #[arg(long, value_name = "DURATION")]
    pub stop_grace: Option<DurationArg>,
    /// Everything still running this long after Ctrl-C is SIGKILLed [default: 5s].
    #[arg(long, value_name = "DURATION")]
    pub shutdown_deadline: Option<DurationArg>,
    /// go-plugin AutoMTLS: give each plugin a client certificate and talk TLS
    /// pinned to the certificate it answers with; plaintext tcp is refused.
    #[arg(long)]
    #[serde(default)]
    pub tls: bool,
}

macro_rules! layer {
    ($flags:ident, $file:ident, $($field:ident),*) => {
        Settings {
            tls: $flags.tls || $file.tls,
            $($field: $flags.$field.or($file.$field),)*
        }
    };
}

impl Settings {
    /// Flags win over the file.
    pub fn over(self, file: Settings) -> Settings {
        let flags = self;
        layer!(
            flags,
            file,
            interpreter,
            start_timeout,
            python_start_timeout,
            magic_cookie,
            health_interval,
            health_fail_limit,
            restart_backoff,
            restart_max_backoff,
            max_failures,
            failure_window,
            stop_grace,
            shutdown_deadline
        )
    }

    /// Reads `path`, or `./plugvisor.toml` when no path is given and it exists.
    pub fn from_file(path: Option<&Path>) -> anyhow::Result<Settings> {
        let default = Path::new("plugvisor.toml");
        let path = match path {
            Some(path) => path,
            None if default.exists() => default,
            None => return Ok(Settings::default()),
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
    }

    pub fn environment_config(&self, plugins_dir: &Path) -> anyhow::Result<EnvironmentConfig> {
        let mut config = EnvironmentConfig::new(plugins_dir);
        config.launch = self.launch_options();
        config.supervisor = self.supervisor_config();
        let health = &mut config.health;
        set(&mut health.interval, self.health_interval);
        if let Some(limit) = self.health_fail_limit {
            if limit == 0 {
                bail!("--health-fail-limit must be at least 1");
            }
            health.fail_limit = limit;
        }
        let restart = &mut config.restart;
        set(&mut restart.initial_backoff, self.restart_backoff);
        set(&mut restart.max_backoff, self.restart_max_backoff);
        set(&mut restart.failure_window, self.failure_window);
        if let Some(max) = self.max_failures {
            restart.max_failures = max;
        }
        set(&mut config.shutdown_deadline, self.shutdown_deadline);
        if config.health.interval.is_zero() {
            bail!("--health-interval must be more than 0");
        }
        Ok(config)
    }

    pub fn launch_options(&self) -> LaunchOptions {
        let mut options = LaunchOptions {
            interpreter: self.interpreter.clone(),
            ..LaunchOptions::default()
        };
        set(&mut options.native_start_timeout, self.start_timeout);
        set(&mut options.python_start_timeout, self.python_start_timeout);
        options
    }

    pub fn supervisor_config(&self) -> SupervisorConfig {
        let mut handshake = HandshakeConfig::default();
        if let Some(cookie) = &self.magic_cookie {
            handshake.magic_cookie_key = cookie.key.clone();
            handshake.magic_cookie_value = cookie.value.clone();
        }
        let mut config = SupervisorConfig {
            handshake,
            auto_mtls: self.tls,
            ..SupervisorConfig::default()
        };
        set(&mut config.terminate_grace, self.stop_grace);
        config
    }
}

fn set(target: &mut Duration, value: Option<DurationArg>) {
    if let Some(DurationArg(duration)) = value {
        *target = duration;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_file() {
        let file: Settings = toml::from_str(
            r#"
            health-interval = "30s"
            max-failures = 5
            magic-cookie = "K=V"
            tls = true
            "#,
        )
        .unwrap();
        let flags = Settings {
            health_interval: Some("2s".parse().unwrap()),
            ..Settings::default()
        };
        let merged = flags.over(file);
        let config = merged.environment_config(Path::new("/p")).unwrap();
        assert_eq!(config.health.interval, Duration::from_secs(2));
        assert_eq!(config.restart.max_failures, 5);
        assert_eq!(config.supervisor.handshake.magic_cookie_key, "K");
        assert_eq!(config.restart.initial_backoff, Duration::from_secs(1));
        assert!(config.supervisor.auto_mtls);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        assert!(toml::from_str::<Settings>("helth-interval = \"1s\"").is_err());
        let error = toml::from_str::<Settings>("health-interval = \"soon\"").unwrap_err();
        assert!(error.to_string().contains("500ms"), "{error}");
        assert!("nokey".parse::<Cookie>().is_err());
        assert!("=v".parse::<Cookie>().is_err());
    }
}
