//! One zygote per interpreter (and preload list), started lazily by the first
//! start that wants it, replaced when it died or its venv changed on disk.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::ZygoteError;
use super::fingerprint::Fingerprint;
use super::process::Zygote;

type Key = (PathBuf, Vec<String>);

/// How long an interpreter whose zygote failed to start is exec'd without
/// trying again.
const RETRY_UNFIT: Duration = Duration::from_secs(60);

enum State {
    Empty,
    Ready(Zygote, Fingerprint),
    /// Its zygote could not even start (a fake interpreter, a broken venv):
    /// not tried again until the interpreter changes or `RETRY_UNFIT` has
    /// passed (one warning, not one per start).
    Unfit(Fingerprint, std::time::Instant),
}

/// The slot of one key; its lock serializes the starts that use it.
type Slot = Arc<tokio::sync::Mutex<State>>;

static POOL: Mutex<Option<HashMap<Key, Slot>>> = Mutex::new(None);

fn slot(key: Key) -> Slot {
    let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
    pool.get_or_insert_with(HashMap::new)
        .entry(key)
        .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(State::Empty)))
        .clone()
}

/// Runs `with` against a ready zygote for `interpreter`, starting one first
/// if needed. A zygote that is gone, stale or fails `with` is dropped (the
/// next start makes a new one); the error says why this start must exec.
pub(crate) async fn with_zygote<T>(
    interpreter: &Path,
    exec_fd: Option<Arc<OwnedFd>>,
    preload: &[String],
    start_timeout: Duration,
    with: impl AsyncFnOnce(&Zygote) -> Result<T, ZygoteError>,
) -> Result<T, ZygoteError> {
    let slot = slot((interpreter.to_path_buf(), preload.to_vec()));
    let mut state = slot.lock().await;
    match &*state {
        State::Ready(zygote, fingerprint) => {
            if !zygote.alive() {
                let pid = zygote.pid();
                *state = State::Empty;
                return Err(ZygoteError::Gone(format!(
                    "the zygote (pid {pid}) has exited"
                )));
            }
            if *fingerprint != Fingerprint::of(interpreter, &zygote.package_dirs) {
                tracing::info!(interpreter = %interpreter.display(), "the venv changed on disk: replacing its zygote");
                *state = State::Empty;
            }
        }
        State::Unfit(fingerprint, since) => {
            if *fingerprint == Fingerprint::of(interpreter, &[]) && since.elapsed() < RETRY_UNFIT {
                return Err(ZygoteError::Unfit);
            }
            *state = State::Empty;
        }
        State::Empty => {}
    }
    if matches!(*state, State::Empty) {
        crate::sweep::adopt_orphans();
        let before = Fingerprint::of(interpreter, &[]);
        match Zygote::start(interpreter, exec_fd, preload, start_timeout).await {
            Ok(zygote) => {
                let fingerprint = Fingerprint::of(interpreter, &zygote.package_dirs);
                *state = State::Ready(zygote, fingerprint);
            }
            Err(error) => {
                *state = State::Unfit(before, std::time::Instant::now());
                return Err(error);
            }
        }
    }
    let State::Ready(zygote, _) = &*state else {
        unreachable!("a zygote was just made ready");
    };
    let result = with(zygote).await;
    let answer_failed = matches!(&result, Err(ZygoteError::Gone(_) | ZygoteError::Io(_)));
    if answer_failed {
        *state = State::Empty;
    }
    result
}
