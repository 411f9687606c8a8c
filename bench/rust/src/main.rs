//! plugvisor-bench: the scenarios of `gohost`'s benchmark subcommands
//! (tools/gohost), driven through plugvisor's library, each printing one JSON
//! object with timings in milliseconds. `bench/run` runs both side by side.
//!
//! The plugin is given as a plugins folder (every subdirectory a bundle), the
//! way plugvisor is used: everything goes through [`Environment`], so a start
//! here is the full activation path (launch plan, spawn, handshake, connect,
//! first SERVING health check) and a stop is a deactivation.
//!
//! The scenarios of the hooks, host API and HTTP issues are in `protocol.rs`
//! (hooks, host API, fan-out, fsync) and `web.rs` (HTTP serving, /metrics).

mod protocol;
mod web;

/// The allocator of the `plugvisor` binary (crates/plugvisor-cli), so that
/// the host measured here is the one operators run.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use plugvisor::{Environment, EnvironmentConfig, EventKind};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;
use tracing_subscriber::Layer;

/// Two of plugvisor's own debug events, noted with the wall clock: "plugin
/// connected" (handshake read and gRPC connection made; its `pid`) and
/// "plugin stopped" (its `method`). They split a start and name a stop.
mod probe {
    use std::sync::Mutex;

    use tracing::field::{Field, Visit};
    use tracing_subscriber::layer::Context;

    #[derive(Debug, Default, Clone)]
    pub struct Noted {
        pub message: String,
        pub pid: Option<u64>,
        pub method: Option<String>,
        /// The event's `took`, a Duration's Debug text ("7.1ms").
        pub took: Option<String>,
        pub unix_ns: u128,
    }

    static NOTED: Mutex<Vec<Noted>> = Mutex::new(Vec::new());

    /// Everything noted since the last call.
    pub fn take() -> Vec<Noted> {
        std::mem::take(&mut *NOTED.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub struct Probe;

    impl Visit for Noted {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            match field.name() {
                "message" => self.message = format!("{value:?}"),
                "method" => self.method = Some(format!("{value:?}")),
                "took" => self.took = Some(format!("{value:?}")),
                _ => {}
            }
        }
        fn record_u64(&mut self, field: &Field, value: u64) {
            if field.name() == "pid" {
                self.pid = Some(value);
            }
        }
        fn record_i64(&mut self, field: &Field, value: i64) {
            if field.name() == "pid" {
                self.pid = Some(value as u64);
            }
        }
    }

    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Probe {
        fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
            let mut noted = Noted::default();
            event.record(&mut noted);
            if noted.message == "plugin connected" || noted.message == "plugin stopped" {
                noted.unix_ns = super::unix_ns();
                NOTED.lock().unwrap_or_else(|e| e.into_inner()).push(noted);
            }
        }
    }
}

#[derive(Parser)]
#[command(
    name = "plugvisor-bench",
    about = "plugvisor's side of bench/: gohost's scenarios through plugvisor's library; prints one JSON object"
)]
struct Cli {
    /// plugvisor's tracing filter. Events are formatted into a sink, so their
    /// cost is counted the way gohost's debug-level host log is: plugvisor's
    /// own events and the plugins' lines at debug, its dependencies' (h2,
    /// hyper, tower) at info, as grpc-go's stay out of gohost's log ("off"
    /// skips it).
    #[arg(
        long,
        global = true,
        default_value = "info,plugvisor=debug,plugin=debug"
    )]
    log_level: String,
    /// Run on tokio's multi-thread runtime instead of the current-thread one
    /// the plugvisor CLI uses (to see what cross-thread wake-ups cost).
    #[arg(long, global = true)]
    multi_thread: bool,
    /// plugvisor's AutoMTLS mode. Off by default here, as go-plugin's host
    /// runs without AutoMTLS, so that the two hosts do the same work.
    #[arg(long, global = true, default_value = "off")]
    tls: plugvisor::TlsMode,
    /// Run the plugins in plugvisor's Landlock sandbox.
    #[arg(long, global = true)]
    sandbox: bool,
    /// Exec every Python plugin instead of forking it from its venv's zygote.
    #[arg(long, global = true)]
    no_zygote: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Repeat activate (until SERVING), deactivate --count times; summary of healthy_ms (and the rest).
    Start(Single),
    /// The same cycles as start; read kill_ms.
    Stop(Single),
    /// Activate once, health-check --count times on the one connection, deactivate.
    Ping(Single),
    /// Activate, SIGKILL the plugin, time the Environment's Crashed and Running events; --count rounds.
    Crash(Single),
    /// Activate every bundle of the folder at once, idle with health checks running, shut down.
    Scale(ScaleArgs),
    /// Activate, then --count times: set_configuration, the OnConfigurationChange hook alone, a health check.
    Hooks(protocol::HooksArgs),
    /// Activate a plugin with GET /bench/kv (its HTTP hook) and have it time --count kv gets and sets.
    Hostapi(protocol::HostApiArgs),
    /// --count plugvisor.v1.Http GETs straight on the plugin's channel (no HTTP server), timed.
    Httphook(protocol::HttpHookArgs),
    /// Time --count write + fsync (and fdatasync) of a small block in a file of --dir.
    Fsync(protocol::FsyncArgs),
    /// Activate every bundle at once, then one hook on all (call_each, set_configuration) against one.
    Fanout(protocol::FanoutArgs),
    /// Activate every bundle, serve plugvisor::http::router on --listen until SIGTERM; memory and CPU.
    ServeHttp(web::ServeHttpArgs),
}

#[derive(Args)]
pub(crate) struct Single {
    /// A plugins folder; its one bundle (or --id) is the plugin.
    pub(crate) plugins_dir: PathBuf,
    /// The bundle to use when the folder holds several.
    #[arg(long)]
    pub(crate) id: Option<String>,
    /// How many times to repeat.
    #[arg(long, default_value_t = 10)]
    pub(crate) count: usize,
    /// The Environment's data directory: a durable store (SQLite, WAL,
    /// synchronous=FULL). Without it the store is in memory.
    #[arg(long)]
    pub(crate) data_dir: Option<PathBuf>,
}

#[derive(Args)]
struct ScaleArgs {
    /// A plugins folder; every bundle in it is activated.
    plugins_dir: PathBuf,
    /// How long to stay up after all are healthy, measuring CPU (0: no idle phase).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
    idle: Duration,
    /// The Environment's health-check interval during the idle phase.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    health_interval: Duration,
    /// Scrapes of /metrics (operations_router on a loopback listener) at the
    /// end, timed (0: none).
    #[arg(long, default_value_t = 10)]
    scrapes: usize,
    /// Measure the PSS of the plugins and of the zygotes once all are up.
    #[arg(long)]
    pss: bool,
}

/// The host settings every scenario's Environment gets (`--tls`, `--sandbox`).
static HOST: std::sync::OnceLock<(plugvisor::TlsMode, bool, bool)> = std::sync::OnceLock::new();

/// An Environment builder for `plugins_dir` with the host settings.
pub(crate) fn config_builder(plugins_dir: &std::path::Path) -> plugvisor::EnvironmentConfigBuilder {
    let (tls, sandbox, zygote) = *HOST.get().expect("main sets the host settings");
    let supervisor = plugvisor::SupervisorConfig::builder()
        .tls(tls)
        .build()
        .expect("a TLS mode alone is valid");
    let launch = plugvisor::LaunchOptions::builder()
        .sandbox(sandbox)
        .zygote(zygote)
        .build()
        .expect("the sandbox and zygote switches alone are valid");
    EnvironmentConfig::builder(plugins_dir)
        .supervisor(supervisor)
        .launch(launch)
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    HOST.set((cli.tls, cli.sandbox, !cli.no_zygote))
        .expect("set once");
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let log = (cli.log_level != "off").then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::sink)
            .with_filter(tracing_subscriber::EnvFilter::new(&cli.log_level))
    });
    let probe = probe::Probe.with_filter(
        tracing_subscriber::filter::Targets::new().with_target("plugvisor", tracing::Level::DEBUG),
    );
    tracing_subscriber::registry().with(log).with(probe).init();
    let runtime = if cli.multi_thread {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    }
    .enable_all()
    .build()
    .expect("tokio runtime");
    let result = runtime.block_on(async {
        match cli.command {
            Command::Start(args) | Command::Stop(args) => cycles(args).await,
            Command::Ping(args) => ping(args).await,
            Command::Crash(args) => crash(args).await,
            Command::Scale(args) => scale(args).await,
            Command::Hooks(args) => protocol::hooks(args).await,
            Command::Hostapi(args) => protocol::hostapi(args).await,
            Command::Httphook(args) => protocol::httphook(args).await,
            Command::Fsync(args) => protocol::fsync(args),
            Command::Fanout(args) => protocol::fanout(args).await,
            Command::ServeHttp(args) => web::serve_http(args).await,
        }
    });
    match result {
        Ok((value, ok)) => {
            println!("{value}");
            if ok {
                std::process::ExitCode::SUCCESS
            } else {
                std::process::ExitCode::FAILURE
            }
        }
        Err(error) => {
            eprintln!("plugvisor-bench: {error:#}");
            std::process::ExitCode::from(2)
        }
    }
}

/// min/median/mean/p95/p99/max in ms, computed like gohost's `summarize`
/// (nearest-rank percentiles).
#[derive(Serialize, Default)]
pub(crate) struct Stats {
    n: usize,
    min: f64,
    median: f64,
    mean: f64,
    p95: f64,
    p99: f64,
    max: f64,
}

pub(crate) fn summarize(values: &[f64]) -> Stats {
    if values.is_empty() {
        return Stats::default();
    }
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    let pct = |p: f64| v[((p * n as f64).ceil() as usize).clamp(1, n) - 1];
    let median = if n.is_multiple_of(2) {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    } else {
        v[n / 2]
    };
    Stats {
        n,
        min: v[0],
        median,
        mean: v.iter().sum::<f64>() / n as f64,
        p95: pct(0.95),
        p99: pct(0.99),
        max: v[n - 1],
    }
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_nanos() as f64 / 1e6
}

fn unix_ns() -> u128 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

pub(crate) fn environment(config: EnvironmentConfig) -> anyhow::Result<Environment> {
    let dir = config.plugins_dir().to_path_buf();
    let env = Environment::new(config).with_context(|| format!("scanning {}", dir.display()))?;
    if env.plugin_ids().is_empty() {
        bail!("{} holds no valid plugin bundle", dir.display());
    }
    Ok(env)
}

pub(crate) fn single(args: &Single) -> anyhow::Result<(Environment, String)> {
    let mut config = config_builder(&args.plugins_dir);
    if let Some(dir) = &args.data_dir {
        config = config.data_dir(dir);
    }
    let env = environment(config.build()?)?;
    let id = match &args.id {
        Some(id) => id.clone(),
        None => match env.plugin_ids().as_slice() {
            [only] => only.clone(),
            ids => bail!(
                "{} holds {} bundles; pick one with --id",
                args.plugins_dir.display(),
                ids.len()
            ),
        },
    };
    Ok((env, id))
}

/// Per hook, the sum (seconds) and count of plugvisor's
/// `plugvisor_plugin_hook_seconds` histogram, over every plugin.
pub(crate) fn hook_seconds(env: &Environment) -> std::collections::HashMap<String, (f64, u64)> {
    let mut out: std::collections::HashMap<String, (f64, u64)> = Default::default();
    for line in env.metrics().lines() {
        let (is_sum, rest) =
            if let Some(rest) = line.strip_prefix("plugvisor_plugin_hook_seconds_sum{") {
                (true, rest)
            } else if let Some(rest) = line.strip_prefix("plugvisor_plugin_hook_seconds_count{") {
                (false, rest)
            } else {
                continue;
            };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let Some(hook) = labels
            .split(',')
            .find_map(|l| l.strip_prefix("hook=\"")?.strip_suffix('"'))
        else {
            continue;
        };
        let entry = out.entry(hook.to_string()).or_default();
        if is_sum {
            entry.0 += value.trim().parse::<f64>().unwrap_or(0.0);
        } else {
            entry.1 += value.trim().parse::<u64>().unwrap_or(0);
        }
    }
    out
}

/// Whether a process still exists (a zombie counts: it was not reaped).
fn exists(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[derive(Serialize, Default)]
struct Cycle {
    /// Activation call to Running (first SERVING health check).
    healthy_ms: f64,
    /// Deactivation call to return (the plugin reaped).
    kill_ms: f64,
    pid: Option<u32>,
    /// Wall clock just before the activation call and just after it returned,
    /// to set beside the time the plugin says it printed its handshake.
    spawn_unix_ns: u128,
    ready_unix_ns: u128,
    /// When plugvisor logged "plugin connected" (handshake read, connected).
    connected_unix_ns: Option<u128>,
    /// How the stop ended, from plugvisor's "plugin stopped" event.
    stop_method: Option<String>,
    /// That event's `took`: the Supervisor's own stop, the rest of kill_ms
    /// being the Environment's (keeper task, events).
    stop_took: Option<String>,
    /// The plugin's pid was gone from /proc when deactivation returned.
    reaped: bool,
    /// The activation's Implemented and OnActivate calls, from plugvisor's
    /// own hook histogram (its sum before and after the activation).
    implemented_ms: Option<f64>,
    on_activate_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

async fn cycles(args: Single) -> anyhow::Result<(Value, bool)> {
    let (env, id) = single(&args)?;
    let mut runs = Vec::with_capacity(args.count);
    for _ in 0..args.count {
        let mut c = Cycle {
            spawn_unix_ns: unix_ns(),
            ..Cycle::default()
        };
        probe::take();
        let hooks_before = hook_seconds(&env);
        let t0 = Instant::now();
        let result = env.activate(&id).await;
        c.healthy_ms = ms(t0.elapsed());
        c.ready_unix_ns = unix_ns();
        let hooks_after = hook_seconds(&env);
        let delta = |hook: &str| {
            let after = hooks_after.get(hook)?;
            let before = hooks_before.get(hook).copied().unwrap_or_default();
            (after.1 > before.1).then_some((after.0 - before.0) * 1000.0)
        };
        c.implemented_ms = delta("Implemented");
        c.on_activate_ms = delta("OnActivate");
        match result {
            Ok(status) => c.pid = status.pid,
            Err(error) => c.error = Some(error.to_string()),
        }
        c.connected_unix_ns = probe::take()
            .iter()
            .rfind(|n| n.message == "plugin connected" && n.pid == c.pid.map(u64::from))
            .map(|n| n.unix_ns);
        let t1 = Instant::now();
        env.deactivate(&id).await?;
        c.kill_ms = ms(t1.elapsed());
        if let Some(stopped) = probe::take()
            .into_iter()
            .rfind(|n| n.message == "plugin stopped")
        {
            c.stop_method = stopped.method;
            c.stop_took = stopped.took;
        }
        c.reaped = c.pid.is_some_and(|pid| !exists(pid));
        runs.push(c);
    }
    let ok: Vec<&Cycle> = runs.iter().filter(|c| c.error.is_none()).collect();
    let failures = runs.len() - ok.len();
    let healthy: Vec<f64> = ok.iter().map(|c| c.healthy_ms).collect();
    let kill: Vec<f64> = ok.iter().map(|c| c.kill_ms).collect();
    let unreaped = ok.iter().filter(|c| !c.reaped).count();
    let value = json!({
        "runs": runs,
        "healthy_ms": summarize(&healthy),
        "kill_ms": summarize(&kill),
        "failures": failures,
        "unreaped": unreaped,
    });
    Ok((value, failures == 0))
}

async fn ping(args: Single) -> anyhow::Result<(Value, bool)> {
    let (env, id) = single(&args)?;
    let t0 = Instant::now();
    let status = env.activate(&id).await?;
    let healthy_ms = ms(t0.elapsed());
    let mut latencies = Vec::with_capacity(args.count);
    let mut failures = 0;
    let mut first_error = None;
    for _ in 0..args.count {
        let t = Instant::now();
        match env.perform_health_check(&id).await {
            Ok(()) => latencies.push(ms(t.elapsed())),
            Err(error) => {
                failures += 1;
                first_error.get_or_insert_with(|| error.to_string());
            }
        }
    }
    env.deactivate(&id).await?;
    let value = json!({
        "pid": status.pid,
        "healthy_ms": healthy_ms,
        "ping_ms": summarize(&latencies),
        "failures": failures,
        "error": first_error,
    });
    Ok((value, failures == 0))
}

#[derive(Serialize, Default)]
struct CrashRun {
    pid: Option<u32>,
    restarted_pid: Option<u32>,
    /// SIGKILL to the Crashed event.
    detect_ms: f64,
    /// Crashed event to Running again.
    restart_ms: f64,
    /// SIGKILL to Running again: crash → healthy.
    recover_ms: f64,
    /// The Running event's own startup_ms (restart attempt to SERVING).
    startup_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

async fn crash(args: Single) -> anyhow::Result<(Value, bool)> {
    let (env, id) = single(&args)?;
    let mut events = env.subscribe();
    let mut runs = Vec::with_capacity(args.count);
    for _ in 0..args.count {
        // A fresh activation each round: the restart policy's first restart
        // is immediate, later ones in a row back off (1 s doubling).
        let mut r = CrashRun::default();
        match env.activate(&id).await {
            Ok(status) => r.pid = status.pid,
            Err(error) => r.error = Some(error.to_string()),
        }
        while !events.is_empty() {
            let _ = events.try_recv();
        }
        if let (Some(pid), None) = (r.pid, &r.error) {
            let t_kill = Instant::now();
            kill(Pid::from_raw(pid as i32), Signal::SIGKILL).context("SIGKILL")?;
            let deadline = t_kill + Duration::from_secs(30);
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                let event = match tokio::time::timeout(left, events.recv()).await {
                    Err(_) => {
                        r.error = Some("not Running again within 30 s".into());
                        break;
                    }
                    Ok(Err(RecvError::Lagged(_))) => continue,
                    Ok(Err(RecvError::Closed)) => bail!("event channel closed"),
                    Ok(Ok(event)) => event,
                };
                if event.status.id != id {
                    continue;
                }
                match event.kind {
                    EventKind::Crashed { .. } => r.detect_ms = ms(t_kill.elapsed()),
                    EventKind::Running { startup_ms } => {
                        r.recover_ms = ms(t_kill.elapsed());
                        r.restart_ms = r.recover_ms - r.detect_ms;
                        r.startup_ms = startup_ms;
                        r.restarted_pid = event.status.pid;
                        break;
                    }
                    EventKind::FailedToStart { error } => {
                        r.error = Some(format!("restart failed: {error}"));
                        break;
                    }
                    EventKind::Disabled { reason } => {
                        r.error = Some(format!("disabled: {reason}"));
                        break;
                    }
                    _ => {}
                }
            }
        }
        env.deactivate(&id).await?;
        runs.push(r);
    }
    let ok: Vec<&CrashRun> = runs.iter().filter(|r| r.error.is_none()).collect();
    let failures = runs.len() - ok.len();
    let pick = |f: fn(&CrashRun) -> f64| summarize(&ok.iter().map(|r| f(r)).collect::<Vec<_>>());
    let value = json!({
        "runs": runs,
        "detect_ms": pick(|r| r.detect_ms),
        "restart_ms": pick(|r| r.restart_ms),
        "recover_ms": pick(|r| r.recover_ms),
        "failures": failures,
    });
    Ok((value, failures == 0))
}

/// VmRSS and VmHWM of this process, in kB.
pub(crate) fn memory_kb() -> (u64, u64) {
    memory_kb_of("self")
}

/// VmRSS and VmHWM of process `pid` ("self" for this one), in kB.
pub(crate) fn memory_kb_of(pid: &str) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// utime + stime of this process (all its threads, not its children), in
/// clock ticks (USER_HZ, 100 a second on Linux).
pub(crate) fn cpu_ticks() -> u64 {
    cpu_ticks_of("self")
}

/// utime + stime of process `pid`, in clock ticks.
pub(crate) fn cpu_ticks_of(pid: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let Some(after) = text.rfind(')').map(|i| &text[i + 2..]) else {
        return 0;
    };
    let fields: Vec<&str> = after.split_whitespace().collect();
    // fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    let get = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    get(11) + get(12)
}

pub(crate) const CLOCK_TICKS_PER_SECOND: f64 = 100.0;

/// This process's user + system CPU time so far (every thread), to the
/// microsecond.
fn cpu_time() -> Duration {
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF)
        .expect("getrusage");
    let of = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(t.tv_sec() as u64) + Duration::from_micros(t.tv_usec() as u64)
    };
    of(usage.user_time()) + of(usage.system_time())
}

/// This process's CPU use (all threads) sampled every 200 ms until dropped:
/// the busiest window and the mean, in % of one core.
struct CpuSampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<(f64, f64)>,
}

impl CpuSampler {
    fn start() -> CpuSampler {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            let cpu = || cpu_time().as_secs_f64() * 1e6;
            let (first_cpu, first_wall) = (cpu(), Instant::now());
            let (mut last_cpu, mut last_wall) = (first_cpu, first_wall);
            let mut peak: f64 = 0.0;
            while !stopping.load(std::sync::atomic::Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(200));
                let (now_cpu, now_wall) = (cpu(), Instant::now());
                let wall_us = now_wall.duration_since(last_wall).as_secs_f64() * 1e6;
                peak = peak.max((now_cpu - last_cpu) / wall_us * 100.0);
                (last_cpu, last_wall) = (now_cpu, now_wall);
            }
            let wall_us = last_wall.duration_since(first_wall).as_secs_f64() * 1e6;
            let mean = if wall_us > 0.0 {
                (last_cpu - first_cpu) / wall_us * 100.0
            } else {
                0.0
            };
            (peak, mean)
        });
        CpuSampler { stop, thread }
    }

    /// (peak, mean) % of one core.
    fn finish(self) -> (f64, f64) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.thread.join().unwrap_or((0.0, 0.0))
    }
}

/// The proportional set size of a process (/proc/PID/smaps_rollup), in KiB:
/// pages shared with others count in part.
fn pss_kb(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let line = text.lines().find(|l| l.starts_with("Pss:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// This process's zygotes (its children running plugvisor's zygote).
fn zygote_pids() -> Vec<u32> {
    let me = std::process::id().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let ppid = stat
                .rsplit(')')
                .next()
                .and_then(|s| s.split_whitespace().nth(1));
            ppid == Some(me.as_str())
                && std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains("plugvisor_zygote"))
        })
        .collect()
}

async fn scale(args: ScaleArgs) -> anyhow::Result<(Value, bool)> {
    let health = plugvisor::HealthPolicy::new(
        args.health_interval,
        plugvisor::HealthPolicy::DEFAULT_FAIL_LIMIT,
    )?;
    let config = config_builder(&args.plugins_dir).health(health).build()?;
    let env = environment(config)?;
    let ids = env.plugin_ids();
    let sampler = CpuSampler::start();
    let t0 = Instant::now();
    let activations = ids.iter().map(|id| {
        let env = env.clone();
        async move {
            let t = Instant::now();
            let result = env.activate(id).await;
            (ms(t.elapsed()), result)
        }
    });
    let results = futures::future::join_all(activations).await;
    let all_ready_ms = ms(t0.elapsed());
    let (start_cpu_peak, start_cpu_mean) = sampler.finish();
    let running_at_ready = env
        .statuses()
        .iter()
        .filter(|s| s.state == plugvisor::PluginState::Running)
        .count();
    let mut healthy = Vec::new();
    let mut errors = Vec::new();
    for (took, result) in results {
        match result {
            Ok(_) => healthy.push(took),
            Err(error) => errors.push(error.to_string()),
        }
    }
    let (rss_ready_kb, hwm_ready_kb) = memory_kb();
    let mut idle = json!(null);
    if !args.idle.is_zero() {
        let cpu0 = cpu_ticks();
        let w0 = Instant::now();
        tokio::time::sleep(args.idle).await;
        let cpu1 = cpu_ticks();
        let wall = w0.elapsed().as_secs_f64();
        let (rss_kb, _) = memory_kb();
        let running = env
            .statuses()
            .iter()
            .filter(|s| s.state == plugvisor::PluginState::Running)
            .count();
        idle = json!({
            "seconds": wall,
            "cpu_ticks": cpu1 - cpu0,
            "cpu_percent": (cpu1 - cpu0) as f64 / CLOCK_TICKS_PER_SECOND / wall * 100.0,
            "rss_end_kb": rss_kb,
            "health_interval_s": args.health_interval.as_secs_f64(),
            "running_at_end": running,
        });
    }
    // Memory first: the scrapes allocate (the text, a listener).
    let (rss_kb, hwm_kb) = memory_kb();
    // Only when asked: reading a plugin's /proc/PID leaves dentries that the
    // kernel drops when the host reaps it, on the stop's path, which
    // go-plugin's host does not pay.
    let (plugins_pss_kb, zygotes_pss_kb, zygotes) = if args.pss {
        let plugin_pids: Vec<u32> = env.statuses().iter().filter_map(|s| s.pid).collect();
        let zygotes = zygote_pids();
        let pss = |pids: &[u32]| pids.iter().filter_map(|&pid| pss_kb(pid)).sum::<u64>();
        (
            Some(pss(&plugin_pids)),
            Some(pss(&zygotes)),
            Some(zygotes.len()),
        )
    } else {
        (None, None, None)
    };
    let metrics = if args.scrapes > 0 {
        Some(web::scrape_metrics(&env, args.scrapes).await?)
    } else {
        None
    };
    probe::take();
    let (t1, t1_unix_ns, cpu_before_stop) = (Instant::now(), unix_ns(), cpu_time());
    env.shutdown().await;
    let all_killed_ms = ms(t1.elapsed());
    let stop_cpu_ms = ms(cpu_time().saturating_sub(cpu_before_stop));
    // When the first and the last plugin was reaped, from the shutdown call:
    // what is left of all_killed_ms after the last is the shutdown's tail.
    let reaped_ms: Vec<f64> = probe::take()
        .iter()
        .filter(|n| n.message == "plugin stopped")
        .map(|n| n.unix_ns.saturating_sub(t1_unix_ns) as f64 / 1e6)
        .collect();
    let first_reaped_ms = reaped_ms.iter().copied().reduce(f64::min);
    let last_reaped_ms = reaped_ms.iter().copied().reduce(f64::max);
    let value = json!({
        "count": ids.len(),
        "host_pid": std::process::id(),
        "all_ready_ms": all_ready_ms,
        "healthy_ms": summarize(&healthy),
        "failures": errors.len(),
        "errors": errors.iter().take(5).collect::<Vec<_>>(),
        "rss_ready_kb": rss_ready_kb,
        "hwm_ready_kb": hwm_ready_kb,
        "running": running_at_ready,
        "start_cpu_peak_percent": start_cpu_peak,
        "start_cpu_mean_percent": start_cpu_mean,
        "rss_kb": rss_kb,
        "hwm_kb": hwm_kb,
        "plugins_pss_kb": plugins_pss_kb,
        "zygotes_pss_kb": zygotes_pss_kb,
        "zygotes": zygotes,
        "idle": idle,
        "metrics": metrics,
        "all_killed_ms": all_killed_ms,
        "stop_cpu_ms": stop_cpu_ms,
        "first_reaped_ms": first_reaped_ms,
        "last_reaped_ms": last_reaped_ms,
    });
    Ok((value, errors.is_empty()))
}
