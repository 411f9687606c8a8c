//! Why a plugin could not be started, or failed a health check. Every start
//! failure carries the plugin's last stderr lines.

use std::process::ExitStatus;
use std::time::Duration;

use crate::handshake::HandshakeLineError;
use crate::process::describe_exit;
use crate::stdio::{MAX_LINE_BYTES, StderrLines};
use crate::transport::ConnectError;

/// A failed health check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PingError {
    /// No answer within the ping timeout.
    #[error("health check timed out after {0:?}")]
    Timeout(Duration),
    /// An answer other than SERVING (go-plugin's host counts NOT_SERVING as healthy; plugvisor does not).
    #[error("health status is {0}, not SERVING")]
    NotServing(String),
    /// The call itself failed.
    #[error("health check failed: {code:?}: {message}")]
    Rpc {
        /// The gRPC status code.
        code: tonic::Code,
        /// The status message.
        message: String,
    },
}

/// Lines printed to stdout before the handshake that were skipped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SkippedLines {
    /// How many lines were skipped.
    pub count: usize,
    /// The first of them, cut to 200 characters.
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

/// What go-plugin's plugins print when started without their magic cookie.
const NO_COOKIE_TEXT: &str = "This binary is a plugin";

/// A hint for a plugin that exited saying it was not started by its host:
/// the magic cookie it expects is not the one it was given.
struct CookieHint<'a>(&'a StderrLines);

impl std::fmt::Display for CookieHint<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.0.iter().any(|line| line.contains(NO_COOKIE_TEXT)) {
            f.write_str(
                "; it did not find the magic cookie it expects: check that the host's magic cookie (--magic-cookie KEY=VALUE) matches the plugin's HandshakeConfig",
            )?;
        }
        Ok(())
    }
}

/// Why a plugin could not be started. Each message says what to do next and
/// ends with the plugin's last stderr lines.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
#[allow(missing_docs)] // each variant is its message
pub enum SupervisorError {
    /// Boxed: the two digests would make every error this large.
    #[error(transparent)]
    Integrity(Box<crate::integrity::IntegrityError>),
    #[error("cannot create the plugin's private socket directory: {0}")]
    SocketDir(std::io::Error),
    #[error("cannot sandbox the plugin: {0}")]
    Sandbox(#[from] crate::sandbox::SandboxError),
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
    #[error("plugin exited before its handshake ({}){skipped}{}{stderr}", describe_exit(*status), CookieHint(stderr))]
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
        "plugin announced a TLS certificate, but AutoMTLS is off; turn it on (--tls auto) to talk to this plugin{stderr}"
    )]
    UnexpectedCertificate { stderr: StderrLines },
    #[error(
        "plugin ignored PLUGIN_CLIENT_CERT and serves plaintext outside its private socket directory, which --tls require refuses; use a TLS-capable go-plugin or SDK, or --tls auto to accept it with a warning{stderr}"
    )]
    PlaintextRefused { stderr: StderrLines },
    #[error(
        "plugin asks to be dialled at {address}, which is not a loopback address; plugvisor dials only 127.0.0.0/8, ::1 or a unix socket, because a plugin listening there is reachable from other machines (allow it with --allow-remote-plugins){stderr}"
    )]
    NotLoopback {
        address: String,
        stderr: StderrLines,
    },
    #[error("{source}{stderr}")]
    Connect {
        source: ConnectError,
        stderr: StderrLines,
    },
    #[error("plugin exited ({}) before it became healthy{}{stderr}", describe_exit(*status), CookieHint(stderr))]
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
    /// An attached plugin ([`crate::Supervisor::attach`]) could not be reached,
    /// or went away before it answered SERVING.
    #[error("cannot attach to the plugin at {address}: {problem}")]
    Attach { address: String, problem: String },
    /// An exit during the start that one of the plugin's resource limits
    /// caused ([`crate::ResourceLimits`] says how that is told).
    #[error("plugin stopped {limit} during its start: {source}")]
    AtLimit {
        limit: String,
        source: Box<SupervisorError>,
    },
}

impl SupervisorError {
    /// An exit during the start (before the handshake, or before healthy).
    pub(super) fn is_exit(&self) -> bool {
        matches!(
            self,
            SupervisorError::PluginExited { .. } | SupervisorError::ExitedBeforeHealthy { .. }
        )
    }

    /// Whether the start ran out of time rather than failing on its own: a
    /// timeout may pass on a loaded host, so the keeper retries it under the
    /// restart policy; an exit or a malformed handshake does not fix itself.
    pub(crate) fn is_timeout(&self) -> bool {
        matches!(
            self,
            SupervisorError::HandshakeTimeout { .. }
                | SupervisorError::Unhealthy {
                    last: PingError::Timeout(_),
                    ..
                }
                | SupervisorError::Connect {
                    source: ConnectError::Timeout { .. },
                    ..
                }
        )
    }
}

/// A start failure before the stderr tail is attached.
pub(super) enum PartialError {
    Tls(crate::tls::TlsError),
    UnexpectedCertificate,
    PlaintextRefused,
    NotLoopback(String),
    Eof,
    Closed(SkippedLines),
    LineTooLong,
    Handshake(HandshakeLineError),
    Timeout(Duration, SkippedLines),
    Exited(ExitStatus, SkippedLines),
    Connect(ConnectError),
}

impl PartialError {
    pub(super) fn with_stderr(self, stderr: StderrLines) -> SupervisorError {
        match self {
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
            PartialError::UnexpectedCertificate => {
                SupervisorError::UnexpectedCertificate { stderr }
            }
            PartialError::PlaintextRefused => SupervisorError::PlaintextRefused { stderr },
            PartialError::NotLoopback(address) => SupervisorError::NotLoopback { address, stderr },
        }
    }
}

impl From<crate::integrity::IntegrityError> for SupervisorError {
    fn from(error: crate::integrity::IntegrityError) -> SupervisorError {
        SupervisorError::Integrity(Box::new(error))
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;

    use super::*;

    #[test]
    fn a_plugin_without_its_cookie_gets_a_hint() {
        let stderr = StderrLines(vec![
            "This binary is a plugin. These are not meant to be executed directly.".into(),
        ]);
        let error = SupervisorError::PluginExited {
            status: ExitStatus::from_raw(1 << 8),
            skipped: SkippedLines::default(),
            stderr,
        };
        let message = error.to_string();
        assert!(message.contains("--magic-cookie"), "{message}");
        let plain = SupervisorError::PluginExited {
            status: ExitStatus::from_raw(1 << 8),
            skipped: SkippedLines::default(),
            stderr: StderrLines(vec!["boom".into()]),
        };
        assert!(!plain.to_string().contains("magic cookie"));
    }
}
