"""Endpoints and sockets of the bus: one function makes every socket, whatever the transport.

The topology is configuration: ``inproc://name`` (one process), ``ipc:///path`` (one host) and
``tcp://host:port`` (across hosts) all go through :func:`make_socket`, which applies the same
liveness options everywhere and CURVE security on TCP. The promises it keeps:

* every socket has ``LINGER 0``, ZeroMQ heartbeats (``HEARTBEAT_IVL``/``TIMEOUT``/``TTL``) and TCP
  keepalive, so a silently vanished peer is noticed in seconds (see :mod:`trader.bus.liveness`
  for the application heartbeats layered on top);
* a ``tcp://`` socket is encrypted with CURVE: the binding side is the CURVE server and admits only
  the client public keys in its allowlist (checked by a ZAP handler, which logs each rejection;
  handshakes ZeroMQ fails before asking it, such as a plaintext peer's, are logged too);
  the connecting side is a CURVE client that must know the server's public key;
* plaintext TCP happens only when :attr:`Security.plaintext_tcp` is set, and never on a socket
  bound to a non-loopback address.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, overload

import zmq
import zmq.asyncio

from trader.errors import ConfigError

__all__ = [
    "DEFAULT_HEARTBEAT_MS",
    "MAX_IPC_PATH",
    "Endpoint",
    "Security",
    "bound_endpoint",
    "make_socket",
    "parse_endpoint",
]

logger = logging.getLogger("trader.bus.transport")

#: Longest ``ipc://`` socket path the operating systems we run on accept (sun_path, minus NUL).
MAX_IPC_PATH = 103
#: Interval of ZeroMQ heartbeats when the caller does not choose one.
DEFAULT_HEARTBEAT_MS = 1000

Scheme = Literal["inproc", "ipc", "tcp"]
_SCHEMES: tuple[Scheme, ...] = ("inproc", "ipc", "tcp")
_HOST = re.compile(r"^(\*|[A-Za-z0-9_.\-]+|\[[0-9A-Fa-f:.]+\])$")
_Z85_KEY = re.compile(rb"^[0-9a-zA-Z.\-:+=^!/*?&<>()\[\]{}@%$#]{40}$")


@dataclass(frozen=True)
class Endpoint:
    """A parsed bus address. Build it with :func:`parse_endpoint`; ``url`` is what ZeroMQ takes.

    ``host``/``port`` are set for ``tcp`` (``port`` 0 means "any free port", written ``*``);
    ``path`` holds the inproc name or the ipc file path.
    """

    scheme: Scheme
    host: str | None = None
    port: int | None = None
    path: str | None = None

    @property
    def url(self) -> str:
        """The address in ZeroMQ's syntax (``tcp://127.0.0.1:*`` for port 0)."""
        if self.scheme == "tcp":
            port = "*" if not self.port else str(self.port)
            return f"tcp://{self.host}:{port}"
        return f"{self.scheme}://{self.path}"

    @property
    def is_tcp(self) -> bool:
        """True for ``tcp://`` endpoints, the only ones that cross hosts and need CURVE."""
        return self.scheme == "tcp"

    @property
    def is_loopback(self) -> bool:
        """True when a TCP endpoint names this host only (127.0.0.0/8, ::1, localhost, lo).

        Always True for inproc and ipc, which never leave the host.
        """
        if self.scheme != "tcp":
            return True
        host = (self.host or "").strip("[]")
        if host in ("localhost", "lo"):
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False

    def __str__(self) -> str:
        return self.url


def parse_endpoint(text: str) -> Endpoint:
    """Parse ``inproc://name``, ``ipc:///path`` or ``tcp://host:port`` into an :class:`Endpoint`.

    ``tcp`` takes a host name, an IPv4 address, ``[IPv6]``, ``*`` (all interfaces) or an
    interface name, and a port 0-65535 or ``*``. Raises :class:`~trader.errors.ConfigError`
    saying what is wrong with the text and what a valid endpoint looks like.
    """
    if not isinstance(text, str):
        raise ConfigError([f"bus endpoint {text!r} is not a string: write e.g. tcp://host:5555"])
    raw = text.strip()
    scheme, sep, rest = raw.partition("://")
    if not sep or scheme not in _SCHEMES:
        raise ConfigError(
            [
                f"bus endpoint {text!r}: unknown transport; use inproc://NAME, ipc:///PATH "
                "or tcp://HOST:PORT"
            ]
        )
    if scheme == "inproc":
        if not rest:
            raise ConfigError([f"bus endpoint {text!r}: inproc needs a name, e.g. inproc://broker"])
        return Endpoint("inproc", path=rest)
    if scheme == "ipc":
        if not rest:
            raise ConfigError(
                [f"bus endpoint {text!r}: ipc needs a path, e.g. ipc:///tmp/trader.sock"]
            )
        if len(rest.encode()) > MAX_IPC_PATH:
            raise ConfigError(
                [
                    f"bus endpoint {text!r}: ipc path is {len(rest.encode())} bytes, longer than "
                    f"the {MAX_IPC_PATH} the OS allows; choose a shorter path"
                ]
            )
        return Endpoint("ipc", path=rest)
    host, colon, port_text = rest.rpartition(":")
    if not colon or not host or not port_text:
        raise ConfigError(
            [f"bus endpoint {text!r}: tcp needs HOST:PORT, e.g. tcp://127.0.0.1:5555"]
        )
    if not _HOST.match(host):
        raise ConfigError(
            [f"bus endpoint {text!r}: {host!r} is not a host name, IP address or [IPv6] address"]
        )
    if port_text == "*":
        port = 0
    elif port_text.isdigit() and int(port_text) <= 65535:
        port = int(port_text)
    else:
        raise ConfigError(
            [f"bus endpoint {text!r}: port {port_text!r} must be a number 0-65535 or *"]
        )
    return Endpoint("tcp", host=host, port=port)


def _check_key(name: str, value: bytes | None) -> None:
    if value is not None and not _Z85_KEY.match(value):
        raise ConfigError(
            [
                f"bus security: {name} is not a 40-character Z85 CURVE key; make keys with "
                "`trader keys generate`"
            ]
        )


@dataclass(frozen=True)
class Security:
    """How a socket protects TCP traffic. Keys are Z85 text as bytes (40 characters).

    * A binding (server) socket on ``tcp://`` needs ``public_key``/``secret_key`` (its own keypair)
      and ``allowed_client_keys``: only clients presenting one of these public keys get in.
      An empty allowlist admits nobody.
    * A connecting (client) socket on ``tcp://`` needs its own keypair and
      ``server_public_key``.
    * ``plaintext_tcp=True`` permits TCP without CURVE when no keys are given (explicit opt-in
      for trusted setups and benchmarks); binding a non-loopback address still requires CURVE.

    ``inproc://`` and ``ipc://`` sockets never use CURVE; the settings are ignored there.
    The secret key never appears in ``repr`` (nor in log lines or error messages).
    Load keys from files with :meth:`server` and :meth:`client` (see :mod:`trader.bus.security`).
    """

    public_key: bytes | None = None
    secret_key: bytes | None = field(default=None, repr=False)
    server_public_key: bytes | None = None
    allowed_client_keys: frozenset[bytes] = field(default_factory=frozenset)
    plaintext_tcp: bool = False

    def __post_init__(self) -> None:
        _check_key("public_key", self.public_key)
        _check_key("secret_key", self.secret_key)
        _check_key("server_public_key", self.server_public_key)
        for key in self.allowed_client_keys:
            _check_key("an allowed client key", key)
        if (self.public_key is None) != (self.secret_key is None):
            raise ConfigError(
                ["bus security: give both public_key and secret_key (a keypair), or neither"]
            )

    @property
    def has_keypair(self) -> bool:
        """True when this side has its own CURVE keypair."""
        return self.public_key is not None and self.secret_key is not None

    @classmethod
    def server(
        cls, keypair_file: str | Path, allowed: str | Path | list[bytes] | frozenset[bytes]
    ) -> Security:
        """Load a server keypair file and an allowlist (a key directory or a list of keys)."""
        from trader.bus.security import load_keypair, load_public_keys

        public, secret = load_keypair(keypair_file)
        keys = load_public_keys(allowed) if isinstance(allowed, str | Path) else frozenset(allowed)
        return cls(public_key=public, secret_key=secret, allowed_client_keys=keys)

    @classmethod
    def client(cls, keypair_file: str | Path, server_public_key: str | Path | bytes) -> Security:
        """Load a client keypair file and the server's public key (a key file or the key)."""
        from trader.bus.security import load_keypair, load_public_key

        public, secret = load_keypair(keypair_file)
        server_key = (
            server_public_key
            if isinstance(server_public_key, bytes)
            else load_public_key(server_public_key)
        )
        return cls(public_key=public, secret_key=secret, server_public_key=server_key)


def _apply_liveness(socket: zmq.Socket[Any], heartbeat_ms: int) -> None:
    socket.setsockopt(zmq.LINGER, 0)
    if heartbeat_ms > 0:
        socket.setsockopt(zmq.HEARTBEAT_IVL, heartbeat_ms)
        # A PING leaves at most one interval after the peer fell silent and its answer is
        # awaited two more: a dead peer's connection is dropped within three intervals.
        socket.setsockopt(zmq.HEARTBEAT_TIMEOUT, 2 * heartbeat_ms)
        # TTL travels in deciseconds with a 16-bit ceiling.
        socket.setsockopt(zmq.HEARTBEAT_TTL, min(3 * heartbeat_ms, 6_553_500))
    keepalive_s = max(1, heartbeat_ms // 1000) if heartbeat_ms > 0 else 1
    socket.setsockopt(zmq.TCP_KEEPALIVE, 1)
    socket.setsockopt(zmq.TCP_KEEPALIVE_IDLE, keepalive_s)
    socket.setsockopt(zmq.TCP_KEEPALIVE_INTVL, keepalive_s)
    socket.setsockopt(zmq.TCP_KEEPALIVE_CNT, 3)


def _apply_security(
    socket: zmq.Socket[Any],
    context: zmq.Context[Any],
    endpoint: Endpoint,
    bind: bool,
    security: Security | None,
) -> None:
    if not endpoint.is_tcp:
        return
    role = "bind" if bind else "connect"
    curve = security is not None and security.has_keypair
    if not curve:
        if security is None or not security.plaintext_tcp:
            raise ConfigError(
                [
                    f"bus endpoint {endpoint.url}: TCP needs CURVE keys (make them with "
                    "`trader keys generate`) or plaintext_tcp = true to allow plaintext"
                ]
            )
        if bind and not endpoint.is_loopback:
            raise ConfigError(
                [
                    f"bus endpoint {endpoint.url}: refusing to bind plaintext TCP on a "
                    "non-loopback address; configure CURVE keys or bind 127.0.0.1"
                ]
            )
        return
    assert security is not None and security.public_key and security.secret_key
    if bind:
        from trader.bus.security import ensure_authenticator

        authenticator = ensure_authenticator(context)
        if not security.allowed_client_keys:
            logger.warning(
                "bus endpoint %s: the CURVE allowlist is empty, so no client can connect; "
                "add client public keys (allowed_client_keys)",
                endpoint.url,
            )
        socket.setsockopt(zmq.CURVE_SERVER, 1)
        socket.setsockopt(zmq.CURVE_PUBLICKEY, security.public_key)
        socket.setsockopt(zmq.CURVE_SECRETKEY, security.secret_key)
        domain = authenticator.add_domain(security.allowed_client_keys, endpoint.url)
        socket.setsockopt(zmq.ZAP_DOMAIN, domain.encode())
        # Fail closed if the ZAP handler is ever missing instead of admitting everyone.
        socket.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)
        # Log handshakes ZeroMQ fails before asking ZAP (plaintext peers, wrong server key);
        # the domain goes away with the socket.
        authenticator.watch(socket, domain)
        return
    if security.server_public_key is None:
        raise ConfigError(
            [
                f"bus endpoint {endpoint.url}: a CURVE client ({role}) needs the server's public "
                "key (server_public_key)"
            ]
        )
    socket.setsockopt(zmq.CURVE_SERVERKEY, security.server_public_key)
    socket.setsockopt(zmq.CURVE_PUBLICKEY, security.public_key)
    socket.setsockopt(zmq.CURVE_SECRETKEY, security.secret_key)


@overload
def make_socket(
    context: zmq.asyncio.Context,
    socket_type: int,
    endpoint: str | Endpoint,
    *,
    bind: bool,
    security: Security | None = None,
    heartbeat_ms: int = DEFAULT_HEARTBEAT_MS,
    options: Mapping[int, int | bytes] | None = None,
) -> zmq.asyncio.Socket: ...


@overload
def make_socket(
    context: zmq.Context[zmq.Socket[bytes]],
    socket_type: int,
    endpoint: str | Endpoint,
    *,
    bind: bool,
    security: Security | None = None,
    heartbeat_ms: int = DEFAULT_HEARTBEAT_MS,
    options: Mapping[int, int | bytes] | None = None,
) -> zmq.Socket[bytes]: ...


def make_socket(
    context: zmq.Context[Any],
    socket_type: int,
    endpoint: str | Endpoint,
    *,
    bind: bool,
    security: Security | None = None,
    heartbeat_ms: int = DEFAULT_HEARTBEAT_MS,
    options: Mapping[int, int | bytes] | None = None,
) -> Any:
    """Create a socket of ``socket_type``, secure it, then bind or connect it to ``endpoint``.

    ``options`` are extra socket options (``{zmq.SNDHWM: 100_000}``) set before bind/connect.
    Returns a socket of the context's flavour (an asyncio socket for ``zmq.asyncio.Context``).
    Raises :class:`~trader.errors.ConfigError` for a bad endpoint, plaintext TCP without
    ``security.plaintext_tcp``, a plaintext bind on a non-loopback address, or a CURVE client
    without the server key; a failed bind (address in use) is a ConfigError naming the address.
    The socket is closed again on any failure. Find the port picked for ``tcp://host:0`` with
    :func:`bound_endpoint`.
    """
    parsed = endpoint if isinstance(endpoint, Endpoint) else parse_endpoint(endpoint)
    socket = context.socket(socket_type)
    try:
        _apply_liveness(socket, heartbeat_ms)
        for option, value in (options or {}).items():
            socket.setsockopt(option, value)
        _apply_security(socket, context, parsed, bind, security)
        if bind:
            try:
                socket.bind(parsed.url)
            except zmq.ZMQError as exc:
                raise ConfigError(
                    [f"bus endpoint {parsed.url}: cannot bind ({exc}); pick another address"]
                ) from exc
            if parsed.is_tcp and security is not None and security.has_keypair:
                from trader.bus.security import ensure_authenticator

                domain = socket.getsockopt(zmq.ZAP_DOMAIN)
                assert isinstance(domain, bytes)
                ensure_authenticator(context).label_domain(domain.decode(), bound_endpoint(socket))
        else:
            socket.connect(parsed.url)
    except BaseException:
        socket.close(linger=0)
        raise
    return socket


def bound_endpoint(socket: zmq.Socket[Any]) -> str:
    """The address a bound socket actually listens on (with the real port for ``:0``/``*``)."""
    last = socket.getsockopt(zmq.LAST_ENDPOINT)
    assert isinstance(last, bytes)
    return last.decode()
