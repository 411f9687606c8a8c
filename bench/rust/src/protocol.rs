//! The scenarios of the hooks and host API issue: a hook round trip beside a
//! health check, host API calls timed by the plugin, one hook on many
//! plugins at once, and a bare fsync on the data directory's disk. Their
//! go-plugin peers are `gohost hooks`, `gohost hostapi` and `gohost fanout`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use plugvisor::proto::plugvisor::v1::http_request_part::Part as RequestPart;
use plugvisor::proto::plugvisor::v1::http_response_part::Part as ResponsePart;
use plugvisor::proto::plugvisor::v1::{
    HttpRequestHead, HttpRequestPart, OnConfigurationChangeRequest, http_client::HttpClient,
    lifecycle_client::LifecycleClient,
};
use plugvisor::{ConfigApplied, ConfigChange};
use serde_json::{Value, json};

use crate::{
    CLOCK_TICKS_PER_SECOND, Single, cpu_ticks, cpu_ticks_of, environment, ms, single, summarize,
};

/// Where every plugin lists the lifecycle service (Implemented's services).
const LIFECYCLE_SERVICE: &str = "plugvisor.v1.Lifecycle";

#[derive(Args)]
pub(crate) struct HooksArgs {
    #[command(flatten)]
    single: Single,
    /// The number setting that set_configuration sets, to the round's
    /// number: a new value each time, so the store really writes (SQLite
    /// skips a row whose value is unchanged), while the plugin's own
    /// settings stay the same (the bench plugins log a change of their
    /// greeting only, so the hook stays the hook alone).
    #[arg(long, default_value = "round")]
    key: String,
}

/// Per round: `Environment::set_configuration` (the whole path: the check
/// against the settings_schema, OnConfigurationChange, the store), the hook
/// alone on the plugin's channel, and a health check on the same connection.
pub(crate) async fn hooks(args: HooksArgs) -> anyhow::Result<(Value, bool)> {
    let (env, id) = single(&args.single)?;
    let t0 = Instant::now();
    let status = env.activate(&id).await?;
    let activate_ms = ms(t0.elapsed());
    let configuration_json = json!({ "greeting": "bench", args.key.clone(): 0 }).to_string();
    let mut lifecycle = LifecycleClient::new(env.channel(&id)?);
    let (mut set, mut hook, mut health) = (Vec::new(), Vec::new(), Vec::new());
    let result: anyhow::Result<()> = async {
        for round in 0..args.single.count {
            let t = Instant::now();
            let answer = lifecycle
                .on_configuration_change(OnConfigurationChangeRequest {
                    configuration_json: configuration_json.clone(),
                })
                .await
                .context("OnConfigurationChange")?
                .into_inner();
            hook.push(ms(t.elapsed()));
            if let Some(refused) = answer.refused {
                bail!("OnConfigurationChange refused: {}", refused.message);
            }
            let t = Instant::now();
            env.perform_health_check(&id).await?;
            health.push(ms(t.elapsed()));
            let t = Instant::now();
            let applied = env
                .set_configuration(&id, [ConfigChange::set(&args.key, round as u64 + 1)])
                .await?;
            set.push(ms(t.elapsed()));
            if applied != ConfigApplied::Live {
                bail!("set_configuration: {applied:?}, not Live (does the plugin implement OnConfigurationChange?)");
            }
        }
        Ok(())
    }
    .await;
    env.deactivate(&id).await?;
    let value = json!({
        "pid": status.pid,
        "activate_ms": activate_ms,
        "durable": args.single.data_dir.is_some(),
        "hook": "OnConfigurationChange",
        "hook_ms": summarize(&hook),
        "health_ms": summarize(&health),
        "set_configuration_ms": summarize(&set),
        "error": result.as_ref().err().map(|e| format!("{e:#}")),
    });
    Ok((value, result.is_ok()))
}

#[derive(Args)]
pub(crate) struct HostApiArgs {
    #[command(flatten)]
    single: Single,
    /// The size of the value that Set writes and Get reads.
    #[arg(long, default_value_t = 64)]
    value_bytes: usize,
}

/// One plugvisor.v1.Http call with no body, straight on the plugin's channel
/// (as `gohost hostapi` makes it); the status and the whole body.
async fn serve_http(
    env: &plugvisor::Environment,
    id: &str,
    path: &str,
    query: &str,
) -> anyhow::Result<(u32, Vec<u8>)> {
    serve_http_ending(env, id, path, query, None).await
}

async fn serve_http_ending(
    env: &plugvisor::Environment,
    id: &str,
    path: &str,
    query: &str,
    end_after: Option<Duration>,
) -> anyhow::Result<(u32, Vec<u8>)> {
    use futures::StreamExt;
    let head = HttpRequestHead {
        method: "GET".into(),
        path: path.into(),
        query: query.into(),
        plugin_id: id.into(),
        mount_path: format!("/plugins/{id}"),
        http_version: "HTTP/1.1".into(),
        scheme: "http".into(),
        remote_addr: "127.0.0.1:1".into(),
        ..Default::default()
    };
    let tail = futures::stream::once(async move {
        if let Some(delay) = end_after {
            tokio::time::sleep(delay).await;
        }
    })
    .filter_map(|()| async { None::<HttpRequestPart> });
    let parts = futures::stream::iter([HttpRequestPart {
        part: Some(RequestPart::Head(head)),
    }])
    .chain(tail);
    let mut answer = HttpClient::new(env.channel(id)?)
        .max_decoding_message_size(16 << 20)
        .serve_http(parts)
        .await?
        .into_inner();
    let (mut status, mut body) = (0, Vec::new());
    while let Some(part) = answer.message().await? {
        match part.part {
            Some(ResponsePart::Head(head)) => status = head.status,
            Some(ResponsePart::Body(bytes)) => body.extend_from_slice(&bytes),
            _ => {}
        }
    }
    Ok((status, body))
}

/// The plugin times `n` kv calls of one kind (GET /bench/kv), in ms.
async fn bench_kv(
    env: &plugvisor::Environment,
    id: &str,
    op: &str,
    n: usize,
    size: usize,
) -> anyhow::Result<Vec<f64>> {
    let query = format!("op={op}&n={n}&size={size}");
    let (status, body) = serve_http(env, id, "/bench/kv", &query).await?;
    if status != 200 {
        bail!(
            "GET /bench/kv?{query}: status {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    let answer: Value = serde_json::from_slice(&body).context("GET /bench/kv: not JSON")?;
    let latencies = answer["latencies_us"]
        .as_array()
        .context("GET /bench/kv: no latencies_us")?;
    // µs resolution, as gohost's ms().
    Ok(latencies
        .iter()
        .filter_map(Value::as_f64)
        .map(|us| us.round() / 1000.0)
        .collect())
}

pub(crate) async fn hostapi(args: HostApiArgs) -> anyhow::Result<(Value, bool)> {
    let (env, id) = single(&args.single)?;
    let status = env.activate(&id).await?;
    let n = args.single.count;
    let result = async {
        let get = bench_kv(&env, &id, "get", n, args.value_bytes).await?;
        let set = bench_kv(&env, &id, "set", n, args.value_bytes).await?;
        anyhow::Ok((get, set))
    }
    .await;
    env.deactivate(&id).await?;
    let (get, set, error) = match result {
        Ok((get, set)) => (get, set, None),
        Err(e) => (vec![], vec![], Some(format!("{e:#}"))),
    };
    let value = json!({
        "pid": status.pid,
        "count": n,
        "value_bytes": args.value_bytes,
        "durable": args.single.data_dir.is_some(),
        "get_ms": summarize(&get),
        "set_ms": summarize(&set),
        "error": error,
    });
    let ok = value["error"].is_null();
    Ok((value, ok))
}

#[derive(Args)]
pub(crate) struct HttpHookArgs {
    #[command(flatten)]
    single: Single,
    /// The path (after the mount path) to GET.
    #[arg(long, default_value = "/small")]
    path: String,
    /// End the request stream this many µs after its head, as a separate
    /// frame (as plugvisor's proxy ends it once the client's body is read),
    /// instead of together with the head.
    #[arg(long)]
    end_after_us: Option<u64>,
}

/// --count plugvisor.v1.Http calls (GET, no body) one after the other,
/// straight on the plugin's channel, with no HTTP server in between (the
/// peer of `gohost httphook`): the plugin's side of a request.
pub(crate) async fn httphook(args: HttpHookArgs) -> anyhow::Result<(Value, bool)> {
    let (env, id) = single(&args.single)?;
    env.activate(&id).await?;
    let mut times = Vec::with_capacity(args.single.count);
    let result = async {
        for _ in 0..args.single.count {
            let t = Instant::now();
            let end_after = args.end_after_us.map(Duration::from_micros);
            let (status, body) = serve_http_ending(&env, &id, &args.path, "", end_after).await?;
            times.push(ms(t.elapsed()));
            if status != 200 {
                bail!(
                    "GET {}: status {status}: {}",
                    args.path,
                    String::from_utf8_lossy(&body)
                );
            }
        }
        anyhow::Ok(())
    }
    .await;
    env.deactivate(&id).await?;
    let value = json!({
        "count": args.single.count,
        "path": args.path,
        "end_after_us": args.end_after_us,
        "call_ms": summarize(&times),
        "error": result.as_ref().err().map(|e| format!("{e:#}")),
    });
    Ok((value, result.is_ok()))
}

#[derive(Args)]
pub(crate) struct FsyncArgs {
    /// A directory on the disk to measure (the data directory's).
    #[arg(long)]
    dir: PathBuf,
    #[arg(long, default_value_t = 1000)]
    count: usize,
    /// Bytes written before each sync (at a new 4 KiB-aligned offset of a
    /// preallocated 4 MiB file, as a WAL frame is written into its file).
    #[arg(long, default_value_t = 4096)]
    bytes: usize,
}

/// pwrite + fsync, and pwrite + fdatasync, on a file in --dir.
pub(crate) fn fsync(args: FsyncArgs) -> anyhow::Result<(Value, bool)> {
    use std::os::unix::fs::FileExt;
    std::fs::create_dir_all(&args.dir)?;
    let path = args.dir.join("fsync-bench.tmp");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    const SIZE: u64 = 4 << 20;
    file.write_all_at(&vec![0u8; SIZE as usize], 0)?;
    file.sync_all()?;
    let block = vec![b'x'; args.bytes.max(1)];
    let step = (args.bytes as u64).div_ceil(4096).max(1) * 4096;
    let mut offset = 0u64;
    let mut run =
        |sync: &dyn Fn(&std::fs::File) -> std::io::Result<()>| -> anyhow::Result<Vec<f64>> {
            let mut times = Vec::with_capacity(args.count);
            for _ in 0..args.count {
                file.write_all_at(&block, offset)?;
                offset = (offset + step) % (SIZE - step);
                let t = Instant::now();
                sync(&file)?;
                times.push(ms(t.elapsed()));
            }
            Ok(times)
        };
    let fsync = run(&|f| f.sync_all())?;
    let fdatasync = run(&|f| f.sync_data())?;
    drop(file);
    let _ = std::fs::remove_file(&path);
    let value = json!({
        "dir": args.dir,
        "bytes": args.bytes,
        "fsync_ms": summarize(&fsync),
        "fdatasync_ms": summarize(&fdatasync),
    });
    Ok((value, true))
}

#[derive(Args)]
pub(crate) struct FanoutArgs {
    /// A plugins folder; every bundle in it is activated.
    plugins_dir: PathBuf,
    /// Rounds of calls.
    #[arg(long, default_value_t = 50)]
    rounds: usize,
    /// The Environment's data directory (set_configuration stores there).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The number setting set_configuration sets to the round's number (see hooks).
    #[arg(long, default_value = "round")]
    key: String,
}

/// Every bundle activated at once, then per round: OnConfigurationChange on
/// all of them with `Environment::call_each`, the same on each in turn, the
/// same on one; set_configuration on all at once and on one.
pub(crate) async fn fanout(args: FanoutArgs) -> anyhow::Result<(Value, bool)> {
    let mut config = crate::config_builder(&args.plugins_dir);
    if let Some(dir) = &args.data_dir {
        config = config.data_dir(dir);
    }
    let env = environment(config.build()?)?;
    let ids = env.plugin_ids();
    let t0 = Instant::now();
    let started = futures::future::join_all(ids.iter().map(|id| env.activate(id))).await;
    let all_ready_ms = ms(t0.elapsed());
    let failures = started.iter().filter(|r| r.is_err()).count();
    let first_error = started
        .iter()
        .find_map(|r| r.as_ref().err())
        .map(|e| e.to_string());
    let configuration_json = json!({ "greeting": "bench", args.key.clone(): 0 }).to_string();
    let timeout = Duration::from_secs(10);
    let request = || OnConfigurationChangeRequest {
        configuration_json: configuration_json.clone(),
    };
    let (mut all, mut in_turn, mut one, mut set_all, mut set_one) =
        (vec![], vec![], vec![], vec![], vec![]);
    let mut answered = 0;
    let mut cpu = Value::Null;
    let result: anyhow::Result<()> = async {
        if failures > 0 {
            bail!(
                "{failures} plugin(s) did not start: {}",
                first_error.unwrap_or_default()
            );
        }
        // call_each alone first, with the CPU time it costs the host and
        // the plugins (all of them on this machine's cores).
        let pids: Vec<String> = env
            .statuses()
            .iter()
            .filter_map(|s| s.pid.map(|p| p.to_string()))
            .collect();
        let plugin_ticks = || pids.iter().map(|p| cpu_ticks_of(p)).sum::<u64>();
        let (host0, plugins0, wall0) = (cpu_ticks(), plugin_ticks(), Instant::now());
        for _ in 0..args.rounds {
            let t = Instant::now();
            let answers = env
                .call_each(LIFECYCLE_SERVICE, timeout, |_, channel| {
                    let req = request();
                    async move {
                        let answer = LifecycleClient::new(channel)
                            .on_configuration_change(req)
                            .await?;
                        Ok(answer.into_inner())
                    }
                })
                .await;
            all.push(ms(t.elapsed()));
            answered = answers.len();
            for (id, answer) in &answers {
                match answer {
                    Ok(a) if a.refused.is_none() => {}
                    Ok(_) => bail!("{id} refused"),
                    Err(e) => bail!("{id}: {e}"),
                }
            }
            if answered != ids.len() {
                bail!("call_each reached {answered} of {} plugins", ids.len());
            }
        }
        let wall = wall0.elapsed().as_secs_f64() * 1000.0;
        let to_ms = |ticks: u64| ticks as f64 * 1000.0 / CLOCK_TICKS_PER_SECOND;
        cpu = json!({
            "wall_ms": wall,
            "host_cpu_ms": to_ms(cpu_ticks() - host0),
            "plugins_cpu_ms": to_ms(plugin_ticks() - plugins0),
            "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        });
        for round in 0..args.rounds {
            let t = Instant::now();
            for (id, channel) in env.plugins_serving(LIFECYCLE_SERVICE) {
                LifecycleClient::new(channel)
                    .on_configuration_change(request())
                    .await
                    .with_context(|| id.clone())?;
            }
            in_turn.push(ms(t.elapsed()));
            let id = &ids[round % ids.len()];
            let t = Instant::now();
            let channel = env.channel(id)?;
            tokio::time::timeout(
                timeout,
                LifecycleClient::new(channel).on_configuration_change(request()),
            )
            .await
            .context("timed out")??;
            one.push(ms(t.elapsed()));
            let t = Instant::now();
            let value = 2 * round as u64 + 1;
            let changed = futures::future::join_all(
                ids.iter()
                    .map(|id| env.set_configuration(id, [ConfigChange::set(&args.key, value)])),
            )
            .await;
            set_all.push(ms(t.elapsed()));
            for r in changed {
                r?;
            }
            let t = Instant::now();
            env.set_configuration(id, [ConfigChange::set(&args.key, value + 1)])
                .await?;
            set_one.push(ms(t.elapsed()));
        }
        Ok(())
    }
    .await;
    let t1 = Instant::now();
    env.shutdown().await;
    let value = json!({
        "count": ids.len(),
        "rounds": args.rounds,
        "durable": args.data_dir.is_some(),
        "all_ready_ms": all_ready_ms,
        "answered": answered,
        "call_each_ms": summarize(&all),
        "call_each_cpu": cpu,
        "in_turn_ms": summarize(&in_turn),
        "one_ms": summarize(&one),
        "set_configuration_all_ms": summarize(&set_all),
        "set_configuration_one_ms": summarize(&set_one),
        "all_stopped_ms": ms(t1.elapsed()),
        "failures": failures,
        "error": result.as_ref().err().map(|e| format!("{e:#}")),
    });
    Ok((value, result.is_ok()))
}
