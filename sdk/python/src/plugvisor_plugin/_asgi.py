"""An ASGI 3 app behind plugvisor.v1.Http, on one event loop thread.

Every request and the lifespan protocol run on the same asyncio loop, in a
thread of its own. The http scope: path is the full path (mount path
included, as uvicorn sends it) with root_path the mount path
("/plugins/{id}"); raw_path, query_string, headers, client, server (from
the Host header), scheme and the lifespan state (a shallow copy per
request). spec_version is 2.3, so frameworks listen for http.disconnect.

receive() pulls body chunks from the call only when the app asks (in the
loop's executor: gRPC's request stream blocks); once the body is read it
waits for the call's end and says http.disconnect. send() puts response
parts in a bounded buffer that the RPC's thread sends from: a slow client
slows the app down. After a disconnect, send() raises ClientDisconnected
(an OSError, as ASGI asks). An exception before the response head gives a
500; after it, the call is aborted with INTERNAL.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Awaitable, Callable, Iterator, Optional

import grpc

from ._http import (
    FLUSH,
    ClientDisconnected,
    RequestBody,
    body_parts,
    client_address,
    error_response,
    head_part,
    host_and_port,
    unquote_to_bytes,
)
from ._proto.plugvisor.v1 import http_pb2 as pb

_log = logging.getLogger("plugvisor_plugin.http")

Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
AsgiCallable = Callable[[dict[str, Any], Receive, Send], Awaitable[None]]

#: Response parts an app may have queued before send() waits for the client.
RESPONSE_BUFFER = 16
#: Threads reading request bodies for receive() (gRPC's request stream
#: blocks); a slow upload holds one while it waits for the client.
BODY_READERS = 64
#: Seconds the requests still running at a stop get for their cleanup.
END_TIMEOUT = 1.0
#: Seconds the lifespan startup and shutdown may take.
LIFESPAN_TIMEOUT = 30.0
ASGI_VERSION = {"version": "3.0", "spec_version": "2.3"}


class _End:
    pass


class _Abort:
    def __init__(self, message: str) -> None:
        self.message = message


_END = _End()
Item = Any  # pb.HttpResponsePart | _End | _Abort


class _Exchange:
    """One request: the app's receive/send on the loop, the RPC's thread on the other side."""

    def __init__(self, loop: asyncio.AbstractEventLoop, body: RequestBody, readers: ThreadPoolExecutor) -> None:
        self.loop = loop
        self.body = body
        self.readers = readers
        self.buffer: collections.deque[Item] = collections.deque()
        self.cond = asyncio.Condition()
        self.gone = asyncio.Event()  # the call ended: client disconnect, or the response is done
        self.finished = False  # the app returned (or failed)
        self.receive_lock = asyncio.Lock()
        self.status: Optional[int] = None
        self.headers: list[Any] = []
        self.head_sent = False
        self.body_complete = False
        self.task: Optional[asyncio.Task[None]] = None
        self.cut = False  # the app was stopped mid-response (disconnect or cancel)

    # -- the RPC side (any thread) -----------------------------------------------------------
    def call_ended(self) -> None:
        self.loop.call_soon_threadsafe(lambda: asyncio.ensure_future(self._mark_gone()))

    async def _mark_gone(self) -> None:
        self.gone.set()
        async with self.cond:
            self.cond.notify_all()

    async def abandon(self) -> None:
        """The plugin is stopping: end the app's work and the RPC's wait."""
        self.gone.set()
        if self.task is not None:
            self.task.cancel()
        async with self.cond:
            self.finished = True
            self.cond.notify_all()

    async def next_item(self) -> Item:
        async with self.cond:
            while not self.buffer and not self.finished:
                await self.cond.wait()
            item = self.buffer.popleft() if self.buffer else _END
            self.cond.notify_all()
            return item

    # -- the app side (the loop) ----------------------------------------------------------------
    async def _put(self, item: Item) -> None:
        async with self.cond:
            while len(self.buffer) >= RESPONSE_BUFFER and not self.gone.is_set():
                await self.cond.wait()
            if self.gone.is_set():
                raise ClientDisconnected("the client went away")
            self.buffer.append(item)
            self.cond.notify_all()

    async def receive(self) -> Message:
        async with self.receive_lock:
            if not self.body.done and not self.gone.is_set():
                try:
                    chunk = await self.loop.run_in_executor(self.readers, self.body.next_chunk)
                except ClientDisconnected:
                    return {"type": "http.disconnect"}
                if chunk is not None:
                    return {"type": "http.request", "body": chunk, "more_body": True}
                return {"type": "http.request", "body": b"", "more_body": False}
            await self.gone.wait()
            return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        if self.gone.is_set():
            raise ClientDisconnected("the client went away")
        kind = message["type"]
        if kind == "http.response.start":
            if self.status is not None:
                raise RuntimeError("http.response.start was sent twice")
            self.status = int(message["status"])
            self.headers = list(message.get("headers", []))
        elif kind == "http.response.body":
            if self.status is None:
                raise RuntimeError("http.response.body was sent before http.response.start")
            if self.body_complete:
                raise RuntimeError("http.response.body was sent after the body ended")
            data = bytes(message.get("body", b""))
            more = bool(message.get("more_body", False))
            if not self.head_sent:
                self.head_sent = True
                await self._put(head_part(self.status, self.headers))
            for part in body_parts(data):
                await self._put(part)
            if more and data:
                await self._put(FLUSH)
            self.body_complete = not more

    async def run(self, app: AsgiCallable, scope: dict[str, Any]) -> None:
        self.task = asyncio.current_task()
        try:
            await app(scope, self.receive, self.send)
            if not self.head_sent:
                _log.error("the ASGI app returned without a response", extra={"path": scope["path"]})
                for part in error_response():
                    await self._put(part)
            elif not self.body_complete:
                await self._put(_Abort("the app returned before it finished the response body"))
        except (ClientDisconnected, asyncio.CancelledError):
            self.cut = True
        except Exception as e:
            if self.body_complete:
                # The response went out whole (Starlette sends its 500, then
                # re-raises for the server's log): only log it.
                _log.error("the ASGI app raised after its response", exc_info=True, extra={"path": scope["path"]})
                return
            if self.gone.is_set():
                _log.debug("the ASGI app failed after the client went away", exc_info=True)
            else:
                _log.exception("the ASGI app failed", extra={"path": scope["path"]})
            try:
                if not self.head_sent:
                    for part in error_response():
                        await self._put(part)
                else:
                    await self._put(_Abort(f"the app failed after sending the response head: {type(e).__name__}: {e}"))
            except ClientDisconnected:
                pass
        finally:
            async with self.cond:
                self.finished = True
                self.cond.notify_all()


def scope_for(head: pb.HttpRequestHead, state: dict[str, Any]) -> dict[str, Any]:
    root = head.mount_path.rstrip("/")
    raw_path = head.path or "/"
    server_name, server_port = host_and_port(head)
    return {
        "type": "http",
        "asgi": ASGI_VERSION,
        "http_version": "2" if head.http_version == "HTTP/2" else "1.1",
        "method": head.method,
        "scheme": head.scheme or "http",
        "path": root + unquote_to_bytes(raw_path).decode("utf-8", "replace"),  # as urllib's unquote
        "raw_path": (root + raw_path).encode("latin-1", "replace"),
        "query_string": head.query.encode("latin-1", "replace"),
        "root_path": root,
        "headers": [(h.name.encode("latin-1"), h.value) for h in head.headers if not h.name.startswith(":")],
        "client": client_address(head.remote_addr),
        "server": (server_name, server_port),
        "state": dict(state),
        "extensions": {},
    }


class AsgiAdapter:
    def __init__(self, app: AsgiCallable) -> None:
        self.app = app
        self.state: dict[str, Any] = {}
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run_loop, name="plugvisor-asgi", daemon=True)
        self._thread.start()
        self._lifespan: Optional[Future[None]] = None
        self._lifespan_in: Optional[asyncio.Queue[Message]] = None
        self._lifespan_events: Optional[asyncio.Queue[Message]] = None
        self._lifespan_supported = False
        self._live: set[_Exchange] = set()
        self._cut = False  # some app was stopped mid-response: its body may wait for collection
        # Not the loop's default executor (cpu + 4 threads): slow uploads
        # must not hold up every other request's body.
        self._readers = ThreadPoolExecutor(BODY_READERS, thread_name_prefix="plugvisor-asgi-body")

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def _on_loop(self, coro: Awaitable[Any], timeout: Optional[float] = None) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)  # type: ignore[arg-type]

    # -- lifespan -------------------------------------------------------------------------------
    def startup(self) -> None:
        """Run the lifespan startup; raises RuntimeError when the app says it failed."""
        self._on_loop(self._startup(), LIFESPAN_TIMEOUT)

    async def _startup(self) -> None:
        inbox: asyncio.Queue[Message] = asyncio.Queue()
        events: asyncio.Queue[Message] = asyncio.Queue()
        self._lifespan_in, self._lifespan_events = inbox, events
        scope = {"type": "lifespan", "asgi": ASGI_VERSION, "state": self.state}

        async def send(message: Message) -> None:
            await events.put(message)

        async def main() -> None:
            try:
                await self.app(scope, inbox.get, send)
            except Exception as e:
                await events.put({"type": "plugvisor.lifespan.raised", "error": e})
            else:
                await events.put({"type": "plugvisor.lifespan.returned"})

        self._lifespan = asyncio.ensure_future(main())  # type: ignore[assignment]
        await inbox.put({"type": "lifespan.startup"})
        event = await events.get()
        if event["type"] == "lifespan.startup.complete":
            self._lifespan_supported = True
        elif event["type"] == "lifespan.startup.failed":
            raise RuntimeError(event.get("message") or "lifespan startup failed")
        else:
            # Raising (or returning) at once on a lifespan scope means "no lifespan here".
            _log.debug("the ASGI app does not speak the lifespan protocol", extra={"event": event["type"]})

    def shutdown(self) -> None:
        if self._lifespan_supported:
            self._lifespan_supported = False
            self._on_loop(self._shutdown(), LIFESPAN_TIMEOUT)

    async def _shutdown(self) -> None:
        assert self._lifespan_in is not None and self._lifespan_events is not None
        # As ASGI servers do: the requests still running end before the app's shutdown.
        await self._end_live()
        await self._lifespan_in.put({"type": "lifespan.shutdown"})
        event = await self._lifespan_events.get()
        if event["type"] == "lifespan.shutdown.failed":
            raise RuntimeError(event.get("message") or "lifespan shutdown failed")
        if event["type"] == "plugvisor.lifespan.raised":
            raise event["error"]

    def close(self) -> None:
        """After the server drained: end what is left (no RPC may wait on a dead loop), stop the loop."""
        if self.loop.is_running():

            try:
                self._on_loop(self._end_live(), 5)
            finally:
                self.loop.call_soon_threadsafe(self.loop.stop)
                self._thread.join(5)
                self._readers.shutdown(wait=False, cancel_futures=True)

    async def _end_live(self) -> None:
        """Cancel the requests still running and let their cleanup (a generator's
        finally, say) run before the loop stops, for up to END_TIMEOUT."""
        tasks = []
        for exchange in list(self._live):
            await exchange.abandon()
            if exchange.task is not None and not exchange.task.done():
                tasks.append(exchange.task)
        deadline = self.loop.time() + END_TIMEOUT
        if tasks:
            await asyncio.wait(tasks, timeout=END_TIMEOUT)
        if not (tasks or self._cut):
            return
        self._cut = False
        # A streaming body whose send() raised is an async generator left
        # suspended; it closes only when collected, and the exception groups
        # of anyio's task groups keep it in a cycle. Collect it now and wait
        # for the loop's finalizer (its aclose) so its cleanup runs first.
        before = asyncio.all_tasks(self.loop)
        gc.collect()
        await asyncio.sleep(0)  # the finalizer hook schedules aclose() with call_soon_threadsafe
        closing = asyncio.all_tasks(self.loop) - before
        if closing:
            await asyncio.wait(closing, timeout=max(deadline - self.loop.time(), 0))

    def _ended(self, exchange: _Exchange) -> None:
        self._live.discard(exchange)
        self._cut = self._cut or exchange.cut

    # -- requests ----------------------------------------------------------------------------------
    def serve(
        self, head: pb.HttpRequestHead, body: RequestBody, context: grpc.ServicerContext
    ) -> Iterator[pb.HttpResponsePart]:
        exchange = _Exchange(self.loop, body, self._readers)
        context.add_callback(exchange.call_ended)
        self._live.add(exchange)
        running = asyncio.run_coroutine_threadsafe(exchange.run(self.app, scope_for(head, self.state)), self.loop)
        # Live until the app's task ends, not the call: a stop that cut the
        # call still waits for the app's cleanup before the lifespan shutdown.
        running.add_done_callback(lambda _: self._ended(exchange))
        try:
            while True:
                item = asyncio.run_coroutine_threadsafe(exchange.next_item(), self.loop).result()
                if item is _END:
                    return
                if isinstance(item, _Abort):
                    break
                yield item
        finally:
            exchange.call_ended()  # a closed generator (the client left) counts as a disconnect
        context.abort(grpc.StatusCode.INTERNAL, item.message)
