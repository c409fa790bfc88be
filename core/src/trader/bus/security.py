"""CURVE keys on disk and the ZAP handler that admits only allowlisted clients.

Key files use the format of ``zmq.auth.create_certificates``: ``NAME.key`` holds the public key,
``NAME.key_secret`` the public and the secret key (created with mode 0600, never world readable).
They live in :func:`default_key_dir` unless a directory is given; ``trader keys`` manages them.

Each ZeroMQ context that binds a CURVE server socket gets one :class:`ZapAuthenticator`: a thread
answering ZAP requests (RFC 27) on ``inproc://zeromq.zap.01``. Every bound socket has its own ZAP
domain with its own allowlist; a client whose public key is not on it is refused and a warning
naming the endpoint and the key's fingerprint is logged on ``trader.bus.security``.

ZeroMQ refuses some peers before ZAP is ever asked: a plaintext peer (mechanism mismatch) or a
CURVE client that does not know the server's key. The same thread therefore watches each bound
CURVE socket with a ZeroMQ socket monitor and logs every failed handshake with the endpoint, the
peer's address and the reason (at most once a minute per endpoint and reason, with a count of
the repeats). When the socket closes, its monitor stops and its ZAP domain is removed.
"""

from __future__ import annotations

import datetime
import hashlib
import itertools
import logging
import os
import re
import socket as _socket
import stat
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq
import zmq.auth
from zmq.utils import z85
from zmq.utils.monitor import parse_monitor_message

from trader.errors import ConfigError

__all__ = [
    "KeyInfo",
    "ZapAuthenticator",
    "default_key_dir",
    "ensure_authenticator",
    "fingerprint",
    "generate_keypair",
    "list_keys",
    "load_keypair",
    "load_public_key",
    "load_public_keys",
    "stop_authenticator",
]

logger = logging.getLogger("trader.bus.security")

ZAP_ENDPOINT = "inproc://zeromq.zap.01"
_KEY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
_PUBLIC_SUFFIX = ".key"
_SECRET_SUFFIX = ".key_secret"  # noqa: S105 -- a file suffix, not a secret


def default_key_dir() -> Path:
    """``<TRADER_HOME or the per-user data directory>/keys``: where ``trader keys`` looks."""
    from trader.config.model import default_data_dir

    return default_data_dir() / "keys"


def fingerprint(public_key: bytes) -> str:
    """A short stable name for a Z85 public key: first 16 hex digits of SHA-256 of its bytes.

    Rejections are logged with it and ``trader keys list`` prints it, so they can be matched.
    """
    try:
        raw = z85.decode(public_key)
    except (ValueError, TypeError):
        raw = bytes(public_key)
    return hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True)
class KeyInfo:
    """One key pair (or lone public key) in a key directory. Holds no secret."""

    name: str
    public_key: bytes
    fingerprint: str
    public_file: Path
    has_secret: bool


def _write_new(path: Path, text: str, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(path, mode)


def _key_file_text(public: bytes, secret: bytes | None) -> str:
    what = "secret" if secret else "public"
    lines = [
        f"#   ****  Generated on {datetime.datetime.now().isoformat()} by trader keys  ****",
        f"#   ZeroMQ CURVE {what} key: "
        + (
            "DO NOT PROVIDE THIS FILE TO OTHER USERS nor change its permissions."
            if secret
            else "give this file to the peers that must trust this key."
        ),
        "",
        "metadata",
        "curve",
        f'    public-key = "{public.decode()}"',
    ]
    if secret:
        lines.append(f'    secret-key = "{secret.decode()}"')
    return "\n".join(lines) + "\n"


def generate_keypair(name: str = "trader", directory: str | Path | None = None) -> KeyInfo:
    """Create ``NAME.key`` and ``NAME.key_secret`` (mode 0600) in ``directory``.

    The directory (default :func:`default_key_dir`) is created with mode 0700 if missing.
    Raises :class:`~trader.errors.ConfigError` for a bad name or when either file exists
    (keys are never overwritten).
    """
    if not _KEY_NAME.match(name):
        raise ConfigError(
            [
                f"key name {name!r}: use letters, digits, '.', '_' or '-' (at most 64), "
                "starting with a letter or digit"
            ]
        )
    folder = Path(directory) if directory is not None else default_key_dir()
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    public_file = folder / f"{name}{_PUBLIC_SUFFIX}"
    secret_file = folder / f"{name}{_SECRET_SUFFIX}"
    for path in (public_file, secret_file):
        if path.exists():
            raise ConfigError(
                [f"key {name!r}: {path} already exists; choose another --name or remove it"]
            )
    public, secret = zmq.curve_keypair()
    _write_new(secret_file, _key_file_text(public, secret), 0o600)
    _write_new(public_file, _key_file_text(public, None), 0o644)
    return KeyInfo(name, public, fingerprint(public), public_file, True)


def list_keys(directory: str | Path | None = None) -> list[KeyInfo]:
    """Every ``*.key`` public key in ``directory`` (default :func:`default_key_dir`), by name.

    A missing directory lists nothing; an unreadable key file is a ConfigError naming it.
    """
    folder = Path(directory) if directory is not None else default_key_dir()
    if not folder.is_dir():
        return []
    found: list[KeyInfo] = []
    for path in sorted(folder.glob(f"*{_PUBLIC_SUFFIX}")):
        public = load_public_key(path)
        name = path.name[: -len(_PUBLIC_SUFFIX)]
        has_secret = (folder / f"{name}{_SECRET_SUFFIX}").is_file()
        found.append(KeyInfo(name, public, fingerprint(public), path, has_secret))
    return found


def _load(path: Path) -> tuple[bytes | None, bytes | None]:
    if not path.is_file():
        raise ConfigError([f"key file {path} does not exist; make one with `trader keys generate`"])
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise ConfigError([f"key file {path} is not a CURVE key file ({exc})"]) from exc
    return public, secret


def load_public_key(path: str | Path) -> bytes:
    """The Z85 public key in a ``.key`` or ``.key_secret`` file."""
    public, _ = _load(Path(path))
    if not public:
        raise ConfigError([f"key file {path} holds no public key"])
    return public


def load_keypair(path: str | Path) -> tuple[bytes, bytes]:
    """``(public, secret)`` from ``NAME.key_secret`` (``NAME.key`` or ``NAME`` also find it).

    Refuses a secret file that group or others may read, as ssh does with private keys.
    """
    given = Path(path)
    if given.name.endswith(_SECRET_SUFFIX):
        secret_file = given
    elif given.name.endswith(_PUBLIC_SUFFIX):
        secret_file = given.with_name(given.name + "_secret")
    else:
        secret_file = given.with_name(given.name + _SECRET_SUFFIX)
    public, secret = _load(secret_file)
    if not public or not secret:
        raise ConfigError([f"key file {secret_file} holds no secret key; use NAME.key_secret"])
    if os.name == "posix" and stat.S_IMODE(secret_file.stat().st_mode) & 0o077:
        raise ConfigError(
            [f"key file {secret_file} is readable by others; run chmod 600 {secret_file}"]
        )
    return public, secret


def load_public_keys(directory: str | Path) -> frozenset[bytes]:
    """Every public key in ``directory`` (an allowlist): all ``*.key`` files in it."""
    folder = Path(directory)
    if not folder.is_dir():
        raise ConfigError([f"key directory {folder} does not exist"])
    return frozenset(info.public_key for info in list_keys(folder))


@dataclass
class _Domain:
    allowed: frozenset[bytes] = field(repr=False)
    label: str


#: Socket monitor events of a bound CURVE socket that the authenticator follows.
_HANDSHAKE_FAILURES = {
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL: "handshake failed",
    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: "handshake failed",
    zmq.EVENT_HANDSHAKE_FAILED_AUTH: "refused by the allowlist",
}
_MONITOR_EVENTS = (
    zmq.EVENT_ACCEPTED
    | zmq.EVENT_DISCONNECTED
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_MONITOR_STOPPED
)
_PROTOCOL_REASONS: dict[int, str] = {
    zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH: "the peer does not use CURVE (plaintext?)",
    zmq.PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC: (
        "CURVE cryptographic error (the peer has the wrong server public key?)"
    ),
}
#: One endpoint's handshakes failing for the same reason are logged at most once per this many
#: seconds (a misconfigured client retries every 100 ms), the next line counting the repeats.
LOG_INTERVAL_S = 60.0


def _peer_address(fd: int) -> str:
    """``host:port`` of the TCP peer on file descriptor ``fd`` (``unknown`` when it is gone)."""
    try:
        copy = os.dup(fd)
    except OSError:
        return "unknown"
    try:
        sock = _socket.socket(fileno=copy)
    except OSError:
        os.close(copy)  # not a socket (any more): the descriptor was closed and reused
        return "unknown"
    try:
        peer = sock.getpeername()
    except OSError:
        return "unknown"
    finally:
        sock.close()
    if isinstance(peer, tuple) and len(peer) >= 2:
        host, port = peer[0], peer[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(peer) or "unknown"


def _reason(event: int, value: int) -> str:
    if event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
        return _PROTOCOL_REASONS.get(value, f"ZMTP protocol error {value:#x}")
    if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
        return f"refused by the allowlist (ZAP status {value})"
    detail = zmq.strerror(value) if value else "no detail"
    return f"handshake failed ({detail}; a plaintext peer, or one with the wrong server key?)"


@dataclass
class _Watch:
    """One bound CURVE socket the authenticator's thread follows through its monitor."""

    domain: str
    socket: weakref.ReferenceType[zmq.Socket[Any]]
    address: str
    monitor: zmq.Socket[bytes] | None = None
    peers: dict[int, str] = field(default_factory=dict)
    failures: list[tuple[int, int]] = field(default_factory=list)
    ready: threading.Event = field(default_factory=threading.Event)
    stopped: bool = False


class ZapAuthenticator:
    """Answer ZAP requests for one ZeroMQ context on a thread; admit allowlisted CURVE keys.

    Use :func:`ensure_authenticator` rather than building one: ZeroMQ allows one ZAP handler per
    context. The thread ends on :meth:`stop` or when the context is terminated. It also follows
    the sockets given to :meth:`watch` and logs their failed handshakes.
    """

    _ids = itertools.count(1)

    def __init__(self, context: zmq.Context[Any]) -> None:
        self._context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.shadow(context.underlying)
        self._lock = threading.Lock()
        self._command_lock = threading.Lock()
        self._domains: dict[str, _Domain] = {}
        self._watches: list[_Watch] = []
        self._logged: dict[tuple[str, str], tuple[float, int]] = {}
        self._control = f"inproc://trader-zap-control-{os.getpid()}-{next(self._ids)}"
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="trader-zap", daemon=True)
        #: Clients admitted and refused by the allowlist since start (all domains).
        self.accepted = 0
        self.rejected = 0
        #: Failed handshakes seen on watched sockets (plaintext peers, wrong server keys, ...).
        self.handshake_failures = 0

    @property
    def alive(self) -> bool:
        """True while the handler thread answers requests."""
        return self._thread.is_alive()

    @property
    def domain_count(self) -> int:
        """How many ZAP domains (bound CURVE sockets) are registered."""
        with self._lock:
            return len(self._domains)

    def connected_peers(self) -> list[str]:
        """``host:port`` of every peer connected to a watched socket (handshaking or admitted).

        A peer whose connection closed before its address could be read is not listed.
        """
        with self._lock:
            return sorted(
                peer
                for entry in self._watches
                for peer in entry.peers.values()
                if peer != "unknown"
            )

    def start(self) -> None:
        """Bind the ZAP endpoint and start answering; return once it is bound."""
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise ConfigError(
                [
                    f"bus security: cannot start the ZAP handler ({self._error}); is another "
                    "authenticator (zmq.auth) running in this context?"
                ]
            )

    def add_domain(self, allowed: frozenset[bytes], label: str) -> str:
        """Register an allowlist; return the ZAP domain name to set on the server socket."""
        domain = f"trader-{next(self._ids)}"
        with self._lock:
            self._domains[domain] = _Domain(frozenset(allowed), label)
        return domain

    def remove_domain(self, domain: str) -> None:
        """Forget a domain (its socket is closed); unknown names are ignored."""
        with self._lock:
            self._domains.pop(domain, None)

    def label_domain(self, domain: str, label: str) -> None:
        """Name the endpoint of a domain in log lines (the real address once bound)."""
        with self._lock:
            if domain in self._domains:
                self._domains[domain].label = label

    def watch(self, socket: zmq.Socket[Any], domain: str) -> None:
        """Follow ``socket`` (a CURVE server using ``domain``) until it closes.

        Call before the socket binds, from the thread that owns it. Failed handshakes on it are
        logged; when it closes, the monitor ends and ``domain`` is removed. Attaching another
        monitor to the socket (ZeroMQ allows one) ends the logging but keeps the domain.
        """
        if not self.alive:
            return
        address = f"inproc://trader-zap-monitor-{os.getpid()}-{next(self._ids)}"
        socket.monitor(address, _MONITOR_EVENTS)
        entry = _Watch(domain, weakref.ref(socket), address)
        with self._lock:
            self._watches.append(entry)
        if not self._command(b"WATCH", lambda: entry.ready.wait(5)):
            socket.monitor(None, 0)  # the thread is gone: nothing would read the events
            with self._lock:
                if entry in self._watches:
                    self._watches.remove(entry)

    def stop(self) -> None:
        """Stop the thread and release the ZAP endpoint (idempotent)."""
        if self._thread.is_alive():
            self._command(b"STOP", self._join)

    def _join(self) -> bool:
        self._thread.join(timeout=5)
        return not self._thread.is_alive()

    def _command(self, command: bytes, wait: Callable[[], bool]) -> bool:
        """Send ``command`` to the thread and run ``wait`` before closing the pipe.

        Keep the pipe open until the thread has acted: closing it at once can drop the command.
        """
        with self._command_lock:
            try:
                pipe = self._context.socket(zmq.PUSH)
            except zmq.ZMQError:
                return False  # the context is gone, and the thread with it
            try:
                pipe.setsockopt(zmq.LINGER, 0)
                pipe.connect(self._control)
                pipe.send(command, zmq.NOBLOCK)
                return bool(wait())
            except zmq.ZMQError:
                return False
            finally:
                pipe.close(linger=0)

    def _decide(self, frames: list[bytes]) -> tuple[bytes, bytes, bytes]:
        if len(frames) < 6:
            return b"400", b"malformed ZAP request", b""
        domain = frames[2].decode(errors="replace")
        address = frames[3].decode(errors="replace")
        mechanism = frames[5]
        with self._lock:
            entry = self._domains.get(domain)
        label = entry.label if entry else f"unknown ZAP domain {domain!r}"
        if mechanism != b"CURVE" or len(frames) < 7 or len(frames[6]) != 32:
            self.rejected += 1
            logger.warning(
                "bus: rejected a %s peer from %s on %s: CURVE required",
                mechanism.decode(errors="replace"),
                address,
                label,
            )
            return b"400", b"CURVE required", b""
        key = z85.encode(frames[6])
        if entry is not None and key in entry.allowed:
            self.accepted += 1
            return b"200", b"OK", key
        self.rejected += 1
        logger.warning(
            "bus: rejected CURVE client key fingerprint %s from %s on %s: not in the allowlist",
            fingerprint(key),
            address,
            label,
        )
        return b"400", b"key not allowed", b""

    # -- socket monitors (run on the thread) --------------------------------------------------

    def _connect_watches(self, poller: zmq.Poller) -> None:
        with self._lock:
            pending = [entry for entry in self._watches if entry.monitor is None]
        for entry in pending:
            monitor = self._context.socket(zmq.PAIR)
            monitor.setsockopt(zmq.LINGER, 0)
            monitor.connect(entry.address)
            entry.monitor = monitor
            poller.register(monitor, zmq.POLLIN)
            entry.ready.set()

    def _on_monitor(self, entry: _Watch, poller: zmq.Poller) -> None:
        assert entry.monitor is not None
        while True:
            try:
                frames = entry.monitor.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                message = parse_monitor_message(frames)
            except Exception as exc:  # a monitor only sends its own format; never die on it
                logger.debug("bus: ignored a malformed monitor event: %r", exc)
                continue
            event, value = int(message["event"]), int(message["value"])
            if event == zmq.EVENT_ACCEPTED:
                address = _peer_address(value)
                with self._lock:
                    entry.peers[value] = address
            elif event in _HANDSHAKE_FAILURES:
                entry.failures.append((event, value))
            elif event == zmq.EVENT_DISCONNECTED:
                with self._lock:
                    peer = entry.peers.pop(value, "unknown")
                if entry.failures:
                    self._log_failure(entry, peer, *entry.failures.pop(0))
            elif event == zmq.EVENT_MONITOR_STOPPED:
                for failure in entry.failures:
                    self._log_failure(entry, "unknown", *failure)
                self._end_watch(entry, poller)
                return

    def _log_failure(self, entry: _Watch, peer: str, event: int, value: int) -> None:
        self.handshake_failures += 1
        with self._lock:
            domain = self._domains.get(entry.domain)
        label = domain.label if domain else entry.domain
        reason = _reason(event, value)
        key = (label, reason)
        now = time.monotonic()
        last, repeats = self._logged.get(key, (-LOG_INTERVAL_S, 0))
        if now - last < LOG_INTERVAL_S:
            self._logged[key] = (last, repeats + 1)
            return
        self._logged[key] = (now, 0)
        if peer == "unknown":
            peer = "an unknown address"
        if len(self._logged) > 1000:  # forget the oldest hosts rather than grow without end
            for old in sorted(self._logged, key=lambda k: self._logged[k][0])[:500]:
                del self._logged[old]
        # A refusal by the allowlist was already logged with the key's fingerprint.
        level = logging.INFO if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH else logging.WARNING
        logger.log(
            level,
            "bus: rejected a peer from %s on %s: %s%s",
            peer,
            label,
            reason,
            f" ({repeats} more like it in the last {LOG_INTERVAL_S:g} s)" if repeats else "",
        )

    def _end_watch(self, entry: _Watch, poller: zmq.Poller) -> None:
        """The monitor stopped: close our end; drop the domain if the socket has closed."""
        if entry.monitor is not None:
            poller.unregister(entry.monitor)
            entry.monitor.close(linger=0)
            entry.monitor = None
        entry.stopped = True
        self._sweep()

    def _sweep(self) -> None:
        """Remove the domains of stopped watches whose socket is closed (or collected)."""
        with self._lock:
            for entry in [e for e in self._watches if e.stopped]:
                socket = entry.socket()
                # pyzmq marks the socket closed before ZeroMQ destroys it and stops the monitor.
                if socket is None or socket._closed:
                    self._domains.pop(entry.domain, None)
                    self._watches.remove(entry)

    def _run(self) -> None:
        try:
            zap = self._context.socket(zmq.REP)
            zap.setsockopt(zmq.LINGER, 0)
            control = self._context.socket(zmq.PULL)
            control.setsockopt(zmq.LINGER, 0)
            zap.bind(ZAP_ENDPOINT)
            control.bind(self._control)
        except zmq.ZMQError as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        poller = zmq.Poller()
        poller.register(zap, zmq.POLLIN)
        poller.register(control, zmq.POLLIN)
        try:
            while True:
                with self._lock:
                    # A monitor replaced by another one stops while its socket lives on.
                    lingering = any(entry.stopped for entry in self._watches)
                events = dict(poller.poll(1000 if lingering else None))
                if control in events:
                    if control.recv() == b"STOP":
                        break
                    self._connect_watches(poller)
                if zap in events:
                    frames = zap.recv_multipart()
                    code, text, user = self._decide(frames)
                    request_id = frames[1] if len(frames) > 1 else b""
                    zap.send_multipart([b"1.0", request_id, code, text, user, b""])
                with self._lock:
                    watched = [e for e in self._watches if e.monitor is not None]
                for entry in watched:
                    if entry.monitor in events:
                        self._on_monitor(entry, poller)
                if lingering:
                    self._sweep()
        except zmq.ContextTerminated:
            pass
        finally:
            zap.close(linger=0)
            control.close(linger=0)
            with self._lock:
                watches, self._watches = self._watches, []
            for entry in watches:
                if entry.monitor is not None:
                    entry.monitor.close(linger=0)
                    entry.monitor = None
                entry.ready.set()


_AUTHENTICATORS: dict[int, ZapAuthenticator] = {}
_REGISTRY_LOCK = threading.Lock()


def ensure_authenticator(context: zmq.Context[Any]) -> ZapAuthenticator:
    """The running ZAP handler of ``context``, started on first use."""
    with _REGISTRY_LOCK:
        current = _AUTHENTICATORS.get(context.underlying)
        if current is not None and current.alive:
            return current
        authenticator = ZapAuthenticator(context)
        authenticator.start()
        _AUTHENTICATORS[context.underlying] = authenticator
        return authenticator


def stop_authenticator(context: zmq.Context[Any]) -> None:
    """Stop the ZAP handler of ``context`` if one runs (terminating the context also stops it)."""
    with _REGISTRY_LOCK:
        authenticator = _AUTHENTICATORS.pop(context.underlying, None)
    if authenticator is not None:
        authenticator.stop()
