//! The control socket of a running `plugvisor run`: one JSON request line in,
//! one JSON response line out. The socket lives in a 0700 directory, is itself
//! 0600, and answers only peers with our own uid.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use plugvisor::{Environment, PluginStatus};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "lowercase")]
pub enum Request {
    Status,
    Start { id: String },
    Stop { id: String },
    Restart { id: String },
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default)]
    pub statuses: Vec<PluginStatus>,
}

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
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let env = env.clone();
        tokio::spawn(async move {
            let peer = stream.peer_cred().map(|c| c.uid()).ok();
            if peer != Some(me) {
                tracing::warn!(?peer, "refused a control connection from another user");
            }
            let _ = handle(stream, &env, peer == Some(me)).await;
        });
    }
}

async fn handle(stream: UnixStream, env: &Environment, allowed: bool) -> std::io::Result<()> {
    let (read, write) = stream.into_split();
    let mut line = String::new();
    BufReader::new(read)
        .take(64 * 1024)
        .read_line(&mut line)
        .await?;
    if !allowed {
        let refused = Response {
            ok: false,
            error: Some(
                "refused: only the user running plugvisor may use its control socket".into(),
            ),
            statuses: Vec::new(),
        };
        return write_response(write, &refused).await;
    }
    let result = match serde_json::from_str::<Request>(&line) {
        Err(error) => Err(format!("bad request: {error}")),
        Ok(Request::Status) => Ok(()),
        Ok(Request::Start { id }) => env.activate(&id).await.map(drop).map_err(|e| e.to_string()),
        Ok(Request::Stop { id }) => env.deactivate(&id).await.map_err(|e| e.to_string()),
        Ok(Request::Restart { id }) => env.restart(&id).await.map(drop).map_err(|e| e.to_string()),
    };
    let response = Response {
        ok: result.is_ok(),
        error: result.err(),
        statuses: env.statuses(),
    };
    write_response(write, &response).await
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

use tokio::io::AsyncReadExt as _;
