"""HTTP through plugvisor.v1.Http with real Flask (WSGI) and FastAPI (ASGI) apps.

The plugin (tests/plugins/http_plugin.py) runs under PluginHost, which sends
requests as plugvisor forwards /plugins/{id}/...: the head, then the body in
parts, then a half-close; it reads the response parts back.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from hostkit import TESTS, wait_for

from plugvisor_plugin.testing import HttpAborted, PluginHost

HTTP_PLUGIN = TESTS / "plugins" / "http_plugin.py"
FRAMEWORKS = ["flask", "fastapi"]


@pytest.fixture(params=FRAMEWORKS)
def web(request, tmp_path):
    marker = tmp_path / "marker"
    env = {"PVTEST_FRAMEWORK": request.param, "PVTEST_MARKER": str(marker)}
    with PluginHost(HTTP_PLUGIN, plugin_id="web", env=env) as host:
        host.framework = request.param
        host.marker = marker
        yield host


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_serve_http_is_a_hook_when_an_app_is_given(web):
    assert web.implemented is not None and "ServeHTTP" in web.implemented.hooks


def test_get_with_headers_both_ways(web):
    r = web.http("GET", "/where", query="a=1&b=%20x", headers=[("X-Test", "yes"), ("Host", "chat.example:8443")],
                 remote_addr="10.1.2.3:4567")
    assert r.status == 200
    assert r.header("x-echo") == "yes"
    assert [v.split(b";")[0] for n, v in r.headers if n == "set-cookie"] == [b"a=1", b"b=2"]
    seen = r.json()
    assert seen["args"] == {"a": "1", "b": " x"}
    assert seen["url"] == "http://chat.example:8443/plugins/web/where?a=1&b=%20x"
    if web.framework == "flask":
        assert seen["SCRIPT_NAME"] == "/plugins/web" and seen["PATH_INFO"] == "/where"
        assert seen["QUERY_STRING"] == "a=1&b=%20x" and seen["HTTP_X_TEST"] == "yes"
        assert (seen["SERVER_NAME"], seen["SERVER_PORT"]) == ("chat.example", "8443")
        assert (seen["REMOTE_ADDR"], seen["REMOTE_PORT"]) == ("10.1.2.3", "4567")
    else:
        assert (seen["path"], seen["root_path"]) == ("/plugins/web/where", "/plugins/web")
        assert seen["query_string"] == "a=1&b=%20x" and seen["x_test"] == "yes"
        assert seen["client"] == ["10.1.2.3", 4567] and seen["server"] == ["chat.example", 8443]
        assert seen["state"] is True  # the lifespan state reaches requests


def _vm_hwm_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM in /proc/<pid>/status")


def test_a_large_upload_streams_with_bounded_memory(web):
    total = 50 << 20
    piece = bytes(range(256)) * 256  # 64 KiB
    digest = hashlib.sha256()

    def body():
        for _ in range(total // len(piece)):
            digest.update(piece)
            yield piece

    web.http("POST", "/upload", body=b"warm up")  # first-request imports and buffers
    before = _vm_hwm_kib(web.pid)
    r = web.http("POST", "/upload", body=body(), headers=[("content-type", "application/octet-stream")])
    grown_mib = (_vm_hwm_kib(web.pid) - before) / 1024
    print(f"{web.framework}: peak memory grew by {grown_mib:.1f} MiB")
    assert r.status == 200, r.body
    assert r.json() == {"bytes": total, "sha256": digest.hexdigest()}
    assert grown_mib < 20, f"the plugin's peak memory grew by {grown_mib:.1f} MiB for a 50 MiB upload"


def test_a_generator_response_streams_chunk_by_chunk(web):
    r = web.http("GET", "/stream", query="n=5")
    assert r.status == 200 and r.header("content-type").startswith("text/plain")
    assert r.parts == [f"chunk {i}\n".encode() for i in range(5)]
    assert r.flushes == 5


def test_a_client_that_disconnects_stops_the_app(web):
    stream = web.http_stream("GET", "/forever")
    assert stream.status == 200
    received = []
    for chunk in stream:
        received.append(chunk)
        if len(received) == 3:
            break
    assert received == [b"tick 0\n", b"tick 1\n", b"tick 2\n"]  # it streams: the app never ends by itself
    stream.cancel()
    wait_for(lambda: "stream closed" in lines(web.marker), 10, "the app to see the disconnect")
    # The plugin goes on serving.
    assert web.http("GET", "/stream", query="n=1").parts == [b"chunk 0\n"]


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_stopping_with_a_stream_open_ends_it_and_exits_cleanly(tmp_path, framework):
    marker = tmp_path / "marker"
    env = {"PVTEST_FRAMEWORK": framework, "PVTEST_MARKER": str(marker), "PVTEST_GRACE": "0.3"}
    with PluginHost(HTTP_PLUGIN, env=env) as host:
        stream = host.http_stream("GET", "/forever")
        assert next(iter(stream)) == b"tick 0\n"
        assert host.stop() == 0  # within the stop timeout: the open stream is cut after the grace
    if framework == "fastapi":
        # The open request ends, its cleanup included, before the app's lifespan shutdown.
        assert lines(marker) == ["startup", "stream closed", "shutdown"]
    else:
        assert "stream closed" in lines(marker)


def test_an_app_that_raises_before_the_head_answers_500(web):
    r = web.http("GET", "/fail-before")
    assert r.status == 500
    assert "failed before the head" in web.stderr()


def test_an_app_that_raises_after_the_head_aborts_the_call(web):
    with pytest.raises(HttpAborted) as e:
        web.http("GET", "/fail-after")
    assert e.value.status == 200 and e.value.body == b"first\n"
    assert e.value.code is not None and e.value.code.name == "INTERNAL"
    assert "failed after the head" in e.value.details


def test_asgi_lifespan_runs_at_activation_and_stop(tmp_path):
    marker = tmp_path / "marker"
    host = PluginHost(HTTP_PLUGIN, env={"PVTEST_FRAMEWORK": "fastapi", "PVTEST_MARKER": str(marker)})
    with host:
        assert lines(marker) == ["startup"]  # before OnActivate answered
        assert host.http("GET", "/stream", query="n=1").status == 200
    assert lines(marker) == ["startup", "shutdown"]


# -- pieces, without a process ---------------------------------------------------------------


def test_apps_are_told_apart():
    from plugvisor_plugin import AsgiApp, WsgiApp
    from plugvisor_plugin._apps import detect

    def wsgi(environ, start_response):
        return []

    async def asgi(scope, receive, send):
        pass

    class AsgiClass:
        async def __call__(self, scope, receive, send):
            pass

    import fastapi
    import flask

    assert isinstance(detect(wsgi), WsgiApp) and isinstance(detect(flask.Flask("x")), WsgiApp)
    assert isinstance(detect(asgi), AsgiApp) and isinstance(detect(AsgiClass()), AsgiApp)
    assert isinstance(detect(fastapi.FastAPI()), AsgiApp)
    explicit = WsgiApp(AsgiClass())  # a wrapper says what it is
    assert detect(explicit) is explicit
    with pytest.raises(TypeError):
        detect(42)


def test_wsgi_environ_is_pep_3333():
    from plugvisor_plugin._http import RequestBody
    from plugvisor_plugin._proto.plugvisor.v1 import http_pb2 as pb
    from plugvisor_plugin._wsgi import environ_for

    head = pb.HttpRequestHead(
        method="PUT", path="/a%20b/%C3%A9%2Fc", query="x=%41", remote_addr="[::1]:9000", plugin_id="p",
        mount_path="/plugins/p", http_version="HTTP/2", scheme="https",
        headers=[pb.HttpHeader(name=n, value=v) for n, v in [
            ("host", b"[::1]"), ("content-type", b"text/plain"), ("content-length", b"11"),
            ("x-many", b"1"), ("x-many", b"2"), ("cookie", b"a=1"), ("cookie", b"b=2"), ("x-latin", b"caf\xe9"),
        ]],
    )
    body = RequestBody(iter([pb.HttpRequestPart(body=b"hello "), pb.HttpRequestPart(body=b""), pb.HttpRequestPart(body=b"world")]))
    env = environ_for(head, body)
    assert env["SCRIPT_NAME"] == "/plugins/p"
    assert env["PATH_INFO"] == "/a b/\xc3\xa9/c"  # percent-decoded bytes, as latin-1
    assert env["QUERY_STRING"] == "x=%41"
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("::1", "443")
    assert (env["REMOTE_ADDR"], env["REMOTE_PORT"]) == ("::1", "9000")
    assert (env["CONTENT_TYPE"], env["CONTENT_LENGTH"]) == ("text/plain", "11")
    assert "HTTP_CONTENT_TYPE" not in env and "HTTP_CONTENT_LENGTH" not in env
    assert env["HTTP_X_MANY"] == "1, 2" and env["HTTP_COOKIE"] == "a=1; b=2" and env["HTTP_X_LATIN"] == "caf\xe9"
    assert env["SERVER_PROTOCOL"] == "HTTP/2" and env["wsgi.url_scheme"] == "https"
    assert env["wsgi.input"].readline() == b"hello world"
    assert env["wsgi.input"].read() == b""


def test_asgi_scope():
    from plugvisor_plugin._asgi import scope_for
    from plugvisor_plugin._proto.plugvisor.v1 import http_pb2 as pb

    head = pb.HttpRequestHead(method="GET", path="/a%20b", query="q=1", remote_addr="1.2.3.4:5", mount_path="/plugins/p",
                              headers=[pb.HttpHeader(name="host", value=b"h:81")])
    scope = scope_for(head, {"k": "v"})
    assert (scope["path"], scope["raw_path"], scope["root_path"]) == ("/plugins/p/a b", b"/plugins/p/a%20b", "/plugins/p")
    assert scope["query_string"] == b"q=1" and scope["client"] == ("1.2.3.4", 5) and scope["server"] == ("h", 81)
    assert scope["headers"] == [(b"host", b"h:81")] and scope["state"] == {"k": "v"}
    assert scope["asgi"]["version"] == "3.0"

