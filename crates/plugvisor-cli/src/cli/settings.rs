//! Settings of `run`, `ping` and `check`: from flags, from an optional
//! `plugvisor.toml`, and the library's defaults, in that order of
//! precedence. The defaults live in the library; the help texts quote them.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use plugvisor::http::{HttpLimits, UiAccess};
use plugvisor::{
    EnvironmentConfig, HealthPolicy, HookTimeouts, InvalidConfig, KvLimits, LaunchOptions,
    RestartPolicy, SupervisorConfig, TlsMode,
};
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

/// Where `--http` listens: `HOST:PORT`, or a port on 127.0.0.1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HttpAddress(pub std::net::SocketAddr);

impl FromStr for HttpAddress {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if let Ok(port) = text.parse::<u16>() {
            return Ok(HttpAddress(std::net::SocketAddr::from((
                [127, 0, 0, 1],
                port,
            ))));
        }
        text.parse()
            .map(HttpAddress)
            .map_err(|_| format!("{text:?} is not HOST:PORT (like 127.0.0.1:8065) or a port"))
    }
}

impl<'de> Deserialize<'de> for HttpAddress {
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

/// A help text that ends with the library's default.
fn with_default(text: &str, default: impl std::fmt::Display) -> String {
    format!("{text} [default: {default}]")
}

fn human(duration: Duration) -> String {
    humantime::format_duration(duration).to_string()
}

/// Every setting, as the config file holds them (keys as the flags' names).
/// Each is optional, so that flags and the file can be layered.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Settings {
    pub interpreter: Option<PathBuf>,
    pub lock: Option<PathBuf>,
    pub start_timeout: Option<DurationArg>,
    pub python_start_timeout: Option<DurationArg>,
    pub magic_cookie: Option<Cookie>,
    pub app_versions: Option<Vec<u32>>,
    pub tls: Option<TlsMode>,
    #[serde(default)]
    pub allow_remote_plugins: bool,
    #[serde(default)]
    pub sandbox: bool,
    /// `zygote = false`: exec every Python plugin (as `--no-zygote`).
    pub zygote: Option<bool>,
    pub stop_grace: Option<DurationArg>,
    pub health_interval: Option<DurationArg>,
    pub health_fail_limit: Option<u32>,
    pub restart_backoff: Option<DurationArg>,
    pub restart_max_backoff: Option<DurationArg>,
    pub max_failures: Option<u32>,
    pub failure_window: Option<DurationArg>,
    pub shutdown_deadline: Option<DurationArg>,
    pub data_dir: Option<PathBuf>,
    pub activate_timeout: Option<DurationArg>,
    pub configuration_change_timeout: Option<DurationArg>,
    pub deactivate_timeout: Option<DurationArg>,
    pub kv_max_value_bytes: Option<usize>,
    pub kv_max_plugin_bytes: Option<u64>,
    pub http: Option<HttpAddress>,
    pub http_max_body_bytes: Option<u64>,
    pub http_max_header_bytes: Option<usize>,
    pub http_timeout: Option<DurationArg>,
    pub http_token_file: Option<PathBuf>,
    pub http_host: Option<Vec<String>>,
    /// `[plugins.ID]` tables: each plugin's configuration values.
    #[serde(default)]
    pub plugins: std::collections::BTreeMap<String, toml::Table>,
    /// `[limits.ID]` tables: resource limits that replace the same limits
    /// of the plugin's `server.limits` (memory, open_files, processes,
    /// cpu_seconds).
    #[serde(default)]
    pub limits: std::collections::BTreeMap<String, toml::Table>,
    /// `[attach]`: `ID = "unix:/path"`: plugins started by hand that `run`
    /// attaches to instead of spawning (see `plugvisor attach --help`).
    #[serde(default)]
    pub attach: std::collections::BTreeMap<String, String>,
}

/// How plugins are launched: `run`, `ping` and `check`.
#[derive(Debug, Clone, Default, Args)]
pub struct LaunchFlags {
    /// Python interpreter tried after the bundle's own venv and before python3/python on PATH.
    #[arg(long, value_name = "PATH")]
    interpreter: Option<PathBuf>,
    /// Lock file (written by `plugvisor lock`) every plugin's files must match [default: plugvisor.lock in the plugins directory, when it exists].
    #[arg(long, value_name = "FILE")]
    lock: Option<PathBuf>,
    #[arg(long, value_name = "DURATION", help = with_default(
        "Time a native plugin has from its spawn to its first healthy answer",
        human(LaunchOptions::DEFAULT_NATIVE_START_TIMEOUT)))]
    start_timeout: Option<DurationArg>,
    #[arg(long, value_name = "DURATION", help = with_default(
        "The same for Python plugins, which pay for the interpreter and their imports",
        human(LaunchOptions::DEFAULT_PYTHON_START_TIMEOUT)))]
    python_start_timeout: Option<DurationArg>,
    /// Run each plugin in a Landlock sandbox (with no_new_privs): it may read
    /// its bundle, its interpreter and venv and the system's libraries and
    /// certificates, write only its data directory (PLUGVISOR_DATA_DIR) and a
    /// private TMPDIR, bind only an ephemeral TCP port and connect to no TCP
    /// port, unless its plugin.json's server.sandbox asks for more. Fails at
    /// start on a kernel without Landlock; `check --sandbox` shows each policy
    #[arg(long)]
    sandbox: bool,
    /// Exec every Python plugin instead of forking it from its venv's zygote
    /// (a warm interpreter that has imported grpcio and the SDK, started at
    /// the first start that wants it); `zygote = false` in the config file
    /// does the same, `"zygote": false` in a plugin.json's server section
    /// for that plugin alone
    #[arg(long)]
    no_zygote: bool,
}

/// How the host speaks to plugins: `run` and `ping`.
#[derive(Debug, Clone, Default, Args)]
pub struct ProtocolFlags {
    #[arg(long, value_name = "KEY=VALUE", help = with_default(
        "Magic cookie the plugins expect (go-plugin's HandshakeConfig)",
        format!("{}={}", SupervisorConfig::DEFAULT_MAGIC_COOKIE.0, SupervisorConfig::DEFAULT_MAGIC_COOKIE.1)))]
    magic_cookie: Option<Cookie>,
    #[arg(long, value_name = "N,N..", value_delimiter = ',', help = with_default(
        "App protocol versions the host accepts; a plugin answers with the highest it speaks",
        SupervisorConfig::DEFAULT_APP_VERSIONS.iter().map(u32::to_string).collect::<Vec<_>>().join(",")))]
    app_versions: Option<Vec<u32>>,
    /// go-plugin AutoMTLS. auto: every plugin is offered a client
    /// certificate, and one that answers with its own is spoken to over
    /// mutual TLS pinned to it; a plugin on its private unix socket needs
    /// none; plaintext tcp is accepted with a warning. require: plaintext
    /// outside the private socket directory is refused. off: no certificate
    /// is offered [default: auto]
    #[arg(long, value_name = "MODE")]
    tls: Option<TlsMode>,
    /// Let plugins ask to be dialled at a TCP address that is not loopback
    /// (0.0.0.0 included). Without it such a plugin fails to start, since
    /// whatever listens there is reachable from other machines.
    #[arg(long)]
    allow_remote_plugins: bool,
    #[arg(long, value_name = "DURATION", help = with_default(
        "Time a stopping plugin gets after SIGTERM before SIGKILL",
        human(SupervisorConfig::DEFAULT_STOP_GRACE)))]
    stop_grace: Option<DurationArg>,
}

/// How running plugins are kept running: `run` only.
#[derive(Debug, Clone, Default, Args)]
pub struct SupervisionFlags {
    #[arg(long, value_name = "DURATION", help = with_default(
        "Time between health checks of each running plugin",
        human(HealthPolicy::DEFAULT_INTERVAL)))]
    health_interval: Option<DurationArg>,
    #[arg(long, value_name = "N", help = with_default(
        "Failed health checks in a row that make a plugin count as hung (it is restarted)",
        HealthPolicy::DEFAULT_FAIL_LIMIT))]
    health_fail_limit: Option<u32>,
    #[arg(long, value_name = "DURATION", help = with_default(
        "Wait before the second restart in a row (the first is immediate); it doubles each time",
        human(RestartPolicy::DEFAULT_INITIAL_BACKOFF)))]
    restart_backoff: Option<DurationArg>,
    #[arg(long, value_name = "DURATION", help = with_default(
        "Longest wait between restarts",
        human(RestartPolicy::DEFAULT_MAX_BACKOFF)))]
    restart_max_backoff: Option<DurationArg>,
    #[arg(long, value_name = "N", help = with_default(
        "Failures tolerated within --failure-window; one more disables the plugin",
        RestartPolicy::DEFAULT_MAX_FAILURES))]
    max_failures: Option<u32>,
    #[arg(long, value_name = "DURATION", help = with_default(
        "Window for --max-failures",
        human(RestartPolicy::DEFAULT_FAILURE_WINDOW)))]
    failure_window: Option<DurationArg>,
    #[arg(long, value_name = "DURATION", help = with_default(
        "Everything still running this long after Ctrl-C is SIGKILLed",
        human(EnvironmentConfig::DEFAULT_SHUTDOWN_DEADLINE)))]
    shutdown_deadline: Option<DurationArg>,
    /// Where the plugins' key-value data and the values of `plugvisor config set` are kept
    /// [default: $XDG_DATA_HOME/plugvisor, else ~/.local/share/plugvisor].
    #[arg(long, value_name = "DIR", env = "PLUGVISOR_DATA_DIR")]
    data_dir: Option<PathBuf>,
    #[arg(long, value_name = "DURATION", help = with_default(
        "Time a plugin's OnActivate hook may take; past it the start fails",
        human(HookTimeouts::DEFAULT_ON_ACTIVATE)))]
    activate_timeout: Option<DurationArg>,
    #[arg(long, value_name = "DURATION", help = with_default(
        "Time a plugin's OnConfigurationChange hook may take; past it the change is not made",
        human(HookTimeouts::DEFAULT_ON_CONFIGURATION_CHANGE)))]
    configuration_change_timeout: Option<DurationArg>,
    #[arg(long, value_name = "DURATION", help = with_default(
        "Time a plugin's OnDeactivate hook may take before it is stopped anyway",
        human(HookTimeouts::DEFAULT_ON_DEACTIVATE)))]
    deactivate_timeout: Option<DurationArg>,
    #[arg(long, value_name = "BYTES", help = with_default(
        "Largest value a plugin may keep in its key-value store",
        KvLimits::DEFAULT_MAX_VALUE_BYTES))]
    kv_max_value_bytes: Option<usize>,
    #[arg(long, value_name = "BYTES", help = with_default(
        "All of one plugin's keys and values together",
        KvLimits::DEFAULT_MAX_PLUGIN_BYTES))]
    kv_max_plugin_bytes: Option<u64>,
    /// Serve HTTP here: the status page at /, each plugin's endpoints under /plugins/{id}/,
    /// and /metrics, /healthz, /readyz, /api/v1/plugins. PORT alone means 127.0.0.1:PORT
    /// [default: off]. The page answers only to the address's own names in the Host header,
    /// and every change it makes needs this run's random token (the page has it); on an
    /// address that is not loopback, reading the page needs the token too: open the
    /// /?token=... URL that is logged, or set your own with --http-token-file.
    #[arg(long, value_name = "ADDR")]
    http: Option<HttpAddress>,
    /// A file holding the status page's token (at least 16 printable characters), instead
    /// of a random one per run: scripts send it in the X-Plugvisor-Token header
    #[arg(long, value_name = "FILE")]
    http_token_file: Option<PathBuf>,
    /// Another name the status page answers to in the Host header (NAME or NAME:PORT), such
    /// as the one a reverse proxy passes on; repeatable
    #[arg(long, value_name = "HOST")]
    http_host: Option<Vec<String>>,
    #[arg(long, value_name = "BYTES", help = with_default(
        "Largest request body under /plugins/; more is answered 413",
        HttpLimits::DEFAULT_MAX_BODY_BYTES))]
    http_max_body_bytes: Option<u64>,
    #[arg(long, value_name = "BYTES", help = with_default(
        "Largest request headers under /plugins/ (names and values); more is answered 431",
        HttpLimits::DEFAULT_MAX_HEADER_BYTES))]
    http_max_header_bytes: Option<usize>,
    #[arg(long, value_name = "DURATION", help = with_default(
        "Time a plugin has to start its HTTP answer; past it the client gets 504",
        human(HttpLimits::DEFAULT_REQUEST_TIMEOUT)))]
    http_timeout: Option<DurationArg>,
}

/// Overwrites the file's values with the flags that were given.
macro_rules! over {
    ($settings:ident, $flags:ident, $($field:ident),*) => {
        $( if $flags.$field.is_some() { $settings.$field = $flags.$field; } )*
    };
}

impl LaunchFlags {
    pub fn over(self, mut settings: Settings) -> Settings {
        let flags = self;
        over!(
            settings,
            flags,
            interpreter,
            lock,
            start_timeout,
            python_start_timeout
        );
        settings.sandbox |= flags.sandbox;
        if flags.no_zygote {
            settings.zygote = Some(false);
        }
        settings
    }
}

impl ProtocolFlags {
    pub fn over(self, mut settings: Settings) -> Settings {
        let flags = self;
        over!(settings, flags, magic_cookie, app_versions, stop_grace, tls);
        settings.allow_remote_plugins |= flags.allow_remote_plugins;
        settings
    }
}

impl SupervisionFlags {
    pub fn over(self, mut settings: Settings) -> Settings {
        let flags = self;
        over!(
            settings,
            flags,
            health_interval,
            health_fail_limit,
            restart_backoff,
            restart_max_backoff,
            max_failures,
            failure_window,
            shutdown_deadline,
            data_dir,
            activate_timeout,
            configuration_change_timeout,
            deactivate_timeout,
            kv_max_value_bytes,
            kv_max_plugin_bytes,
            http,
            http_max_body_bytes,
            http_max_header_bytes,
            http_timeout,
            http_token_file,
            http_host
        );
        settings
    }
}

/// Says which flag or config key is at fault.
fn invalid(error: InvalidConfig) -> anyhow::Error {
    anyhow::anyhow!(
        "invalid setting --{0} (`{0}` in the config file): {1}",
        error.setting,
        error.problem
    )
}

impl Settings {
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

    /// The lock for the bundles in `plugins_dir`: `--lock`, else
    /// `plugins_dir/plugvisor.lock` when it exists.
    pub fn lock_path(&self, plugins_dir: &Path) -> Option<PathBuf> {
        self.lock.clone().or_else(|| {
            let default = plugins_dir.join(plugvisor::LOCK_FILE);
            default.is_file().then_some(default)
        })
    }

    /// Launch options with the lock of `plugins_dir` in force (see [`Self::lock_path`]).
    pub fn launch_options_for(&self, plugins_dir: &Path) -> anyhow::Result<LaunchOptions> {
        let mut options = self.launch_builder()?;
        if let Some(lock) = self.lock_path(plugins_dir) {
            anyhow::ensure!(
                lock.is_file(),
                "lock file {} does not exist; write it with `plugvisor lock`",
                lock.display()
            );
            options = options.lock_file(lock);
        }
        options.build().map_err(invalid)
    }

    /// Launch options with no lock in force.
    pub fn launch_options(&self) -> anyhow::Result<LaunchOptions> {
        self.launch_builder()?.build().map_err(invalid)
    }

    fn launch_builder(&self) -> anyhow::Result<plugvisor::LaunchOptionsBuilder> {
        let mut options = LaunchOptions::builder()
            .sandbox(self.sandbox)
            .zygote(self.zygote.unwrap_or(true));
        for (id, table) in &self.limits {
            let value =
                serde_json::to_value(table).context("a [limits] table is not plain data")?;
            let limits = plugvisor::ResourceLimits::from_json(&value).map_err(|e| {
                anyhow::anyhow!(
                    "invalid [limits.{id}] in the config file: `{}`: {}",
                    e.field,
                    e.problem
                )
            })?;
            options = options.limits(id, limits);
        }
        if let Some(interpreter) = &self.interpreter {
            options = options.interpreter(interpreter);
        }
        if let Some(DurationArg(timeout)) = self.start_timeout {
            options = options.native_start_timeout(timeout);
        }
        if let Some(DurationArg(timeout)) = self.python_start_timeout {
            options = options.python_start_timeout(timeout);
        }
        Ok(options)
    }

    pub fn supervisor_config(&self) -> anyhow::Result<SupervisorConfig> {
        let mut config = SupervisorConfig::builder()
            .tls(self.tls.unwrap_or_default())
            .allow_remote(self.allow_remote_plugins);
        if let Some(cookie) = &self.magic_cookie {
            config = config.magic_cookie(&cookie.key, &cookie.value);
        }
        if let Some(versions) = &self.app_versions {
            config = config.app_versions(versions.iter().copied());
        }
        if let Some(DurationArg(grace)) = self.stop_grace {
            config = config.stop_grace(grace);
        }
        config.build().map_err(invalid)
    }

    pub fn environment_config(&self, plugins_dir: &Path) -> anyhow::Result<EnvironmentConfig> {
        let health = HealthPolicy::new(
            self.health_interval
                .map_or(HealthPolicy::DEFAULT_INTERVAL, |d| d.0),
            self.health_fail_limit
                .unwrap_or(HealthPolicy::DEFAULT_FAIL_LIMIT),
        )
        .map_err(invalid)?;
        let mut restart = RestartPolicy::builder();
        if let Some(DurationArg(backoff)) = self.restart_backoff {
            restart = restart.initial_backoff(backoff);
        }
        if let Some(DurationArg(backoff)) = self.restart_max_backoff {
            restart = restart.max_backoff(backoff);
        }
        if let Some(max) = self.max_failures {
            restart = restart.max_failures(max);
        }
        if let Some(DurationArg(window)) = self.failure_window {
            restart = restart.failure_window(window);
        }
        let mut hooks = HookTimeouts::builder();
        if let Some(DurationArg(timeout)) = self.activate_timeout {
            hooks = hooks.on_activate(timeout);
        }
        if let Some(DurationArg(timeout)) = self.configuration_change_timeout {
            hooks = hooks.on_configuration_change(timeout);
        }
        if let Some(DurationArg(timeout)) = self.deactivate_timeout {
            hooks = hooks.on_deactivate(timeout);
        }
        let mut kv = KvLimits::builder();
        if let Some(bytes) = self.kv_max_value_bytes {
            kv = kv.max_value_bytes(bytes);
        }
        if let Some(bytes) = self.kv_max_plugin_bytes {
            kv = kv.max_plugin_bytes(bytes);
        }
        let data_dir = match &self.data_dir {
            Some(dir) => dir.clone(),
            None => default_data_dir()?,
        };
        let mut config = EnvironmentConfig::builder(plugins_dir)
            .launch(self.launch_options_for(plugins_dir)?)
            .supervisor(self.supervisor_config()?)
            .health(health)
            .restart(restart.build().map_err(invalid)?)
            .hook_timeouts(hooks.build().map_err(invalid)?)
            .kv_limits(kv.build().map_err(invalid)?)
            .data_dir(data_dir);
        if let Some(DurationArg(deadline)) = self.shutdown_deadline {
            config = config.shutdown_deadline(deadline);
        }
        for (id, address) in &self.attach {
            let target = plugvisor::AttachTarget::new(address, None).map_err(|problem| {
                anyhow::anyhow!("invalid [attach] {id} in the config file: {problem}")
            })?;
            config = config.attach(id, target);
        }
        for (id, table) in &self.plugins {
            let values =
                serde_json::to_value(table).context("a [plugins] table is not plain data")?;
            let serde_json::Value::Object(values) = values else {
                unreachable!("a TOML table is an object");
            };
            config = config.plugin_configuration(id, values);
        }
        config.build().map_err(invalid)
    }
}

impl Settings {
    pub fn http_limits(&self) -> anyhow::Result<HttpLimits> {
        let mut limits = HttpLimits::builder();
        if let Some(bytes) = self.http_max_body_bytes {
            limits = limits.max_body_bytes(bytes);
        }
        if let Some(bytes) = self.http_max_header_bytes {
            limits = limits.max_header_bytes(bytes);
        }
        if let Some(DurationArg(timeout)) = self.http_timeout {
            limits = limits.request_timeout(timeout);
        }
        limits.build().map_err(invalid)
    }
}

impl Settings {
    /// Who may use the status page on a listener bound to `bound`.
    pub fn ui_access(&self, bound: std::net::SocketAddr) -> anyhow::Result<UiAccess> {
        let mut access = UiAccess::for_listener(bound);
        if let Some(path) = &self.http_token_file {
            let token = std::fs::read_to_string(path)
                .with_context(|| format!("--http-token-file {}", path.display()))?;
            access = access.with_token(&token).map_err(invalid)?;
        }
        for host in self.http_host.iter().flatten() {
            access = access.allow_host(host);
        }
        Ok(access)
    }
}

/// `$XDG_DATA_HOME/plugvisor`, else `~/.local/share/plugvisor`.
fn default_data_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir).join("plugvisor"));
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .context("neither XDG_DATA_HOME nor HOME is set; pass --data-dir")?;
    Ok(PathBuf::from(home).join(".local/share/plugvisor"))
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
            app-versions = [1, 2]
            tls = "require"
            allow-remote-plugins = true
            "#,
        )
        .unwrap();
        let flags = SupervisionFlags {
            health_interval: Some("2s".parse().unwrap()),
            ..SupervisionFlags::default()
        };
        let merged = flags.over(file);
        let config = merged.environment_config(Path::new("/p")).unwrap();
        assert_eq!(config.health().interval(), Duration::from_secs(2));
        assert_eq!(config.restart().max_failures(), 5);
        assert_eq!(config.supervisor().magic_cookie().0, "K");
        assert_eq!(config.supervisor().app_versions(), &[1, 2]);
        assert_eq!(
            config.restart().initial_backoff(),
            RestartPolicy::DEFAULT_INITIAL_BACKOFF
        );
        assert_eq!(config.supervisor().tls(), TlsMode::Require);
        assert!(config.supervisor().allow_remote());
    }

    #[test]
    fn the_zygote_is_on_unless_the_file_or_the_flag_turns_it_off() {
        let on = Settings::default().launch_options().unwrap();
        assert!(on.zygote());
        let file: Settings = toml::from_str("zygote = false").unwrap();
        assert!(!file.launch_options().unwrap().zygote());
        let flags = LaunchFlags {
            no_zygote: true,
            ..LaunchFlags::default()
        };
        assert!(
            !flags
                .over(Settings::default())
                .launch_options()
                .unwrap()
                .zygote()
        );
    }

    /// `10 s`, `10 min`, as the README writes durations.
    fn readme(duration: Duration) -> String {
        let secs = duration.as_secs();
        if secs >= 120 && secs.is_multiple_of(60) {
            format!("{} min", secs / 60)
        } else {
            format!("{secs} s")
        }
    }

    /// The README's tables quote the library's defaults; they must agree.
    #[test]
    fn the_readme_states_the_defaults() {
        let text = include_str!("../../../../README.md");
        let row = |label: &str| -> &str {
            text.lines()
                .find(|l| l.starts_with(&format!("| {label} |")))
                .unwrap_or_else(|| panic!("no README row {label:?}"))
        };
        let has = |label: &str, expected: String| {
            let line = row(label);
            assert!(
                line.contains(&expected),
                "README row {label:?} should say {expected:?}: {line}"
            );
        };
        has(
            "health check interval",
            readme(HealthPolicy::DEFAULT_INTERVAL),
        );
        has(
            "failed checks in a row that mean \"hung\"",
            HealthPolicy::DEFAULT_FAIL_LIMIT.to_string(),
        );
        has(
            "later restarts",
            format!(
                "{}, doubling to {}, ±{} % jitter",
                readme(RestartPolicy::DEFAULT_INITIAL_BACKOFF),
                readme(RestartPolicy::DEFAULT_MAX_BACKOFF),
                (RestartPolicy::DEFAULT_JITTER * 100.0).round()
            ),
        );
        has(
            "backoff reset",
            format!(
                "after {} running",
                readme(RestartPolicy::DEFAULT_RESET_AFTER)
            ),
        );
        has(
            "crash-loop limit",
            format!(
                "more than {} failures within {}",
                RestartPolicy::DEFAULT_MAX_FAILURES,
                readme(RestartPolicy::DEFAULT_FAILURE_WINDOW)
            ),
        );
        has(
            "shutdown deadline",
            format!(
                "{}, then SIGKILL",
                readme(EnvironmentConfig::DEFAULT_SHUTDOWN_DEADLINE)
            ),
        );
        has(
            "OnActivate / OnConfigurationChange / OnDeactivate timeouts",
            format!(
                "{} / {} / {}",
                readme(HookTimeouts::DEFAULT_ON_ACTIVATE),
                readme(HookTimeouts::DEFAULT_ON_CONFIGURATION_CHANGE),
                readme(HookTimeouts::DEFAULT_ON_DEACTIVATE)
            ),
        );
        has(
            "key-value limits",
            format!(
                "{} MiB a value, {} MiB a plugin, {}-byte keys",
                KvLimits::DEFAULT_MAX_VALUE_BYTES >> 20,
                KvLimits::DEFAULT_MAX_PLUGIN_BYTES >> 20,
                KvLimits::DEFAULT_MAX_KEY_BYTES
            ),
        );
        let prose = |expected: String| {
            assert!(
                text.contains(&expected),
                "the README should say {expected:?}"
            )
        };
        prose(format!(
            "Python\n  plugins get {} to start (`--python-start-timeout`), native ones {}",
            readme(LaunchOptions::DEFAULT_PYTHON_START_TIMEOUT),
            readme(LaunchOptions::DEFAULT_NATIVE_START_TIMEOUT)
        ));
        prose(format!(
            "`--http-max-body-bytes`\n({} MiB)",
            HttpLimits::DEFAULT_MAX_BODY_BYTES >> 20
        ));
        prose(format!(
            "`--http-max-header-bytes` ({} KiB)",
            HttpLimits::DEFAULT_MAX_HEADER_BYTES >> 10
        ));
        prose(format!(
            "`--http-timeout` ({})",
            readme(HttpLimits::DEFAULT_REQUEST_TIMEOUT)
        ));
    }

    #[test]
    fn plugin_tables_become_plugin_configuration() {
        let file: Settings = toml::from_str(
            r#"
            data-dir = "/var/lib/plugvisor"
            [plugins.hello-python]
            greeting = "Hi"
            shout = true
            "#,
        )
        .unwrap();
        let config = file.environment_config(Path::new("/p")).unwrap();
        let values = config.plugin_configuration("hello-python").unwrap();
        assert_eq!(values["greeting"], "Hi");
        assert_eq!(values["shout"], true);
        assert_eq!(config.data_dir(), Some(Path::new("/var/lib/plugvisor")));
    }

    #[test]
    fn limits_tables_override_a_plugins_limits() {
        let file: Settings = toml::from_str(
            r#"
            [limits.hello-go]
            memory = "512MiB"
            open_files = 256
            "#,
        )
        .unwrap();
        let options = file.launch_options().unwrap();
        let limits = options.limits_for("hello-go").unwrap();
        assert_eq!(limits.memory, Some(512 << 20));
        assert_eq!(limits.open_files, Some(256));
        assert_eq!(options.limits_for("other"), None);
        let bad: Settings = toml::from_str("[limits.hello-go]\nmemory = \"lots\"").unwrap();
        let error = bad.launch_options().unwrap_err().to_string();
        assert!(
            error.starts_with(
                "invalid [limits.hello-go] in the config file: `memory`: \"lots\" is not a size"
            ),
            "{error}"
        );
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        assert!(toml::from_str::<Settings>("helth-interval = \"1s\"").is_err());
        let error = toml::from_str::<Settings>("health-interval = \"soon\"").unwrap_err();
        assert!(error.to_string().contains("500ms"), "{error}");
        assert!("nokey".parse::<Cookie>().is_err());
        assert!("=v".parse::<Cookie>().is_err());
        let zero: Settings = toml::from_str("health-interval = \"0s\"").unwrap();
        let error = zero.environment_config(Path::new("/p")).unwrap_err();
        assert!(error.to_string().contains("--health-interval"), "{error}");
    }
}
