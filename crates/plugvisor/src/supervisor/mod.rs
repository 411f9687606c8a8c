//! One plugin process: spawn → handshake → connect → healthy → stop.
//!
//! The whole start, from the spawn to the first SERVING health check, has one
//! deadline: the launch plan's start timeout. The stop sequence: `plugin.GRPCController/Shutdown`, then SIGTERM to the
//! process group, then SIGKILL, each after its grace period. A plugin without
//! the controller (UNIMPLEMENTED) goes to SIGTERM at once.

use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde::Serialize;
use tokio::io::{AsyncBufRead, BufReader};
use tonic_health::pb::health_check_response::ServingStatus;
use tracing::Instrument;

mod attached;
mod config;
mod error;
mod health_check;
mod socket_dir;
mod tls_mode;

pub use attached::AttachTarget;
use attached::Attached;
pub use config::{SupervisorConfig, SupervisorConfigBuilder};
use error::PartialError;
pub use error::{PingError, SkippedLines, SupervisorError};
use socket_dir::SocketDir;
use tls_mode::{Plaintext, judge_plaintext};
pub use tls_mode::{TlsMode, Transport};

use crate::handshake::{Handshake, looks_like_handshake, parse_handshake_line};
use crate::launch::LaunchPlan;
use crate::process::{PluginProcess, SpawnSpec, describe_exit};
use crate::proto::plugin::grpc_controller_client::GrpcControllerClient;
use crate::proto::plugin::grpc_stdio_client::GrpcStdioClient;
use crate::proto::plugin::stdio_data::Channel as StdioChannel;
use crate::sandbox::{Ruleset, SandboxPolicy, SandboxStatus};
use crate::stdio::{
    Line, MAX_LINE_BYTES, StderrLines, StderrTail, Stream, log_plugin_line, read_bounded_line,
    relay_lines,
};
use crate::transport::PluginChannel;
use crate::transport::connect;

/// The gRPC health service name go-plugin plugins report under.
const HEALTH_SERVICE: &str = "plugin";

/// Read buffer of each of a plugin's pipes: lines are assembled from reads
/// of this size, so it bounds memory per plugin, not line length.
const PIPE_BUFFER: usize = 1024;

/// When a start must be done by: its spawn plus the start timeout.
#[derive(Debug, Clone, Copy)]
struct Deadline {
    at: Instant,
    timeout: Duration,
}

impl Deadline {
    fn after(timeout: Duration) -> Deadline {
        Deadline {
            at: Instant::now() + timeout,
            timeout,
        }
    }

    fn remaining(&self) -> Duration {
        self.at.saturating_duration_since(Instant::now())
    }
}

/// How a stop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum StopMethod {
    /// The process had already exited.
    AlreadyExited,
    /// It exited after `GRPCController/Shutdown`.
    Controller,
    /// It exited after SIGTERM.
    Terminate,
    /// It had to be SIGKILLed.
    Kill,
    /// An attached plugin: plugvisor disconnected, and its process, which
    /// plugvisor does not own, was left running.
    Detached,
}

impl std::fmt::Display for StopMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StopMethod::AlreadyExited => "it had already exited",
            StopMethod::Controller => "via GRPCController/Shutdown",
            StopMethod::Terminate => "by SIGTERM",
            StopMethod::Kill => "by SIGKILL",
            StopMethod::Detached => "by disconnecting (attached: its process was left running)",
        })
    }
}

/// What [`Supervisor::stop`] did.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct StopReport {
    /// Which step of the stop sequence ended the process.
    pub method: StopMethod,
    /// Its exit status; `None` for an attached plugin, whose process is
    /// not plugvisor's to reap.
    pub status: Option<ExitStatus>,
    /// From the stop call to the process being reaped. The sweep for
    /// leftover descendants comes after, before `stop()` returns.
    pub took: Duration,
}

/// How a plugin's process ended, as [`Supervisor::ended`] tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Ended {
    /// A process plugvisor spawned exited.
    Exited(ExitStatus),
    /// An attached plugin went away: why (`its process 123 exited`).
    Gone(String),
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ended::Exited(status) => f.write_str(&describe_exit(*status)),
            Ended::Gone(why) => write!(f, "attached plugin went away: {why}"),
        }
    }
}

/// The plugin's process, as the supervisor holds it.
enum Process {
    /// Spawned here: watched on its pidfd, signalled as a group, reaped.
    Owned(PluginProcess),
    /// Started by someone else ([`Supervisor::attach`]): never signalled.
    Attached(Attached),
}

/// One plugin process and its gRPC connection: started healthy by
/// [`Supervisor::start`] (or attached to by [`Supervisor::attach`]), stopped
/// by [`Supervisor::stop`]. Dropping it without a stop SIGKILLs the process
/// group of a plugin it started.
pub struct Supervisor {
    id: String,
    process: Process,
    handshake: Handshake,
    channel: PluginChannel,
    stderr: StderrTail,
    /// The stderr relay, until an exit waits for its last lines.
    stderr_relay: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// The resource limits the process was started with.
    limits: crate::ResourceLimits,
    /// Its own cgroup, when its memory or process limit is enforced by one;
    /// dropped (killed and removed) after the process.
    cgroup: Option<Arc<crate::cgroup::PluginCgroup>>,
    skipped: SkippedLines,
    /// The AutoMTLS client identity of this start, kept for brokered servers.
    identity: Option<crate::tls::ClientIdentity>,
    sandbox: Option<SandboxStatus>,
    socket_dir: Mutex<Option<SocketDir>>,
    config: SupervisorConfig,
    stopped: tokio::sync::OnceCell<StopReport>,
    span: tracing::Span,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field("id", &self.id)
            .field("pid", &self.pid())
            .field("handshake", &self.handshake)
            .finish()
    }
}

/// Checks the plan's integrity pins, right before its spawn, off the async
/// thread (a plugin binary is tens of megabytes). Returns the descriptor to
/// exec the program through, when it is pinned.
async fn verify_pins(plan: &LaunchPlan) -> Result<Option<Arc<OwnedFd>>, SupervisorError> {
    if plan.pins.is_empty() {
        return Ok(None);
    }
    let plan = plan.clone();
    let started = Instant::now();
    let verified = tokio::task::spawn_blocking(move || crate::integrity::verify(&plan))
        .await
        .map_err(|e| SupervisorError::Spawn {
            program: "the integrity check".to_string(),
            source: std::io::Error::other(e),
        })??;
    tracing::debug!(
        took_us = started.elapsed().as_micros() as u64,
        "integrity pins checked"
    );
    Ok(verified.map(Arc::new))
}

impl Supervisor {
    /// Spawns the plugin, reads its handshake, connects to it and waits until
    /// it answers SERVING, all within `plan.start_timeout` from the spawn. On
    /// any failure the process is killed and reaped before this returns.
    pub async fn start(
        id: &str,
        plan: &LaunchPlan,
        config: &SupervisorConfig,
    ) -> Result<Supervisor, SupervisorError> {
        let (supervisor, deadline) = Supervisor::connect(id, plan, config).await?;
        if let Err(error) = supervisor.wait_healthy(deadline).await {
            supervisor.stop().await;
            if error.is_exit()
                && let Some(limit) = supervisor.limit_reached().await
            {
                let source = Box::new(error);
                return Err(SupervisorError::AtLimit { limit, source });
            }
            return Err(error);
        }
        Ok(supervisor)
    }

    /// Spawn, handshake and connection; the deadline runs on from here.
    async fn connect(
        id: &str,
        plan: &LaunchPlan,
        config: &SupervisorConfig,
    ) -> Result<(Supervisor, Deadline), SupervisorError> {
        let span = crate::stdio::plugin_span(id);
        let mut socket_dir =
            SocketDir::create(plan.sandbox.is_some()).map_err(SupervisorError::SocketDir)?;
        let identity = match config.tls.offers_certificate() {
            true => Some(crate::tls::ClientIdentity::generate()?),
            false => None,
        };
        let mut env = config
            .handshake
            .plugin_env(&socket_dir.path().to_string_lossy());
        if let Some(identity) = &identity {
            env.push(("PLUGIN_CLIENT_CERT".into(), identity.cert_pem.clone()));
        }
        if let Some(dir) = &plan.data_dir {
            env.push((DATA_DIR_ENV.into(), dir.to_string_lossy().into_owned()));
        }
        let (landlock, sandbox) = match &plan.sandbox {
            Some(policy) => {
                let ruleset = sandbox_start(policy, plan, socket_dir.path(), &mut env)?;
                (Some(Arc::new(ruleset.fd)), Some(ruleset.status))
            }
            None => (None, None),
        };
        // Last before the spawn: the shorter the gap, the less a file
        // reopened by path (a Python script) can change in it.
        let exec_fd = verify_pins(plan).await?;
        let cgroup = crate::cgroup::PluginCgroup::for_limits(id, &plan.limits).map(Arc::new);
        let spec = SpawnSpec {
            program: plan.program.clone(),
            args: plan.args.clone(),
            working_dir: plan.working_dir.clone(),
            env,
            exec_fd,
            landlock,
            limits: plan.limits,
            cgroup: cgroup.clone(),
            stdin: None,
        };
        let forked = match &plan.zygote {
            Some(preload) => match crate::zygote::fork(&spec, preload)
                .instrument(span.clone())
                .await
            {
                Ok(forked) => Some(forked),
                Err(error) => {
                    span.in_scope(
                        || tracing::warn!(%error, "exec'ing the plugin instead of forking it"),
                    );
                    None
                }
            },
            None => None,
        };
        let launched = if forked.is_some() { "forked" } else { "exec" };
        let (process, pipes) = match forked {
            Some(forked) => forked,
            None => PluginProcess::spawn(&spec).map_err(|source| SupervisorError::Spawn {
                program: plan.program.display().to_string(),
                source,
            })?,
        };
        span.in_scope(|| tracing::debug!(pid = process.pid(), launched, "plugin process started"));
        let deadline = Deadline::after(plan.start_timeout);
        let stderr = StderrTail::default();
        let stderr_relay = tokio::spawn(
            relay_lines(
                BufReader::with_capacity(PIPE_BUFFER, pipes.stderr),
                Stream::Stderr,
                Some(stderr.clone()),
            )
            .instrument(span.clone()),
        );
        let mut stdout = BufReader::with_capacity(PIPE_BUFFER, pipes.stdout);
        let accepted = &config.handshake.app_versions;
        let mut skipped = SkippedLines::default();
        let read = tokio::time::timeout_at(
            deadline.at.into(),
            read_handshake(&mut stdout, accepted, &mut skipped).instrument(span.clone()),
        )
        .await;
        let handshake = match read {
            Ok(Ok(handshake)) => handshake,
            failed => {
                let error = handshake_failure(failed, deadline.timeout, skipped, &process).await;
                // Let the stderr relay catch the last lines of an exited plugin.
                let _ = tokio::time::timeout(Duration::from_millis(200), stderr_relay).await;
                let error = kill_and_wrap(&process, &stderr, error).await;
                let out_of_memory = stderr.out_of_memory();
                let evidence = crate::limits::Evidence {
                    signal: process.exit_status().and_then(|s| s.signal()),
                    cpu: process.cpu_time(),
                    out_of_memory: out_of_memory.as_deref(),
                    oom_kills: cgroup.as_ref().map(|c| c.oom_kills()),
                };
                let limit = crate::limits::exit_reason(&plan.limits, &evidence);
                return Err(match limit {
                    Some(limit) if error.is_exit() => SupervisorError::AtLimit {
                        limit,
                        source: Box::new(error),
                    },
                    _ => error,
                });
            }
        };
        tokio::spawn(relay_lines(stdout, Stream::Stdout, None).instrument(span.clone()));

        if let Err(error) = dialable(&handshake, config.allow_remote) {
            return Err(kill_and_wrap(&process, &stderr, error).await);
        }
        if handshake.network == crate::handshake::Network::Unix {
            socket_dir.owns(std::path::Path::new(&handshake.address));
        }
        let judged = judge_plaintext(config.tls, &handshake, socket_dir.path());
        let tls = match span.in_scope(|| tls_for(&handshake, identity.as_ref(), judged)) {
            Ok(tls) => tls,
            Err(error) => return Err(kill_and_wrap(&process, &stderr, error).await),
        };
        let budget = deadline.remaining().max(Duration::from_millis(100));
        let channel = match connect(&handshake, budget, tls).await {
            Ok(channel) => channel,
            Err(source) => {
                let error = PartialError::Connect(source);
                return Err(kill_and_wrap(&process, &stderr, error).await);
            }
        };
        tokio::spawn(consume_stdio_stream(channel.clone()).instrument(span.clone()));
        span.in_scope(|| {
            tracing::debug!(pid = process.pid(), address = %handshake.address, "plugin connected")
        });
        let supervisor = Supervisor {
            id: id.to_string(),
            process: Process::Owned(process),
            handshake,
            channel,
            stderr,
            stderr_relay: Mutex::new(Some(stderr_relay)),
            limits: plan.limits,
            cgroup,
            skipped,
            identity,
            sandbox,
            socket_dir: Mutex::new(Some(socket_dir)),
            config: config.clone(),
            stopped: tokio::sync::OnceCell::new(),
            span,
        };
        Ok((supervisor, deadline))
    }

    /// The plugin's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Supervises a plugin that someone else started and that listens at
    /// `target` (go-plugin's reattach): dials it (a tcp address must be
    /// loopback unless [`SupervisorConfig::allow_remote`]; no TLS), and
    /// waits until it answers SERVING within `timeout`. Its process is never
    /// signalled: a stop only disconnects ([`StopMethod::Detached`]), and its
    /// end is told by its pid's exit when `target` has one, else by its
    /// GRPCStdio stream closing, else by nothing answering at the address.
    pub async fn attach(
        id: &str,
        target: &AttachTarget,
        config: &SupervisorConfig,
        timeout: Duration,
    ) -> Result<Supervisor, SupervisorError> {
        let failed = |problem: String| SupervisorError::Attach {
            address: target.address.clone(),
            problem,
        };
        let handshake = target.handshake().map_err(failed)?;
        if let Err(PartialError::NotLoopback(address)) = dialable(&handshake, config.allow_remote) {
            return Err(failed(format!(
                "{address} is not a loopback address; plugvisor dials only 127.0.0.0/8, ::1 or a unix socket (allow it with --allow-remote-plugins)"
            )));
        }
        let pid = match target.pid {
            Some(pid) => {
                let fd = Attached::open_pid(pid)
                    .map_err(|e| failed(format!("there is no process {pid} to watch ({e})")))?;
                Some((pid, fd))
            }
            None => None,
        };
        let deadline = Deadline::after(timeout);
        let channel = connect(&handshake, timeout, None)
            .await
            .map_err(|e| failed(e.to_string()))?;
        let socket_dir = SocketDir::create(false).map_err(SupervisorError::SocketDir)?;
        let span = crate::stdio::plugin_span(id);
        let attached = Attached::watch(pid, channel.clone(), target.address.clone());
        let supervisor = Supervisor {
            id: id.to_string(),
            process: Process::Attached(attached),
            handshake,
            channel,
            stderr: StderrTail::default(),
            stderr_relay: Mutex::new(None),
            limits: crate::ResourceLimits::default(),
            cgroup: None,
            skipped: SkippedLines::default(),
            identity: None,
            sandbox: None,
            socket_dir: Mutex::new(Some(socket_dir)),
            config: config.clone(),
            stopped: tokio::sync::OnceCell::new(),
            span,
        };
        supervisor.wait_healthy(deadline).await?;
        span_debug(&supervisor, "attached to plugin");
        Ok(supervisor)
    }

    /// The plugin process's pid (also its process group's id); for an
    /// attached plugin, the pid it was attached with, if any.
    pub fn pid(&self) -> Option<u32> {
        match &self.process {
            Process::Owned(process) => Some(process.pid()),
            Process::Attached(attached) => attached.pid,
        }
    }

    /// Whether plugvisor attached to this plugin rather than starting it.
    pub fn is_attached(&self) -> bool {
        matches!(self.process, Process::Attached(_))
    }

    /// The process group whose members may use the host API: the plugin's
    /// own, or an attached plugin's (when its pid is known).
    pub(crate) fn process_group(&self) -> Option<u32> {
        match &self.process {
            Process::Owned(process) => Some(process.pid()),
            Process::Attached(attached) => attached.pid.and_then(|pid| {
                nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(pid as i32)))
                    .ok()
                    .map(|group| group.as_raw() as u32)
            }),
        }
    }

    /// What the plugin announced: its address, network and certificate.
    pub fn handshake(&self) -> &Handshake {
        &self.handshake
    }

    /// What the plugin's sandbox enforces, when it runs in one.
    pub fn sandbox(&self) -> Option<SandboxStatus> {
        self.sandbox
    }

    /// How the host reaches the plugin: unix or tcp, plaintext or mutual TLS.
    pub fn transport(&self) -> Transport {
        Transport::of(&self.handshake)
    }

    /// The plugin's private socket directory (`PLUGIN_UNIX_SOCKET_DIR`),
    /// until the plugin is stopped.
    pub(crate) fn socket_dir(&self) -> Option<std::path::PathBuf> {
        let dir = self.socket_dir.lock().unwrap_or_else(|e| e.into_inner());
        dir.as_ref().map(|d| d.path().to_path_buf())
    }

    /// A channel for the embedding application's own gRPC clients: the
    /// equivalent of go-plugin's `Dispense`.
    pub fn channel(&self) -> PluginChannel {
        self.channel.clone()
    }

    /// The TLS configuration a brokered server (the host API) must use for
    /// this plugin: `None` without AutoMTLS or when the plugin answered in
    /// plaintext.
    pub(crate) fn brokered_tls(
        &self,
    ) -> Result<Option<Arc<rustls::ServerConfig>>, crate::tls::TlsError> {
        match (&self.identity, &self.handshake.server_cert) {
            (Some(identity), Some(cert)) => crate::tls::server_config(identity, cert).map(Some),
            _ => Ok(None),
        }
    }

    /// The stdout lines before the handshake that were skipped as not one.
    pub fn skipped_lines(&self) -> &SkippedLines {
        &self.skipped
    }

    /// The last lines the plugin wrote to stderr.
    pub fn stderr_tail(&self) -> StderrLines {
        StderrLines(self.stderr.lines())
    }

    /// The resource limits in force on the process, and how.
    pub fn limits(&self) -> Vec<crate::EnforcedLimit> {
        crate::limits::enforced(&self.limits, self.cgroup.is_some())
    }

    /// Once the process has exited: which of its resource limits ended it,
    /// if one did (see [`crate::ResourceLimits`] for how each is told). Waits
    /// a moment for the last stderr lines, where a runtime says it ran out
    /// of memory.
    pub async fn limit_reached(&self) -> Option<String> {
        let status = self.exit_status()?;
        let Process::Owned(process) = &self.process else {
            return None;
        };
        if self.limits.is_empty() {
            return None;
        }
        let relay = self
            .stderr_relay
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(relay) = relay {
            // A descendant may hold the pipe open: bounded.
            let _ = tokio::time::timeout(Duration::from_millis(500), relay).await;
        }
        let out_of_memory = self.stderr.out_of_memory();
        let evidence = crate::limits::Evidence {
            signal: status.signal(),
            cpu: process.cpu_time(),
            out_of_memory: out_of_memory.as_deref(),
            oom_kills: self.cgroup.as_ref().map(|c| c.oom_kills()),
        };
        crate::limits::exit_reason(&self.limits, &evidence)
    }

    /// `grpc.health.v1.Health/Check` for service "plugin", within the ping
    /// timeout; only SERVING is healthy.
    pub async fn ping(&self) -> Result<(), PingError> {
        self.ping_within(self.config.ping_timeout).await
    }

    async fn ping_within(&self, timeout: Duration) -> Result<(), PingError> {
        let check = health_check::check(self.channel.clone(), HEALTH_SERVICE);
        match tokio::time::timeout(timeout, check).await {
            Err(_) => Err(PingError::Timeout(timeout)),
            Ok(Err(status)) => Err(PingError::Rpc {
                code: status.code(),
                message: status.message().to_string(),
            }),
            Ok(Ok(response)) => match ServingStatus::try_from(response.status) {
                Ok(ServingStatus::Serving) => Ok(()),
                Ok(other) => Err(PingError::NotServing(other.as_str_name().to_string())),
                Err(_) => Err(PingError::NotServing("an unknown status".into())),
            },
        }
    }

    /// Pings until SERVING, the process exits, or the deadline passes. A
    /// check that times out is retried while time is left: only the deadline
    /// fails the start.
    async fn wait_healthy(&self, deadline: Deadline) -> Result<(), SupervisorError> {
        let mut pause = Duration::from_millis(2);
        // A plugin's own answer (NOT_SERVING, an error) says more than a
        // check that ran out of time on a loaded machine: it is reported first.
        let mut answered: Option<PingError> = None;
        loop {
            let timeout = self
                .config
                .ping_timeout
                .min(deadline.remaining())
                .max(Duration::from_millis(1));
            let last = tokio::select! {
                result = self.ping_within(timeout) => match result {
                    Ok(()) => return Ok(()),
                    Err(error) => error,
                },
                ended = self.ended() => {
                    return Err(match ended {
                        Ended::Exited(status) => SupervisorError::ExitedBeforeHealthy { status, stderr: self.stderr_tail() },
                        Ended::Gone(why) => SupervisorError::Attach {
                            address: self.handshake.address.clone(),
                            problem: format!("it went away before it answered SERVING: {why}"),
                        },
                    });
                }
            };
            if !matches!(last, PingError::Timeout(_)) {
                answered = Some(last.clone());
            }
            if deadline.remaining() <= pause {
                return Err(SupervisorError::Unhealthy {
                    after: deadline.timeout,
                    last: answered.unwrap_or(last),
                    stderr: self.stderr_tail(),
                });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }

    /// The exit status once the process has exited and been reaped; never
    /// for an attached plugin.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        match &self.process {
            Process::Owned(process) => process.exit_status(),
            Process::Attached(_) => None,
        }
    }

    /// Whether the process has exited, or the attached plugin gone away.
    pub fn has_ended(&self) -> bool {
        match &self.process {
            Process::Owned(process) => process.exit_status().is_some(),
            Process::Attached(attached) => attached.gone_now().is_some(),
        }
    }

    /// Resolves when a process this supervisor started exits, whatever the
    /// reason. An attached plugin has no exit status: this never resolves
    /// for one; [`Supervisor::ended`] does.
    pub async fn exited(&self) -> ExitStatus {
        match &self.process {
            Process::Owned(process) => process.exited().await,
            Process::Attached(_) => std::future::pending().await,
        }
    }

    /// Resolves when the process exits, or the attached plugin goes away.
    pub async fn ended(&self) -> Ended {
        match &self.process {
            Process::Owned(process) => Ended::Exited(process.exited().await),
            Process::Attached(attached) => Ended::Gone(attached.gone().await),
        }
    }

    /// SIGKILLs the process group now; a running [`Supervisor::stop`] then
    /// finishes at once. An attached plugin is left alone.
    pub fn kill_now(&self) {
        if let Process::Owned(process) = &self.process {
            process.signal_group(Signal::SIGKILL);
        }
    }

    /// Stops the plugin (controller, SIGTERM, SIGKILL), reaps it, kills what
    /// it left behind (group members, and daemons that left the group) and
    /// removes its socket directory. Idempotent: later and concurrent calls
    /// get the same report.
    pub async fn stop(&self) -> StopReport {
        let report = self.stop_reaped().await;
        crate::sweep::settled().await;
        report
    }

    /// The same, returning once the process is reaped: the daemons it left
    /// are killed by the next sweep pass, which the environment does not
    /// wait for on each stop (its shutdown waits for it).
    pub(crate) async fn stop_reaped(&self) -> StopReport {
        *self
            .stopped
            .get_or_init(|| self.stop_once().instrument(self.span.clone()))
            .await
    }

    async fn stop_once(&self) -> StopReport {
        let started = Instant::now();
        let (method, status) = match &self.process {
            Process::Owned(process) => {
                let method = self.stop_sequence(process).await;
                let status = process.exited().await;
                // Leftovers die with the plugin: group members now, and
                // daemons that left the group in the next sweep pass, which
                // the caller does not wait for (Environment::shutdown waits
                // for it before it returns).
                process.signal_group(Signal::SIGKILL);
                process.kill_tagged_later();
                (method, Some(status))
            }
            // Not ours to stop: the connection closes with the supervisor.
            Process::Attached(_) => (StopMethod::Detached, None),
        };
        let took = started.elapsed();
        let socket_dir = self
            .socket_dir
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(directory) = socket_dir {
            crate::sweep::drop_in_background(directory);
        }
        let exit = status.map(describe_exit).unwrap_or_default();
        tracing::debug!(?method, ?took, exit, "plugin stopped");
        StopReport {
            method,
            status,
            took,
        }
    }

    /// Controller, SIGTERM, SIGKILL, each after its grace period.
    async fn stop_sequence(&self, process: &PluginProcess) -> StopMethod {
        if process.exit_status().is_some() {
            StopMethod::AlreadyExited
        } else if self.ask_controller_to_shut_down().await
            && exits_within(process, self.config.controller_grace).await
        {
            StopMethod::Controller
        } else {
            process.signal_group(Signal::SIGTERM);
            if exits_within(process, self.config.stop_grace).await {
                StopMethod::Terminate
            } else {
                tracing::warn!(grace = ?self.config.stop_grace, "plugin ignored SIGTERM; sending SIGKILL");
                process.signal_group(Signal::SIGKILL);
                StopMethod::Kill
            }
        }
    }

    /// True when the plugin accepted Shutdown, or dropped the connection while
    /// handling it (go-plugin stops its server before answering).
    async fn ask_controller_to_shut_down(&self) -> bool {
        let mut controller = GrpcControllerClient::new(self.channel.clone());
        let call = controller.shutdown(crate::proto::plugin::Empty {});
        match tokio::time::timeout(self.config.ping_timeout, call).await {
            Ok(Ok(_)) => true,
            Ok(Err(status)) => match status.code() {
                tonic::Code::Unimplemented => {
                    tracing::debug!("plugin has no GRPCController; sending SIGTERM");
                    false
                }
                tonic::Code::Unavailable | tonic::Code::Cancelled | tonic::Code::Unknown => true,
                code => {
                    tracing::debug!(
                        ?code,
                        message = status.message(),
                        "controller Shutdown failed"
                    );
                    false
                }
            },
            Err(_) => false,
        }
    }
}

async fn exits_within(process: &PluginProcess, grace: Duration) -> bool {
    tokio::time::timeout(grace, process.exited()).await.is_ok()
}

fn span_debug(supervisor: &Supervisor, what: &str) {
    supervisor.span.in_scope(|| {
        tracing::debug!(pid = ?supervisor.pid(), address = %supervisor.handshake.address, "{what}")
    });
}

/// Reads stdout until a handshake line, skipping lines that are not meant as one.
async fn read_handshake<R: AsyncBufRead + Unpin>(
    stdout: &mut R,
    accepted: &[u32],
    skipped: &mut SkippedLines,
) -> Result<Handshake, PartialError> {
    loop {
        let line = match read_bounded_line(stdout, MAX_LINE_BYTES).await {
            Ok(Some(Line::Complete(bytes))) => String::from_utf8_lossy(&bytes).into_owned(),
            Ok(Some(Line::Truncated(_))) => return Err(PartialError::LineTooLong),
            Ok(None) | Err(_) => return Err(PartialError::Eof),
        };
        let line = line.trim_end_matches(['\n', '\r']);
        if looks_like_handshake(line.trim_start()) {
            return parse_handshake_line(line, accepted).map_err(PartialError::Handshake);
        }
        tracing::warn!(line, "skipping a stdout line printed before the handshake");
        skipped.count += 1;
        skipped
            .first
            .get_or_insert_with(|| line.chars().take(200).collect());
    }
}

/// The TLS configuration the handshake calls for, given whether AutoMTLS is on.
/// A tcp address must be loopback unless the operator allows otherwise
/// (the handshake parser has checked that it is IP:PORT).
fn dialable(handshake: &Handshake, allow_remote: bool) -> Result<(), PartialError> {
    if handshake.network != crate::handshake::Network::Tcp || allow_remote {
        return Ok(());
    }
    match handshake.address.parse::<std::net::SocketAddr>() {
        Ok(address) if address.ip().is_loopback() => Ok(()),
        _ => Err(PartialError::NotLoopback(handshake.address.clone())),
    }
}

/// The variable that names a plugin's own data directory.
pub const DATA_DIR_ENV: &str = "PLUGVISOR_DATA_DIR";

/// Makes a sandboxed start's private temporary directory (in the socket
/// directory, so it goes with it) and its ruleset, and gives the plugin the
/// port range its sandbox lets it bind: the ports the bundle asked for, or
/// none (so that plugins bind an ephemeral port).
fn sandbox_start(
    policy: &SandboxPolicy,
    plan: &LaunchPlan,
    socket_dir: &std::path::Path,
    env: &mut Vec<(String, String)>,
) -> Result<Ruleset, SupervisorError> {
    use std::os::unix::fs::DirBuilderExt;
    let tmp = socket_dir.join("tmp");
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&tmp)
        .map_err(SupervisorError::SocketDir)?;
    env.push(("TMPDIR".into(), tmp.to_string_lossy().into_owned()));
    env.retain(|(key, _)| key != "PLUGIN_MIN_PORT" && key != "PLUGIN_MAX_PORT");
    if let (Some(min), Some(max)) = (policy.bind_ports.first(), policy.bind_ports.last()) {
        env.push(("PLUGIN_MIN_PORT".into(), min.to_string()));
        env.push(("PLUGIN_MAX_PORT".into(), max.to_string()));
    }
    let mut writable = vec![socket_dir];
    writable.extend(plan.data_dir.as_deref());
    Ok(Ruleset::build(policy, &writable)?)
}

fn tls_for(
    handshake: &Handshake,
    identity: Option<&crate::tls::ClientIdentity>,
    plaintext: Plaintext,
) -> Result<Option<std::sync::Arc<rustls::ClientConfig>>, PartialError> {
    match (&handshake.server_cert, identity) {
        (Some(cert), Some(identity)) => crate::tls::client_config(cert, Some(identity))
            .map(Some)
            .map_err(PartialError::Tls),
        (Some(_), None) => Err(PartialError::UnexpectedCertificate),
        (None, _) => match plaintext {
            Plaintext::Fine => Ok(None),
            Plaintext::Warn(warning) => {
                tracing::warn!(address = %handshake.address, "{warning}");
                Ok(None)
            }
            Plaintext::Refused => Err(PartialError::PlaintextRefused),
        },
    }
}

async fn handshake_failure(
    read: Result<Result<Handshake, PartialError>, tokio::time::error::Elapsed>,
    timeout: Duration,
    skipped: SkippedLines,
    process: &PluginProcess,
) -> PartialError {
    match read {
        Err(_) => PartialError::Timeout(timeout, skipped),
        Ok(Err(PartialError::Eof)) => {
            // EOF on stdout: usually the plugin exited; give it a moment to be reaped.
            match tokio::time::timeout(Duration::from_millis(500), process.exited()).await {
                Ok(status) => PartialError::Exited(status, skipped),
                Err(_) => PartialError::Closed(skipped),
            }
        }
        Ok(Err(other)) => other,
        Ok(Ok(_)) => unreachable!("a successful handshake is not a failure"),
    }
}

/// Kills and reaps the process, then attaches the stderr tail to the error.
async fn kill_and_wrap(
    process: &PluginProcess,
    stderr: &StderrTail,
    error: PartialError,
) -> SupervisorError {
    process.signal_group(Signal::SIGKILL);
    process.exited().await;
    process.kill_tagged().await;
    error.with_stderr(StderrLines(stderr.lines()))
}

/// Relays `plugin.GRPCStdio/StreamStdio` when the plugin offers it, until
/// the stream ends. The call's own failure is returned: UNIMPLEMENTED when
/// the plugin has no such stream. (grpc-go sends the stream's headers with
/// its first message, so the call itself may wait for the plugin's first
/// output, and fail only when the plugin goes away.)
async fn consume_stdio_stream(channel: PluginChannel) -> Result<(), tonic::Status> {
    let mut client = GrpcStdioClient::new(channel);
    let mut stream = match client.stream_stdio(()).await {
        Ok(response) => response.into_inner(),
        Err(status) => {
            tracing::debug!(code = ?status.code(), "no GRPCStdio stream");
            return Err(status);
        }
    };
    while let Ok(Some(data)) = stream.message().await {
        let stream = match StdioChannel::try_from(data.channel) {
            Ok(StdioChannel::Stderr) => Stream::GrpcStderr,
            _ => Stream::GrpcStdout,
        };
        let bytes = &data.data[..data.data.len().min(MAX_LINE_BYTES)];
        for line in String::from_utf8_lossy(bytes).lines() {
            log_plugin_line(stream, line);
        }
    }
    Ok(())
}
