"""Errors of the bus: what a caller of a service can see go wrong.

Every class derives from :class:`~trader.errors.TraderError`, so the CLI reports them on one line.
"""

from __future__ import annotations

from trader.errors import TraderError


class BusError(TraderError):
    """A bus operation failed: a malformed message, a protocol violation or a misuse of the API."""


class MalformedMessage(BusError):
    """Bytes received from a socket are not a valid envelope; the receiver drops them."""


class NotUnderstood(BusError):
    """The receiver does not know the message's type (or its schema version) and refused it."""

    def __init__(self, type_name: str, detail: str = "") -> None:
        self.type_name = type_name
        message = f"message type {type_name!r} not understood"
        if detail:
            message += f": {detail}"
        super().__init__(message + "; register the type on both sides of the call")


class ServiceUnavailable(BusError):
    """No worker serves the named service, so the broker refused the call after a bounded wait."""

    def __init__(self, service: str, detail: str = "") -> None:
        self.service = service
        message = f"service {service!r} is unavailable: no worker serves it"
        if detail:
            message += f" ({detail})"
        super().__init__(message + "; start a worker for it or check the bus endpoint")


class CallTimeout(BusError):
    """A call got no reply within its timeout, retries included."""

    def __init__(self, service: str, timeout: float, attempts: int) -> None:
        self.service = service
        self.timeout = timeout
        self.attempts = attempts
        super().__init__(
            f"call to service {service!r} got no reply within {timeout:g} s "
            f"({attempts} attempt{'s' if attempts != 1 else ''}); is its worker running and "
            "is the broker reachable?"
        )


class RemoteError(BusError):
    """The service's handler raised; ``error_type`` names the remote exception class."""

    def __init__(self, service: str, error_type: str, remote_message: str) -> None:
        self.service = service
        self.error_type = error_type
        self.remote_message = remote_message
        super().__init__(f"service {service!r} failed with {error_type}: {remote_message}")
