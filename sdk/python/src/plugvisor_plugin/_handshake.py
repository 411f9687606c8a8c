"""The pure parts of the go-plugin handshake.

Nothing here opens a socket, starts a thread or imports grpc, so it is cheap
to import and easy to unit-test: the magic cookie check, app-version
negotiation, the handshake line, the tcp port range and the unix socket name.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not imported at run time: keep `import plugvisor_plugin` light
    import random
    from typing import Iterable, Iterator, Mapping, Optional, Sequence, Tuple, Union

    AppVersion = Union[int, Sequence[int]]

DEFAULT_COOKIE_KEY = "MATTERMOST_PLUGIN"
DEFAULT_COOKIE_VALUE = "Securely message teams, anywhere."

#: go-plugin's core protocol version. Only 1 exists.
CORE_PROTOCOL_VERSION = 1

ENV_PROTOCOL_VERSIONS = "PLUGIN_PROTOCOL_VERSIONS"
ENV_MIN_PORT = "PLUGIN_MIN_PORT"
ENV_MAX_PORT = "PLUGIN_MAX_PORT"
ENV_UNIX_SOCKET_DIR = "PLUGIN_UNIX_SOCKET_DIR"
ENV_CLIENT_CERT = "PLUGIN_CLIENT_CERT"

#: Ports tried when only one end of the range is given.
DEFAULT_MIN_PORT = 1024
DEFAULT_MAX_PORT = 65535

# sun_path is 108 bytes on Linux and 104 on the BSDs/macOS, NUL included.
MAX_UNIX_PATH_BYTES = 103 if sys.platform == "darwin" or "bsd" in sys.platform else 107

class HandshakeError(Exception):
    """The plugin cannot start: the message says why and what to do.

    serve() prints it on stderr and exits with status 1, before any
    handshake line is written.
    """


def not_a_program_message(program: str) -> str:
    """What a person sees when they run a plugin by hand."""
    return (
        f"{program}: this is a plugin, not a program to run on its own.\n"
        "A plugin host such as plugvisor starts it, hands it the settings it\n"
        "needs and talks to it over gRPC. Run the host instead and point it at\n"
        "the folder that holds this plugin; the host loads it for you.\n"
    )


def cookie_ok(environ: Mapping[str, str], key: str, value: str) -> bool:
    """True when the host set the magic cookie to the expected value."""
    return environ.get(key) == value


def normalize_app_versions(app_version: AppVersion) -> Tuple[int, ...]:
    """The app protocol versions the plugin speaks, as a sorted tuple."""
    if isinstance(app_version, bool):
        raise TypeError("app_version must be an int or a list of ints, not a bool")
    if isinstance(app_version, int):
        versions: Iterable[object] = (app_version,)
    else:
        try:
            versions = tuple(app_version)
        except TypeError:
            raise TypeError(
                f"app_version must be an int or a list of ints, not {type(app_version).__name__}"
            ) from None
    out = []
    for v in versions:
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"app_version entries must be ints, got {v!r}")
        if v < 0:
            raise ValueError(f"app_version entries must not be negative, got {v}")
        out.append(v)
    if not out:
        raise ValueError("app_version must name at least one version")
    return tuple(sorted(set(out)))


def parse_protocol_versions(value: str) -> Tuple[int, ...]:
    """Parse PLUGIN_PROTOCOL_VERSIONS ("1,2,3"); blank entries are skipped."""
    out = []
    for part in value.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            v = int(part, 10)
        except ValueError:
            raise HandshakeError(
                f"{ENV_PROTOCOL_VERSIONS}={value!r} is not a comma-separated list of "
                "integers; this is a bug in the plugin host"
            ) from None
        out.append(v)
    return tuple(out)


def negotiate_app_version(app_version: AppVersion, env_value: Optional[str]) -> int:
    """Pick the highest app version both sides speak.

    env_value is the host's PLUGIN_PROTOCOL_VERSIONS (None when unset). When
    the host says nothing, the plugin's highest version is used.
    """
    ours = normalize_app_versions(app_version)
    if env_value is None or not env_value.strip():
        return ours[-1]
    theirs = parse_protocol_versions(env_value)
    if not theirs:
        return ours[-1]
    common = set(ours) & set(theirs)
    if not common:
        raise _no_common_version(ours, theirs)
    return max(common)


def _no_common_version(ours: Sequence[int], theirs: Sequence[int]) -> HandshakeError:
    def fmt(vs: Sequence[int]) -> str:
        return ", ".join(str(v) for v in sorted(vs))

    return HandshakeError(
        f"the host accepts app protocol version(s) {fmt(theirs)} but this plugin "
        f"speaks only {fmt(ours)}. Use a build of the plugin made for the host's "
        "version, or upgrade the host."
    )


def encode_server_cert(der: bytes) -> str:
    """Handshake field 6: the server certificate's DER in base64 *without*
    padding, as go-plugin writes it (Go's base64.RawStdEncoding)."""
    import base64

    return base64.b64encode(der).decode("ascii").rstrip("=")


def format_handshake(app_version: int, network: str, address: str, server_cert: Optional[bytes] = None) -> str:
    """The handshake line, newline included: CORE|APP|NETWORK|ADDR|grpc, and
    with AutoMTLS a sixth field, the server certificate (DER bytes given here)."""
    if network not in ("unix", "tcp"):
        raise ValueError(f"network must be 'unix' or 'tcp', not {network!r}")
    if not address or any(c in address for c in "|\r\n"):
        raise ValueError(f"address {address!r} cannot go in a handshake line")
    if isinstance(app_version, bool) or not isinstance(app_version, int) or app_version < 0:
        raise ValueError(f"bad app version {app_version!r}")
    line = f"{CORE_PROTOCOL_VERSION}|{app_version}|{network}|{address}|grpc"
    if server_cert is not None:
        if not server_cert:
            raise ValueError("an empty server certificate cannot go in a handshake line")
        line += "|" + encode_server_cert(server_cert)
    return line + "\n"


def port_range(environ: Mapping[str, str]) -> Optional[Tuple[int, int]]:
    """The tcp port range the host allows, or None for "any free port".

    Both PLUGIN_MIN_PORT and PLUGIN_MAX_PORT unset (or empty) means None.
    When only one is set the other end defaults to 1024 / 65535.
    """
    raw_min = (environ.get(ENV_MIN_PORT) or "").strip()
    raw_max = (environ.get(ENV_MAX_PORT) or "").strip()
    if not raw_min and not raw_max:
        return None
    lo = _parse_port(ENV_MIN_PORT, raw_min) if raw_min else DEFAULT_MIN_PORT
    hi = _parse_port(ENV_MAX_PORT, raw_max) if raw_max else DEFAULT_MAX_PORT
    if lo > hi:
        raise HandshakeError(
            f"{ENV_MIN_PORT}={lo} is above {ENV_MAX_PORT}={hi}; the host gave an empty port range"
        )
    return lo, hi


def _parse_port(name: str, raw: str) -> int:
    try:
        v = int(raw, 10)
    except ValueError:
        raise HandshakeError(f"{name}={raw!r} is not a port number") from None
    if not 1 <= v <= 65535:
        raise HandshakeError(f"{name}={v} is not a port number (1-65535)")
    return v


def port_candidates(lo: int, hi: int, rng: Optional[random.Random] = None) -> Iterator[int]:
    """Every port in [lo, hi] once, starting at a random place and wrapping.

    A random start keeps plugins that start together from all fighting over
    the bottom of the range.
    """
    if rng is None:
        import random

        rng = random.Random()
    n = hi - lo + 1
    start = rng.randrange(n)
    for i in range(n):
        yield lo + (start + i) % n


def unix_socket_path(directory: str) -> str:
    """A fresh, unguessable socket file name in directory."""
    return os.path.join(directory, f"plugin{os.urandom(8).hex()}.sock")


def unix_path_fits(path: str) -> bool:
    """Whether path fits in a sockaddr_un."""
    return len(os.fsencode(path)) <= MAX_UNIX_PATH_BYTES
