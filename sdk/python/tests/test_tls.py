"""go-plugin AutoMTLS, seen from a host: PLUGIN_CLIENT_CERT in, field 6 out.

The tests play a go-plugin host with AutoMTLS on: make a self-signed client
certificate, put its PEM in PLUGIN_CLIENT_CERT, read the plugin's server
certificate from the handshake's sixth field, and talk TLS pinned to exactly
that certificate with server name "localhost". Then they prove that the
plugin refuses everyone else: TLS without a client certificate, plaintext,
and a client certificate the host did not hand over.

Client keys on P-256 and P-384 are checked by grpc's own TLS; go-plugin's Go
host uses P-521, which grpcio's BoringSSL cannot accept, so those go through
the SDK's OpenSSL front end. Both paths get the same tests.
"""

from __future__ import annotations

import base64
import datetime
import json
import re
import signal
from pathlib import Path
from typing import Optional, Tuple

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hostkit import EXAMPLE, EXAMPLE_DIR, TEST_PLUGIN, Handshake, base_env

from plugvisor_plugin.testing import PluginHost

SERVING = health_pb2.HealthCheckResponse.SERVING
CURVES = {
    "P-256": (ec.SECP256R1(), hashes.SHA256()),
    "P-384": (ec.SECP384R1(), hashes.SHA384()),
    "P-521": (ec.SECP521R1(), hashes.SHA512()),  # go-plugin's Go host uses this one
}


def make_cert(curve: str = "P-256", cn: str = "localhost") -> Tuple[bytes, bytes]:
    """A self-signed client certificate like a go-plugin host's: (cert PEM, key PEM)."""
    ec_curve, digest = CURVES[curve]
    key = ec.generate_private_key(ec_curve)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(seconds=30))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(cn)]), critical=False)
        .sign(key, digest)
    )
    return (
        cert.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    )


def server_cert(hs: Handshake) -> x509.Certificate:
    """Field 6, decoded as a go-plugin host does (base64 without padding)."""
    field = hs.server_cert
    assert field, "AutoMTLS is on but the handshake has no sixth field"
    assert re.fullmatch(r"[A-Za-z0-9+/]+", field), f"field 6 is not unpadded standard base64: {field!r}"
    der = base64.b64decode(field + "=" * (-len(field) % 4), validate=True)
    return x509.load_der_x509_certificate(der)


def _channel(hs: Handshake, creds: Optional[grpc.ChannelCredentials]) -> grpc.Channel:
    # A pool of its own: never reuse another test's connection.
    options = [("grpc.use_local_subchannel_pool", 1)]
    if creds is None:
        return grpc.insecure_channel(hs.target, options=options)
    return grpc.secure_channel(hs.target, creds, options=[*options, ("grpc.ssl_target_name_override", "localhost")])


def mtls(hs: Handshake, client: Optional[Tuple[bytes, bytes]]) -> grpc.ChannelCredentials:
    """Trust exactly the plugin's certificate; present `client` (cert, key) if given."""
    pinned = server_cert(hs).public_bytes(serialization.Encoding.PEM)
    if client is None:
        return grpc.ssl_channel_credentials(root_certificates=pinned)
    cert_pem, key_pem = client
    return grpc.ssl_channel_credentials(root_certificates=pinned, private_key=key_pem, certificate_chain=cert_pem)


def health(channel: grpc.Channel, timeout: float = 10) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    return stub.Check(health_pb2.HealthCheckRequest(service="plugin"), timeout=timeout).status


def _ident(b):
    return b


def start(spawn, curve: str, network: str, sock_dir: Path, **extra: str):
    client = make_cert(curve)
    env = base_env(PLUGIN_CLIENT_CERT=client[0].decode(), PVTEST_NETWORK=network, **extra)
    if network == "unix":
        env["PLUGIN_UNIX_SOCKET_DIR"] = str(sock_dir)
    p = spawn(TEST_PLUGIN, env=env)
    return p, p.handshake(), client


PATHS = [
    pytest.param("P-256", "unix", id="P-256-unix"),
    pytest.param("P-256", "tcp", id="P-256-tcp"),
    pytest.param("P-384", "unix", id="P-384-unix"),
    pytest.param("P-521", "unix", id="P-521-unix-frontend"),
    pytest.param("P-521", "tcp", id="P-521-tcp-frontend"),
]


@pytest.mark.parametrize("curve,network", PATHS)
def test_automtls_serves_tls_to_the_host_only(spawn, sock_dir, tmp_path, curve, network):
    marker = tmp_path / "marker"
    p, hs, client = start(spawn, curve, network, sock_dir, PVTEST_MARKER=str(marker))
    assert hs.network == network
    assert re.fullmatch(r"1\|1\|(unix|tcp)\|[^|]+\|grpc\|[A-Za-z0-9+/]+\n", p.handshake_line)

    with _channel(hs, mtls(hs, client)) as ch:
        assert health(ch) == SERVING
        echo = ch.unary_unary("/pvtest.Test/Print", request_serializer=_ident, response_deserializer=_ident)
        assert echo(b"over tls", timeout=10) == b"ok"
        if network == "unix":
            # The front end's private directory sits in the host's socket
            # directory, which the host removes even after a SIGKILL.
            private = [d.name for d in sock_dir.iterdir() if d.is_dir()]
            assert [n.startswith("plugvisor-tls-") for n in private] == ([True] if curve == "P-521" else [])

        # Refused: TLS without a client certificate.
        with _channel(hs, mtls(hs, None)) as anon, pytest.raises(grpc.RpcError) as e:
            health(anon, timeout=5)
        assert e.value.code() != grpc.StatusCode.OK
        # Refused: plaintext.
        with _channel(hs, None) as plain, pytest.raises(grpc.RpcError):
            health(plain, timeout=5)
        # Refused: a client certificate of the right shape that the host did not hand over.
        with _channel(hs, mtls(hs, make_cert(curve))) as stranger, pytest.raises(grpc.RpcError):
            health(stranger, timeout=5)

        # The refusals did not hurt the server: the host still gets in, on a new connection too.
        assert health(ch) == SERVING
        with _channel(hs, mtls(hs, client)) as again:
            assert health(again) == SERVING
        ch.unary_unary("/plugin.GRPCController/Shutdown", request_serializer=_ident, response_deserializer=_ident)(
            b"", timeout=10
        )
    assert p.wait_exit() == 0
    assert marker.read_text().splitlines() == ["cleanup ran"]
    if network == "unix":
        assert not Path(hs.address).exists()
        assert list(sock_dir.iterdir()) == []


def test_server_certificate_is_go_plugin_shaped(spawn, sock_dir):
    p, hs, _ = start(spawn, "P-256", "unix", sock_dir)
    cert = server_cert(hs)
    now = datetime.datetime.now(datetime.timezone.utc)
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    assert [a.value for a in cn] == ["localhost"]
    assert cert.issuer == cert.subject
    cert.verify_directly_issued_by(cert)  # self-signed
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert bc.ca is True
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature and ku.key_encipherment and ku.key_cert_sign
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    key = cert.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"
    assert now - datetime.timedelta(minutes=5) < cert.not_valid_before_utc < now
    assert cert.not_valid_after_utc > now + datetime.timedelta(days=365)

    # A fresh certificate every start.
    p2, hs2, _ = start(spawn, "P-256", "unix", sock_dir)
    assert hs2.server_cert != hs.server_cert
    for proc in (p, p2):
        proc.signal(signal.SIGTERM)
        assert proc.wait_exit() == 0


def test_example_from_its_own_venv_under_automtls(spawn, sock_dir):
    py = EXAMPLE_DIR / "venv" / "bin" / "python"
    if not py.exists():
        pytest.skip("examples/plugins/hello-python/venv is missing; run scripts/setup-python")
    # The whole lifecycle, the host API over the broker with TLS included.
    with PluginHost(EXAMPLE, python=str(py), automtls=True, configuration={"greeting": "Hi"}) as host:
        assert host.handshake is not None and host.handshake.server_cert is not None
        assert host.kv.data == {"activations": b"1"}
    assert [r.message for r in host.logs.records] == ["activated", "goodbye"]


@pytest.mark.parametrize("value", ["not a certificate", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"])
def test_a_bad_client_cert_is_a_clear_error(spawn, sock_dir, value):
    env = base_env(PLUGIN_UNIX_SOCKET_DIR=str(sock_dir), PLUGIN_CLIENT_CERT=value)
    p = spawn(TEST_PLUGIN, env=env)
    assert p.wait_exit() == 1
    err = p.stderr_text()
    assert "cannot start" in err and "PLUGIN_CLIENT_CERT" in err and "PEM certificate" in err
    assert p.rest_of_stdout() == "", "no handshake line after a failed start"
    assert list(sock_dir.iterdir()) == []


@pytest.mark.parametrize("with_tls", [False, True], ids=["plaintext", "automtls"])
def test_cryptography_is_imported_only_for_automtls(spawn, sock_dir, with_tls):
    # An empty PLUGIN_CLIENT_CERT means "no AutoMTLS", as in go-plugin.
    client_cert = make_cert()[0].decode() if with_tls else ""
    env = base_env(PLUGIN_UNIX_SOCKET_DIR=str(sock_dir), PVTEST_REPORT_MODULES="1", PLUGIN_CLIENT_CERT=client_cert)
    p = spawn(TEST_PLUGIN, env=env)
    hs = p.handshake()
    assert (hs.server_cert is not None) == with_tls
    p.signal(signal.SIGTERM)
    assert p.wait_exit() == 0
    reports = [json.loads(line) for line in p.stderr_text().splitlines() if '"modules"' in line]
    assert [r["cryptography"] for r in reports] == [with_tls]
