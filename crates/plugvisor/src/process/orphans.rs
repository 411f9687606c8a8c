//! Reaping the orphans a subreaper host adopts. Once the host is a child
//! subreaper (`subreaper.rs`), every orphaned descendant becomes its child: a
//! plugin's daemonized grandchild, too, which would otherwise stay a zombie of
//! the host after the sweep killed it. This reaps exited children that are
//! neither plugins being watched (`LIVE`) nor in the host's own process group
//! (where an embedding's own children are, which it waits for itself).

use std::sync::Mutex;
use std::time::Duration;

use nix::libc;

/// Claims in progress: a spawn or a fork whose pid is not in `LIVE` yet.
static CLAIMS: Mutex<usize> = Mutex::new(0);

/// While held, no orphan is reaped: the pid of a process being spawned or
/// forked is not yet among the live plugins.
pub(crate) struct Claim(());

pub(crate) fn claim() -> Claim {
    *CLAIMS.lock().unwrap_or_else(|e| e.into_inner()) += 1;
    Claim(())
}

impl Drop for Claim {
    fn drop(&mut self) {
        *CLAIMS.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
    }
}

/// Starts the reaper (once): a thread of its own, woken by SIGCHLD, so that
/// it outlives whichever runtime made the host a subreaper.
pub(crate) fn start_reaper() {
    static STARTED: std::sync::Once = std::sync::Once::new();
    STARTED.call_once(|| {
        super::background().spawn(async move {
            let mut child = match tokio::signal::unix::signal(
                tokio::signal::unix::SignalKind::child(),
            ) {
                Ok(signal) => signal,
                Err(error) => {
                    tracing::warn!(%error, "cannot watch SIGCHLD: adopted orphans are not reaped");
                    return;
                }
            };
            loop {
                // A claim postpones the pass; SIGCHLDs meanwhile coalesce.
                while !reap_orphans() {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                child.recv().await;
            }
        });
    });
}

/// One pass; false when a claim is held and it must be tried again.
fn reap_orphans() -> bool {
    let claims = CLAIMS.lock().unwrap_or_else(|e| e.into_inner());
    if *claims > 0 {
        return false;
    }
    let live = super::live_plugin_pids();
    // SAFETY: getpgrp has no arguments and cannot fail.
    let own_group = unsafe { libc::getpgrp() };
    for pid in children() {
        if live.contains(&(pid as u32)) {
            continue;
        }
        match zombie_group(pid) {
            Some(group) if group != own_group => {
                // SAFETY: siginfo_t is plain data; pid is an exited child of ours.
                let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
                unsafe {
                    libc::waitid(
                        libc::P_PID,
                        pid as libc::id_t,
                        &mut info,
                        libc::WEXITED | libc::WNOHANG,
                    )
                };
                tracing::debug!(pid, "reaped an adopted orphan");
            }
            _ => {}
        }
    }
    drop(claims);
    true
}

/// This process's children, from every thread's list.
fn children() -> Vec<i32> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    let mut pids = Vec::new();
    for task in tasks.flatten() {
        if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
            pids.extend(
                text.split_whitespace()
                    .filter_map(|p| p.parse::<i32>().ok()),
            );
        }
    }
    pids
}

/// The process group of `pid` when it is a zombie.
fn zombie_group(pid: i32) -> Option<i32> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = text[text.rfind(')')? + 2..].split_whitespace();
    let state = fields.next()?;
    let _ppid = fields.next()?;
    let group = fields.next()?.parse().ok()?;
    (state == "Z").then_some(group)
}
