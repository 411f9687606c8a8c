//! Starting a plugin process without copying the host's address space.
//!
//! A fork copies the host's page tables, and its exec then tears the copy
//! down: with a thousand plugins supervised, that is most of a start's cost
//! to the host. So plugins are started the way posix_spawn starts programs:
//! `clone(CLONE_VM | CLONE_VFORK)`, the parent waiting until the child has
//! exec'd, with the child running only raw system calls on data prepared
//! beforehand. Unlike posix_spawn, the child also sets its parent-death
//! signal, which no spawn attribute can.
//!
//! A child also gets a copy of the host's descriptor table, which its exec
//! then closes again (each descriptor is close-on-exec): with a thousand
//! plugins up, four thousand descriptors copied and closed at every spawn,
//! so starting N plugins cost the host O(N²). So the child shares the
//! table instead (`CLONE_FILES`), the descriptors it needs are first put in
//! a few low numbers reserved for that ([`Slots`]), and its first system
//! call (`close_range` with `CLOSE_RANGE_UNSHARE`) makes it a table of its
//! own holding only the numbers below them.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};

use nix::libc;

/// Room for the child until it execs (it only makes system calls).
const CHILD_STACK: usize = 64 * 1024;

/// A started process: its pid, a pidfd to wait on, and its output pipes.
pub(crate) struct Spawned {
    pub(crate) pid: u32,
    pub(crate) pidfd: OwnedFd,
    pub(crate) stdout: OwnedFd,
    pub(crate) stderr: OwnedFd,
}

/// What the child does to itself last before its exec, in this order.
#[derive(Default, Clone, Copy)]
pub(crate) struct Confinement<'a> {
    /// (resource, soft, hard), set with prlimit.
    pub(crate) rlimits: &'a [(libc::c_int, u64, u64)],
    /// The `cgroup.procs` of the cgroup it joins.
    pub(crate) cgroup_procs: Option<&'a OwnedFd>,
    /// A Landlock ruleset it enforces on itself (with no_new_privs).
    pub(crate) landlock: Option<&'a OwnedFd>,
}

/// Low descriptor numbers a spawn puts what its child needs in: stdin,
/// stdout, stderr, the program, the Landlock ruleset, `cgroup.procs`. Each
/// holds /dev/null between spawns, so no other open takes the number.
struct Slots {
    null: OwnedFd,
    numbers: [RawFd; 6],
    /// One past the highest number: the child keeps what is below.
    bound: RawFd,
}

impl Slots {
    /// Reserved at the first spawn, while the host has few descriptors;
    /// `None` when /dev/null cannot be opened (spawns then copy the table).
    fn taken() -> Option<MutexGuard<'static, Slots>> {
        static SLOTS: OnceLock<Option<Mutex<Slots>>> = OnceLock::new();
        let slots = SLOTS.get_or_init(|| {
            let null = OwnedFd::from(std::fs::File::open("/dev/null").ok()?);
            // Never 0, 1 or 2: the child dup2s the slots onto those.
            let above_stdio = |fd: &OwnedFd| {
                // SAFETY: F_DUPFD_CLOEXEC on an open descriptor.
                let new = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
                // SAFETY: a new descriptor that nobody else owns.
                (new >= 0).then(|| unsafe { OwnedFd::from_raw_fd(new) })
            };
            let null = above_stdio(&null)?;
            let mut numbers = [-1; 6];
            for number in &mut numbers {
                // Held for the process's life: never closed.
                *number = std::os::fd::IntoRawFd::into_raw_fd(above_stdio(&null)?);
            }
            let bound = numbers.iter().max().copied().unwrap_or(2) + 1;
            Some(Mutex::new(Slots {
                null,
                numbers,
                bound,
            }))
        });
        let slots = slots.as_ref()?;
        Some(slots.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Puts `fds` (-1: none) in the slots and returns their numbers there.
    fn fill(&self, fds: [RawFd; 6]) -> io::Result<[RawFd; 6]> {
        let mut placed = [-1; 6];
        for (i, fd) in fds.into_iter().enumerate() {
            if fd >= 0 {
                // SAFETY: both are open; the slot is ours (under the lock).
                if unsafe { libc::dup3(fd, self.numbers[i], libc::O_CLOEXEC) } < 0 {
                    let error = io::Error::last_os_error();
                    self.empty();
                    return Err(error);
                }
                placed[i] = self.numbers[i];
            }
        }
        Ok(placed)
    }

    /// Back to /dev/null, so that the host holds no pipe end through them.
    fn empty(&self) {
        for number in self.numbers {
            // SAFETY: as in fill.
            unsafe { libc::dup3(self.null.as_raw_fd(), number, libc::O_CLOEXEC) };
        }
    }
}

/// What the child needs, all prepared before the clone.
struct Child {
    program: CString,
    /// Exec'd through when not -1 (argv[0] is still `program`).
    program_fd: RawFd,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    cwd: CString,
    stdin: RawFd,
    stdout: RawFd,
    stderr: RawFd,
    host_pid: libc::pid_t,
    /// A Landlock ruleset to enforce (with no_new_privs) when not -1.
    landlock: RawFd,
    /// The old signal mask, restored just before exec.
    mask: libc::sigset_t,
    /// Resource limits set just before exec: (resource, soft and hard).
    rlimits: Vec<(libc::c_int, libc::rlimit64)>,
    /// The plugin's `cgroup.procs`, written "0" to join it, when not -1.
    cgroup_procs: RawFd,
    /// Set by the child when a step failed: the errno, or -1 for "host gone".
    failed: AtomicI32,
    /// With a shared descriptor table: the numbers the child keeps (those
    /// below), else -1 (the table was copied).
    keep_below: RawFd,
}

fn cstring(bytes: &OsStr) -> io::Result<CString> {
    CString::new(bytes.as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{bytes:?} contains a NUL byte"),
        )
    })
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: fds has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 just returned these two open descriptors, owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Starts `program` with `args`, in `cwd`, with the host's environment plus
/// `env` (which wins), stdin on /dev/null (or `stdin`) and stdout and stderr on pipes, in
/// a process group of its own, with SIGKILL as its parent-death signal.
/// With `program_fd`, that open file is what is exec'd, not the path; the
/// child is confined as `confine` says before its exec.
pub(crate) fn spawn(
    program: &Path,
    program_fd: Option<&OwnedFd>,
    args: &[OsString],
    cwd: &Path,
    env: &[(OsString, OsString)],
    confine: &Confinement,
    stdin: Option<&OwnedFd>,
) -> io::Result<Spawned> {
    let Confinement {
        rlimits,
        cgroup_procs,
        landlock,
    } = *confine;
    let program_c = cstring(program.as_os_str())?;
    let mut arg_strings = vec![program_c.clone()];
    for arg in args {
        arg_strings.push(cstring(arg)?);
    }
    let entry = |key: &OsStr, value: &OsStr| {
        cstring(OsStr::from_bytes(
            &[key.as_bytes(), b"=", value.as_bytes()].concat(),
        ))
    };
    let mut env_strings = Vec::new();
    for (key, value) in std::env::vars_os() {
        if !env.iter().any(|(k, _)| *k == key) {
            env_strings.push(entry(&key, &value)?);
        }
    }
    for (key, value) in env {
        env_strings.push(entry(key, value)?);
    }
    let null = |strings: &[CString]| {
        let mut pointers: Vec<*const libc::c_char> = strings.iter().map(|s| s.as_ptr()).collect();
        pointers.push(std::ptr::null());
        pointers
    };
    let devnull = std::fs::File::options().read(true).open("/dev/null")?;
    let (stdout_read, stdout_write) = pipe()?;
    let (stderr_read, stderr_write) = pipe()?;
    let mut child = Child {
        program: program_c,
        program_fd: program_fd.map_or(-1, |fd| fd.as_raw_fd()),
        argv: null(&arg_strings),
        envp: null(&env_strings),
        cwd: cstring(cwd.as_os_str())?,
        stdin: stdin.map_or(devnull.as_raw_fd(), |fd| fd.as_raw_fd()),
        stdout: stdout_write.as_raw_fd(),
        stderr: stderr_write.as_raw_fd(),
        host_pid: std::process::id() as libc::pid_t,
        landlock: landlock.map_or(-1, |fd| fd.as_raw_fd()),
        // SAFETY: sigset_t is plain data; sigprocmask below fills it.
        mask: unsafe { std::mem::zeroed() },
        rlimits: rlimits
            .iter()
            .map(|&(resource, soft, hard)| {
                let limit = libc::rlimit64 {
                    rlim_cur: soft,
                    rlim_max: hard,
                };
                (resource, limit)
            })
            .collect(),
        cgroup_procs: cgroup_procs.map_or(-1, |fd| fd.as_raw_fd()),
        failed: AtomicI32::new(0),
        keep_below: -1,
    };
    let slots = Slots::taken();
    if let Some(slots) = &slots {
        let [stdin, stdout, stderr, program_fd, landlock, cgroup_procs] = slots.fill([
            child.stdin,
            child.stdout,
            child.stderr,
            child.program_fd,
            child.landlock,
            child.cgroup_procs,
        ])?;
        (child.stdin, child.stdout, child.stderr) = (stdin, stdout, stderr);
        (child.program_fd, child.landlock) = (program_fd, landlock);
        child.cgroup_procs = cgroup_procs;
        child.keep_below = slots.bound;
    }
    let share_files = if slots.is_some() {
        libc::CLONE_FILES
    } else {
        0
    };
    let mut stack = vec![0u8; CHILD_STACK];
    // The stack grows down from its end, which must be 16-byte aligned.
    let top = (stack.as_mut_ptr() as usize + CHILD_STACK) & !15;
    let mut pidfd: libc::c_int = -1;
    // SAFETY: all signals are blocked around the clone so that no handler
    // runs in the child while it shares the host's memory; the child resets
    // them before it unblocks. The child runs `child_main` on `stack`, with
    // `child` (both alive until the clone returns: CLONE_VFORK suspends
    // this thread until the child has exec'd or exited).
    let pid = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut child.mask);
        let pid = libc::clone(
            child_main,
            top as *mut libc::c_void,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD | share_files | libc::SIGCHLD,
            &mut child as *mut Child as *mut libc::c_void,
            &mut pidfd as *mut libc::c_int,
        );
        let error = io::Error::last_os_error();
        libc::pthread_sigmask(libc::SIG_SETMASK, &child.mask, std::ptr::null_mut());
        if let Some(slots) = &slots {
            slots.empty();
        }
        drop(slots);
        if pid < 0 {
            return Err(error);
        }
        pid
    };
    // SAFETY: CLONE_PIDFD stored a new descriptor for the child in pidfd.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    drop((stdout_write, stderr_write, devnull));
    match child.failed.load(Ordering::SeqCst) {
        0 => Ok(Spawned {
            pid: pid as u32,
            pidfd,
            stdout: stdout_read,
            stderr: stderr_read,
        }),
        failed => {
            // The child has exited already; reap it.
            // SAFETY: pid is our child; status is written by waitpid.
            unsafe {
                let mut status = 0;
                libc::waitpid(pid, &mut status, 0);
            }
            Err(match failed {
                -1 => io::Error::other("host exited during spawn"),
                errno => io::Error::from_raw_os_error(errno),
            })
        }
    }
}

/// The child, until exec: system calls only, no allocation, no locks.
extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: arg is the parent's `Child`, alive while the parent is
    // suspended (CLONE_VFORK); only its plain fields are read, and `failed`
    // is written atomically.
    unsafe {
        let child = &*(arg as *const Child);
        let fail = |errno: i32| -> libc::c_int {
            child.failed.store(errno, Ordering::SeqCst);
            libc::_exit(127)
        };
        // First, while every change would still be the host's: a table of
        // its own, with only the numbers below the slots (a kernel before
        // 5.9 has no close_range: copy the whole table then).
        if child.keep_below >= 0
            && libc::syscall(
                libc::SYS_close_range,
                child.keep_below as libc::c_uint,
                libc::c_uint::MAX,
                libc::CLOSE_RANGE_UNSHARE,
            ) != 0
            && libc::unshare(libc::CLONE_FILES) != 0
        {
            return fail(*libc::__errno_location());
        }
        // Signal handlers of the host must not run here; exec would reset
        // them anyway, but a signal may come before it.
        for signal in 1..libc::SIGRTMAX() {
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(signal, std::ptr::null(), &mut old) == 0
                && old.sa_sigaction != libc::SIG_IGN
                && old.sa_sigaction != libc::SIG_DFL
            {
                let mut default: libc::sigaction = std::mem::zeroed();
                default.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(signal, &default, std::ptr::null_mut());
            }
        }
        // A group of its own, in the host's session: a session of its own
        // would also be a scheduler autogroup of its own, and a thousand
        // plugins would each get as much CPU as the host that checks them.
        if libc::setpgid(0, 0) != 0
            || libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
        {
            return fail(*libc::__errno_location());
        }
        // A plugin woken by the host does not preempt it (SCHED_BATCH keeps
        // its fair share of CPU and its nice value, and gives up only wake-up
        // preemption): a host writing to many plugins at once (a round of
        // health checks, a wave of stops) finishes its round before they run,
        // instead of being switched out at each write. A host run under
        // another policy on purpose passes that policy on unchanged, and a
        // refusal costs nothing but the hint.
        if libc::sched_getscheduler(0) == libc::SCHED_OTHER {
            let param = libc::sched_param { sched_priority: 0 };
            libc::sched_setscheduler(0, libc::SCHED_BATCH, &param);
        }
        // The host may have died before the parent-death signal was set.
        if libc::getppid() != child.host_pid {
            return fail(-1);
        }
        for (from, to) in [(child.stdin, 0), (child.stdout, 1), (child.stderr, 2)] {
            if libc::dup2(from, to) < 0 {
                return fail(*libc::__errno_location());
            }
        }
        if libc::chdir(child.cwd.as_ptr()) != 0 {
            return fail(*libc::__errno_location());
        }
        // The plugin's resource limits, soft and hard: it cannot raise them.
        for (resource, limit) in child.rlimits.iter() {
            let no_old: *mut libc::rlimit64 = std::ptr::null_mut();
            if libc::syscall(libc::SYS_prlimit64, 0, *resource, limit, no_old) != 0 {
                return fail(*libc::__errno_location());
            }
        }
        // Its cgroup, before it runs a single instruction of its own.
        if child.cgroup_procs >= 0 && libc::write(child.cgroup_procs, c"0".as_ptr().cast(), 1) != 1
        {
            return fail(*libc::__errno_location());
        }
        // Last, so that everything above still had the host's access; the
        // ruleset's descriptor is close-on-exec.
        if child.landlock >= 0
            && (libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::syscall(libc::SYS_landlock_restrict_self, child.landlock, 0) != 0)
        {
            return fail(*libc::__errno_location());
        }
        libc::pthread_sigmask(libc::SIG_SETMASK, &child.mask, std::ptr::null_mut());
        if child.program_fd >= 0 {
            libc::syscall(
                libc::SYS_execveat,
                child.program_fd,
                c"".as_ptr(),
                child.argv.as_ptr(),
                child.envp.as_ptr(),
                libc::AT_EMPTY_PATH,
            );
            return fail(*libc::__errno_location());
        }
        libc::execve(
            child.program.as_ptr(),
            child.argv.as_ptr(),
            child.envp.as_ptr(),
        );
        fail(*libc::__errno_location())
    }
}

/// A wait(2)-style status from waitid's siginfo, for `ExitStatus::from_raw`.
pub(crate) fn wait_status(info: &libc::siginfo_t) -> i32 {
    // SAFETY: waitid filled these fields for a child that changed state.
    let (code, status) = unsafe { (info.si_code, info.si_status()) };
    match code {
        libc::CLD_EXITED => (status & 0xff) << 8,
        libc::CLD_DUMPED => (status & 0x7f) | 0x80,
        _ => status & 0x7f, // CLD_KILLED
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;
    use std::process::ExitStatus;

    use super::*;

    /// Held through a test: the sweep (started by other tests here) must not
    /// reap the test's children before it waits for them.
    fn claimed() -> crate::sweep::Claim {
        crate::sweep::claim()
    }

    /// Waits for the child (blocking) and returns how it ended.
    fn wait(spawned: &Spawned) -> ExitStatus {
        // SAFETY: siginfo_t is plain data that waitid fills for our child.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let reaped = unsafe {
            libc::waitid(
                libc::P_PIDFD,
                spawned.pidfd.as_raw_fd() as libc::id_t,
                &mut info,
                libc::WEXITED,
            )
        };
        assert_eq!(reaped, 0);
        ExitStatus::from_raw(wait_status(&info))
    }

    fn sh(script: &str, env: &[(&str, &str)]) -> Spawned {
        let env: Vec<(OsString, OsString)> =
            env.iter().map(|(k, v)| (k.into(), v.into())).collect();
        spawn(
            Path::new("/bin/sh"),
            None,
            &["-c".into(), script.into()],
            Path::new("/"),
            &env,
            &Confinement::default(),
            None,
        )
        .unwrap()
    }

    #[test]
    fn exits_and_signals_are_reported_as_they_happened() {
        let _claim = claimed();
        assert_eq!(wait(&sh("exit 3", &[])).code(), Some(3));
        assert_eq!(wait(&sh("kill -9 $$", &[])).signal(), Some(9));
    }

    #[test]
    fn the_child_runs_where_and_as_it_was_told() {
        let _claim = claimed();
        let spawned = sh(
            r#"[ "$(pwd)" = / ] || exit 10
               [ "$EXTRA" = yes ] || exit 11
               [ "$(ps -o pgid= -p $$ | tr -d ' ')" = "$$" ] || exit 12
               read line < /dev/stdin && exit 13
               grep -q 'PPid:' /proc/$$/status || exit 14
               echo out; echo err >&2; exit 0"#,
            &[("EXTRA", "yes")],
        );
        let status = wait(&spawned);
        assert_eq!(status.code(), Some(0), "{status}");
        let mut out = String::new();
        std::io::Read::read_to_string(&mut std::fs::File::from(spawned.stdout), &mut out).unwrap();
        assert_eq!(out, "out\n");
        let mut err = String::new();
        std::io::Read::read_to_string(&mut std::fs::File::from(spawned.stderr), &mut err).unwrap();
        assert_eq!(err, "err\n");
    }

    /// The child keeps no descriptor of the host above the slots, even one
    /// the host left inheritable (without close-on-exec).
    #[test]
    fn the_child_gets_its_own_table_without_the_hosts_descriptors() {
        let _claim = claimed();
        let null = std::fs::File::open("/dev/null").unwrap();
        // SAFETY: F_DUPFD (no close-on-exec) on an open descriptor.
        let inheritable = unsafe { libc::fcntl(null.as_raw_fd(), libc::F_DUPFD, 700) };
        assert!(inheritable >= 700);
        // SAFETY: a new descriptor that nobody else owns.
        let inheritable = unsafe { OwnedFd::from_raw_fd(inheritable) };
        let spawned = sh(
            &format!(
                "[ -e /proc/self/fd/{} ] && exit 10; echo out; exit 0",
                inheritable.as_raw_fd()
            ),
            &[],
        );
        assert_eq!(wait(&spawned).code(), Some(0));
        let mut out = String::new();
        std::io::Read::read_to_string(&mut std::fs::File::from(spawned.stdout), &mut out).unwrap();
        assert_eq!(out, "out\n", "stdout reached the pipe through its slot");
    }

    /// The scheduling policy a child of the calling thread runs under, as
    /// the kernel reports it (field 41 of /proc/PID/stat; no `chrt` needed).
    fn policy_of_a_child() -> libc::c_int {
        let spawned = sh("cut -d' ' -f41 /proc/$$/stat", &[]);
        assert_eq!(wait(&spawned).code(), Some(0));
        let mut out = String::new();
        std::io::Read::read_to_string(&mut std::fs::File::from(spawned.stdout), &mut out).unwrap();
        out.trim().parse().unwrap()
    }

    #[test]
    fn a_plugin_runs_without_wake_up_preemption_unless_the_host_chose_a_policy() {
        let _claim = claimed();
        // Whatever policy the test runner was started with.
        // SAFETY: reads the calling thread's own policy.
        let own = unsafe { libc::sched_getscheduler(0) };
        let expected = if own == libc::SCHED_OTHER {
            libc::SCHED_BATCH
        } else {
            own
        };
        assert_eq!(policy_of_a_child(), expected, "host's policy {own}");
        // A host thread under SCHED_IDLE (its operator's choice) passes it on.
        let chosen = std::thread::spawn(|| {
            let param = libc::sched_param { sched_priority: 0 };
            // SAFETY: sets this (new) thread's own policy.
            let set = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
            assert_eq!(set, 0, "{}", std::io::Error::last_os_error());
            policy_of_a_child()
        });
        assert_eq!(
            chosen.join().unwrap(),
            libc::SCHED_IDLE,
            "the host's own policy is kept"
        );
    }

    #[test]
    fn resource_limits_are_set_before_the_exec() {
        let _claim = claimed();
        let limits = [
            (libc::RLIMIT_NOFILE as libc::c_int, 77, 77),
            (libc::RLIMIT_CPU as libc::c_int, 5, 6),
        ];
        let spawned = spawn(
            Path::new("/bin/sh"),
            None,
            &[
                "-c".into(),
                r#"[ "$(ulimit -n)" = 77 ] || exit 10
                   [ "$(ulimit -t)" = 5 ] || exit 11
                   [ "$(ulimit -H -t)" = 6 ] || exit 12
                   ulimit -n 78 2>/dev/null && exit 13; exit 0"#
                    .into(),
            ],
            Path::new("/"),
            &[],
            &Confinement {
                rlimits: &limits,
                ..Confinement::default()
            },
            None,
        )
        .unwrap();
        assert_eq!(wait(&spawned).code(), Some(0));
    }

    /// What a cgroup's `cgroup.procs` would receive: here a pipe stands in
    /// for it (no delegated cgroup v2 on the machine this was written on).
    #[test]
    fn the_child_writes_itself_into_its_cgroup_before_the_exec() {
        let _claim = claimed();
        let (read, write) = pipe().unwrap();
        let spawned = spawn(
            Path::new("/bin/true"),
            None,
            &[],
            Path::new("/"),
            &[],
            &Confinement {
                cgroup_procs: Some(&write),
                ..Confinement::default()
            },
            None,
        )
        .unwrap();
        assert_eq!(wait(&spawned).code(), Some(0));
        drop(write);
        let mut joined = String::new();
        std::io::Read::read_to_string(&mut std::fs::File::from(read), &mut joined).unwrap();
        assert_eq!(joined, "0");
    }

    #[test]
    fn a_program_descriptor_is_what_runs_whatever_the_path_now_holds() {
        let _claim = claimed();
        // The path says `false`; the descriptor, opened earlier, is `true`.
        let opened: OwnedFd = std::fs::File::open("/bin/true").unwrap().into();
        let spawned = spawn(
            Path::new("/bin/false"),
            Some(&opened),
            &[],
            Path::new("/"),
            &[],
            &Confinement::default(),
            None,
        )
        .unwrap();
        assert_eq!(wait(&spawned).code(), Some(0));
        let spawned = spawn(
            Path::new("/bin/false"),
            None,
            &[],
            Path::new("/"),
            &[],
            &Confinement::default(),
            None,
        )
        .unwrap();
        assert_eq!(wait(&spawned).code(), Some(1));
    }

    #[test]
    fn a_program_that_cannot_run_is_an_error_not_a_child() {
        let _claim = claimed();
        let error = spawn(
            Path::new("/nonexistent/plugin"),
            None,
            &[],
            Path::new("/"),
            &[],
            &Confinement::default(),
            None,
        )
        .err()
        .expect("no such program");
        assert_eq!(error.kind(), io::ErrorKind::NotFound);
        let error = spawn(
            Path::new("/bin/sh"),
            None,
            &[],
            Path::new("/nonexistent"),
            &[],
            &Confinement::default(),
            None,
        )
        .err()
        .expect("no such directory");
        assert_eq!(error.kind(), io::ErrorKind::NotFound);
    }
}
