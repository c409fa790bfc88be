"""CURVE keys on disk and the ZAP handler that admits only allowlisted clients.

Key files use the format of ``zmq.auth.create_certificates``: ``NAME.key`` holds the public key,
``NAME.key_secret`` the public and the secret key (created with mode 0600, never world readable).
They live in :func:`default_key_dir` unless a directory is given; ``trader keys`` manages them.

Each ZeroMQ context that binds a CURVE server socket gets one :class:`ZapAuthenticator`: a thread
answering ZAP requests (RFC 27) on ``inproc://zeromq.zap.01``. Every bound socket has its own ZAP
domain with its own allowlist; a client whose public key is not on it is refused and a warning
naming the endpoint and the key's fingerprint is logged on ``trader.bus.security``.
"""

from __future__ import annotations

import datetime
import hashlib
import itertools
import logging
import os
import re
import stat
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq
import zmq.auth
from zmq.utils import z85

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
    allowed: frozenset[bytes]
    label: str


class ZapAuthenticator:
    """Answer ZAP requests for one ZeroMQ context on a thread; admit allowlisted CURVE keys.

    Use :func:`ensure_authenticator` rather than building one: ZeroMQ allows one ZAP handler per
    context. The thread ends on :meth:`stop` or when the context is terminated.
    """

    _ids = itertools.count(1)

    def __init__(self, context: zmq.Context[Any]) -> None:
        self._context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.shadow(context.underlying)
        self._lock = threading.Lock()
        self._domains: dict[str, _Domain] = {}
        self._control = f"inproc://trader-zap-control-{os.getpid()}-{next(self._ids)}"
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="trader-zap", daemon=True)
        #: Clients admitted and refused since start (all domains).
        self.accepted = 0
        self.rejected = 0

    @property
    def alive(self) -> bool:
        """True while the handler thread answers requests."""
        return self._thread.is_alive()

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

    def label_domain(self, domain: str, label: str) -> None:
        """Name the endpoint of a domain in log lines (the real address once bound)."""
        with self._lock:
            if domain in self._domains:
                self._domains[domain].label = label

    def stop(self) -> None:
        """Stop the thread and release the ZAP endpoint (idempotent)."""
        if not self._thread.is_alive():
            return
        # Keep the pipe open until the thread has ended: closing it at once can drop the
        # command before the thread reads it.
        try:
            pipe = self._context.socket(zmq.PAIR)
        except zmq.ZMQError:
            return  # the context is gone, and the thread with it
        try:
            pipe.setsockopt(zmq.LINGER, 0)
            pipe.connect(self._control)
            pipe.send(b"STOP", zmq.NOBLOCK)
            self._thread.join(timeout=5)
        except zmq.ZMQError:
            pass
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

    def _run(self) -> None:
        try:
            zap = self._context.socket(zmq.REP)
            zap.setsockopt(zmq.LINGER, 0)
            control = self._context.socket(zmq.PAIR)
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
                events = dict(poller.poll())
                if control in events:
                    break
                if zap in events:
                    frames = zap.recv_multipart()
                    code, text, user = self._decide(frames)
                    request_id = frames[1] if len(frames) > 1 else b""
                    zap.send_multipart([b"1.0", request_id, code, text, user, b""])
        except zmq.ContextTerminated:
            pass
        finally:
            zap.close(linger=0)
            control.close(linger=0)


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
