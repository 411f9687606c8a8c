//! Finds and kills what a plugin left behind, by the instance tag that every
//! process it starts inherits in its environment. Concurrent requests share
//! one pass over /proc, so stopping 200 plugins at once costs a few passes,
//! not 200.

use std::sync::OnceLock;
use std::sync::mpsc;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::sync::oneshot;

struct Request {
    /// `NAME=value`, as it appears in /proc/PID/environ.
    tag: Vec<u8>,
    done: Option<oneshot::Sender<Vec<i32>>>,
}

/// SIGKILLs every process whose environment holds `tag`; returns their pids.
/// The pass that serves this call starts after the call.
pub async fn kill_tagged(tag: &str) -> Vec<i32> {
    let (done, killed) = oneshot::channel();
    let request = Request {
        tag: tag.as_bytes().to_vec(),
        done: Some(done),
    };
    if sweeper().send(request).is_err() {
        return pass(&[tag.as_bytes()]).pop().unwrap_or_default();
    }
    killed.await.unwrap_or_default()
}

/// The same, without waiting (for `Drop`).
pub fn kill_tagged_in_background(tag: &str) {
    let request = Request {
        tag: tag.as_bytes().to_vec(),
        done: None,
    };
    if sweeper().send(request).is_err() {
        pass(&[tag.as_bytes()]);
    }
}

/// Waits until every sweep asked for before this call has run.
pub async fn settled() {
    // Requests are served in order, in batches: once this one is answered,
    // every earlier one is. Its tag matches no process.
    kill_tagged("\0").await;
}

/// The shortest time between two passes over /proc.
const PASS_GAP: std::time::Duration = std::time::Duration::from_millis(25);

/// A thread of its own, so it serves every tokio runtime in the process.
fn sweeper() -> &'static mpsc::Sender<Request> {
    static SWEEPER: OnceLock<mpsc::Sender<Request>> = OnceLock::new();
    SWEEPER.get_or_init(|| {
        let (requests, received) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("plugvisor-sweep".into())
            .spawn(move || {
                let mut last_pass: Option<std::time::Instant> = None;
                while let Ok(first) = received.recv() {
                    // Passes come at most every PASS_GAP: a stop of many
                    // plugins at once then costs a few passes, not one each.
                    if let Some(last) = last_pass {
                        std::thread::sleep(PASS_GAP.saturating_sub(last.elapsed()));
                    }
                    last_pass = Some(std::time::Instant::now());
                    let mut batch = vec![first];
                    batch.extend(received.try_iter());
                    let tags: Vec<&[u8]> = batch.iter().map(|r| r.tag.as_slice()).collect();
                    let killed = pass(&tags);
                    for (request, pids) in batch.into_iter().zip(killed) {
                        if let Some(done) = request.done {
                            let _ = done.send(pids);
                        }
                    }
                }
            })
            .expect("cannot start the sweep thread");
        requests
    })
}

/// One pass over /proc: for each tag, the pids that carried it and were killed.
fn pass(tags: &[&[u8]]) -> Vec<Vec<i32>> {
    let mut killed = vec![Vec::new(); tags.len()];
    let me = std::process::id() as i32;
    // Live plugin processes carry their own tags, never one being swept.
    let plugins = crate::process::live_plugin_pids();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return killed;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if pid == me || plugins.contains(&(pid as u32)) {
            continue;
        }
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        for variable in environ.split(|&b| b == 0) {
            if let Some(i) = tags.iter().position(|tag| *tag == variable) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                killed[i].push(pid);
                break;
            }
        }
    }
    killed
}
