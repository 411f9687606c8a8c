"""go-plugin's AutoMTLS, plugin side.

A host that turns AutoMTLS on puts the PEM of a self-signed client
certificate in PLUGIN_CLIENT_CERT. The plugin then makes a self-signed server
certificate of its own, serves gRPC over TLS that requires a client
certificate signed by (in practice: equal to) the one in PLUGIN_CLIENT_CERT,
and announces its certificate in the handshake's sixth field, which the host
pins. Both sides use the name "localhost".

This module imports `cryptography` (and grpc) at the top, so serve() imports
it only when PLUGIN_CLIENT_CERT is set: a TLS-less plugin never pays for it.
"""

from __future__ import annotations

import datetime
import os
import socket
import threading
from dataclasses import dataclass
from typing import Any, Optional

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ._handshake import ENV_CLIENT_CERT, ENV_UNIX_SOCKET_DIR, HandshakeError, unix_path_fits

#: The name in the server certificate; hosts connect with this server name.
SERVER_NAME = "localhost"
#: The certificate is valid from this long before it was made (clock skew
#: between the two processes' views of "now" is not an error)...
BACKDATE = datetime.timedelta(minutes=1)
#: ...until this long after. It lives only as long as the process, and is
#: pinned by exactly one host, so a long life costs nothing, while a short one
#: would make a host's reconnect to a long-running plugin fail once it expired.
#: go-plugin's own plugins use about 30 years too.
VALIDITY = datetime.timedelta(days=30 * 365)


@dataclass(frozen=True)
class ServerIdentity:
    """The plugin's throwaway server certificate and its key."""

    cert_pem: bytes
    key_pem: bytes
    cert_der: bytes


@dataclass(frozen=True)
class ClientTrust:
    """What PLUGIN_CLIENT_CERT says: the PEM to trust, and whether grpc's
    own TLS (BoringSSL) can check a client holding that certificate's key."""

    pem: bytes
    grpc_native: bool


def load_client_cert(pem: str) -> ClientTrust:
    """Check PLUGIN_CLIENT_CERT and return what the server should trust.

    Raises HandshakeError, naming the variable, when it holds no PEM
    certificate; grpc's own error for that would be far less clear.
    """
    data = pem.strip().encode("ascii", "replace") + b"\n"
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as e:
        raise HandshakeError(
            f"the host set {ENV_CLIENT_CERT} (AutoMTLS) but it does not hold a PEM "
            f"certificate ({e}); this is a bug in the plugin host"
        ) from None
    if not certs:  # pragma: no cover - load_pem_x509_certificates raises instead
        raise HandshakeError(f"{ENV_CLIENT_CERT} holds no certificate")
    return ClientTrust(pem=data, grpc_native=all(grpc_can_verify_key(c.public_key()) for c in certs))


def grpc_can_verify_key(public_key: Any) -> bool:
    """Whether grpcio's BoringSSL accepts a TLS client proving it holds this key.

    BoringSSL's server offers the client only the signature schemes
    ecdsa_secp256r1_sha256, ecdsa_secp384r1_sha384 and the RSA ones, and
    grpcio has no setting to change that (grpc/grpc#41089). go-plugin's Go
    host makes its AutoMTLS client key on P-521, whose only scheme is
    ecdsa_secp521r1_sha512: such a client finds nothing it may sign with,
    sends no certificate, and BoringSSL refuses it. Those keys get the
    standard library's TLS (OpenSSL) instead, see TlsFrontend.
    """
    from cryptography.hazmat.primitives.asymmetric import rsa

    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return public_key.curve.name in ("secp256r1", "secp384r1")
    return isinstance(public_key, rsa.RSAPublicKey)


def generate_server_identity(now: Optional[datetime.datetime] = None) -> ServerIdentity:
    """A fresh self-signed ECDSA P-256 certificate for "localhost".

    Shaped like go-plugin's AutoMTLS certificates: CN and DNS SAN
    "localhost", a CA (so that it can be its own trust root), key usage
    digitalSignature, keyEncipherment and keyCertSign, extended key usage
    serverAuth and clientAuth, valid from a minute ago.
    """
    if now is None:
        now = datetime.datetime.now(datetime.timezone.utc)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, SERVER_NAME)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(int.from_bytes(os.urandom(16), "big") >> 1 or 1)
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(SERVER_NAME)]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return ServerIdentity(
        cert_pem=cert.public_bytes(serialization.Encoding.PEM),
        key_pem=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        cert_der=cert.public_bytes(serialization.Encoding.DER),
    )


def server_credentials(identity: ServerIdentity, client_pem: bytes) -> Any:
    """grpc credentials: serve `identity`, require a client certificate that
    chains to `client_pem` (the host's self-signed certificate) and nothing else."""
    import grpc

    return grpc.ssl_server_credentials(
        [(identity.key_pem, identity.cert_pem)],
        root_certificates=client_pem,
        require_client_auth=True,
    )


def _private_parent() -> Optional[str]:
    """Where the front end's private directory goes.

    Inside the host's socket directory when the backend socket's path fits
    there: the host removes that directory even after a SIGKILL, which the
    plugin cannot clean up after. The system temp directory otherwise.
    """
    parent = os.environ.get(ENV_UNIX_SOCKET_DIR)
    # mkdtemp adds 8 characters to the prefix; the socket is "grpc.sock".
    probe = os.path.join(parent or "", "plugvisor-tls-XXXXXXXX", "grpc.sock")
    if parent and os.path.isdir(parent) and unix_path_fits(probe):
        return parent
    return None


class TlsFrontend:
    """TLS in front of a plaintext grpc server, for clients BoringSSL refuses.

    Terminates TLS with the standard library's ssl module (OpenSSL, which
    accepts every curve go-plugin uses), requiring a client certificate that
    chains to the host's, and relays each connection's bytes to the grpc
    server on a unix socket in a private (0700) directory. One asyncio loop
    in a daemon thread serves every connection. grpc itself imports asyncio
    and ssl, so this costs nothing at start-up.
    """

    #: A client that has not finished its TLS handshake by then is dropped.
    HANDSHAKE_TIMEOUT = 10.0
    _CHUNK = 256 * 1024

    def __init__(self, identity: ServerIdentity, client_pem: bytes, log: Any) -> None:
        import ssl
        import tempfile

        self._log = log
        self.private_dir = tempfile.mkdtemp(prefix="plugvisor-tls-", dir=_private_parent())  # mode 0700
        self.backend_path = os.path.join(self.private_dir, "grpc.sock")
        try:
            self._ctx = self._ssl_context(ssl, identity, client_pem)
        except BaseException:
            import shutil

            shutil.rmtree(self.private_dir, ignore_errors=True)
            raise
        self._loop: Any = None
        self._thread: Optional[threading.Thread] = None
        self._server: Any = None
        self._writers: set[Any] = set()

    def _ssl_context(self, ssl: Any, identity: ServerIdentity, client_pem: bytes) -> Any:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cadata=client_pem.decode("ascii"))
        ctx.set_alpn_protocols(["h2"])
        # load_cert_chain reads files only: the key sits in the private
        # directory (0600) for as long as it takes to load it.
        cert_path = os.path.join(self.private_dir, "server.pem")
        fd = os.open(cert_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(identity.key_pem + identity.cert_pem)
            ctx.load_cert_chain(cert_path)
        finally:
            os.unlink(cert_path)
        return ctx

    def start(self, listener: socket.socket) -> None:
        """Serve TLS on `listener` (bound and listening) from now on."""
        import asyncio

        loop = asyncio.new_event_loop()
        loop.set_exception_handler(self._on_loop_error)
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="plugvisor-tls", daemon=True)
        self._thread.start()

        async def listen() -> Any:
            return await asyncio.start_server(
                self._relay,
                sock=listener,
                ssl=self._ctx,
                ssl_handshake_timeout=self.HANDSHAKE_TIMEOUT,
                limit=self._CHUNK,
            )

        self._server = asyncio.run_coroutine_threadsafe(listen(), loop).result(30)

    async def _relay(self, reader: Any, writer: Any) -> None:
        import asyncio

        self._writers.add(writer)
        try:
            try:
                b_reader, b_writer = await asyncio.open_unix_connection(self.backend_path, limit=self._CHUNK)
            except OSError as e:
                self._log.warning("TLS front end: cannot reach the grpc server", extra={"error": str(e)})
                return
            self._writers.add(b_writer)
            try:
                pumps = [
                    asyncio.ensure_future(self._pump(reader, b_writer)),
                    asyncio.ensure_future(self._pump(b_reader, writer)),
                ]
                # HTTP/2 has no use for a half-open connection: when either
                # side ends, end both.
                _, pending = await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
                for p in pending:
                    p.cancel()
            finally:
                self._writers.discard(b_writer)
                b_writer.close()
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _pump(self, reader: Any, writer: Any) -> None:
        try:
            while True:
                data = await reader.read(self._CHUNK)
                if not data:
                    return
                writer.write(data)
                await writer.drain()
        except (OSError, EOFError):
            return

    def _on_loop_error(self, loop: Any, context: dict[str, Any]) -> None:
        # Not the refused clients (a failed TLS handshake is an OSError,
        # which asyncio drops quietly) but anything unexpected.
        exc = context.get("exception")
        self._log.warning(
            "TLS front end: " + str(context.get("message", "error")),
            extra={"error": repr(exc) if exc is not None else ""},
        )

    def close(self) -> None:
        """Stop listening, drop every connection, remove the private directory."""
        loop = self._loop
        if loop is not None and self._thread is not None and self._thread.is_alive():

            def stop() -> None:
                if self._server is not None:
                    self._server.close()
                for w in list(self._writers):
                    w.close()
                loop.call_soon(loop.stop)

            try:
                loop.call_soon_threadsafe(stop)
            except RuntimeError:
                pass  # the loop is already closed
            self._thread.join(1.0)
        import shutil

        shutil.rmtree(self.private_dir, ignore_errors=True)
