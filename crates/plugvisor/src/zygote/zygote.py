"""plugvisor's zygote: one warm interpreter per venv, which forks Python plugins.

The host starts it with the venv's interpreter, its socketpair end on fd 0 and
nothing else. It imports grpcio, the health service, the SDK and the modules
named on its command line, freezes the heap (gc.freeze, so the pages stay
shared), says it is ready, and then only answers the host's requests: fork a
plugin with these descriptors, argv, environment, working directory, umask and
limits. It starts no thread and creates no gRPC channel or server, so a fork
copies no gRPC state. It reads from nothing but its socket with the host.

A plugin is forked twice: the intermediate exits at once, so the plugin is
re-parented to the host (a child subreaper), which reaps it like a child it
spawned. The plugin then makes itself what `python plugin.py` would have been,
and runs its script in `__main__`.
"""

import ctypes
import gc
import json
import os
import signal
import socket
import sys
import threading

# Each preloaded module is optional: a venv without the SDK (or without grpcio)
# still gets a warm interpreter.
BASE_PRELOAD = ("grpc", "grpc_health.v1.health", "plugvisor_plugin", "plugvisor_plugin._preload")

libc = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG = 1
PR_SET_NO_NEW_PRIVS = 38
SYS_LANDLOCK_RESTRICT_SELF = {"x86_64": 446, "aarch64": 446}.get(os.uname().machine, 446)


def log(message):
    print(f"plugvisor zygote: {message}", file=sys.stderr, flush=True)


def stat_fields():
    """/proc/self/stat after the command name (index 0 is field 3, the state)."""
    with open("/proc/self/stat", "rb") as f:
        return f.read().rsplit(b")", 1)[1].split()


def region(start_field, end_field):
    fields = stat_fields()
    return int(fields[start_field - 3]), int(fields[end_field - 3])


def preload(modules):
    loaded = []
    for name in modules:
        try:
            __import__(name)
            loaded.append(name)
        except ImportError as error:
            if name in BASE_PRELOAD:
                continue
            raise SystemExit(f"plugvisor zygote: cannot preload {name}: {error}") from None
    return loaded


def package_dirs(loaded):
    """The directories whose change means the venv was upgraded."""
    dirs = []
    for name in ("grpc", "grpc_health", "plugvisor_plugin"):
        module = sys.modules.get(name)
        path = getattr(module, "__file__", None)
        if path:
            dirs.append(os.path.dirname(path))
    return dirs


def fresh_signals():
    """The dispositions and mask this interpreter had when it started."""
    dispositions = {}
    for number in range(1, signal.NSIG):
        try:
            dispositions[number] = signal.getsignal(number)
        except (ValueError, OSError):
            pass
    return dispositions, signal.pthread_sigmask(signal.SIG_BLOCK, [])


def grpc_untouched():
    """No thread (gRPC's core starts its own at its first channel or server)."""
    tasks = len(os.listdir("/proc/self/task"))
    return threading.active_count() == 1 and tasks == 1


def main():
    sock = socket.socket(fileno=0)
    startup_signals = fresh_signals()
    # The argv and environment strings the kernel shows in /proc/PID/cmdline
    # and /proc/PID/environ: a forked plugin writes its own over them (the
    # host's sweep finds a plugin's descendants by its environment there).
    args_region = region(48, 49)
    env_region = region(50, 51)
    extra = [arg for arg in sys.argv[1:] if not arg.startswith("--room=")]
    loaded = preload([*BASE_PRELOAD, *extra])
    gc.collect()
    gc.freeze()
    if not grpc_untouched():
        raise SystemExit("plugvisor zygote: a preloaded module started a thread")
    ready = {"ready": True, "preloaded": loaded, "package_dirs": package_dirs(loaded)}
    sock.send(json.dumps(ready).encode())
    while True:
        try:
            message, fds, _flags, _addr = socket.recv_fds(sock, 1 << 20, 8)
        except InterruptedError:
            continue
        if not message:
            os._exit(0)  # the host closed its end
        try:
            request = json.loads(message)
        except ValueError as error:
            for fd in fds:
                os.close(fd)
            sock.send(json.dumps({"error": f"bad request: {error}"}).encode())
            continue
        child = fork_plugin(request, fds, sock, startup_signals, args_region, env_region)
        if child is not None:
            return child  # in the plugin: the bootstrap runs it


def fork_plugin(request, fds, sock, startup_signals, args_region, env_region):
    """Answers {"pid": N} (and "error" when its set-up failed); in the forked
    plugin returns the job to run."""
    if not grpc_untouched():
        for fd in fds:
            os.close(fd)
        sock.send(json.dumps({"error": "the zygote has a thread; refusing to fork"}).encode())
        return None
    status_read, status_write = os.pipe()
    intermediate = os.fork()
    if intermediate == 0:
        intermediate = os.getpid()
        try:
            plugin = os.fork()
        except OSError:
            os._exit(1)
        if plugin == 0:
            os.close(status_read)
            try:
                become_plugin(request, fds, intermediate, status_write, startup_signals, args_region, env_region)
            except BaseException as error:  # noqa: BLE001 - reported to the host, then exit
                try:
                    os.write(status_write, f"{type(error).__name__}: {error}".encode())
                finally:
                    os._exit(127)
            sock.detach()  # fd 0 is the plugin's stdin now
            return request
        os.write(status_write, str(plugin).encode().rjust(12))
        os._exit(0)
    for fd in fds:
        os.close(fd)
    os.close(status_write)
    os.waitpid(intermediate, 0)
    answer = b""
    while True:
        chunk = os.read(status_read, 65536)
        if not chunk:
            break
        answer += chunk
    os.close(status_read)
    pid = int(answer[:12]) if len(answer) >= 12 else 0
    report = answer[12:].decode(errors="replace")
    if pid == 0:
        sock.send(json.dumps({"error": "the intermediate process failed to fork"}).encode())
    elif report.startswith("ok"):
        sock.send(json.dumps({"pid": pid}).encode())
    else:
        sock.send(json.dumps({"pid": pid, "error": report or "the plugin died during its set-up"}).encode())
    return None


def become_plugin(request, fds, intermediate, status_write, startup_signals, args_region, env_region):
    """Everything an exec would have given the plugin, the sandbox last."""
    names = request["fds"]
    fd = dict(zip(names, fds))
    os.setpgid(0, 0)
    host = request["host_pid"]
    # The intermediate's exit re-parents this process to the host, its subreaper.
    while os.getppid() == intermediate:
        os.sched_yield()
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")
    if os.getppid() != host:
        raise RuntimeError("the host exited during the fork")
    # Its standard streams, and no other descriptor of the zygote or the host.
    for number, name in enumerate(("stdin", "stdout", "stderr")):
        os.dup2(fd[name], number, inheritable=True)
    keep = sorted({status_write, fd.get("landlock", -1), fd.get("cgroup", -1)} - {-1})
    low = 3
    for kept in keep:
        os.closerange(low, kept)
        low = kept + 1
    os.closerange(low, 1 << 20)
    if "cgroup" in fd:
        os.write(fd["cgroup"], b"0")
        os.close(fd["cgroup"])
    import resource

    for number, soft, hard in request["rlimits"]:
        soft = resource.RLIM_INFINITY if soft < 0 else soft
        hard = resource.RLIM_INFINITY if hard < 0 else hard
        if resource.getrlimit(number) != (soft, hard):
            resource.setrlimit(number, (soft, hard))
    os.umask(request["umask"])
    os.chdir(request["cwd"])
    environment(request["env"], env_region)
    arguments(request["argv"], args_region)
    script = request["argv"][1]
    sys.argv = request["argv"][1:]
    sys.orig_argv = list(request["argv"])
    sys.path.insert(0, os.path.dirname(os.path.realpath(script)))
    import importlib

    importlib.invalidate_caches()
    sys.modules.pop("plugvisor_zygote", None)
    dispositions, mask = startup_signals
    for number, handler in dispositions.items():
        if handler is not None and signal.getsignal(number) is not handler:
            signal.signal(number, handler)
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    if "landlock" in fd:
        if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
        if libc.syscall(SYS_LANDLOCK_RESTRICT_SELF, fd["landlock"], 0) != 0:
            raise OSError(ctypes.get_errno(), "landlock_restrict_self")
        os.close(fd["landlock"])
    os.write(status_write, b"ok")
    os.close(status_write)


def overwrite(area, strings):
    """Writes NUL-terminated strings over a region of this process's memory,
    NUL-padded; fails when they do not fit."""
    start, end = area
    data = b"".join(s + b"\0" for s in strings)
    if len(data) > end - start:
        raise RuntimeError(f"{len(data)} bytes do not fit in the {end - start} the zygote has")
    ctypes.memmove(start, data.ljust(end - start, b"\0"), end - start)


def environment(env, env_region):
    encoded = [os.fsencode(key) + b"=" + os.fsencode(value) for key, value in env]
    # First let go of the old strings (libc's environ points into them).
    os.environ.clear()
    libc.clearenv()
    overwrite(env_region, encoded)
    os.environ.update(dict(env))


def arguments(argv, args_region):
    overwrite(args_region, [os.fsencode(arg) for arg in argv])


def run(job):
    """Runs the plugin's script as `python script` does: in a fresh `__main__`,
    an uncaught exception printed by sys.excepthook, exit status 1."""
    import builtins
    from importlib.machinery import SourceFileLoader

    script = job["argv"][1]
    path = os.path.abspath(script)
    main_module = sys.modules["__main__"]
    namespace = main_module.__dict__
    namespace.clear()
    namespace.update(
        {
            "__name__": "__main__",
            "__doc__": None,
            "__package__": None,
            "__loader__": SourceFileLoader("__main__", path),
            "__spec__": None,
            "__annotations__": {},
            "__builtins__": builtins,
            "__file__": path,
            "__cached__": None,
        }
    )
    with open(path, "rb") as source:
        code = compile(source.read(), path, "exec")
    try:
        exec(code, namespace)  # noqa: S102 - running the plugin's script is the point
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException as error:  # noqa: BLE001 - as the interpreter reports it
        # Without this frame, as the interpreter shows it.
        error.__traceback__ = error.__traceback__.tb_next if error.__traceback__ else None
        sys.excepthook(type(error), error, error.__traceback__)
        raise SystemExit(1) from None
