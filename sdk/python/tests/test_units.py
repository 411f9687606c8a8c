"""Unit tests of the pure parts: handshake, wire format, stdio queue, logging."""

from __future__ import annotations

import io
import json
import logging
import random
import subprocess
import sys

import pytest

from plugvisor_plugin import _handshake as hs
from plugvisor_plugin import _wire
from plugvisor_plugin._stdio import CLOSED, CapturedText, StdioHub
from plugvisor_plugin.log import TRACE, HclogHandler, hclog_level, parse_level

# -- magic cookie ----------------------------------------------------------------


def test_cookie_must_match_exactly():
    assert hs.cookie_ok({hs.DEFAULT_COOKIE_KEY: hs.DEFAULT_COOKIE_VALUE}, hs.DEFAULT_COOKIE_KEY, hs.DEFAULT_COOKIE_VALUE)
    assert not hs.cookie_ok({}, hs.DEFAULT_COOKIE_KEY, hs.DEFAULT_COOKIE_VALUE)
    assert not hs.cookie_ok({hs.DEFAULT_COOKIE_KEY: "yes"}, hs.DEFAULT_COOKIE_KEY, hs.DEFAULT_COOKIE_VALUE)
    assert not hs.cookie_ok(
        {hs.DEFAULT_COOKIE_KEY: hs.DEFAULT_COOKIE_VALUE + " "}, hs.DEFAULT_COOKIE_KEY, hs.DEFAULT_COOKIE_VALUE
    )
    assert hs.cookie_ok({"K": "V"}, "K", "V")


def test_default_cookie_is_mattermosts():
    assert hs.DEFAULT_COOKIE_KEY == "MATTERMOST_PLUGIN"
    assert hs.DEFAULT_COOKIE_VALUE == "Securely message teams, anywhere."


def test_friendly_message_names_the_program_and_the_host():
    msg = hs.not_a_program_message("hello.py")
    assert msg.startswith("hello.py: ")
    assert "plugin" in msg and "plugvisor" in msg


# -- version negotiation ---------------------------------------------------------


@pytest.mark.parametrize(
    "ours, env, want",
    [
        (1, "1", 1),
        (1, None, 1),
        (1, "", 1),
        ([1, 2, 3], None, 3),
        ([1, 2, 3], "1,2", 2),
        ([2, 3, 4], "1,2,3", 3),
        ([3, 1], " 3 , 1 ", 3),
        ([1, 2], "2,,", 2),
        (5, "9,5,1", 5),
    ],
)
def test_negotiation_picks_highest_common(ours, env, want):
    assert hs.negotiate_app_version(ours, env) == want


def test_negotiation_without_common_version_explains():
    with pytest.raises(hs.HandshakeError) as e:
        hs.negotiate_app_version([2, 3], "1,4")
    msg = str(e.value)
    assert "1, 4" in msg and "2, 3" in msg


def test_negotiation_rejects_garbage_from_host():
    with pytest.raises(hs.HandshakeError, match="PLUGIN_PROTOCOL_VERSIONS"):
        hs.negotiate_app_version(1, "1,two")


@pytest.mark.parametrize("bad", [True, "1", [1, "2"], [], [-1], 1.0])
def test_bad_app_version_argument(bad):
    with pytest.raises((TypeError, ValueError)):
        hs.normalize_app_versions(bad)


# -- handshake line ----------------------------------------------------------------


def test_handshake_formats():
    assert hs.format_handshake(1, "unix", "/tmp/d/plugin1.sock") == "1|1|unix|/tmp/d/plugin1.sock|grpc\n"
    assert hs.format_handshake(3, "tcp", "127.0.0.1:12345") == "1|3|tcp|127.0.0.1:12345|grpc\n"


@pytest.mark.parametrize("der,field", [(b"\x30", "MA"), (b"\x30\x82", "MII"), (b"\x30\x82\x01", "MIIB")])
def test_server_cert_field_is_base64_without_padding(der, field):
    # Go's base64.RawStdEncoding: no "=" however long the DER is.
    assert hs.encode_server_cert(der) == field
    assert hs.format_handshake(1, "unix", "/s.sock", der) == f"1|1|unix|/s.sock|grpc|{field}\n"


def test_handshake_with_an_empty_certificate_is_refused():
    with pytest.raises(ValueError):
        hs.format_handshake(1, "unix", "/s.sock", b"")


@pytest.mark.parametrize(
    "args",
    [(1, "udp", "x"), (1, "tcp", ""), (1, "unix", "/a|b"), (1, "unix", "/a\nb"), (-1, "tcp", "h:1"), (True, "tcp", "h:1")],
)
def test_handshake_rejects_what_cannot_be_sent(args):
    with pytest.raises(ValueError):
        hs.format_handshake(*args)


# -- ports and socket paths -------------------------------------------------------


def test_port_range_unset_means_any_port():
    assert hs.port_range({}) is None
    assert hs.port_range({"PLUGIN_MIN_PORT": "", "PLUGIN_MAX_PORT": " "}) is None


def test_port_range_parsing():
    assert hs.port_range({"PLUGIN_MIN_PORT": "10000", "PLUGIN_MAX_PORT": "25000"}) == (10000, 25000)
    assert hs.port_range({"PLUGIN_MIN_PORT": "2000"}) == (2000, 65535)
    assert hs.port_range({"PLUGIN_MAX_PORT": "3000"}) == (1024, 3000)
    assert hs.port_range({"PLUGIN_MIN_PORT": "4000", "PLUGIN_MAX_PORT": "4000"}) == (4000, 4000)


@pytest.mark.parametrize(
    "env",
    [
        {"PLUGIN_MIN_PORT": "abc", "PLUGIN_MAX_PORT": "2000"},
        {"PLUGIN_MIN_PORT": "0", "PLUGIN_MAX_PORT": "2000"},
        {"PLUGIN_MIN_PORT": "1000", "PLUGIN_MAX_PORT": "70000"},
        {"PLUGIN_MIN_PORT": "3000", "PLUGIN_MAX_PORT": "2000"},
    ],
)
def test_port_range_errors(env):
    with pytest.raises(hs.HandshakeError):
        hs.port_range(env)


def test_port_candidates_visit_each_port_once():
    for seed in range(20):
        got = list(hs.port_candidates(10000, 10009, random.Random(seed)))
        assert sorted(got) == list(range(10000, 10010))
    assert list(hs.port_candidates(5, 5)) == [5]
    starts = {next(hs.port_candidates(1, 1000, random.Random(s))) for s in range(20)}
    assert len(starts) > 1, "the start of the scan should vary"


def test_unix_socket_paths_are_unique_and_fit():
    paths = {hs.unix_socket_path("/tmp/x") for _ in range(100)}
    assert len(paths) == 100
    for p in paths:
        assert p.startswith("/tmp/x/plugin") and p.endswith(".sock")
        assert hs.unix_path_fits(p)
    assert not hs.unix_path_fits("/" + "d" * 200 + "/plugin.sock")


# -- wire format ---------------------------------------------------------------------


def test_stdio_data_known_bytes():
    assert _wire.encode_stdio_data((_wire.STDOUT, b"hi")) == b"\x08\x01\x12\x02hi"
    assert _wire.encode_stdio_data((_wire.STDERR, b"")) == b"\x08\x02"
    assert _wire.encode_stdio_data((0, b"")) == b""
    assert _wire.encode_empty(None) == b""


@pytest.mark.parametrize("channel", [0, 1, 2])
@pytest.mark.parametrize("data", [b"", b"x", b"\x00\xff" * 200, bytes(range(256)) * 600])
def test_stdio_data_matches_protobuf(channel, data):
    """Our hand-written encoding equals what the protobuf library produces."""
    from google.protobuf import descriptor_pb2, descriptor_pool

    try:
        from google.protobuf.message_factory import GetMessageClass
    except ImportError:  # older protobuf
        from google.protobuf.message_factory import MessageFactory

        def GetMessageClass(d):
            return MessageFactory().GetPrototype(d)

    fdp = descriptor_pb2.FileDescriptorProto(name="pvtest_stdio.proto", package="pvtest", syntax="proto3")
    msg = fdp.message_type.add(name="StdioData")
    enum = msg.enum_type.add(name="Channel")
    for i, n in enumerate(["INVALID", "STDOUT", "STDERR"]):
        enum.value.add(name=n, number=i)
    F = descriptor_pb2.FieldDescriptorProto
    msg.field.add(name="channel", number=1, type=F.TYPE_ENUM, type_name=".pvtest.StdioData.Channel", label=F.LABEL_OPTIONAL)
    msg.field.add(name="data", number=2, type=F.TYPE_BYTES, label=F.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    cls = GetMessageClass(pool.FindMessageTypeByName("pvtest.StdioData"))

    ours = _wire.encode_stdio_data((channel, data))
    theirs = cls(channel=channel, data=data).SerializeToString()
    assert ours == theirs
    assert _wire.decode_stdio_data(theirs) == (channel, data)
    # Unknown fields are skipped on decode.
    extra = cls(channel=channel, data=data).SerializeToString() + b"\x18\x07" + b"\x22\x01z" + b"\x2d\0\0\0\0"
    assert _wire.decode_stdio_data(extra) == (channel, data)


def test_decode_rejects_truncation():
    with pytest.raises(ValueError):
        _wire.decode_stdio_data(b"\x12\x05ab")
    with pytest.raises(ValueError):
        _wire.decode_stdio_data(b"\x08")


# -- stdio queue ------------------------------------------------------------------------


def test_hub_merges_and_keeps_order():
    hub = StdioHub(1000)
    hub.put(1, b"a")
    hub.put(1, b"b")
    hub.put(2, b"c")
    hub.put(1, b"d")
    assert hub.get(0) == (1, b"ab")
    assert hub.get(0) == (2, b"c")
    assert hub.get(0) == (1, b"d")
    assert hub.get(0) is None


def test_hub_drops_oldest_when_full_and_says_so():
    hub = StdioHub(10)
    for i in range(10):
        hub.put(1, b"%d...\n" % i)  # 5 bytes each
    assert hub.queued_bytes <= 10
    note = hub.get(0)
    assert note[0] == 2 and b"40 bytes" in note[1] and b"dropped" in note[1]
    assert hub.get(0) == (1, b"8...\n9...\n")


def test_hub_keeps_tail_of_huge_write():
    hub = StdioHub(4)
    hub.put(1, b"0123456789")
    assert hub.get(0)[0] == 2  # drop note
    assert hub.get(0) == (1, b"6789")


def test_hub_close_drains_then_says_closed(capfd):
    hub = StdioHub()
    hub.put(1, b"left")
    hub.close()
    assert hub.get(0) == (1, b"left")
    assert hub.get(0) is CLOSED
    hub.put(2, b"after close goes to fd 2\n")
    assert "after close goes to fd 2" in capfd.readouterr().err


def test_captured_text_is_line_buffered():
    hub = StdioHub()
    out = CapturedText(hub, 1, "<stdout>", fd=None)
    print("hello", "world", file=out)
    out.write("partial")
    assert hub.get(0) == (1, b"hello world\n")
    # The partial line is pushed out when the queue has been idle.
    assert hub.get(0.01) == (1, b"partial")
    out.buffer.write(b"raw\xff")
    assert hub.get(0) == (1, b"raw\xff")
    out.write("caf\u00e9\n")
    assert hub.get(0) == (1, "caf\u00e9\n".encode())
    with pytest.raises(TypeError):
        out.write(b"bytes")  # type: ignore[arg-type]


# -- logging ---------------------------------------------------------------------------------


def test_hclog_levels():
    assert hclog_level(TRACE) == "trace"
    assert hclog_level(logging.DEBUG) == "debug"
    assert hclog_level(logging.INFO) == "info"
    assert hclog_level(logging.WARNING) == "warn"
    assert hclog_level(logging.ERROR) == "error"
    assert hclog_level(logging.CRITICAL) == "error"
    assert parse_level("WARN") == logging.WARNING
    assert parse_level("trace") == TRACE
    with pytest.raises(ValueError):
        parse_level("loud")


def test_hclog_handler_writes_one_json_object_per_line():
    buf = io.StringIO()
    logger = logging.getLogger("pvtest.unit")
    logger.propagate = False
    logger.setLevel(TRACE)
    handler = HclogHandler(stream=buf)
    logger.addHandler(handler)
    try:
        logger.info("hello %s", "there", extra={"user": "ada", "n": 3, "obj": object()})
        logger.log(TRACE, "fine detail")
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("it failed")
    finally:
        logger.removeHandler(handler)
    lines = buf.getvalue().splitlines()
    assert len(lines) == 3
    first, second, third = (json.loads(line) for line in lines)
    assert first["@level"] == "info"
    assert first["@message"] == "hello there"
    assert first["@module"] == "pvtest.unit"
    assert first["user"] == "ada" and first["n"] == 3
    assert first["obj"].startswith("<object object")
    assert first["@timestamp"][:2] == "20" and "T" in first["@timestamp"]
    assert second["@level"] == "trace"
    assert third["@level"] == "error"
    assert "ValueError: boom" in third["exception"]


def test_hclog_handler_writes_to_fd_2_by_default(capfd):
    logger = logging.getLogger("pvtest.fd")
    logger.propagate = False
    handler = HclogHandler()
    logger.addHandler(handler)
    try:
        logger.warning("to the real stderr")
    finally:
        logger.removeHandler(handler)
    err = capfd.readouterr().err
    rec = json.loads(err.strip())
    assert rec["@level"] == "warn" and rec["@message"] == "to the real stderr"


# -- import cost ---------------------------------------------------------------------------


def test_import_does_not_load_grpc():
    code = "import sys, plugvisor_plugin; print(sorted(m for m in ('grpc', 'grpc_health', 'google.protobuf', 'cryptography', 'asyncio', 'json', 'logging') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "grpc" not in out and "google.protobuf" not in out and "cryptography" not in out and "asyncio" not in out


# -- AutoMTLS certificates ------------------------------------------------------------


def test_grpc_native_tls_takes_the_keys_boringssl_verifies():
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    from plugvisor_plugin import _tls

    def can(key):
        return _tls.grpc_can_verify_key(key.public_key())

    assert can(ec.generate_private_key(ec.SECP256R1()))
    assert can(ec.generate_private_key(ec.SECP384R1()))
    assert can(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    # go-plugin's Go host: P-521. BoringSSL offers no P-521 scheme -> front end.
    assert not can(ec.generate_private_key(ec.SECP521R1()))
    assert not can(ed25519.Ed25519PrivateKey.generate())


def test_client_cert_with_several_certificates_needs_every_key_native():
    from plugvisor_plugin import _tls

    ident256 = _tls.generate_server_identity()
    assert _tls.load_client_cert(ident256.cert_pem.decode()).grpc_native
    both = (ident256.cert_pem + _p521_cert_pem()).decode()
    trust = _tls.load_client_cert(both)
    assert not trust.grpc_native and trust.pem.count(b"BEGIN CERTIFICATE") == 2


def _p521_cert_pem() -> bytes:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP521R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA512())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


# -- options, the Plugin class, generated code ---------------------------------------------


def test_every_option_has_one_default_and_unknown_ones_are_refused():
    from plugvisor_plugin import DEFAULTS, Options
    from plugvisor_plugin._options import resolve

    assert set(DEFAULTS) == set(Options.__annotations__)
    assert resolve({})["grace"] == DEFAULTS["grace"]
    with pytest.raises(TypeError, match=r"unknown option.*gracee"):
        resolve({"gracee": 1})
    with pytest.raises(ValueError, match="network"):
        resolve({"network": "udp"})
    with pytest.raises(ValueError, match="grace"):
        resolve({"grace": -1})


def test_implemented_hooks_are_the_overridden_ones():
    from plugvisor_plugin import NoHostApi, Plugin

    class Nothing(Plugin):
        pass

    class Some(Plugin):
        def on_activate(self):
            pass

        def on_deactivate(self):
            pass

    class More(Some):
        def on_configuration_change(self, configuration):
            pass

    assert Nothing.implemented_hooks == frozenset()
    assert Some.implemented_hooks == {"OnActivate", "OnDeactivate"}
    assert More.implemented_hooks == {"OnActivate", "OnDeactivate", "OnConfigurationChange"}
    with pytest.raises(NoHostApi, match="not activated"):
        _ = Nothing().api


def test_refusal_messages():
    from plugvisor_plugin._lifecycle import refusal_message

    class MyError(Exception):
        pass

    assert refusal_message(ValueError("greeting is empty")) == "greeting is empty"
    assert refusal_message(MyError("nope")) == "nope"
    assert refusal_message(KeyError("greeting")) == "KeyError: 'greeting'"
    assert refusal_message(RuntimeError()) == "RuntimeError"


def test_percent_decoding_matches_urllib():
    from urllib.parse import unquote, unquote_to_bytes

    from plugvisor_plugin._http import unquote_to_bytes as ours

    rng = random.Random(7)
    alphabet = "%%%/aZ09-._~é€ fF"
    samples = ["", "/", "/a%20b", "%", "%2", "%zz", "%%41", "%41%42%4", "/%E2%82%AC/%e2%82%ac", "/%FF%fe", "é%C3%A9"]
    samples += ["".join(rng.choice(alphabet) for _ in range(rng.randrange(12))) for _ in range(2000)]
    for text in samples:
        assert ours(text) == unquote_to_bytes(text), text
        assert ours(text).decode("utf-8", "replace") == unquote(text, errors="replace"), text


def test_generated_code_is_up_to_date():
    from hostkit import ROOT

    r = subprocess.run([str(ROOT / "scripts" / "gen-proto-python"), "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
