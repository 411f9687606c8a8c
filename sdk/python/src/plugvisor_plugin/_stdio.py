"""Capture of Python-level sys.stdout / sys.stderr for plugin.GRPCStdio.

Writes to the captured streams land in a bounded in-memory queue that the
StreamStdio RPC drains. A write never blocks on the host: when the queue is
full the oldest output is dropped, and the next chunk the host reads is a
note on stderr saying how much was lost.

Text is line-buffered per stream: complete lines are queued at once, a
partial line when it grows large, on flush(), or when the stream has been
idle for a moment, so a print() rarely reaches the host split in two.
"""

from __future__ import annotations

import collections
import io
import os
import threading

from ._wire import STDERR, STDOUT

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not imported at run time
    from typing import Deque, List, Optional, Tuple

    from typing_extensions import Buffer

    Chunk = Tuple[int, bytes]

#: Default bound on queued, undelivered output.
DEFAULT_MAX_BYTES = 1 << 20
#: Largest data field sent in one StdioData message.
MAX_CHUNK = 64 * 1024
#: A partial line longer than this is queued without waiting for its newline.
_PARTIAL_LIMIT = 8 * 1024


class _Closed:
    def __repr__(self) -> str:
        return "CLOSED"


#: Returned by StdioHub.get() once the hub is closed and empty.
CLOSED = _Closed()


def write_all(fd: int, data: bytes, strict: bool = False) -> None:
    """os.write until done. Errors (a dead host's pipe) are swallowed, unless
    strict: the handshake line must reach the host or start-up fails."""
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except InterruptedError:
            continue
        except OSError:
            if strict:
                raise
            return
        view = view[n:]


class StdioHub:
    """A bounded queue of (channel, bytes) chunks, oldest dropped first."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if max_bytes < 1:
            raise ValueError("max_bytes must be positive")
        self.max_bytes = max_bytes
        self._cond = threading.Condition(threading.Lock())
        self._items: Deque[Chunk] = collections.deque()
        self._size = 0
        self._dropped = 0
        self._closed = False
        self._streams: List[CapturedText] = []
        # Where output goes once the hub is closed (the real fds).
        self._fallback_fds = {STDOUT: 1, STDERR: 2}

    # -- producer side -------------------------------------------------
    def put(self, channel: int, data: bytes) -> None:
        if not data:
            return
        with self._cond:
            if self._closed:
                closed = True
            else:
                closed = False
                if len(data) > self.max_bytes:
                    self._dropped += len(data) - self.max_bytes
                    data = data[-self.max_bytes :]
                self._items.append((channel, data))
                self._size += len(data)
                while self._size > self.max_bytes:
                    _, old = self._items.popleft()
                    self._size -= len(old)
                    self._dropped += len(old)
                self._cond.notify()
        if closed:
            write_all(self._fallback_fds.get(channel, 2), data)

    def wake(self) -> None:
        """Wake every waiting get() (used when an RPC is cancelled)."""
        with self._cond:
            self._cond.notify_all()

    # -- consumer side -------------------------------------------------
    def get(self, timeout: float) -> object:
        """The next chunk, None after timeout, or CLOSED when closed and empty.

        Consecutive chunks of one channel are merged up to MAX_CHUNK bytes.
        """
        with self._cond:
            if not self._items and not self._closed:
                self._cond.wait(timeout)
            if not self._items and not self._closed:
                idle = True
            else:
                idle = False
        if idle:
            # Nothing queued for a while: push out partial lines, if any.
            for s in list(self._streams):
                s.flush()
        with self._cond:
            if self._dropped:
                n, self._dropped = self._dropped, 0
                return (
                    STDERR,
                    f"[plugvisor_plugin: {n} bytes of stdout/stderr output were dropped "
                    "because the host did not read them in time]\n".encode(),
                )
            if not self._items:
                return CLOSED if self._closed else None
            channel, data = self._items.popleft()
            self._size -= len(data)
            if len(data) > MAX_CHUNK:
                rest = data[MAX_CHUNK:]
                data = data[:MAX_CHUNK]
                self._items.appendleft((channel, rest))
                self._size += len(rest)
                return channel, data
            parts = [data]
            total = len(data)
            while self._items:
                ch, nxt = self._items[0]
                if ch != channel or total + len(nxt) > MAX_CHUNK:
                    break
                self._items.popleft()
                self._size -= len(nxt)
                parts.append(nxt)
                total += len(nxt)
            return channel, b"".join(parts)

    def close(self) -> None:
        """No more queueing: get() drains what is left, then says CLOSED."""
        for s in list(self._streams):
            s.flush()
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def take_all(self) -> List[Chunk]:
        """Remove and return everything still queued (undelivered output)."""
        with self._cond:
            items = list(self._items)
            self._items.clear()
            self._size = 0
            dropped, self._dropped = self._dropped, 0
        if dropped:
            items.insert(
                0,
                (STDERR, f"[plugvisor_plugin: {dropped} bytes of output were dropped]\n".encode()),
            )
        return items

    def flush_to_fds(self) -> None:
        """Write undelivered output to the real stdout/stderr fds."""
        for channel, data in self.take_all():
            write_all(self._fallback_fds.get(channel, 2), data)

    @property
    def queued_bytes(self) -> int:
        with self._cond:
            return self._size


class _CapturedBinary(io.RawIOBase):
    """The .buffer of a captured text stream: raw bytes go straight to the hub."""

    def __init__(self, owner: CapturedText) -> None:
        super().__init__()
        self._owner = owner

    def writable(self) -> bool:
        return True

    def write(self, b: Buffer) -> int:
        data = bytes(b)
        self._owner._write_bytes(data)
        return len(data)

    def fileno(self) -> int:
        return self._owner.fileno()

    def isatty(self) -> bool:
        return False

    def close(self) -> None:  # never close the real stream
        self._owner.flush()


class CapturedText(io.TextIOBase):
    """A text stream whose writes go to a StdioHub channel."""

    def __init__(self, hub: StdioHub, channel: int, name: str, fd: Optional[int]) -> None:
        super().__init__()
        self._hub = hub
        self._channel = channel
        self._name = name
        self._fd = fd
        self._lock = threading.Lock()
        self._pending: List[str] = []
        self._pending_len = 0
        self.buffer = _CapturedBinary(self)
        hub._streams.append(self)

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    @property
    def errors(self) -> str:  # type: ignore[override]
        return "backslashreplace"

    @property
    def name(self) -> str:
        return self._name

    @property
    def line_buffering(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        # Code that needs a real fd (faulthandler, subprocess) gets the
        # original one: such output bypasses the queue and reaches the
        # host through the process's pipe.
        if self._fd is None:
            raise io.UnsupportedOperation("fileno")
        return self._fd

    def write(self, s: str) -> int:
        if not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        if not s:
            return 0
        out = None
        with self._lock:
            nl = s.rfind("\n")
            if nl >= 0:
                self._pending.append(s[: nl + 1])
                out = "".join(self._pending)
                rest = s[nl + 1 :]
                self._pending = [rest] if rest else []
                self._pending_len = len(rest)
            else:
                self._pending.append(s)
                self._pending_len += len(s)
                if self._pending_len >= _PARTIAL_LIMIT:
                    out = "".join(self._pending)
                    self._pending = []
                    self._pending_len = 0
            if out:
                # Queue inside the lock so concurrent writers keep their order.
                self._hub.put(self._channel, out.encode("utf-8", "backslashreplace"))
        return len(s)

    def _write_bytes(self, data: bytes) -> None:
        with self._lock:
            if self._pending:
                text = "".join(self._pending)
                self._pending = []
                self._pending_len = 0
                self._hub.put(self._channel, text.encode("utf-8", "backslashreplace"))
            self._hub.put(self._channel, data)

    def flush(self) -> None:
        with self._lock:
            if not self._pending:
                return
            text = "".join(self._pending)
            self._pending = []
            self._pending_len = 0
            self._hub.put(self._channel, text.encode("utf-8", "backslashreplace"))

    def close(self) -> None:  # never really closed: other code may hold a reference
        self.flush()

    @property
    def closed(self) -> bool:
        return False
