//! Finds and kills what a plugin left behind, and reaps orphans.
//!
//! The host is a child subreaper (`PR_SET_CHILD_SUBREAPER`), so a process
//! that a plugin started and left behind, a daemon that double-forked and
//! called setsid included, becomes the host's own child once its parent is
//! gone. A pass therefore reads only the host's children
//! (`/proc/self/task/*/children`), never all of /proc: its cost follows what
//! the plugins left, not what runs on the machine. It kills the children that
//! carry a stopped plugin's instance tag, waits for them, and looks again, as
//! their own children are the host's next.
//!
//! An orphan that has exited is reaped by the next pass, and a pass runs on
//! every SIGCHLD, so none stays a zombie. Each plugin leads a process group
//! of its own, and its descendants stay in it or make others: a child of the
//! host outside the host's own process group that is not a live plugin
//! process is an orphan. The application's own children, in its process
//! group, are never reaped here (one it put in a group of its own would be).
//!
//! Concurrent requests share one pass, so stopping 1000 plugins at once costs
//! a few passes, not 1000. The same thread removes the stopped plugins'
//! socket directories, off the path that a stop's caller waits on.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::sync::oneshot;

struct Request {
    job: Job,
    done: Option<oneshot::Sender<Vec<i32>>>,
}

enum Job {
    /// Kill the orphans whose environment holds this `NAME=value` (as it
    /// appears in /proc/PID/environ).
    Kill(Vec<u8>),
    /// Only reap the orphans that exited.
    Reap,
    /// Drop a stopped plugin's socket directory: file-system work that no
    /// caller needs to wait for.
    Drop(Box<dyn Send>),
}

/// Makes this process the reaper of its plugins' orphans, once, before the
/// first plugin starts; from then on every SIGCHLD reaps the orphans that
/// have exited.
pub(crate) fn adopt_orphans() {
    static ADOPTING: OnceLock<()> = OnceLock::new();
    ADOPTING.get_or_init(|| {
        // SAFETY: a plain prctl on this process.
        if unsafe { nix::libc::prctl(nix::libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
            tracing::error!(
                error = %std::io::Error::last_os_error(),
                "cannot become a child subreaper: what plugins leave behind will not be found"
            );
        }
        let signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGCHLD]);
        match signals {
            Ok(mut signals) => {
                let started = std::thread::Builder::new()
                    .name("plugvisor-reaper".into())
                    .spawn(move || {
                        for _ in signals.forever() {
                            let reap_only = Request {
                                job: Job::Reap,
                                done: None,
                            };
                            if sweeper().send(reap_only).is_err() {
                                break;
                            }
                        }
                    });
                if let Err(error) = started {
                    tracing::error!(%error, "cannot start the orphan reaper thread");
                }
            }
            Err(error) => tracing::error!(%error, "cannot watch SIGCHLD to reap orphans"),
        }
    });
}

/// Spawns and forks whose pid is not among the live plugin processes yet.
static CLAIMS: std::sync::Mutex<usize> = std::sync::Mutex::new(0);

/// While one is held, no exited orphan is reaped: a process being spawned,
/// or forked by a zygote and re-parented to the host, is not yet among the
/// live plugin processes, and its exit status is its supervisor's.
pub(crate) struct Claim(());

/// A claim, held from before a spawn or fork until its pid is live.
pub(crate) fn claim() -> Claim {
    *CLAIMS.lock().unwrap_or_else(|e| e.into_inner()) += 1;
    Claim(())
}

impl Drop for Claim {
    fn drop(&mut self) {
        *CLAIMS.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
    }
}

/// SIGKILLs every orphan (and its descendants) whose environment holds
/// `tag`; returns their pids. The pass that serves this call starts after
/// the call.
pub async fn kill_tagged(tag: &str) -> Vec<i32> {
    let (done, killed) = oneshot::channel();
    let request = Request {
        job: Job::Kill(tag.as_bytes().to_vec()),
        done: Some(done),
    };
    if sweeper().send(request).is_err() {
        return pass(&[tag.as_bytes()]).pop().unwrap_or_default();
    }
    WAITED.raise();
    killed.await.unwrap_or_default()
}

/// The same, without waiting (for `Drop`).
pub fn kill_tagged_in_background(tag: &str) {
    let request = Request {
        job: Job::Kill(tag.as_bytes().to_vec()),
        done: None,
    };
    if sweeper().send(request).is_err() {
        pass(&[tag.as_bytes()]);
    }
}

/// Drops `value` (a socket directory) in the background; [`settled`] waits
/// for it.
pub(crate) fn drop_in_background(value: impl Send + 'static) {
    let request = Request {
        job: Job::Drop(Box::new(value)),
        done: None,
    };
    // Without the thread, the value is dropped here.
    let _ = sweeper().send(request);
}

/// Waits until every sweep asked for before this call has run.
pub async fn settled() {
    // Requests are served in order, in batches: once this one is answered,
    // every earlier one is. Its tag matches no process.
    kill_tagged("\0").await;
}

/// Set when a request that a caller waits for was sent: it ends the gap.
static WAITED: Flag = Flag::new();

/// A flag that a thread can wait on, with a deadline.
struct Flag {
    set: std::sync::Mutex<bool>,
    changed: std::sync::Condvar,
}

impl Flag {
    const fn new() -> Flag {
        Flag {
            set: std::sync::Mutex::new(false),
            changed: std::sync::Condvar::new(),
        }
    }

    fn raise(&self) {
        *self.set.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.changed.notify_one();
    }

    /// Lowers the flag.
    fn take(&self) {
        *self.set.lock().unwrap_or_else(|e| e.into_inner()) = false;
    }

    /// Until the flag is raised or `deadline` passes.
    fn wait_until(&self, deadline: Instant) {
        let set = self.set.lock().unwrap_or_else(|e| e.into_inner());
        let left = deadline.saturating_duration_since(Instant::now());
        let _ = self
            .changed
            .wait_timeout_while(set, left, |set| !*set)
            .unwrap_or_else(|e| e.into_inner());
    }
}

/// The shortest time between two passes that no caller waits for: a burst
/// of stops or of SIGCHLDs costs a few passes, not one each.
const PASS_GAP: Duration = Duration::from_millis(25);

/// How long a pass waits for the orphans it SIGKILLed to die (one in
/// uninterruptible sleep is reaped by a later pass instead).
const DEATH_WAIT: Duration = Duration::from_secs(1);

/// A thread of its own, so it serves every tokio runtime in the process.
fn sweeper() -> &'static mpsc::Sender<Request> {
    static SWEEPER: OnceLock<mpsc::Sender<Request>> = OnceLock::new();
    SWEEPER.get_or_init(|| {
        let (requests, received) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("plugvisor-sweep".into())
            .spawn(move || {
                let mut last_pass: Option<Instant> = None;
                let mut retry = false;
                loop {
                    // An orphan left for a claim is looked at again soon,
                    // with or without a new request.
                    let first = if retry {
                        match received.recv_timeout(PASS_GAP) {
                            Ok(request) => request,
                            Err(mpsc::RecvTimeoutError::Timeout) => Request {
                                job: Job::Reap,
                                done: None,
                            },
                            Err(mpsc::RecvTimeoutError::Disconnected) => break,
                        }
                    } else {
                        match received.recv() {
                            Ok(request) => request,
                            Err(_) => break,
                        }
                    };
                    let mut batch = vec![first];
                    WAITED.take();
                    batch.extend(received.try_iter());
                    // A caller waiting for the pass (a shutdown's last step)
                    // gets it at once, even one that comes in during the gap;
                    // the rest waits out the gap to share one, without a
                    // wake-up for each request of a burst.
                    if let Some(last) = last_pass
                        && !batch.iter().any(|r| r.done.is_some())
                    {
                        WAITED.wait_until(last + PASS_GAP);
                        batch.extend(received.try_iter());
                    }
                    last_pass = Some(Instant::now());
                    let tags: Vec<&[u8]> = batch
                        .iter()
                        .filter_map(|r| match &r.job {
                            Job::Kill(tag) => Some(tag.as_slice()),
                            _ => None,
                        })
                        .collect();
                    let (killed, left) = pass_and_retry(&tags);
                    retry = left;
                    let mut killed = killed.into_iter();
                    for request in batch {
                        let pids = match request.job {
                            Job::Kill(_) => killed.next().unwrap_or_default(),
                            Job::Reap => Vec::new(),
                            Job::Drop(value) => {
                                drop(value);
                                Vec::new()
                            }
                        };
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

/// One pass over the host's children: reaps the orphans that exited, and
/// for each tag, kills the orphans that carry it, then their children in
/// turn. Returns, for each tag, the pids killed.
fn pass(tags: &[&[u8]]) -> Vec<Vec<i32>> {
    pass_and_retry(tags).0
}

/// The same, and whether an exited orphan was left for a claim to end.
fn pass_and_retry(tags: &[&[u8]]) -> (Vec<Vec<i32>>, bool) {
    let mut killed = vec![Vec::new(); tags.len()];
    let mut retry = false;
    let host_group = nix::unistd::getpgrp().as_raw();
    let deadline = Instant::now() + DEATH_WAIT;
    loop {
        let children = children();
        // Live plugin processes are reaped through their pidfds, never here.
        // Read after the children: a plugin being spawned is in it by then.
        let plugins = crate::process::live_plugin_pids();
        let mut dying = Vec::new();
        for pid in children {
            if plugins.contains(&(pid as u32)) {
                continue;
            }
            let Some(stat) = Stat::read(pid) else {
                continue;
            };
            if stat.zombie {
                if stat.group != host_group {
                    // Held across the reap: no spawn registers meanwhile.
                    let claims = CLAIMS.lock().unwrap_or_else(|e| e.into_inner());
                    if *claims == 0 {
                        reap(pid);
                    } else {
                        retry = true;
                    }
                }
                continue;
            }
            if tags.is_empty() {
                continue;
            }
            let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
                continue;
            };
            let tagged = environ
                .split(|&b| b == 0)
                .find_map(|variable| tags.iter().position(|tag| *tag == variable));
            if let Some(i) = tagged
                // A pidfd, so that the wait can never hit a recycled pid.
                && let Ok(pidfd) = crate::process::pidfd_open(pid as u32)
            {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                killed[i].push(pid);
                dying.push(pidfd);
            }
        }
        if dying.is_empty() {
            break;
        }
        // Once one is gone, its own children are the host's: look again.
        for pidfd in dying {
            wait_for_exit(&pidfd, deadline);
        }
        if Instant::now() >= deadline {
            break;
        }
    }
    (killed, retry)
}

/// The host's children, from every thread (a child belongs to the thread
/// that spawned it; an adopted orphan to the one the kernel picked).
fn children() -> Vec<i32> {
    let Ok(threads) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    let mut pids = Vec::new();
    // One large read where possible: the kernel builds the list afresh on
    // every read call, and children that come and go between two calls can
    // shift it.
    let mut buffer = vec![0u8; 64 * 1024];
    for thread in threads.flatten() {
        let mut path = thread.path();
        path.push("children");
        let Ok(mut file) = std::fs::File::open(path) else {
            continue;
        };
        let mut list = Vec::new();
        while let Ok(n @ 1..) = std::io::Read::read(&mut file, &mut buffer) {
            list.extend_from_slice(&buffer[..n]);
        }
        pids.extend(
            String::from_utf8_lossy(&list)
                .split_ascii_whitespace()
                .filter_map(|p| p.parse::<i32>().ok()),
        );
    }
    pids
}

/// What a pass needs of /proc/PID/stat.
struct Stat {
    zombie: bool,
    group: i32,
}

impl Stat {
    fn read(pid: i32) -> Option<Stat> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        Stat::parse(&text)
    }

    /// `PID (COMM) STATE PPID PGRP ...`; COMM may hold anything,
    /// parentheses and spaces included, so the fields start after the last `)`.
    fn parse(text: &str) -> Option<Stat> {
        let rest = &text[text.rfind(')')? + 1..];
        let mut fields = rest.split_ascii_whitespace();
        let state = fields.next()?;
        let _parent = fields.next()?;
        let group = fields.next()?.parse().ok()?;
        Some(Stat {
            zombie: state == "Z",
            group,
        })
    }
}

/// Reaps an exited child, if it still is one.
fn reap(pid: i32) {
    use nix::sys::wait::{WaitPidFlag, waitpid};
    let _ = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG));
}

/// Waits (until `deadline`) for the process to exit, and reaps it.
fn wait_for_exit(pidfd: &OwnedFd, deadline: Instant) {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;
    let left = deadline.saturating_duration_since(Instant::now());
    let timeout = PollTimeout::try_from(left.as_millis().min(i32::MAX as u128) as i32)
        .unwrap_or(PollTimeout::ZERO);
    let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
    if matches!(poll(&mut fds, timeout), Ok(n) if n > 0) {
        // SAFETY: siginfo_t is plain data that waitid fills; the pidfd is ours.
        let mut info: nix::libc::siginfo_t = unsafe { std::mem::zeroed() };
        unsafe {
            nix::libc::waitid(
                nix::libc::P_PIDFD,
                pidfd.as_raw_fd() as nix::libc::id_t,
                &mut info,
                nix::libc::WEXITED | nix::libc::WNOHANG,
            )
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_raised_flag_ends_the_wait_before_its_deadline() {
        static FLAG: Flag = Flag::new();
        let deadline = Instant::now() + Duration::from_secs(600);
        let raiser = std::thread::spawn(|| FLAG.raise());
        FLAG.wait_until(deadline);
        raiser.join().unwrap();
        assert!(Instant::now() < deadline, "the wait ended at its deadline");
        // Lowered, a wait lasts until its deadline.
        FLAG.take();
        let soon = Instant::now() + Duration::from_millis(20);
        FLAG.wait_until(soon);
        assert!(Instant::now() >= soon);
    }

    #[test]
    fn stat_fields_come_after_the_last_parenthesis() {
        let stat = Stat::parse("4242 (a) b (Z) c) Z 1 4242 4200 0 -1").unwrap();
        assert!(stat.zombie);
        assert_eq!(stat.group, 4242);
        let stat = Stat::parse("7 (sleep) S 1 8 9 0").unwrap();
        assert!(!stat.zombie);
        assert_eq!(stat.group, 8);
        assert!(Stat::parse("7 (sleep").is_none());
    }
}
