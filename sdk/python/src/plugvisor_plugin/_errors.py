"""The exceptions a plugin sees from the host API and the broker.

The host answers host-API calls with gRPC statuses; each one a plugin can
act on has its own exception here (a grpc.RpcError never reaches plugin
code). No grpc import: these are importable from `plugvisor_plugin` for free.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    import grpc


def rpc_status(e: BaseException) -> tuple[grpc.StatusCode | None, str]:
    """(status code, details) of a failed gRPC call; (None, "") when it carries none."""
    code = getattr(e, "code", None)
    details = getattr(e, "details", None)
    return (code() if callable(code) else None), ((details() if callable(details) else None) or "")


class HostApiError(Exception):
    """A host-API call failed. `code` is the gRPC status, `details` the host's message."""

    def __init__(self, message: str, code: grpc.StatusCode | None = None, details: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.details = details


class InvalidArgument(HostApiError, ValueError):
    """The host refused an argument (INVALID_ARGUMENT): a bad key, say."""


class LimitExceeded(HostApiError):
    """A size or rate limit of the host (RESOURCE_EXHAUSTED); the message says which."""


class HostUnavailable(HostApiError, ConnectionError):
    """The host (or its store) cannot serve the call now (UNAVAILABLE)."""


class NoHostApi(HostApiError, RuntimeError):
    """The plugin has no host API: it is not activated yet, or its host serves none."""


class BrokerTimeout(HostApiError, TimeoutError):
    """The host did not announce a broker connection in time."""
