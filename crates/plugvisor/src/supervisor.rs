//! One running plugin: spawn → handshake → connect → ping → stop.
//!
//! The stop sequence: `plugin.GRPCController/Shutdown`, then SIGTERM to the
//! process group, then SIGKILL, each after its grace period. A plugin without
//! the controller (UNIMPLEMENTED) goes to SIGTERM at once.

use std::process::ExitStatus;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde::Serialize;
use tokio::io::{AsyncBufRead, BufReader};
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tracing::Instrument;

use crate::handshake::{
    Handshake, HandshakeConfig, HandshakeLineError, looks_like_handshake, parse_handshake_line,
};
use crate::process::{PluginProcess, SpawnSpec, describe_exit};
use crate::proto::grpc_controller_client::GrpcControllerClient;
use crate::proto::grpc_stdio_client::GrpcStdioClient;
use crate::proto::stdio_data::Channel as StdioChannel;
use crate::runtime::LaunchPlan;
use crate::stdio::{
    Line, MAX_LINE_BYTES, StderrLines, StderrTail, Stream, log_plugin_line, read_bounded_line,
    relay_lines,
};
use crate::transport::{ConnectError, connect};

/// The gRPC health service name go-plugin plugins report under.
pub const HEALTH_SERVICE: &str = "plugin";

/// Timings and protocol settings for one plugin process.
#[derive(Debug, Clone)]
pub struct SupervisorConfig {
    pub handshake: HandshakeConfig,
    /// Deadline of one health check.
    pub ping_timeout: Duration,
    /// How long to wait for exit after the controller's Shutdown.
    pub controller_grace: Duration,
    /// How long to wait for exit after SIGTERM, before SIGKILL.
    pub terminate_grace: Duration,
    /// go-plugin's AutoMTLS: offer the plugin a client certificate and talk
    /// TLS when it answers with a server certificate. Plaintext tcp is then
    /// refused.
    pub auto_mtls: bool,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        SupervisorConfig {
            handshake: HandshakeConfig::default(),
            ping_timeout: Duration::from_secs(1),
            controller_grace: Duration::from_secs(2),
            terminate_grace: Duration::from_secs(2),
            auto_mtls: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PingError {
    #[error("health check timed out after {0:?}")]
    Timeout(Duration),
    #[error("health status is {0}, not SERVING")]
    NotServing(String),
    #[error("health check failed: {code:?}: {message}")]
    Rpc { code: tonic::Code, message: String },
}

/// Lines printed to stdout before the handshake that were skipped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SkippedLines {
    pub count: usize,
    pub first: Option<String>,
}

impl std::fmt::Display for SkippedLines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.first {
            Some(first) => write!(
                f,
                "; it printed {} stdout line(s) that are not a handshake, the first: {first:?}",
                self.count
            ),
            None => Ok(()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error("cannot create the plugin's private socket directory: {0}")]
    SocketDir(std::io::Error),
    #[error("cannot start {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error(
        "plugin printed no handshake within {after:?}{skipped}; raise the start timeout if it is slow to start{stderr}"
    )]
    HandshakeTimeout {
        after: Duration,
        skipped: SkippedLines,
        stderr: StderrLines,
    },
    #[error("plugin exited before its handshake ({}){skipped}{stderr}", describe_exit(*status))]
    PluginExited {
        status: ExitStatus,
        skipped: SkippedLines,
        stderr: StderrLines,
    },
    #[error("plugin closed its stdout without printing a handshake{skipped}{stderr}")]
    StdoutClosed {
        skipped: SkippedLines,
        stderr: StderrLines,
    },
    #[error("{source}{stderr}")]
    Handshake {
        source: HandshakeLineError,
        stderr: StderrLines,
    },
    #[error("plugin printed a stdout line longer than {limit} bytes before its handshake{stderr}")]
    LineTooLong { limit: usize, stderr: StderrLines },
    #[error("{0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error(
        "plugin announced a TLS certificate, but AutoMTLS is off; turn it on (--tls) to talk to this plugin{stderr}"
    )]
    UnexpectedCertificate { stderr: StderrLines },
    #[error(
        "plugin ignored PLUGIN_CLIENT_CERT and serves plaintext tcp, which AutoMTLS refuses; use a TLS-capable go-plugin or SDK{stderr}"
    )]
    PlaintextRefused { stderr: StderrLines },
    #[error("{source}{stderr}")]
    Connect {
        source: ConnectError,
        stderr: StderrLines,
    },
    #[error("plugin exited ({}) before it became healthy{stderr}", describe_exit(*status))]
    ExitedBeforeHealthy {
        status: ExitStatus,
        stderr: StderrLines,
    },
    #[error("plugin did not become healthy within {after:?}: {last}{stderr}")]
    Unhealthy {
        after: Duration,
        last: PingError,
        stderr: StderrLines,
    },
}

/// How a stop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopMethod {
    /// The process had already exited.
    AlreadyExited,
    /// It exited after `GRPCController/Shutdown`.
    Controller,
    /// It exited after SIGTERM.
    Terminate,
    /// It had to be SIGKILLed.
    Kill,
}

impl std::fmt::Display for StopMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StopMethod::AlreadyExited => "it had already exited",
            StopMethod::Controller => "via GRPCController/Shutdown",
            StopMethod::Terminate => "by SIGTERM",
            StopMethod::Kill => "by SIGKILL",
        })
    }
}

#[derive(Debug, Clone, Copy)]
pub struct StopReport {
    pub method: StopMethod,
    pub status: ExitStatus,
    /// From the stop call to the process being reaped. The sweep for
    /// leftover descendants comes after, before `stop()` returns.
    pub took: Duration,
}

/// One plugin process and its gRPC connection.
pub struct Supervisor {
    id: String,
    process: PluginProcess,
    handshake: Handshake,
    channel: Channel,
    stderr: StderrTail,
    socket_dir: Mutex<Option<tempfile::TempDir>>,
    config: SupervisorConfig,
    stopped: tokio::sync::OnceCell<StopReport>,
    span: tracing::Span,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field("id", &self.id)
            .field("pid", &self.process.pid())
            .field("handshake", &self.handshake)
            .finish()
    }
}

impl Supervisor {
    /// Spawns the plugin, reads its handshake and connects to it. It does not
    /// wait for health: see [`Supervisor::wait_healthy`].
    pub async fn start(
        id: &str,
        plan: &LaunchPlan,
        config: &SupervisorConfig,
    ) -> Result<Supervisor, SupervisorError> {
        let span = tracing::info_span!("plugin", id);
        let deadline = Instant::now() + plan.start_timeout;
        let socket_dir = tempfile::Builder::new()
            .prefix("plugvisor-")
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir()
            .map_err(SupervisorError::SocketDir)?;
        let identity = match config.auto_mtls {
            true => Some(crate::tls::ClientIdentity::generate()?),
            false => None,
        };
        let mut env = config
            .handshake
            .plugin_env(&socket_dir.path().to_string_lossy());
        if let Some(identity) = &identity {
            env.push(("PLUGIN_CLIENT_CERT".into(), identity.cert_pem.clone()));
        }
        let spec = SpawnSpec {
            program: plan.program.clone(),
            args: plan.args.clone(),
            working_dir: plan.working_dir.clone(),
            env,
        };
        let (process, pipes) =
            PluginProcess::spawn(&spec).map_err(|source| SupervisorError::Spawn {
                program: plan.program.display().to_string(),
                source,
            })?;
        let stderr = StderrTail::default();
        let stderr_relay = tokio::spawn(
            relay_lines(
                BufReader::new(pipes.stderr),
                Stream::Stderr,
                Some(stderr.clone()),
            )
            .instrument(span.clone()),
        );
        let mut stdout = BufReader::new(pipes.stdout);
        let accepted = &config.handshake.app_versions;
        let mut skipped = SkippedLines::default();
        let read = tokio::time::timeout_at(
            deadline.into(),
            read_handshake(&mut stdout, accepted, &mut skipped).instrument(span.clone()),
        )
        .await;
        let handshake = match read {
            Ok(Ok(handshake)) => handshake,
            failed => {
                let error = handshake_failure(failed, plan.start_timeout, skipped, &process).await;
                // Let the stderr relay catch the last lines of an exited plugin.
                let _ = tokio::time::timeout(Duration::from_millis(200), stderr_relay).await;
                return Err(kill_and_wrap(&process, &stderr, error).await);
            }
        };
        tokio::spawn(relay_lines(stdout, Stream::Stdout, None).instrument(span.clone()));

        let tls = match tls_for(&handshake, identity.as_ref()) {
            Ok(tls) => tls,
            Err(error) => return Err(kill_and_wrap(&process, &stderr, error).await),
        };
        let connect_budget = deadline.saturating_duration_since(Instant::now());
        let budget = connect_budget.max(Duration::from_millis(100));
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
        Ok(Supervisor {
            id: id.to_string(),
            process,
            handshake,
            channel,
            stderr,
            socket_dir: Mutex::new(Some(socket_dir)),
            config: config.clone(),
            stopped: tokio::sync::OnceCell::new(),
            span,
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    pub fn handshake(&self) -> &Handshake {
        &self.handshake
    }

    /// A channel for the embedding application's own gRPC clients: the
    /// equivalent of go-plugin's `Dispense`.
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// plugvisor dispenses no lifecycle hooks: plugins are supervised, not called.
    pub fn has_hooks(&self) -> bool {
        false
    }

    /// The last lines the plugin wrote to stderr.
    pub fn stderr_tail(&self) -> StderrLines {
        StderrLines(self.stderr.lines())
    }

    /// `grpc.health.v1.Health/Check` for service "plugin"; only SERVING is healthy.
    pub async fn ping(&self) -> Result<(), PingError> {
        let mut client = HealthClient::new(self.channel.clone());
        let request = HealthCheckRequest {
            service: HEALTH_SERVICE.into(),
        };
        let timeout = self.config.ping_timeout;
        match tokio::time::timeout(timeout, client.check(request)).await {
            Err(_) => Err(PingError::Timeout(timeout)),
            Ok(Err(status)) => Err(PingError::Rpc {
                code: status.code(),
                message: status.message().to_string(),
            }),
            Ok(Ok(response)) => match ServingStatus::try_from(response.into_inner().status) {
                Ok(ServingStatus::Serving) => Ok(()),
                Ok(other) => Err(PingError::NotServing(other.as_str_name().to_string())),
                Err(_) => Err(PingError::NotServing("an unknown status".into())),
            },
        }
    }

    /// Pings until SERVING, the process exits, or `timeout` passes.
    pub async fn wait_healthy(&self, timeout: Duration) -> Result<(), SupervisorError> {
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_millis(2);
        loop {
            let last = tokio::select! {
                result = self.ping() => match result {
                    Ok(()) => return Ok(()),
                    Err(error) => error,
                },
                status = self.process.exited() => {
                    return Err(SupervisorError::ExitedBeforeHealthy { status, stderr: self.stderr_tail() });
                }
            };
            if Instant::now() + pause >= deadline {
                return Err(SupervisorError::Unhealthy {
                    after: timeout,
                    last,
                    stderr: self.stderr_tail(),
                });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }

    /// The exit status once the process has exited and been reaped.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.process.exit_status()
    }

    /// Resolves when the process exits, whatever the reason.
    pub async fn exited(&self) -> ExitStatus {
        self.process.exited().await
    }

    /// SIGKILLs the process group now; a running [`Supervisor::stop`] then finishes at once.
    pub fn kill_now(&self) {
        self.process.signal_group(Signal::SIGKILL);
    }

    /// Stops the plugin (controller, SIGTERM, SIGKILL), reaps it and removes its
    /// socket directory. Idempotent: later and concurrent calls get the same report.
    pub async fn stop(&self) -> StopReport {
        *self
            .stopped
            .get_or_init(|| self.stop_once().instrument(self.span.clone()))
            .await
    }

    async fn stop_once(&self) -> StopReport {
        let started = Instant::now();
        let method = if self.exit_status().is_some() {
            StopMethod::AlreadyExited
        } else if self.ask_controller_to_shut_down().await
            && self.exits_within(self.config.controller_grace).await
        {
            StopMethod::Controller
        } else {
            self.process.signal_group(Signal::SIGTERM);
            if self.exits_within(self.config.terminate_grace).await {
                StopMethod::Terminate
            } else {
                tracing::warn!(grace = ?self.config.terminate_grace, "plugin ignored SIGTERM; sending SIGKILL");
                self.process.signal_group(Signal::SIGKILL);
                StopMethod::Kill
            }
        };
        let status = self.process.exited().await;
        let took = started.elapsed();
        // Leftovers die with the plugin: group members, and daemons that left the group.
        self.process.signal_group(Signal::SIGKILL);
        self.process.kill_tagged().await;
        drop(
            self.socket_dir
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take(),
        );
        tracing::debug!(?method, ?took, status = %describe_exit(status), "plugin stopped");
        StopReport {
            method,
            status,
            took,
        }
    }

    /// True when the plugin accepted Shutdown, or dropped the connection while
    /// handling it (go-plugin stops its server before answering).
    async fn ask_controller_to_shut_down(&self) -> bool {
        let mut controller = GrpcControllerClient::new(self.channel.clone());
        let call = controller.shutdown(crate::proto::Empty {});
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

    async fn exits_within(&self, grace: Duration) -> bool {
        tokio::time::timeout(grace, self.process.exited())
            .await
            .is_ok()
    }
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
fn tls_for(
    handshake: &Handshake,
    identity: Option<&crate::tls::ClientIdentity>,
) -> Result<Option<std::sync::Arc<rustls::ClientConfig>>, PartialError> {
    match (&handshake.server_cert, identity) {
        (Some(cert), Some(identity)) => crate::tls::client_config(cert, Some(identity))
            .map(Some)
            .map_err(PartialError::Tls),
        (Some(_), None) => Err(PartialError::UnexpectedCertificate),
        (None, Some(_)) if handshake.network == crate::handshake::Network::Tcp => {
            Err(PartialError::PlaintextRefused)
        }
        (None, Some(_)) => {
            tracing::warn!(
                "plugin ignored PLUGIN_CLIENT_CERT; its private unix socket stays plaintext"
            );
            Ok(None)
        }
        (None, None) => Ok(None),
    }
}

/// A start failure before the stderr tail is attached.
enum PartialError {
    Tls(crate::tls::TlsError),
    UnexpectedCertificate,
    PlaintextRefused,
    Eof,
    Closed(SkippedLines),
    LineTooLong,
    Handshake(HandshakeLineError),
    Timeout(Duration, SkippedLines),
    Exited(ExitStatus, SkippedLines),
    Connect(ConnectError),
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
    let stderr = StderrLines(stderr.lines());
    match error {
        PartialError::Closed(skipped) => SupervisorError::StdoutClosed { skipped, stderr },
        PartialError::Eof => SupervisorError::StdoutClosed {
            skipped: SkippedLines::default(),
            stderr,
        },
        PartialError::LineTooLong => SupervisorError::LineTooLong {
            limit: MAX_LINE_BYTES,
            stderr,
        },
        PartialError::Handshake(source) => SupervisorError::Handshake { source, stderr },
        PartialError::Timeout(after, skipped) => SupervisorError::HandshakeTimeout {
            after,
            skipped,
            stderr,
        },
        PartialError::Exited(status, skipped) => SupervisorError::PluginExited {
            status,
            skipped,
            stderr,
        },
        PartialError::Connect(source) => SupervisorError::Connect { source, stderr },
        PartialError::Tls(error) => SupervisorError::Tls(error),
        PartialError::UnexpectedCertificate => SupervisorError::UnexpectedCertificate { stderr },
        PartialError::PlaintextRefused => SupervisorError::PlaintextRefused { stderr },
    }
}

/// Relays `plugin.GRPCStdio/StreamStdio` when the plugin offers it.
async fn consume_stdio_stream(channel: Channel) {
    let mut client = GrpcStdioClient::new(channel);
    let mut stream = match client.stream_stdio(()).await {
        Ok(response) => response.into_inner(),
        Err(status) => {
            tracing::debug!(code = ?status.code(), "plugin offers no GRPCStdio stream");
            return;
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
}
