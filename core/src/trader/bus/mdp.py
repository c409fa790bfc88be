"""The Majordomo Protocol 0.1 (ZeroMQ RFC 7/MDP) and its service discovery (RFC 8/MMI).

Constants and frame builders shared by the broker, workers and clients. Frames are lists of
``bytes`` as ZeroMQ multipart messages; the leading empty frame emulates a REQ envelope over
DEALER sockets, as the RFC requires.

Three extensions, each an optional extra frame that RFC 7 peers never send:

* a worker's READY may carry its *capacity* (ASCII decimal, 1 to :data:`MAX_CAPACITY`, default
  1), the number of requests it accepts at once; the broker counts each slot as an entry in its
  least-recently-used queue;
* a worker's HEARTBEAT may carry the number of requests it is running (ASCII decimal); the broker
  resets its count of the worker's busy slots to it, so a REQUEST or REPLY lost on the way (a
  broken connection, a lossy link) does not keep a slot busy for ever;
* a client request may start its body with a frame ``ttl=MS[,MS...]`` (ASCII decimals, one per
  body frame, or one for all): how many milliseconds each caller still waits for its reply.
  trader's broker strips it and drops a call no worker took in time (an envelope frame never
  starts with ``t``).

An ``mmi.*`` request may carry frames after its body (a query id); the broker echoes them
after the status code, so a client with several queries in flight can match the answers.

Bodies are opaque multipart data (RFC 7): trader's clients may put several envelopes, one per
frame, in one request, and workers answer with one reply envelope per frame.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from typing import Any, Final

import zmq
import zmq.asyncio
import zmq.backend

log = logging.getLogger(__name__)

#: Protocol header of every client message (client <-> broker).
CLIENT: Final = b"MDPC01"
#: Protocol header of every worker message (worker <-> broker).
WORKER: Final = b"MDPW01"

READY: Final = b"\x01"
REQUEST: Final = b"\x02"
REPLY: Final = b"\x03"
HEARTBEAT: Final = b"\x04"
DISCONNECT: Final = b"\x05"
COMMANDS: Final = frozenset({READY, REQUEST, REPLY, HEARTBEAT, DISCONNECT})

#: Service names starting with this prefix are answered by the broker itself (RFC 8).
MMI_PREFIX: Final = b"mmi."
#: Ask whether a service has at least one worker: body is the service name.
MMI_SERVICE: Final = b"mmi.service"
MMI_FOUND: Final = b"200"
MMI_NOT_FOUND: Final = b"404"
MMI_NOT_IMPLEMENTED: Final = b"501"

#: RFC 7 recommends 3 missed heartbeats before a peer is declared dead.
HEARTBEAT_LIVENESS: Final = 3
#: Default seconds between heartbeats (the RFC suggests 2.5 s; trader detects loss faster).
HEARTBEAT_INTERVAL: Final = 1.0

EMPTY: Final = b""

#: Largest capacity a READY frame carries (the count extensions hold at most six digits).
MAX_CAPACITY: Final = 999_999
#: Start of the optional first body frame of a client request: the caller's remaining wait.
TTL_PREFIX: Final = b"ttl="  # four bytes, as parse_ttl assumes

#: Socket options of every bus socket: deep queues, so bursts of calls are not dropped.
QUEUE_OPTIONS: Final[dict[int, int | bytes]] = {int(zmq.SNDHWM): 100_000, int(zmq.RCVHWM): 100_000}


def client_request(service: bytes, body: bytes, ttl_ms: int | None = None) -> list[bytes]:
    """Frames a client sends on its DEALER: empty, MDPC01, service, [ttl frame], body."""
    if ttl_ms is None:
        return [EMPTY, CLIENT, service, body]
    return [EMPTY, CLIENT, service, ttl_frame([ttl_ms]), body]


def client_requests(
    service: bytes, bodies: list[bytes], ttls_ms: list[int] | None = None
) -> list[bytes]:
    """A request whose body has several frames (RFC 7 bodies are opaque multipart data).

    trader puts one envelope in each body frame, so one message carries a batch of calls;
    ``ttls_ms`` (one per body frame) become the ttl extension frame.
    """
    if ttls_ms is None:
        return [EMPTY, CLIENT, service, *bodies]
    return [EMPTY, CLIENT, service, ttl_frame(ttls_ms), *bodies]


_MAX_TTL_MS: Final = 999_999_999


def ttl_frame(ttls_ms: list[int]) -> bytes:
    """The extension frame saying how many more milliseconds each caller waits (see module)."""
    return TTL_PREFIX + ",".join(
        [str(0 if ttl < 0 else _MAX_TTL_MS if ttl > _MAX_TTL_MS else ttl) for ttl in ttls_ms]
    ).encode("ascii")


def parse_ttl(frame: bytes) -> list[int] | None:
    """Return the milliseconds a ``ttl=MS[,MS...]`` frame carries, or None if it is invalid."""
    if not frame.startswith(TTL_PREFIX):
        return None
    digits = frame[4:]
    if digits.isdigit() and len(digits) <= 9:  # the usual case: one value
        return [int(digits)]
    values = digits.split(b",")
    if not all(value.isdigit() and len(value) <= 9 for value in values):
        return None
    return [int(value) for value in values]


def envelope_id(frame: bytes) -> bytes | None:
    """Return the message id of an encoded envelope without decoding it, or None.

    Reads only the envelope's first three items (msgpack array of 7: type string, version,
    id bytes): the broker routes retries by id at a fraction of a full decode's cost. Any frame
    that does not start like an envelope, or has an empty id, gives None; never raises.
    """
    try:
        if frame[0] != 0x97:
            return None
        code = frame[1]
        if 0xA0 <= code <= 0xBF:
            position = 2 + (code & 0x1F)
        elif code == 0xD9:
            position = 3 + frame[2]
        elif code == 0xDA:
            position = 4 + int.from_bytes(frame[2:4], "big")
        else:
            return None
        code = frame[position]
        if code <= 0x7F:
            position += 1
        elif 0xCC <= code <= 0xCF:
            position += 1 + (1 << (code - 0xCC))
        else:
            return None
        if frame[position] != 0xC4:
            return None
        size = frame[position + 1]
        start = position + 2
        message_id = frame[start : start + size]
    except IndexError:
        return None
    return message_id if size and len(message_id) == size else None


def client_reply(client: bytes, service: bytes, body: list[bytes]) -> list[bytes]:
    """Frames the broker sends to ``client``: address, empty, MDPC01, service, body."""
    return [client, EMPTY, CLIENT, service, *body]


def worker_ready(service: bytes, capacity: int = 1) -> list[bytes]:
    """READY frames from a worker; capacity above 1 is the pipelining extension (see module)."""
    frames = [EMPTY, WORKER, READY, service]
    if capacity != 1:
        frames.append(str(capacity).encode("ascii"))
    return frames


def worker_request(worker: bytes, client: bytes, body: list[bytes]) -> list[bytes]:
    """REQUEST frames the broker routes to ``worker`` on behalf of ``client``."""
    return [worker, EMPTY, WORKER, REQUEST, client, EMPTY, *body]


def worker_reply(client: bytes, body: list[bytes]) -> list[bytes]:
    """REPLY frames a worker sends for a request that came from ``client``."""
    return [EMPTY, WORKER, REPLY, client, EMPTY, *body]


def worker_heartbeat(busy: int | None = None) -> list[bytes]:
    """HEARTBEAT frames from a worker; ``busy`` is the extension frame (requests running)."""
    if busy is None:
        return [EMPTY, WORKER, HEARTBEAT]
    return [EMPTY, WORKER, HEARTBEAT, str(busy).encode("ascii")]


def worker_disconnect() -> list[bytes]:
    """DISCONNECT frames from a worker to the broker."""
    return [EMPTY, WORKER, DISCONNECT]


def broker_command(worker: bytes, command: bytes) -> list[bytes]:
    """A body-less command (HEARTBEAT, DISCONNECT) from the broker to ``worker``."""
    return [worker, EMPTY, WORKER, command]


def parse_count(frame: bytes, minimum: int = 0) -> int | None:
    """Return the number an extension frame carries, or None unless it is ASCII in range."""
    if not frame.isdigit() or len(frame) > 6:
        return None
    value = int(frame)
    return value if value >= minimum else None


_shared_context: zmq.asyncio.Context | None = None
_shared_pid: int | None = None


def shared_context() -> zmq.asyncio.Context:
    """Return this process's bus context (asyncio flavour), shared by brokers, workers, clients.

    ``inproc://`` endpoints only connect sockets of one context, so every bus object defaults to
    this one. A broker running in a thread uses a synchronous shadow of it.
    """
    global _shared_context, _shared_pid
    if _shared_context is None or _shared_context.closed or _shared_pid != os.getpid():
        _shared_context = zmq.asyncio.Context()
        _shared_pid = os.getpid()
    return _shared_context


def shared_sync_context() -> zmq.Context[Any]:
    """Return a synchronous shadow of :func:`shared_context` (same sockets namespace).

    The shared context lives as long as the process, so the shadow stays valid.
    """
    return zmq.Context.shadow(shared_context().underlying)


def sync_context(context: zmq.Context[Any] | None) -> zmq.Context[Any]:
    """Return a synchronous context on the same ZeroMQ context as ``context`` (or the shared).

    The caller must keep ``context`` referenced while it uses the result: a shadow does not.
    """
    if context is None:
        return shared_sync_context()
    if type(context) is zmq.Context:
        return context
    return zmq.Context.shadow(context.underlying)


# The hot paths call the backend's send/recv/get directly with integer flags: pyzmq's
# convenience layer (send_multipart, enum flags, attribute options) costs several times more.
_backend_send: Any = zmq.backend.Socket.send
_backend_recv: Any = zmq.backend.Socket.recv
_backend_get: Any = zmq.backend.Socket.get
_NOBLOCK: Final = int(zmq.NOBLOCK)
_MORE_NOBLOCK: Final = int(zmq.SNDMORE | zmq.NOBLOCK)
_EVENTS: Final = int(zmq.EVENTS)
_POLLIN: Final = int(zmq.POLLIN)


def send_frames(socket: zmq.Socket[Any], frames: list[bytes]) -> None:
    """Send ``frames`` as one message without blocking; raise ``zmq.Again`` if it would block."""
    send = _backend_send
    for frame in frames[:-1]:
        send(socket, frame, _MORE_NOBLOCK)
    send(socket, frames[-1], _NOBLOCK)


def recv_frames(socket: zmq.Socket[Any]) -> list[bytes]:
    """Receive one whole message without blocking; raise ``zmq.Again`` if none is waiting."""
    # A frame received without copying knows whether more follow (read in C at receive time):
    # cheaper than asking the socket for RCVMORE after each frame, an option lookup through
    # pyzmq's enum each time. The bytes of a small frame are copied out once either way.
    recv = _backend_recv
    frame = recv(socket, _NOBLOCK, False)
    frames = [frame.bytes]
    while frame.more:
        frame = recv(socket, _NOBLOCK, False)
        frames.append(frame.bytes)
    return frames


def has_input(socket: zmq.Socket[Any]) -> bool:
    """Return whether a message is waiting (also re-arms the socket's edge-triggered FD)."""
    return bool(_backend_get(socket, _EVENTS) & _POLLIN)


#: Messages drained per wake-up before yielding to other callbacks of the loop.
_DRAIN_LIMIT: Final = 500


class SocketPump:
    """Drive a synchronous ZeroMQ socket from an asyncio loop, without a future per message.

    Incoming messages are handed to ``on_message`` from the loop's reader callback, as many as
    are queued (the ZeroMQ file descriptor is edge-triggered, so the queue is always drained);
    :meth:`send` never blocks and reports a full queue by returning False. This is the hot path
    of clients and workers: it costs a fraction of a ``zmq.asyncio`` socket's futures.
    """

    def __init__(
        self,
        socket: zmq.Socket[bytes],
        on_message: Callable[[list[bytes]], None],
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.socket = socket
        self._on_message = on_message
        self._loop = loop if loop is not None else asyncio.get_running_loop()
        self._fd: int = socket.FD
        self._scheduled = False
        self.closed = False
        self._loop.add_reader(self._fd, self._drain)
        self._schedule()

    def send(self, frames: list[bytes]) -> bool:
        """Queue ``frames`` as one message; return False if the queue is full or closed."""
        if self.closed:
            return False
        socket = self.socket
        try:
            send_frames(socket, frames)
        except zmq.ZMQError:
            return False
        # Sending may consume the descriptor's edge: if a message is waiting, drain soon.
        if has_input(socket):
            self._schedule()
        return True

    def _schedule(self) -> None:
        # Any socket operation may consume the descriptor's edge: look again soon.
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._drain)

    def _drain(self) -> None:
        self._scheduled = False
        socket = self.socket
        if self.closed:
            return
        on_message = self._on_message
        for _ in range(_DRAIN_LIMIT):
            if not has_input(socket):
                return
            frames = recv_frames(socket)
            try:
                on_message(frames)
            except Exception:  # one bad message must not stop the socket
                log.exception("bus: failed to handle a message of %d frames", len(frames))
            if self.closed:
                return
        self._schedule()

    def close(self, linger_ms: int = 0) -> None:
        """Stop reading and close the socket, discarding unsent messages after ``linger_ms``.

        Idempotent.
        """
        if self.closed:
            return
        self.closed = True
        self._loop.remove_reader(self._fd)
        self.socket.close(linger=linger_ms)
