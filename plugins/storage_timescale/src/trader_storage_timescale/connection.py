"""Where the PostgreSQL server is, how to reach it, and what to do when the connection drops.

Both stores of this plugin take the same connection options (:class:`ConnectionOptions`): a
``dsn`` (a ``postgresql://`` URL or libpq ``key=value`` string, written in the configuration or
read from a secret reference) and an optional ``password`` secret reference. Passwords never
reach a log or an error message: stores are labelled by user, host, port and database only, and
every error text passes through :meth:`Server.mask`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import URL
from sqlalchemy.exc import DBAPIError

from trader.config.secrets import SecretRef
from trader.errors import ConfigError, StorageError

__all__ = [
    "ConnectionOptions",
    "Server",
    "describe",
    "is_connection_error",
    "retrying",
]

T = TypeVar("T")

#: SQLSTATE classes after which reconnecting and trying again can succeed: connection
#: exceptions (08), operator intervention such as a shutdown or a server starting up (57P),
#: serialization failures and deadlocks (40001, 40P01).
_TRANSIENT_STATES = ("08", "57P", "40001", "40P01")


class ConnectionOptions(BaseModel):
    """How a store reaches its PostgreSQL database (shared by the candle and state stores)."""

    # A DSN may carry a password: validation errors never quote the value given.
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    dsn: Annotated[SecretRef | str, Field(union_mode="left_to_right")] = Field(
        description=(
            "The database: a URL such as 'postgresql://trader@db.example:5432/trader' or a "
            "libpq string such as 'host=db.example dbname=trader user=trader'; or a secret "
            "reference (${ENV_VAR} or file:PATH) holding one, when it carries a password."
        ),
    )
    password: SecretRef | None = Field(
        default=None,
        description="A secret reference (${ENV_VAR} or file:PATH) to the password, if any.",
    )
    connect_timeout_s: float = Field(
        default=10.0, gt=0, description="How long one connection attempt may take."
    )
    reconnect_timeout_s: float = Field(
        default=60.0,
        ge=0,
        description=(
            "How long an operation keeps reconnecting, with backoff, after the connection is "
            "lost (a server restart, a failover) before it fails. 0 fails at once."
        ),
    )
    pool_size: int = Field(
        default=4, ge=1, le=64, description="Connections (and worker threads) per store."
    )


@dataclass(frozen=True)
class Server:
    """The resolved connection parameters of a store, with the password kept out of sight."""

    params: dict[str, str]
    password: str | None

    @classmethod
    def from_options(cls, options: ConnectionOptions, what: str) -> Server:
        """Read the DSN (and password) now; raise ConfigError naming ``what`` when malformed."""
        raw = options.dsn.reveal() if isinstance(options.dsn, SecretRef) else options.dsn
        text = raw.strip()
        if text.startswith("postgresql+"):  # a SQLAlchemy URL: drop the driver part
            text = "postgresql" + text[text.index(":") :]
        try:
            params = {key: str(value) for key, value in conninfo_to_dict(text).items()}
        except psycopg.ProgrammingError as error:
            password = _password_in(text)
            message = str(error).splitlines()[0] if str(error) else "malformed"
            if password:
                message = message.replace(password, "***")
            raise ConfigError(
                [
                    f"{what}: dsn is not a PostgreSQL connection string ({message}); write "
                    "postgresql://USER@HOST:PORT/DATABASE or 'host=... dbname=... user=...'"
                ]
            ) from None
        password = params.pop("password", None)
        if options.password is not None:
            password = options.password.reveal()
        return cls(params, password)

    @property
    def label(self) -> str:
        """``user@host:port/database``, for messages (never the password)."""
        user = self.params.get("user", "")
        host = self.params.get("host", "localhost")
        port = self.params.get("port", "5432")
        database = self.params.get("dbname", user or "postgres")
        return f"{user + '@' if user else ''}{host}:{port}/{database}"

    def url(self) -> URL:
        """A SQLAlchemy URL for psycopg 3 (the password travels in it, unrendered)."""
        query = {
            key: value
            for key, value in self.params.items()
            if key not in ("user", "host", "port", "dbname")
        }
        port = self.params.get("port")
        return URL.create(
            "postgresql+psycopg",
            username=self.params.get("user"),
            password=self.password,
            host=self.params.get("host"),
            port=int(port) if port and port.isdigit() else None,
            database=self.params.get("dbname"),
            query=query,
        )

    def mask(self, text: str) -> str:
        """``text`` with the password, wherever it appears, replaced by ``***``."""
        if self.password:
            text = text.replace(self.password, "***")
        return text


def _password_in(text: str) -> str | None:
    """Best effort: the password written in a malformed DSN, so an error can mask it."""
    if "://" in text and "@" in text:
        credentials = text.split("://", 1)[1].rsplit("@", 1)[0]
        if ":" in credentials:
            return credentials.split(":", 1)[1] or None
    for part in text.split():
        if part.startswith("password="):
            return part[len("password=") :] or None
    return None


def _driver_error(error: BaseException) -> BaseException:
    if isinstance(error, DBAPIError) and error.orig is not None:
        return error.orig
    return error


def is_connection_error(error: BaseException) -> bool:
    """Whether ``error`` means the connection broke or the server is (re)starting, so that a
    new connection may well succeed."""
    if isinstance(error, DBAPIError) and error.connection_invalidated:
        return True
    cause = _driver_error(error)
    if isinstance(cause, psycopg.Error):
        state = cause.sqlstate or ""
        if state.startswith(_TRANSIENT_STATES):
            return True
        # No SQLSTATE: the connection itself failed or was found closed.
        return not state and isinstance(cause, psycopg.OperationalError | psycopg.InterfaceError)
    return isinstance(cause, ConnectionError)


def describe(error: BaseException, server: Server) -> str:
    """One line saying what went wrong, without parameters or the password."""
    cause = _driver_error(error)
    lines = [line.strip() for line in str(cause).strip().splitlines() if line.strip()]
    text = lines[0] if lines else type(cause).__name__
    return server.mask(text)


def retrying(
    job: Callable[[], T],
    *,
    timeout_s: float,
    on_retry: Callable[[BaseException, int, float], None] | None = None,
) -> T:
    """Run ``job``; while it fails with a connection error, wait with exponential backoff and
    run it again, until ``timeout_s`` has passed since the first failure.

    ``job`` must be safe to run again after a failure (one transaction, idempotent). Other
    errors, and the last connection error once the time is up, propagate.
    """
    first_failure: float | None = None
    attempt = 0
    while True:
        try:
            return job()
        except (DBAPIError, psycopg.Error, ConnectionError) as error:
            if not is_connection_error(error):
                raise
            now = time.monotonic()
            first_failure = first_failure if first_failure is not None else now
            delay = min(0.05 * 2**attempt, 2.0)
            if now - first_failure + delay > timeout_s:
                raise
            attempt += 1
            if on_retry is not None:
                on_retry(error, attempt, delay)
            time.sleep(delay)


def storage_error(label: str, what: str, error: BaseException, server: Server) -> StorageError:
    """A StorageError for ``error`` while doing ``what``, with a hint for lost connections."""
    hint = ""
    if is_connection_error(error):
        hint = "; the server is unreachable or restarting: check it runs and the dsn is right"
    return StorageError(f"{label}: {what} failed: {describe(error, server)}{hint}")


def connect_args(options: ConnectionOptions, application: str) -> dict[str, Any]:
    """psycopg connection arguments shared by the stores: UTC, a timeout and a name."""
    return {
        "connect_timeout": max(1, round(options.connect_timeout_s)),
        "application_name": application,
        "options": "-c timezone=UTC",
    }
