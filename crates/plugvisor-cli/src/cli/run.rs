//! `plugvisor run`: activate a plugins folder, supervise it, show its status,
//! and stop everything on SIGINT or SIGTERM (a second one SIGKILLs).

use std::collections::VecDeque;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use plugvisor::{Available, Environment, Event, EventKind};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::RecvError;

use super::logging::LogRing;
use super::notify;
use super::settings::Settings;
use super::table::{fit, render_table};
use super::{control, watch};

/// How `run` shows what happens.
pub enum Display {
    /// A live table, redrawn in place, with recent events and log lines.
    Table(LogRing),
    /// One line a state change, on stdout.
    Plain,
    /// One JSON object a state change, on stdout.
    Json,
}

impl Display {
    pub fn choose(json: bool) -> Display {
        if json {
            Display::Json
        } else if std::io::stdout().is_terminal() {
            Display::Table(LogRing::default())
        } else {
            Display::Plain
        }
    }
}

/// What `run` takes besides the settings.
pub struct RunOptions {
    pub control_socket: Option<PathBuf>,
    /// Plugins to start in debug mode.
    pub debug: Vec<String>,
    /// Reload when the plugins directory changes.
    pub watch: bool,
}

pub async fn run(
    plugins_dir: &Path,
    settings: Settings,
    options: RunOptions,
    display: Display,
) -> anyhow::Result<ExitCode> {
    // From the start: the plugins' first starts may take longer than the watchdog.
    let watchdog = notify::watchdog();
    let config = settings.environment_config(plugins_dir)?;
    let env = Environment::new(config)?;
    for bundle in env.available() {
        if let Available::Invalid(error) = bundle {
            tracing::error!("skipping bundle: {error}");
        }
    }
    for id in &options.debug {
        env.set_debugging(id, true)
            .with_context(|| format!("--debug {id}"))?;
    }
    let socket_path = options
        .control_socket
        .unwrap_or_else(control::default_socket_path);
    let listener = control::bind(&socket_path).await?;
    tracing::info!(socket = %socket_path.display(), "control socket ready: `plugvisor status` talks to it");
    let control = tokio::spawn(control::serve(listener, env.clone()));
    let http = match settings.http {
        Some(address) => Some(serve_http(address.0, &env, &settings).await?),
        None => None,
    };
    let mut title = format!("plugvisor — {}", env.config().plugins_dir().display());
    if let Some((_, url)) = &http {
        title.push_str(&format!(" — page {url}/ — {url}/plugins/ID/"));
    }
    title.push_str(&format!(
        " — control socket {} — Ctrl-C stops everything",
        socket_path.display()
    ));
    let mut signals = StopSignals::new()?;
    // Subscribe before any activation, so the display misses no event.
    let events = env.subscribe();
    let display_kind = DisplayKind::of(&display);
    let shown = tokio::spawn(show(env.clone(), events, display, title));
    // Watching before the first activation, so no change is missed.
    let watch = match options.watch {
        true => watch::spawn(env.clone())
            .inspect_err(|error| tracing::warn!("{error:#}; `plugvisor reload` still works"))
            .ok(),
        false => None,
    };

    let ids = env.plugin_ids();
    let activations = futures::future::join_all(ids.iter().map(|id| env.activate(id)));
    let code = tokio::select! {
        results = activations => {
            let active = results.iter().filter(|r| r.is_ok()).count();
            if active == 0 {
                tracing::error!("no plugin could be activated; see the errors above");
                notify::status("no plugin could be activated");
                ExitCode::FAILURE
            } else {
                tracing::info!("{active} of {} plugins active; Ctrl-C stops them", ids.len());
                notify::ready(&format!("{active} of {} plugins running", ids.len()));
                signals.next().await;
                ExitCode::SUCCESS
            }
        }
        _ = signals.next() => ExitCode::SUCCESS,
    };

    if let Some(watch) = watch {
        watch.abort();
    }
    let started = Instant::now();
    let table = matches!(display_kind, DisplayKind::Table);
    tracing::info!("stopping all plugins (Ctrl-C again to kill them now)");
    notify::stopping("stopping all plugins");
    let shutdown = env.shutdown();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = signals.next() => {
                tracing::warn!("second signal: killing all plugins");
                env.kill_all();
            }
        }
    }
    control.abort();
    if let Some(watchdog) = watchdog {
        watchdog.abort();
    }
    if let Some((http, _)) = http {
        http.abort();
    }
    let _ = std::fs::remove_file(&socket_path);
    // Let the display draw the final state.
    tokio::time::sleep(Duration::from_millis(20)).await;
    shown.abort();
    let _ = shown.await;
    let stopped = format!(
        "all plugins stopped in {:.1} ms",
        started.elapsed().as_secs_f64() * 1000.0
    );
    if table {
        // The log pane is gone with the table; say it under the last frame.
        println!("{stopped}");
    }
    tracing::info!("{stopped}");
    Ok(code)
}

/// Starts the HTTP listener (before any plugin, so /healthz answers at once),
/// with the status page at `/`.
async fn serve_http(
    address: std::net::SocketAddr,
    env: &Environment,
    settings: &Settings,
) -> anyhow::Result<(tokio::task::JoinHandle<()>, String)> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen for HTTP on {address}"))?;
    let bound = listener.local_addr()?;
    let access = settings.ui_access(bound)?;
    let router = plugvisor::http::router(env.clone(), settings.http_limits()?)
        .merge(plugvisor::http::ui_router(env.clone(), access.clone()));
    let url = format!("http://{bound}");
    if address.ip().is_loopback() {
        tracing::info!(
            "HTTP on {url}: the status page at {url}/, plugins under {url}/plugins/ID/, and /metrics, /healthz, /readyz, /api/v1/plugins"
        );
    } else {
        tracing::warn!(
            "HTTP on {url}, which is not a loopback address: anyone who can reach it can call the plugins' endpoints; put it behind a proxy with authentication, or bind 127.0.0.1"
        );
        // The operator needs it to open the page; it is this run's secret.
        let login = match settings.http_token_file {
            Some(_) => "/?token=<the token in --http-token-file>".to_string(),
            None => access.login_path(),
        };
        tracing::warn!(
            "the status page needs the token on this address: open {url}{login} (a cookie keeps it for the browser)"
        );
    }
    let server = tokio::spawn(async move {
        // Aborted at shutdown: plugins' streams end when the plugins stop.
        let _ = plugvisor::http::serve(listener, router, std::future::pending()).await;
    });
    Ok((server, url))
}

/// Which display `run` chose, once the display itself has moved into its task.
enum DisplayKind {
    Table,
    Lines,
}

impl DisplayKind {
    fn of(display: &Display) -> DisplayKind {
        match display {
            Display::Table(_) => DisplayKind::Table,
            _ => DisplayKind::Lines,
        }
    }
}

/// SIGINT, SIGTERM and SIGHUP (the terminal went away) all stop `run`
/// cleanly; a second one kills what is left.
struct StopSignals {
    signals: [Signal; 3],
    last: Option<Instant>,
}

/// Signals this close together are one: GNU `timeout` and some shells
/// deliver one Ctrl-C twice, which must not skip the plugins' cleanup.
const SAME_SIGNAL: Duration = Duration::from_millis(50);

impl StopSignals {
    fn new() -> anyhow::Result<StopSignals> {
        let watch = |kind, name| signal(kind).with_context(|| format!("cannot watch {name}"));
        Ok(StopSignals {
            signals: [
                watch(SignalKind::interrupt(), "SIGINT")?,
                watch(SignalKind::terminate(), "SIGTERM")?,
                watch(SignalKind::hangup(), "SIGHUP")?,
            ],
            last: None,
        })
    }

    async fn next(&mut self) {
        loop {
            let [interrupt, terminate, hangup] = &mut self.signals;
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
                _ = hangup.recv() => {}
            }
            let now = Instant::now();
            let repeated = self.last.is_some_and(|last| now - last < SAME_SIGNAL);
            self.last = Some(now);
            if !repeated {
                return;
            }
        }
    }
}

async fn show(env: Environment, mut events: Receiver<Event>, display: Display, title: String) {
    match display {
        Display::Json | Display::Plain => loop {
            match events.recv().await {
                Ok(event) => {
                    let line = match display {
                        Display::Json => serde_json::to_string(&event).unwrap_or_default(),
                        _ => describe_event(&event),
                    };
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "{line}");
                    let _ = out.flush();
                }
                Err(RecvError::Lagged(n)) => tracing::warn!("display skipped {n} events"),
                Err(RecvError::Closed) => return,
            }
        },
        Display::Table(logs) => {
            let mut recent = VecDeque::new();
            let mut ticks = tokio::time::interval(Duration::from_millis(500));
            loop {
                tokio::select! {
                    event = events.recv() => match event {
                        Ok(event) => {
                            if recent.len() == RECENT_EVENTS {
                                recent.pop_front();
                            }
                            recent.push_back(describe_event(&event));
                        }
                        Err(RecvError::Lagged(_)) => {}
                        Err(RecvError::Closed) => return,
                    },
                    _ = ticks.tick() => {}
                }
                draw_screen(&env, &title, &recent, &logs);
            }
        }
    }
}

const RECENT_EVENTS: usize = 8;

/// Redraws the whole terminal; each line is cut to the terminal's width.
fn draw_screen(env: &Environment, title: &str, recent: &VecDeque<String>, logs: &LogRing) {
    let (width, height) = terminal_size::terminal_size()
        .map(|(w, h)| (w.0 as usize, h.0 as usize))
        .unwrap_or((100, 30));
    let mut lines = vec![title.to_string(), String::new()];
    lines.extend(render_table(&env.statuses(), SystemTime::now(), width));
    lines.push(String::new());
    lines.push("recent events:".into());
    lines.extend(recent.iter().map(|l| format!("  {l}")));
    lines.push(String::new());
    lines.push("log:".into());
    let room = height.saturating_sub(lines.len() + 1);
    lines.extend(logs.last(room).into_iter().map(|l| format!("  {l}")));
    let mut out = std::io::stdout().lock();
    let mut frame = String::from("\x1b[H\x1b[2J");
    for line in lines.iter().take(height.saturating_sub(1).max(1)) {
        frame.push_str(&fit(line, width));
        frame.push_str("\r\n");
    }
    let _ = out.write_all(frame.as_bytes());
    let _ = out.flush();
}

/// One line for a state change, for people.
pub fn describe_event(event: &Event) -> String {
    let s = &event.status;
    let clock = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    let time = clock.get(11..19).unwrap_or(&clock);
    let what = match &event.kind {
        EventKind::Starting => "starting".to_string(),
        EventKind::Queued => s.note.clone().unwrap_or_else(|| "queued".into()),
        EventKind::Running { startup_ms } => format!(
            "Running (pid {}, healthy {startup_ms} ms after launch, restarts {})",
            s.pid.unwrap_or_default(),
            s.restarts
        ),
        EventKind::FailedToStart { error } => format!("failed to start: {error}"),
        EventKind::Crashed { exit } => format!("crashed ({exit})"),
        EventKind::Unhealthy { reason } => format!("unhealthy: {reason}"),
        EventKind::RestartScheduled { delay_ms, attempt } => {
            format!("restart #{attempt} in {delay_ms} ms")
        }
        EventKind::Disabled { reason } => format!("FailedToStayRunning: {reason}"),
        EventKind::Debugging { on: true } => {
            "debug mode: failed health checks do not kill it, an exit does not restart it"
                .to_string()
        }
        EventKind::Debugging { on: false } => "debug mode ended".to_string(),
        EventKind::Stopping => "stopping".to_string(),
        EventKind::Stopped {
            method: Some(method),
            exit: Some(exit),
        } => format!("stopped {method} ({exit})"),
        EventKind::Stopped {
            method: Some(method),
            exit: None,
        } => format!("stopped {method}"),
        EventKind::Stopped { .. } => "stopped".to_string(),
        EventKind::Detached => "detached: its next start spawns its bundle".to_string(),
        EventKind::Added => "new bundle".to_string(),
        EventKind::Reloaded { previous_version } => {
            format!("new version {} (was {previous_version})", s.version)
        }
        EventKind::ReloadRefused { reason } => {
            format!(
                "new version refused, {} {} stays: {reason}",
                s.version, s.state
            )
        }
        EventKind::Removed => "bundle removed; stopped and forgotten".to_string(),
        other => format!("{other:?}"),
    };
    let first_line = what.lines().next().unwrap_or_default().to_string();
    format!("{time} {}: {first_line}", s.id)
}
