//! A test plugin that misbehaves on request. Stands in for a Python interpreter
//! too: when argv[1] is a file, its first line may hold more flags after
//! `# fake:` (so a bundle's `plugin.py` can choose the behaviour).

use std::io::Write;
use std::os::unix::process::CommandExt as _;
use std::time::Duration;

use clap::Parser;
mod hooks;
mod probe;

use plugvisor::proto::plugin::grpc_controller_server::{GrpcController, GrpcControllerServer};
use tonic_health::ServingStatus;

#[derive(Parser, Debug, Clone)]
pub struct Flags {
    /// A script path, when run as an interpreter; its `# fake:` line adds flags.
    script: Option<String>,
    #[arg(long, default_value = "tcp")]
    network: String,
    /// serving, not_serving, or hang (accept connections, never answer).
    #[arg(long, default_value = "serving")]
    health: String,
    /// Switch health to NOT_SERVING this many ms after start.
    #[arg(long)]
    unhealthy_after_ms: Option<u64>,
    /// Offer plugin.GRPCController.
    #[arg(long)]
    controller: bool,
    /// Lines of garbage printed before the handshake.
    #[arg(long, default_value_t = 0)]
    garbage: usize,
    /// Print this instead of a real handshake ({addr} and {port} are replaced).
    #[arg(long)]
    handshake: Option<String>,
    /// Print no handshake at all and wait.
    #[arg(long)]
    no_handshake: bool,
    /// Print a line this long (bytes, no newline) before anything else.
    #[arg(long, default_value_t = 0)]
    huge_line: usize,
    /// Exit with this code before the handshake.
    #[arg(long)]
    exit_before: Option<i32>,
    /// Exit this many ms after the handshake (code 3, or SIGSEGV with --segv).
    #[arg(long)]
    crash_after_ms: Option<u64>,
    #[arg(long)]
    segv: bool,
    /// Exit (code 3) at a random time below this many ms after the handshake.
    #[arg(long)]
    crash_randomly_ms: Option<u64>,
    #[arg(long)]
    ignore_sigterm: bool,
    /// Start a grandchild in our process group (`sleep`).
    #[arg(long)]
    grandchild: bool,
    /// Start a daemonized grandchild in a new session.
    #[arg(long)]
    daemon_grandchild: bool,
    /// Start a daemon in a new session that has a child of its own (a
    /// tree of two `sleep`s, left when its `sh` parent exits at once).
    #[arg(long)]
    daemon_tree: bool,
    /// Leave an orphan (`sh -c 'sleep SECONDS &'`, the sh waited for) that
    /// exits on its own that many seconds later, while the plugin runs.
    #[arg(long)]
    orphan_exits_after: Option<f64>,
    /// Write the pids of grandchildren to this file.
    #[arg(long)]
    pid_file: Option<String>,
    /// Write "controller" or "sigterm" here when told to stop.
    #[arg(long)]
    marker: Option<String>,
    /// Before the handshake, try to read this file (see probe.rs).
    #[arg(long)]
    try_read: Vec<String>,
    /// Try to list this directory.
    #[arg(long)]
    try_list: Vec<String>,
    /// Try to write this file.
    #[arg(long)]
    try_write: Vec<String>,
    /// Try to connect to this TCP address.
    #[arg(long)]
    try_connect: Vec<String>,
    /// Try to bind this TCP port on 127.0.0.1.
    #[arg(long)]
    try_bind: Vec<u16>,
    /// Try to signal the parent (signal 0).
    #[arg(long)]
    try_signal_parent: bool,
    /// Where the outcomes of the attempts go.
    #[arg(long)]
    probe_report: Option<String>,
    /// Lines written to stderr at start.
    #[arg(long)]
    stderr: Vec<String>,
    /// Bytes written to stderr after the handshake (then --marker gets "flood-done").
    #[arg(long, default_value_t = 0)]
    flood_stderr: u64,
    /// Close stdout right after the handshake.
    #[arg(long)]
    close_stdout: bool,
    /// Append a line to this file at each start (counts spawns).
    #[arg(long)]
    spawn_log: Option<String>,
    /// Serve plugvisor.v1.Lifecycle, reporting these hooks (comma-separated; may be empty).
    #[arg(long)]
    hooks: Option<String>,
    /// Serve go-plugin's broker (and report plugin.GRPCBroker); dial the host API on activation.
    #[arg(long)]
    broker: bool,
    /// More service names to report in Implemented.
    #[arg(long)]
    services: Vec<String>,
    /// Refuse OnActivate with this message.
    #[arg(long)]
    refuse_activation: Option<String>,
    /// Refuse OnConfigurationChange when this key is true in the new configuration.
    #[arg(long)]
    refuse_config_key: Option<String>,
    /// Never answer this hook (Implemented, OnActivate, ...).
    #[arg(long)]
    hook_hang: Option<String>,
    /// Answer this hook with bytes that are no protobuf message.
    #[arg(long)]
    hook_garbage: Option<String>,
    /// Append a line per hook call (and per host API result) to this file.
    #[arg(long)]
    hook_log: Option<String>,
    /// On activation, add 1 to this key in the host's key-value store.
    #[arg(long)]
    kv_counter: Option<String>,
    /// On activation, read this key.
    #[arg(long)]
    kv_read: Option<String>,
    /// On activation, write KEY=VALUE.
    #[arg(long)]
    kv_write: Option<String>,
    /// On activation, try to store a value of this many bytes.
    #[arg(long)]
    kv_oversize: Option<usize>,
    /// On activation, store this many 1 KiB values at once.
    #[arg(long, default_value_t = 0)]
    kv_flood: usize,
    /// On activation, send this many log lines through the host API.
    #[arg(long, default_value_t = 0)]
    log_flood: usize,
    /// On activation, log this line through the host API.
    #[arg(long)]
    log_line: Option<String>,
    /// On activation, open this many host API connections and keep them.
    #[arg(long, default_value_t = 0)]
    connections: usize,
    /// Announce this many services of our own on the broker stream.
    #[arg(long, default_value_t = 0)]
    announce_junk: usize,
    /// Serve the HTTP hook, misbehaving: hang (never answer), bad-status
    /// (status 42), body-first (a body part before the head), forever (body
    /// parts without end), echo-head (answer 200 with the request head as text).
    #[arg(long)]
    http: Option<String>,
}

fn flags() -> Flags {
    let mut args: Vec<String> = std::env::args().collect();
    if let Some(script) = args.get(1)
        && let Ok(text) = std::fs::read_to_string(script)
        && let Some(extra) = text.lines().next().and_then(|l| l.strip_prefix("# fake:"))
    {
        args.extend(extra.split_whitespace().map(str::to_string));
    }
    Flags::parse_from(args)
}

struct Controller {
    marker: Option<String>,
}

#[tonic::async_trait]
impl GrpcController for Controller {
    async fn shutdown(
        &self,
        _: tonic::Request<plugvisor::proto::plugin::Empty>,
    ) -> Result<tonic::Response<plugvisor::proto::plugin::Empty>, tonic::Status> {
        write_marker(&self.marker, "controller");
        tokio::spawn(async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            std::process::exit(0);
        });
        Ok(tonic::Response::new(plugvisor::proto::plugin::Empty {}))
    }
}

fn write_marker(marker: &Option<String>, text: &str) {
    if let Some(path) = marker {
        let _ = std::fs::write(path, text);
    }
}

fn append(path: &Option<String>, line: &str) {
    if let Some(path) = path {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("open log file");
        writeln!(file, "{line}").expect("write log file");
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let flags = flags();
    append(&flags.spawn_log, &std::process::id().to_string());
    if flags.huge_line > 0 {
        let chunk = vec![b'x'; 64 * 1024];
        let mut left = flags.huge_line;
        let mut out = std::io::stdout().lock();
        while left > 0 {
            let n = left.min(chunk.len());
            if out.write_all(&chunk[..n]).is_err() {
                break;
            }
            left -= n;
        }
        let _ = out.flush();
    }
    for line in &flags.stderr {
        eprintln!("{line}");
    }
    probe::run(&flags);
    if let Some(code) = flags.exit_before {
        std::process::exit(code);
    }
    if flags.grandchild || flags.daemon_grandchild {
        let mut command = std::process::Command::new("sleep");
        command.arg("1000");
        if flags.daemon_grandchild {
            command.arg0("fake-daemon");
            // SAFETY: setsid is async-signal-safe.
            unsafe {
                use std::os::unix::process::CommandExt;
                command.pre_exec(|| nix::unistd::setsid().map(|_| ()).map_err(Into::into));
            }
        }
        // Left running on purpose: the host must clean it up.
        #[allow(clippy::zombie_processes)]
        let child = command.spawn().expect("spawn grandchild");
        append(&flags.pid_file, &child.id().to_string());
    }
    if flags.daemon_tree {
        // The daemon (the exec'd sleep) and its child both end up the host's
        // to find: the daemon once the plugin is gone, its child once the
        // daemon is.
        let script = format!(
            "sleep 1000 & echo $! >> '{file}'; echo $$ >> '{file}'; exec sleep 1000",
            file = flags
                .pid_file
                .as_deref()
                .expect("--daemon-tree needs --pid-file")
        );
        let mut command = std::process::Command::new("sh");
        command.args(["-c", &script]);
        // SAFETY: setsid is async-signal-safe.
        unsafe {
            use std::os::unix::process::CommandExt;
            command.pre_exec(|| nix::unistd::setsid().map(|_| ()).map_err(Into::into));
        }
        #[allow(clippy::zombie_processes)]
        command.spawn().expect("spawn daemon tree");
    }
    if let Some(seconds) = flags.orphan_exits_after {
        let script = format!(
            "sleep {seconds} & echo $! >> '{}'",
            flags
                .pid_file
                .as_deref()
                .expect("--orphan-exits-after needs --pid-file")
        );
        let status = std::process::Command::new("sh")
            .args(["-c", &script])
            .status()
            .expect("run sh");
        assert!(status.success());
    }
    for i in 0..flags.garbage {
        println!("garbage line {i}");
    }

    let (address, network) = serve(&flags).await;
    if flags.no_handshake {
        std::future::pending::<()>().await;
    }
    let line = match &flags.handshake {
        Some(template) => {
            let port = address.rsplit(':').next().unwrap_or_default();
            template.replace("{addr}", &address).replace("{port}", port)
        }
        None => format!("1|1|{network}|{address}|grpc"),
    };
    println!("{line}");
    std::io::stdout().flush().unwrap();
    if flags.close_stdout {
        // SAFETY: closing our own stdout fd; nothing else uses it afterwards.
        unsafe { nix::libc::close(1) };
    }
    if flags.flood_stderr > 0 {
        let bytes = flags.flood_stderr;
        let marker = flags.marker.clone();
        std::thread::spawn(move || {
            let line = [b'e'; 1023];
            let mut err = std::io::stderr().lock();
            let mut written = 0;
            while written < bytes {
                if err
                    .write_all(&line)
                    .and_then(|_| err.write_all(b"\n"))
                    .is_err()
                {
                    return;
                }
                written += 1024;
            }
            write_marker(&marker, "flood-done");
        });
    }
    let crash_after = flags.crash_after_ms.or(flags
        .crash_randomly_ms
        .map(|max| fastrand::u64(0..max.max(1))));
    if let Some(ms) = crash_after {
        let segv = flags.segv;
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            if segv {
                // A real invalid write, as a buggy native plugin would do.
                // SAFETY: it is not safe; crashing is the point.
                unsafe { std::ptr::null_mut::<u8>().write_volatile(1) };
            }
            std::process::exit(3);
        });
    }
    let mut sigterm =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
    loop {
        sigterm.recv().await;
        if !flags.ignore_sigterm {
            write_marker(&flags.marker, "sigterm");
            std::process::exit(0);
        }
        eprintln!("ignoring SIGTERM");
    }
}

/// Starts the gRPC server (or a silent listener) and returns its address.
async fn serve(flags: &Flags) -> (String, &'static str) {
    let (reporter, health) = tonic_health::server::health_reporter();
    let status = match flags.health.as_str() {
        "not_serving" => ServingStatus::NotServing,
        _ => ServingStatus::Serving,
    };
    reporter.set_service_status("plugin", status).await;
    if let Some(ms) = flags.unhealthy_after_ms {
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            reporter
                .set_service_status("plugin", ServingStatus::NotServing)
                .await;
        });
    }
    let mut routes = tonic::service::Routes::new(health);
    if flags.controller {
        routes = routes.add_service(GrpcControllerServer::new(Controller {
            marker: flags.marker.clone(),
        }));
    }
    if flags.hooks.is_some() || flags.broker || flags.http.is_some() {
        routes = hooks::add_to(routes, flags);
    }
    let router = tonic::transport::Server::builder().add_routes(routes);
    let hang = flags.health == "hang";
    if flags.network == "unix" {
        let dir = std::env::var("PLUGIN_UNIX_SOCKET_DIR").unwrap_or_else(|_| "/tmp".into());
        let path = format!("{dir}/fake-{}.sock", std::process::id());
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        if hang {
            tokio::spawn(hold_connections(async move || {
                listener.accept().await.map(|(s, _)| s)
            }));
        } else {
            let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
            tokio::spawn(router.serve_with_incoming(incoming));
        }
        return (path, "unix");
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    if hang {
        tokio::spawn(hold_connections(async move || {
            listener.accept().await.map(|(s, _)| s)
        }));
    } else {
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        tokio::spawn(router.serve_with_incoming(incoming));
    }
    (address, "tcp")
}

/// Accepts connections and never reads or writes them.
async fn hold_connections<S: Send + 'static>(mut accept: impl AsyncFnMut() -> std::io::Result<S>) {
    let mut held = Vec::new();
    while let Ok(stream) = accept().await {
        held.push(stream);
    }
}
