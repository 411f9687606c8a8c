//! Command-line parsing and dispatch. Only this layer prints.

mod check;
mod config;
mod control;
mod lock;
mod logging;
mod notify;
mod ping;
mod reload;
mod run;
mod settings;
mod table;
mod watch;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use control::Request;
use settings::{LaunchFlags, ProtocolFlags, Settings, SupervisionFlags};

#[derive(Parser)]
#[command(
    name = "plugvisor",
    version,
    about = "Run, health-check and restart HashiCorp go-plugin gRPC plugins. Python plugins are first-class.",
    after_help = "Examples:
  plugvisor run examples/plugins             supervise every bundle in a folder
  plugvisor status                           the status table of a running `run`
  plugvisor restart hello-python             restart one plugin of a running `run`
  plugvisor debug hello-go                   no health kills or restarts: pause it in a debugger
  plugvisor attach hello-go unix:/tmp/p.sock supervise a plugin you started by hand
  plugvisor reload                           apply what changed in the plugins folder now
  plugvisor config set hello-python greeting=Bonjour   change its configuration live
  plugvisor ping examples/plugins/hello-go   does this plugin start and answer?
  plugvisor check examples/plugins/*         validate bundles without starting them
  plugvisor lock examples/plugins            pin every bundle's files by sha256"
)]
struct Cli {
    /// Log filter: error, warn, info, debug, trace, or per target (`plugvisor=debug,plugin=warn`).
    #[arg(long, global = true, env = "PLUGVISOR_LOG", default_value = "info")]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Activate every bundle in PLUGINS_DIR and keep them running until Ctrl-C.
    #[command(
        after_help = "A crashed plugin is restarted at once, then with a backoff (1s doubling to 60s);
more than --max-failures failures within --failure-window disable it (FailedToStayRunning).
A hung plugin is caught by the health check: --health-fail-limit failures in a row.
Ctrl-C or SIGTERM stops all plugins (controller Shutdown, SIGTERM, SIGKILL); a second Ctrl-C kills them.
--debug ID: that plugin is neither killed by failed health checks nor restarted (pause it in a debugger).
Under systemd (Type=notify) it sends READY=1, STOPPING=1 and WATCHDOG=1; see deploy/ in the repository.
With PLUGINS_DIR/plugvisor.lock (see `plugvisor lock`) or --lock FILE, every start checks the plugin's
files against it: a mismatch, or a bundle it does not list, is refused (FailedToStart, not restarted).

Hot reload: PLUGINS_DIR is watched (inotify). Once it has been quiet for 300 ms, a new bundle is
activated, a bundle whose plugin.json or executable changed is restarted with its new version, and
a removed bundle is stopped and dropped from the status. A new version that cannot be launched
(bad manifest, missing executable) is refused with a warning, and the running version stays.
A bundle copied in steps less than 300 ms apart is loaded once, when whole; a slower copy may be
refused part-way (say, its executable is not there yet) and is loaded once it is complete.
`plugvisor reload` does the same on demand; --no-watch turns the watching off.

Settings may also come from a TOML file (--config, or ./plugvisor.toml), with the flags' names,
each plugin's configuration values in a [plugins.ID] table, and resource limits that replace
those of its plugin.json (server.limits) in a [limits.ID] table:
  health-interval = \"5s\"
  max-failures = 5
  [plugins.hello-python]
  greeting = \"Bonjour\"
  [limits.hello-python]
  memory = \"2GiB\"       # RLIMIT_AS: address space; also open_files, processes, cpu_seconds
Flags win over the file; `plugvisor config set` wins over both and is kept in --data-dir.

Examples:
  plugvisor run examples/plugins
  plugvisor run --json plugins/ > events.jsonl
  plugvisor run --debug hello-go examples/plugins
  plugvisor run --health-interval 2s --max-failures 10 --interpreter /usr/bin/python3.11 plugins/"
    )]
    Run {
        /// Folder whose subdirectories are plugin bundles (each with a plugin.json).
        plugins_dir: PathBuf,
        /// Print every state change as a JSON line on stdout instead of the table.
        #[arg(long)]
        json: bool,
        /// TOML file with the same settings as the flags.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Start plugin ID in debug mode (repeatable): see `plugvisor debug --help`.
        #[arg(long = "debug", value_name = "ID")]
        debug: Vec<String>,
        /// Do not watch PLUGINS_DIR; changes are applied only by `plugvisor reload`.
        #[arg(long)]
        no_watch: bool,
        #[command(flatten)]
        control: ControlSocket,
        #[command(flatten)]
        launch: LaunchFlags,
        #[command(flatten)]
        protocol: ProtocolFlags,
        #[command(flatten)]
        supervision: Box<SupervisionFlags>,
    },
    /// Show the status table of a running `plugvisor run`.
    Status {
        /// Print the statuses as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        control: ControlSocket,
    },
    /// Start (activate) one plugin of a running `plugvisor run`.
    Start {
        /// The plugin's id (as `plugvisor status` lists them).
        id: String,
        #[command(flatten)]
        control: ControlSocket,
    },
    /// Stop (deactivate) one plugin of a running `plugvisor run`.
    Stop {
        /// The plugin's id (as `plugvisor status` lists them).
        id: String,
        #[command(flatten)]
        control: ControlSocket,
    },
    /// Restart one plugin of a running `plugvisor run`.
    Restart {
        /// The plugin's id (as `plugvisor status` lists them).
        id: String,
        #[command(flatten)]
        control: ControlSocket,
    },
    /// Put one plugin of a running `plugvisor run` in debug mode, to pause it in a debugger.
    #[command(
        after_help = "In debug mode, failed health checks are logged but never kill the plugin,
an exit does not restart it (it ends FailedToStayRunning; `plugvisor start ID` starts it again),
and each start, Implemented and OnActivate may take an hour. A running plugin keeps its process:
attach the debugger to the PID in the table. To debug its start, restart it in debug mode,
or start `plugvisor run --debug ID`. The STATE column says `(debug)`; `status --json` has \"debug\": true.

Examples:
  plugvisor debug hello-go && dlv attach $(plugvisor status --json | jq '.[] | select(.id==\"hello-go\") | .pid')
  plugvisor debug hello-python && plugvisor restart hello-python
  plugvisor debug hello-go --off"
    )]
    Debug {
        /// The plugin's id (as `plugvisor status` lists them).
        id: String,
        /// End debug mode: health checks and restarts apply again.
        #[arg(long)]
        off: bool,
        #[command(flatten)]
        control: ControlSocket,
    },
    /// Supervise a plugin you started by hand (under a debugger, say) in place of ID's own process.
    #[command(
        after_help = "go-plugin's reattach. Start the plugin yourself with the handshake environment a
host would give it, read the address from its handshake line (CORE|APP|NETWORK|ADDRESS|PROTOCOL),
and attach it; `plugvisor run` stops ID's own process first. The attached plugin gets health
checks, Implemented, OnActivate, configuration changes and HTTP as usual, but plugvisor never
signals, kills or restarts it: `plugvisor stop ID` calls OnDeactivate and disconnects (the
process keeps running), and when it goes away ID ends FailedToStayRunning, not restarted.
Until `plugvisor attach ID --off`, every start of ID attaches again; but go-plugin's broker
closes with the first host connection, so a plugin that uses the host API (an SDK plugin with
hooks) must be started by hand again to be attached again. With --pid, its exit is seen at
once and the host API accepts only its process group; without, its end is told by its
connection closing (its GRPCStdio stream, which go-plugin always serves, breaks). ADDR is unix:/path (or /path), or
tcp:127.0.0.1:PORT (or 127.0.0.1:PORT): loopback only, unless run has --allow-remote-plugins.
No TLS. In plugvisor.toml, `[attach]` then `ID = \"unix:/path\"` attaches from the start.
Pair it with `plugvisor debug ID` so that failed health checks of a paused plugin are not counted.

Examples:
  MATTERMOST_PLUGIN='Securely message teams, anywhere.' PLUGIN_PROTOCOL_VERSIONS=1 \\
    PLUGIN_UNIX_SOCKET_DIR=/tmp/dev dlv exec --headless -l 127.0.0.1:2345 ./plugin
  #  -> prints 1|1|unix|/tmp/dev/plugin123456|grpc|
  plugvisor attach hello-go unix:/tmp/dev/plugin123456 --pid $(pgrep -n plugin)
  plugvisor attach hello-go --off"
    )]
    Attach {
        /// The plugin's id (as `plugvisor status` lists them); its bundle must be in the plugins folder.
        id: String,
        /// Where the plugin listens: unix:/path or tcp:127.0.0.1:PORT, as its handshake line says.
        #[arg(required_unless_present = "off")]
        address: Option<String>,
        /// The plugin's process id, to see its exit at once (it is never signalled).
        #[arg(long, value_name = "PID")]
        pid: Option<u32>,
        /// Stop attaching: disconnect (its process keeps running); ID's next start spawns its bundle again.
        #[arg(long, conflicts_with_all = ["address", "pid"])]
        off: bool,
        #[command(flatten)]
        control: ControlSocket,
    },
    /// Rescan the plugins folder of a running `plugvisor run` and apply what changed.
    #[command(
        after_help = "New bundles are activated, bundles whose plugin.json or executable changed are
restarted with their new version, removed bundles are stopped and dropped. A new version
that cannot be launched is refused and the running one stays; its reason is printed.
Exits 0 when nothing was refused and every start succeeded, 1 otherwise.
`plugvisor run` does this by itself when files change, unless it was given --no-watch.

Examples:
  plugvisor reload            # after changing the folder of a `plugvisor run --no-watch`
  plugvisor reload --json   # {\"added\":[..],\"restarted\":[..],\"removed\":[..],\"refused\":[..],\"failed\":[..]}"
    )]
    Reload {
        /// Print what changed as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        control: ControlSocket,
    },
    /// Show or change a plugin's configuration in a running `plugvisor run`.
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// Start one bundle, wait until it is healthy, stop it, and print both times.
    #[command(after_help = "Exits 0 only if the plugin became healthy.

Examples:
  plugvisor ping examples/plugins/hello-python
  plugvisor ping --json my-plugin/   # {\"id\":..,\"healthy\":true,\"start_ms\":..,\"stop_ms\":..}")]
    Ping {
        /// The bundle to start: a directory holding a plugin.json.
        bundle_dir: PathBuf,
        /// Print one JSON object instead of a sentence.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        launch: LaunchFlags,
        #[command(flatten)]
        protocol: ProtocolFlags,
    },
    /// Validate bundles and print how each would be launched; start nothing.
    #[command(
        after_help = "Exits 0 when every bundle is valid, 1 otherwise, 2 on a usage error.
Each resource limit (server.limits, or [limits.ID] in ./plugvisor.toml) is printed with the
setrlimit that enforces it; bad limit values fail the bundle.

Examples:
  plugvisor check examples/plugins/*
  plugvisor check --json my-plugin/"
    )]
    Check {
        /// Bundle directories, or plugins folders (each bundle in them is checked).
        #[arg(required = true, value_name = "DIR")]
        bundle_dirs: Vec<PathBuf>,
        /// Print a JSON array instead of lines.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        launch: LaunchFlags,
    },
    /// Write the sha256 of every bundle's files to PLUGINS_DIR/plugvisor.lock, which `run`, `check` and `ping` then enforce.
    #[command(
        after_help = "The lock pins each bundle's executable (for a Python plugin: its script and the
interpreter the lookup finds, so pass the same --interpreter as to `run`). While a
lock is in force (plugvisor.lock in the plugins directory, or --lock FILE), a plugin
whose files do not match, or that the lock does not list, is refused at every
start, restarts included (FailedToStart). Running `lock` again rewrites the file
from the bundles as they are now. The file is JSON, keys in sorted order.

Examples:
  plugvisor lock examples/plugins
  plugvisor lock --lock /etc/plugvisor/plugins.lock /srv/plugins"
    )]
    Lock {
        /// Folder whose subdirectories are plugin bundles.
        plugins_dir: PathBuf,
        #[command(flatten)]
        launch: LaunchFlags,
    },
}

#[derive(clap::Args)]
pub struct ControlSocket {
    /// Control socket of `plugvisor run` [default: $XDG_RUNTIME_DIR/plugvisor/control.sock, else /tmp/plugvisor-UID/control.sock].
    #[arg(long, env = "PLUGVISOR_CONTROL_SOCKET", value_name = "PATH")]
    control_socket: Option<PathBuf>,
}

impl ControlSocket {
    pub fn path(self) -> PathBuf {
        self.control_socket
            .unwrap_or_else(control::default_socket_path)
    }
}

pub fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    // One thread: a supervisor waits on I/O, and a call that stays on one
    // thread skips the cross-thread wake-ups that cost ~30 % of ping latency
    // (bench/results.md). Plugins are spawned from this thread, which lives
    // as long as the process, so their parent-death signal is tied to it.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(dispatch(cli))
}

async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    let ring = |display: &run::Display| match display {
        run::Display::Table(ring) => Some(ring.clone()),
        _ => None,
    };
    match cli.command {
        Command::Run {
            plugins_dir,
            json,
            config,
            debug,
            no_watch,
            control,
            launch,
            protocol,
            supervision,
        } => {
            let display = run::Display::choose(json);
            logging::init(&cli.log_level, ring(&display))?;
            let file = Settings::from_file(config.as_deref())?;
            let settings = supervision.over(protocol.over(launch.over(file)));
            let options = run::RunOptions {
                control_socket: control.control_socket,
                debug,
                watch: !no_watch,
            };
            run::run(&plugins_dir, settings, options, display).await
        }
        Command::Ping {
            bundle_dir,
            json,
            launch,
            protocol,
        } => {
            logging::init(&cli.log_level, None)?;
            let settings = protocol.over(launch.over(Settings::from_file(None)?));
            ping::ping(&bundle_dir, &settings, json).await
        }
        Command::Check {
            bundle_dirs,
            json,
            launch,
        } => {
            logging::init(&cli.log_level, None)?;
            let settings = launch.over(Settings::from_file(None)?);
            check::check(&bundle_dirs, &settings, json)
        }
        Command::Lock {
            plugins_dir,
            launch,
        } => {
            logging::init(&cli.log_level, None)?;
            let settings = launch.over(Settings::from_file(None)?);
            lock::lock(&plugins_dir, &settings)
        }
        Command::Status { json, control } => {
            let response = control::request(&control.path(), &Request::Status).await?;
            if let Some(error) = response.error {
                eprintln!("plugvisor: {error}");
                return Ok(ExitCode::FAILURE);
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&response.statuses)?);
            } else {
                print_table(&response.statuses);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Start { id, control } => send(control, Request::Start { id }).await,
        Command::Stop { id, control } => send(control, Request::Stop { id }).await,
        Command::Restart { id, control } => send(control, Request::Restart { id }).await,
        Command::Debug { id, off, control } => send(control, Request::Debug { id, on: !off }).await,
        Command::Attach {
            id,
            address,
            pid,
            off,
            control,
        } => {
            let address = if off { None } else { address };
            send(control, Request::Attach { id, address, pid }).await
        }
        Command::Reload { json, control } => {
            let response = control::request(&control.path(), &Request::Reload).await?;
            reload::print(response, json)
        }
        Command::Config(command) => config::run(command).await,
    }
}

async fn send(control: ControlSocket, request: Request) -> anyhow::Result<ExitCode> {
    let response = control::request(&control.path(), &request).await?;
    if let Some(error) = response.error {
        eprintln!("plugvisor: {error}");
        return Ok(ExitCode::FAILURE);
    }
    print_table(&response.statuses);
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn print_table(statuses: &[plugvisor::PluginStatus]) {
    let width = terminal_size::terminal_size().map_or(200, |(w, _)| w.0 as usize);
    for line in table::render_table(statuses, std::time::SystemTime::now(), width) {
        println!("{line}");
    }
}
