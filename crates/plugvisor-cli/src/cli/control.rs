//! The control socket of a running `plugvisor run`: one JSON request line in,
//! one JSON response line out. The socket lives in a 0700 directory, is itself
//! 0600, and answers only peers with our own uid. It holds under abuse:
//! connections are bounded, a request must arrive within a few seconds, and
//! accept errors back off instead of spinning.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use plugvisor::{
    ConfigApplied, ConfigChange, ConfigValue, Environment, PluginStatus, ReloadReport,
};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, oneshot};

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Request {
    Status,
    Start {
        id: String,
    },
    Stop {
        id: String,
    },
    Restart {
        id: String,
    },
    /// Debug mode on or off.
    Debug {
        id: String,
        on: bool,
    },
    /// Attach to a plugin started by hand at `address`; `None` detaches.
    Attach {
        id: String,
        address: Option<String>,
        pid: Option<u32>,
    },
    ConfigGet {
        id: String,
    },
    /// `KEY=VALUE` as typed; the plugin's settings_schema gives each its type.
    ConfigSet {
        id: String,
        values: Vec<(String, String)>,
    },
    ConfigUnset {
        id: String,
        keys: Vec<String>,
    },
    /// Rescan the plugins directory and apply what changed.
    Reload,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default)]
    pub statuses: Vec<PluginStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configuration: Option<Vec<ConfigValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied: Option<ConfigApplied>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reload: Option<ReloadReport>,
}

/// Connections still waiting for their request line. Past this many, the
/// oldest of them is closed: a flood of idle connections can then delay a
/// real request by nothing, since the newest connection always gets in.
const MAX_WAITING: usize = 256;
/// Requests served at once; more wait for their turn with their line read.
const MAX_SERVING: usize = 64;
/// Time a client has to send its request line.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest request line.
const MAX_REQUEST_BYTES: u64 = 64 * 1024;

/// `$XDG_RUNTIME_DIR/plugvisor/control.sock`, else `/tmp/plugvisor-UID/control.sock`.
pub fn default_socket_path() -> PathBuf {
    let dir = match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(runtime) if !runtime.is_empty() => PathBuf::from(runtime).join("plugvisor"),
        _ => std::env::temp_dir().join(format!("plugvisor-{}", nix::unistd::geteuid())),
    };
    dir.join("control.sock")
}

/// Binds the socket, refusing to steal one that a live `run` still answers on.
pub async fn bind(path: &Path) -> anyhow::Result<UnixListener> {
    let dir = path
        .parent()
        .context("control socket path has no directory")?;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create control socket directory {}", dir.display()))?;
    let owner = std::fs::metadata(dir)?;
    if std::os::unix::fs::MetadataExt::uid(&owner) != nix::unistd::geteuid().as_raw() {
        bail!(
            "control socket directory {} belongs to another user; pass --control-socket",
            dir.display()
        );
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            bail!(
                "another plugvisor is running with control socket {}; stop it or pass --control-socket",
                path.display()
            );
        }
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)
        .with_context(|| format!("cannot bind control socket {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Answers requests until the task is dropped.
pub async fn serve(listener: UnixListener, env: Environment) {
    let me = nix::unistd::geteuid().as_raw();
    let serving = Arc::new(Semaphore::new(MAX_SERVING));
    let mut waiting = Waiting::default();
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Out of descriptors, say: retrying at once would spin.
                tracing::warn!(%error, "control socket accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let evicted = waiting.admit();
        let env = env.clone();
        let serving = serving.clone();
        tokio::spawn(async move {
            let peer = stream.peer_cred().map(|c| c.uid()).ok();
            if peer != Some(me) {
                tracing::warn!(?peer, "refused a control connection from another user");
            }
            let (read, write) = stream.into_split();
            let mut line = String::new();
            let mut reader = BufReader::new(read).take(MAX_REQUEST_BYTES);
            tokio::select! {
                read = tokio::time::timeout(REQUEST_TIMEOUT, reader.read_line(&mut line)) => {
                    if !matches!(read, Ok(Ok(n)) if n > 0) {
                        return;
                    }
                }
                // Closed to make room for newer connections.
                _ = evicted => return,
            }
            let Ok(_turn) = serving.acquire().await else {
                return;
            };
            let _ = answer(&line, write, &env, peer == Some(me)).await;
        });
    }
}

/// The connections that have not sent their request yet, oldest first.
#[derive(Default)]
struct Waiting(std::collections::VecDeque<oneshot::Sender<()>>);

impl Waiting {
    /// Room for one more, closing the oldest waiting connection if need be.
    /// The receiver resolves when this connection is the one closed; dropping
    /// it (the request has arrived) takes the connection off the list.
    fn admit(&mut self) -> oneshot::Receiver<()> {
        self.0.retain(|waiting| !waiting.is_closed());
        if self.0.len() >= MAX_WAITING {
            self.0.pop_front();
        }
        let (evict, evicted) = oneshot::channel();
        self.0.push_back(evict);
        evicted
    }
}

async fn answer(
    line: &str,
    write: tokio::net::unix::OwnedWriteHalf,
    env: &Environment,
    allowed: bool,
) -> std::io::Result<()> {
    if !allowed {
        let refused = Response {
            error: Some(
                "refused: only the user running plugvisor may use its control socket".into(),
            ),
            ..Response::default()
        };
        return write_response(write, &refused).await;
    }
    let mut response = Response::default();
    let request = match serde_json::from_str::<Request>(line) {
        Ok(request) => request,
        Err(error) => {
            response.error = Some(format!("bad request: {error}"));
            return write_response(write, &response).await;
        }
    };
    let result = match request {
        Request::Status => Ok(()),
        Request::Start { id } => env.activate(&id).await.map(drop),
        Request::Stop { id } => env.deactivate(&id).await,
        Request::Restart { id } => env.restart(&id).await.map(drop),
        Request::Debug { id, on } => env.set_debugging(&id, on).map(drop),
        Request::Attach {
            id,
            address: Some(address),
            pid,
        } => match plugvisor::AttachTarget::new(&address, pid) {
            Ok(target) => env.attach(&id, target).await.map(drop),
            Err(problem) => Err(plugvisor::EnvironmentError::Start {
                id,
                source: plugvisor::SupervisorError::Attach { address, problem },
            }),
        },
        Request::Attach {
            id, address: None, ..
        } => env.detach(&id).await.map(drop),
        Request::ConfigGet { id } => env.configuration(&id).map(|values| {
            response.configuration = Some(values);
        }),
        Request::ConfigSet { id, values } => {
            let changes = values
                .into_iter()
                .map(|(key, value)| ConfigChange::set(key, value));
            configure(env, &id, changes, &mut response).await
        }
        Request::ConfigUnset { id, keys } => {
            let changes = keys.into_iter().map(ConfigChange::unset);
            configure(env, &id, changes, &mut response).await
        }
        Request::Reload => env.reload().await.map(|report| {
            response.reload = Some(report);
        }),
    }
    .map_err(|e| e.to_string());
    response.ok = result.is_ok();
    response.error = result.err();
    response.statuses = env.statuses();
    write_response(write, &response).await
}

async fn configure(
    env: &Environment,
    id: &str,
    changes: impl IntoIterator<Item = ConfigChange>,
    response: &mut Response,
) -> Result<(), plugvisor::EnvironmentError> {
    response.applied = Some(env.set_configuration(id, changes).await?);
    response.configuration = env.configuration(id).ok();
    Ok(())
}

async fn write_response(
    mut write: tokio::net::unix::OwnedWriteHalf,
    response: &Response,
) -> std::io::Result<()> {
    let mut text = serde_json::to_string(response)?;
    text.push('\n');
    write.write_all(text.as_bytes()).await
}

/// Sends one request to a running `plugvisor run`.
pub async fn request(path: &Path, request: &Request) -> anyhow::Result<Response> {
    let stream = UnixStream::connect(path).await.with_context(|| {
        format!(
            "no plugvisor is running with control socket {} (start one with `plugvisor run DIR`, or pass --control-socket)",
            path.display()
        )
    })?;
    let (read, mut write) = stream.into_split();
    let mut text = serde_json::to_string(request)?;
    text.push('\n');
    write.write_all(text.as_bytes()).await?;
    let mut line = String::new();
    BufReader::new(read).read_line(&mut line).await?;
    serde_json::from_str(&line).context("malformed answer from the control socket")
}
