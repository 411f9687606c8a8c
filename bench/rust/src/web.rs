//! The scenarios of the HTTP issue: plugvisor's routers served on a loopback
//! listener (as `plugvisor run --http` serves them, on the same
//! current-thread runtime), for a load generator outside (`gohost load`,
//! `gohost transfer`), and timed scrapes of `/metrics`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Args;
use plugvisor::http::HttpLimits;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{
    CLOCK_TICKS_PER_SECOND, cpu_ticks, cpu_ticks_of, environment, memory_kb, memory_kb_of, ms,
    summarize,
};

#[derive(Args)]
pub(crate) struct ServeHttpArgs {
    /// A plugins folder; every bundle in it is activated.
    plugins_dir: PathBuf,
    /// Where to listen (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// Written with "http://HOST:PORT" once every plugin is Running and the
    /// listener is up.
    #[arg(long)]
    ready_file: PathBuf,
    /// HttpLimits::max_body_bytes (the CLI's --http-max-body-bytes).
    #[arg(long)]
    max_body_bytes: Option<u64>,
    /// The Environment's data directory.
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

/// Serves `plugvisor::http::router` until SIGTERM, then reports this
/// process's CPU time while serving, its RSS and peak RSS (VmHWM, over its
/// whole life), and each plugin process's RSS and peak.
pub(crate) async fn serve_http(args: ServeHttpArgs) -> anyhow::Result<(Value, bool)> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut config = crate::config_builder(&args.plugins_dir);
    if let Some(dir) = &args.data_dir {
        config = config.data_dir(dir);
    }
    let env = environment(config.build()?)?;
    let mut limits = HttpLimits::builder();
    if let Some(bytes) = args.max_body_bytes {
        limits = limits.max_body_bytes(bytes);
    }
    let router = plugvisor::http::router(env.clone(), limits.build()?);
    for id in env.plugin_ids() {
        env.activate(&id).await?;
    }
    let address: std::net::SocketAddr = tokio::net::lookup_host(&args.listen)
        .await?
        .next()
        .with_context(|| format!("{} names no address", args.listen))?;
    let socket = match address {
        std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket
        .bind(address)
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let listener = socket.listen(1024)?;
    let url = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(plugvisor::http::serve(listener, router, async {
        let _ = stopped.await;
    }));
    let (rss_ready_kb, hwm_ready_kb) = memory_kb();
    let tmp = args.ready_file.with_extension("tmp");
    std::fs::write(&tmp, format!("{url}\n"))?;
    std::fs::rename(&tmp, &args.ready_file)?;
    let pids: Vec<String> = env
        .statuses()
        .iter()
        .filter_map(|s| s.pid.map(|p| p.to_string()))
        .collect();
    let plugin_ticks = || pids.iter().map(|p| cpu_ticks_of(p)).sum::<u64>();
    let (cpu0, plugins0) = (cpu_ticks(), plugin_ticks());
    let t0 = Instant::now();
    term.recv().await;
    let (cpu1, plugins1) = (cpu_ticks(), plugin_ticks());
    let wall = t0.elapsed().as_secs_f64();
    let (rss_kb, hwm_kb) = memory_kb();
    let plugins: Vec<Value> = env
        .statuses()
        .iter()
        .map(|s| {
            let (rss, hwm) = s.pid.map(|p| memory_kb_of(&p.to_string())).unwrap_or_default();
            json!({"id": s.id, "pid": s.pid, "state": s.state.to_string(), "rss_kb": rss, "hwm_kb": hwm})
        })
        .collect();
    let _ = stop.send(());
    // Streams still open end when the plugins stop.
    server.abort();
    env.shutdown().await;
    let value = json!({
        "url": url,
        "host_pid": std::process::id(),
        "serving_s": wall,
        "cpu_ticks": cpu1 - cpu0,
        "cpu_percent": (cpu1 - cpu0) as f64 / CLOCK_TICKS_PER_SECOND / wall * 100.0,
        "plugins_cpu_ticks": plugins1 - plugins0,
        "rss_ready_kb": rss_ready_kb,
        "hwm_ready_kb": hwm_ready_kb,
        "rss_kb": rss_kb,
        "hwm_kb": hwm_kb,
        "plugins": plugins,
    });
    Ok((value, true))
}

/// `scrapes` GETs of /metrics from `operations_router` on a loopback
/// listener (one connection each), timed from connect to the last byte;
/// and `Environment::metrics()` alone, in the process.
pub(crate) async fn scrape_metrics(
    env: &plugvisor::Environment,
    scrapes: usize,
) -> anyhow::Result<Value> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(plugvisor::http::serve(
        listener,
        plugvisor::http::operations_router(env.clone()),
        async {
            let _ = stopped.await;
        },
    ));
    let mut times = Vec::with_capacity(scrapes);
    let mut body_bytes = 0;
    let mut lines = 0;
    for _ in 0..scrapes {
        let t = Instant::now();
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        times.push(ms(t.elapsed()));
        let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n") else {
            bail!("/metrics: no HTTP head in {} bytes", answer.len());
        };
        if !answer.starts_with(b"HTTP/1.1 200") {
            bail!("/metrics: {}", String::from_utf8_lossy(&answer[..end]));
        }
        let body = &answer[end + 4..];
        body_bytes = body.len();
        lines = body.iter().filter(|&&b| b == b'\n').count();
    }
    let _ = stop.send(());
    let _ = server.await;
    let mut text_times = Vec::with_capacity(scrapes);
    for _ in 0..scrapes {
        let t = Instant::now();
        let text = env.metrics();
        text_times.push(ms(t.elapsed()));
        std::hint::black_box(text);
    }
    Ok(json!({
        "plugins": env.plugin_ids().len(),
        "scrape_ms": summarize(&times),
        "metrics_text_ms": summarize(&text_times),
        "body_bytes": body_bytes,
        "lines": lines,
    }))
}
