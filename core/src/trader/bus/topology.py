"""The bus's topology from configuration: endpoints and security from ``[cluster]``.

Code that talks on the bus takes a :class:`BusSettings` and never looks at the transport::

    settings = BusSettings.from_config(load_config())
    async with ServiceHost(settings.broker, [Quotes()], security=settings.client_security()):
        ...

Only the ``[cluster]`` table changes between one process (``inproc``), several processes on one
host (``ipc``) and several hosts (``tcp``). What is derived from it:

* the **broker** address is ``cluster.broker`` (its default depends on the transport);
* the **stream endpoints** of the forwarder the broker hosts sit beside it: for
  ``tcp://HOST:PORT`` publishers use ``PORT + 1`` (XSUB) and subscribers ``PORT + 2`` (XPUB);
  for ``ipc:///dir/broker.ipc`` the sockets ``/dir/broker-xsub.ipc`` and
  ``/dir/broker-xpub.ipc``; for ``inproc://NAME`` the names ``NAME-xsub`` and ``NAME-xpub``;
* **security** on TCP: with ``keys_dir`` set, CURVE with key files made by ``trader keys``
  (:mod:`trader.bus.security`):

  - ``broker.key_secret``: the broker's key pair (on the broker's host only);
  - ``broker.key``: the broker's public key (on every host);
  - ``trader.key_secret``: this host's own key pair, used by its workers, clients, publishers and
    subscribers (``trader keys generate`` makes it under that default name);
  - every ``*.key`` in ``keys_dir`` is admitted by the broker (its allowlist), so admitting a
    host means copying its ``trader.key`` there under a name of its own.

  Without ``keys_dir``, TCP is plaintext, which the configuration allows only with
  ``plaintext_tcp = true`` on a loopback address. ``inproc`` and ``ipc`` need no security.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trader.bus.transport import MAX_IPC_PATH, Security, parse_endpoint
from trader.config.model import ClusterConfig, Config, Transport
from trader.errors import ConfigError

if TYPE_CHECKING:
    from trader.bus.broker import Broker

__all__ = ["BROKER_KEY_NAME", "NODE_KEY_NAME", "BusSettings", "stream_endpoints"]

#: Key pair of the broker in ``keys_dir``: ``broker.key_secret`` and ``broker.key``.
BROKER_KEY_NAME = "broker"
#: This host's own key pair in ``keys_dir`` (the default name of ``trader keys generate``).
NODE_KEY_NAME = "trader"


def stream_endpoints(broker: str) -> tuple[str, str]:
    """The forwarder's ``(xsub, xpub)`` endpoints beside the broker address ``broker``.

    Raises :class:`~trader.errors.ConfigError` when they cannot exist (a TCP port above 65533,
    an ipc path too long).
    """
    endpoint = parse_endpoint(broker)
    if endpoint.scheme == "tcp":
        port = endpoint.port or 0
        if not 0 < port <= 65533:
            raise ConfigError(
                [
                    f"cluster.broker: {broker!r} needs a port from 1 to 65533, since the stream "
                    "endpoints take the next two ports"
                ]
            )
        return f"tcp://{endpoint.host}:{port + 1}", f"tcp://{endpoint.host}:{port + 2}"
    path = endpoint.path or ""
    if endpoint.scheme == "inproc":
        return f"inproc://{path}-xsub", f"inproc://{path}-xpub"
    stem, suffix = (path[:-4], ".ipc") if path.endswith(".ipc") else (path, "")
    paths = (f"{stem}-xsub{suffix}", f"{stem}-xpub{suffix}")
    for derived in paths:
        if len(derived.encode()) > MAX_IPC_PATH:
            raise ConfigError(
                [
                    f"cluster.broker: the stream socket {derived} beside {broker!r} would be "
                    f"longer than the {MAX_IPC_PATH} bytes the OS allows; choose a shorter "
                    "broker path"
                ]
            )
    return f"ipc://{paths[0]}", f"ipc://{paths[1]}"


@dataclass(frozen=True)
class BusSettings:
    """Where the bus is and how it is secured, as ``[cluster]`` says.

    Build it with :meth:`from_config`. Keys are read only when asked for
    (:meth:`server_security`, :meth:`client_security`), so a host holds only the files its
    role needs.
    """

    transport: Transport
    #: The broker's address (bind on the broker's side, connect everywhere else).
    broker: str
    #: The forwarder's XSUB endpoint: publishers connect here.
    stream_xsub: str
    #: The forwarder's XPUB endpoint: subscribers connect here.
    stream_xpub: str
    keys_dir: Path | None = None
    plaintext_tcp: bool = False
    #: Worker processes the broker's host runs (``cluster.workers``).
    workers: int = 0

    @classmethod
    def from_config(cls, config: Config) -> BusSettings:
        """The settings of ``config``'s ``[cluster]`` table."""
        return cls.from_cluster(config.cluster)

    @classmethod
    def from_cluster(cls, cluster: ClusterConfig) -> BusSettings:
        """The settings of a ``[cluster]`` table."""
        xsub, xpub = stream_endpoints(cluster.broker)
        return cls(
            transport=cluster.transport,
            broker=cluster.broker,
            stream_xsub=xsub,
            stream_xpub=xpub,
            keys_dir=cluster.keys_dir,
            plaintext_tcp=cluster.plaintext_tcp,
            workers=cluster.workers,
        )

    @property
    def in_process(self) -> bool:
        """True for ``inproc``: the broker must run inside the process that uses it."""
        return self.transport == "inproc"

    @property
    def curve(self) -> bool:
        """True when TCP endpoints use CURVE (transport ``tcp`` with ``keys_dir``)."""
        return self.transport == "tcp" and self.keys_dir is not None

    def server_security(self) -> Security | None:
        """Security of the sockets the broker binds (broker and stream forwarder).

        With CURVE: the broker's key pair and every public key in ``keys_dir`` as allowlist.
        None for ``inproc`` and ``ipc``. Raises ConfigError naming a missing key file.
        """
        if self.transport != "tcp":
            return None
        if self.keys_dir is None:
            return self._plaintext()
        from trader.bus.security import load_keypair, load_public_keys

        public, secret = load_keypair(self._key_file(f"{BROKER_KEY_NAME}.key_secret"))
        allowed = load_public_keys(self.keys_dir)
        return Security(public_key=public, secret_key=secret, allowed_client_keys=allowed)

    def client_security(self) -> Security | None:
        """Security of the sockets that connect to the broker and forwarder.

        With CURVE: this host's key pair (``trader.key_secret``) and the broker's public key
        (``broker.key``). None for ``inproc`` and ``ipc``. Raises ConfigError naming a missing
        key file.
        """
        if self.transport != "tcp":
            return None
        if self.keys_dir is None:
            return self._plaintext()
        from trader.bus.security import load_keypair, load_public_key

        public, secret = load_keypair(self._key_file(f"{NODE_KEY_NAME}.key_secret"))
        server = load_public_key(self._key_file(f"{BROKER_KEY_NAME}.key"))
        return Security(public_key=public, secret_key=secret, server_public_key=server)

    def _plaintext(self) -> Security:
        if not self.plaintext_tcp:
            raise ConfigError(
                [
                    "cluster: tcp needs CURVE keys: set keys_dir (make keys with `trader keys "
                    "generate`), or set plaintext_tcp = true for loopback only"
                ]
            )
        return Security(plaintext_tcp=True)

    def _key_file(self, name: str) -> Path:
        assert self.keys_dir is not None
        path = self.keys_dir / name
        if not path.is_file():
            key = name.split(".")[0]
            raise ConfigError(
                [
                    f"cluster.keys_dir: {path} does not exist; make it with `trader keys "
                    f"generate --name {key} --dir {self.keys_dir}` (or copy {key}.key from the "
                    "host that has it)"
                ]
            )
        return path

    def make_broker(self, **options: Any) -> Broker:
        """A :class:`~trader.bus.broker.Broker` on :attr:`broker` hosting the stream forwarder.

        ``options`` go to the Broker (``heartbeat_interval``...). Both share this process's bus
        context (:func:`trader.bus.mdp.shared_context`), so ``inproc`` peers of this process
        reach them. The directory of an ``ipc`` socket is created if missing. Start it with
        ``start()`` (a thread) or ``run()``.
        """
        from trader.bus import mdp
        from trader.bus.broker import Broker
        from trader.bus.streams import StreamForwarder

        security = self.server_security()
        if self.transport == "ipc":
            for address in (self.broker, self.stream_xsub, self.stream_xpub):
                folder = Path(address.removeprefix("ipc://")).parent
                folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        forwarder = StreamForwarder(
            self.stream_xsub, self.stream_xpub, security, context=mdp.shared_context()
        )
        return Broker(self.broker, security=security, forwarder=forwarder, **options)
