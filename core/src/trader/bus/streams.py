"""Numbered topic streams: publish, forward, subscribe, and repair gaps by replay.

Publishers and subscribers know only the forwarder (hosted by the broker process): publishers
connect a PUB socket to its XSUB endpoint, subscribers a SUB socket to its XPUB endpoint.

Wire format (two frames)::

    [topic (UTF-8), envelope]   envelope = msgpack [2, epoch, first_seq, time_ns, [body, ...]]

One envelope carries one or more consecutive messages of one topic: ``first_seq`` is the
sequence number of the first body, the next bodies follow at ``first_seq + 1, ...``. Sequences
are per topic, start at 1 and are stamped by the :class:`Publisher` (one publisher per topic).
``epoch`` names the numbering: a random 63-bit id fixed per :class:`ReplayBuffer` (or per
publisher without one), so a publisher that restarts and counts from 1 again is told apart from
old news; a subscriber that sees a new epoch resynchronises instead of dropping everything as
duplicates. An envelope with no bodies is a keep-alive announcing that ``first_seq - 1`` is the
latest sequence, so a subscriber notices a lost tail. Bodies are opaque bytes (usually msgpack).
The header is plain msgpack rather than a :mod:`trader.bus.codec` envelope, on purpose: an
envelope carries one message with a type name, two 16-byte ids and a time (about 50 bytes and
1.5 µs to encode, 1 µs to decode per message here), while one stream header serves a whole
batch (about 2 bytes and 0.07 µs per message in batches of 100), which is what lets
``bus.pubsub_mps`` pass 300,000 with every sequence checked. Streams need none of the
envelope's fields: no reply to correlate, and the sequence is the id. The two formats meet at
the replay service (:mod:`trader.bus.replay`), whose typed replies carry a range in the same
``first_seq`` + bodies shape.

A :class:`Subscriber` checks every sequence. A gap is filled from a :class:`ReplaySource`
(``replay(topic, from_seq, to_seq)``, ``snapshot(topic)``; a :class:`ReplayBuffer` in this
process, or :class:`trader.bus.replay.BusReplaySource` calling a replay service through the
broker) before later messages are delivered, so consumers see each sequence exactly once and in
order. A subscriber joining late starts from ``snapshot(topic)``: a :class:`Snapshot` item,
then messages after its sequence. Malformed frames are counted, logged and dropped; they never
raise into the consumer.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, runtime_checkable

import msgpack
import zmq
import zmq.asyncio

from trader.bus.errors import MalformedMessage
from trader.bus.transport import (
    DEFAULT_HEARTBEAT_MS,
    Endpoint,
    Security,
    bound_endpoint,
    make_socket,
)
from trader.errors import ConfigError

__all__ = [
    "ENVELOPE_VERSION",
    "Publisher",
    "ReplayBuffer",
    "ReplaySource",
    "Snapshot",
    "StreamForwarder",
    "StreamFrame",
    "StreamMessage",
    "StreamStats",
    "Subscriber",
    "decode_stream_frames",
    "encode_stream_frames",
    "new_epoch",
]

logger = logging.getLogger("trader.bus.streams")

#: First element of every stream envelope; bump it when the layout changes.
ENVELOPE_VERSION = 2
#: Longest topic accepted from the wire, in bytes.
MAX_TOPIC_BYTES = 255
_DEFAULT_HWM = 100_000
_FORWARDER_IDS = itertools.count(1)
#: Epochs a subscriber remembers per topic as replaced, to drop late frames of old publishers.
_RETIRED_EPOCHS = 8


def new_epoch() -> int:
    """A fresh random stream epoch: a positive 63-bit integer, unique for all practical uses."""
    return secrets.randbits(63) | 1


class StreamMessage(NamedTuple):
    """One numbered message of a topic as delivered to a subscriber (or returned by replay).

    ``epoch`` is the numbering ``seq`` belongs to (see :func:`new_epoch`); 0 when unknown, as
    for messages a replay source built without one.
    """

    topic: str
    seq: int
    time_ns: int
    body: bytes
    epoch: int = 0


class StreamFrame(NamedTuple):
    """A decoded stream frame: ``bodies`` are sequences ``first_seq, first_seq + 1, ...``."""

    topic: str
    epoch: int
    first_seq: int
    time_ns: int
    bodies: list[bytes]


class Snapshot(NamedTuple):
    """A topic's state as of sequence ``seq``; messages after it follow in order.

    ``state`` is whatever the replay source keeps (by default the last message body), ``None``
    when nothing was published yet (``seq`` 0).
    """

    topic: str
    seq: int
    state: bytes | None


StreamItem = StreamMessage | Snapshot


@runtime_checkable
class ReplaySource(Protocol):
    """Where a subscriber repairs gaps and late joiners start; small enough to serve over RPC."""

    async def replay(self, topic: str, from_seq: int, to_seq: int) -> list[StreamMessage]:
        """Messages ``from_seq..to_seq`` (inclusive) of ``topic`` in order; may return fewer
        (or none) when some are no longer kept, never other sequences."""
        ...

    async def snapshot(self, topic: str) -> tuple[int, bytes | None]:
        """``(seq, state)``: the state of ``topic`` including every message up to ``seq``."""
        ...


# ---------------------------------------------------------------------------------------------
# Wire format


def encode_stream_frames(
    topic: str, epoch: int, first_seq: int, time_ns: int, bodies: Sequence[bytes]
) -> list[bytes]:
    """The two frames carrying ``bodies`` as sequences ``first_seq, first_seq + 1, ...`` of
    the numbering ``epoch``."""
    return [
        topic.encode(),
        msgpack.packb(
            [ENVELOPE_VERSION, epoch, first_seq, time_ns, list(bodies)], use_bin_type=True
        ),
    ]


def decode_stream_frames(frames: Sequence[bytes]) -> StreamFrame:
    """The :class:`StreamFrame` in received frames.

    Raises :class:`~trader.bus.errors.MalformedMessage` (and nothing else) for anything that is
    not a valid stream message, whatever the bytes.
    """
    if len(frames) != 2:
        raise MalformedMessage(f"stream message has {len(frames)} frames, expected 2")
    raw_topic, envelope = frames
    if not raw_topic or len(raw_topic) > MAX_TOPIC_BYTES:
        raise MalformedMessage(f"stream topic of {len(raw_topic)} bytes")
    try:
        topic = bytes(raw_topic).decode()
        decoded = msgpack.unpackb(envelope, raw=False, use_list=True, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types for bad bytes
        raise MalformedMessage(f"stream message is not UTF-8 topic + msgpack: {exc}") from exc
    if type(decoded) is not list or len(decoded) != 5:
        raise MalformedMessage("stream envelope is not a 5-element list")
    version, epoch, first_seq, time_ns, bodies = decoded
    if version != ENVELOPE_VERSION:
        raise MalformedMessage(f"stream envelope version {version!r} is not {ENVELOPE_VERSION}")
    if type(epoch) is not int or epoch < 0:
        raise MalformedMessage("stream envelope epoch is not a non-negative integer")
    if type(first_seq) is not int or first_seq < 1 or type(time_ns) is not int:
        raise MalformedMessage("stream envelope sequence or time is not a positive integer")
    if type(bodies) is not list or not all(type(body) is bytes for body in bodies):
        raise MalformedMessage("stream envelope bodies are not a list of bytes")
    return StreamFrame(topic, epoch, first_seq, time_ns, bodies)


# ---------------------------------------------------------------------------------------------
# Replay buffer


class _TopicRing:
    __slots__ = ("bodies", "last_seq", "state", "times")

    def __init__(self, capacity: int) -> None:
        self.bodies: deque[bytes] = deque(maxlen=capacity)
        self.times: deque[int] = deque(maxlen=capacity)
        self.last_seq = 0
        self.state: bytes | None = None


class ReplayBuffer:
    """The last ``capacity`` messages of each topic, in memory: a :class:`ReplaySource`.

    A :class:`Publisher` given one records every message before sending it and numbers its
    messages in the buffer's :attr:`epoch`, so a publisher rebuilt on the same buffer continues
    the same numbering. A buffer restored from disk should be given its old ``epoch``; a new
    buffer gets a fresh one (:func:`new_epoch`). ``snapshot`` returns the last body as the
    state unless a ``fold(state, body) -> state`` is given, which is then applied to every
    recorded body. Safe to record from one thread and serve from another.
    """

    def __init__(
        self,
        capacity: int = 100_000,
        *,
        fold: Callable[[bytes | None, bytes], bytes] | None = None,
        epoch: int | None = None,
    ) -> None:
        if capacity < 1:
            raise ConfigError([f"replay buffer capacity must be at least 1, not {capacity}"])
        if epoch is not None and not 0 < epoch < 2**64:
            raise ConfigError([f"replay buffer epoch must be in 1..2**64-1, not {epoch}"])
        self.capacity = capacity
        #: The numbering the buffer's sequences belong to (fixed for its lifetime).
        self.epoch = new_epoch() if epoch is None else epoch
        self._fold = fold
        self._rings: dict[str, _TopicRing] = {}
        self._lock = threading.Lock()

    def last_seq(self, topic: str) -> int:
        """The latest recorded sequence of ``topic`` (0 when none)."""
        ring = self._rings.get(topic)
        return ring.last_seq if ring else 0

    def topics(self) -> list[str]:
        """Every topic recorded so far."""
        with self._lock:
            return sorted(self._rings)

    def record(self, topic: str, first_seq: int, time_ns: int, bodies: Sequence[bytes]) -> None:
        """Keep ``bodies`` as ``first_seq, first_seq + 1, ...``; they must follow the last one.

        Raises :class:`ValueError` for a sequence that does not continue the topic.
        """
        with self._lock:
            ring = self._rings.get(topic)
            if ring is None:
                ring = self._rings[topic] = _TopicRing(self.capacity)
            if first_seq != ring.last_seq + 1:
                raise ValueError(
                    f"topic {topic!r}: sequence {first_seq} does not follow {ring.last_seq}"
                )
            ring.bodies.extend(bodies)
            ring.times.extend([time_ns] * len(bodies))
            ring.last_seq += len(bodies)
            if self._fold is not None:
                for body in bodies:
                    ring.state = self._fold(ring.state, body)

    def replay_now(self, topic: str, from_seq: int, to_seq: int) -> list[StreamMessage]:
        """The kept messages of ``topic`` in ``from_seq..to_seq`` (synchronous)."""
        with self._lock:
            ring = self._rings.get(topic)
            if ring is None or to_seq < from_seq:
                return []
            oldest = ring.last_seq - len(ring.bodies) + 1
            start = max(from_seq, oldest)
            stop = min(to_seq, ring.last_seq)
            if start > stop:
                return []
            offset = start - oldest
            bodies = list(ring.bodies)[offset : offset + stop - start + 1]
            times = list(ring.times)[offset : offset + stop - start + 1]
        epoch = self.epoch
        return [
            StreamMessage(topic, start + index, t, body, epoch)
            for index, (t, body) in enumerate(zip(times, bodies, strict=True))
        ]

    def snapshot_now(self, topic: str) -> tuple[int, bytes | None]:
        """``(last_seq, state)`` of ``topic`` (synchronous)."""
        with self._lock:
            ring = self._rings.get(topic)
            if ring is None:
                return 0, None
            if self._fold is not None:
                return ring.last_seq, ring.state
            return ring.last_seq, (ring.bodies[-1] if ring.bodies else None)

    async def replay(self, topic: str, from_seq: int, to_seq: int) -> list[StreamMessage]:
        """See :meth:`ReplaySource.replay`."""
        return self.replay_now(topic, from_seq, to_seq)

    async def snapshot(self, topic: str) -> tuple[int, bytes | None]:
        """See :meth:`ReplaySource.snapshot`."""
        return self.snapshot_now(topic)


# ---------------------------------------------------------------------------------------------
# Forwarder


class StreamForwarder:
    """XSUB (facing publishers) to XPUB (facing subscribers): the broker's stream hub.

    Both sockets bind. Use :meth:`start` to forward on a background thread (ZeroMQ's C proxy,
    which does not hold the GIL) and :meth:`stop` to end it, :meth:`run` to forward on the
    calling thread until :meth:`stop`, or :meth:`bind` plus :meth:`pump` from your own poll
    loop. Read the real addresses (for port 0) from :attr:`xsub_address`/:attr:`xpub_address`.
    """

    def __init__(
        self,
        xsub_endpoint: str | Endpoint,
        xpub_endpoint: str | Endpoint,
        security: Security | None = None,
        *,
        context: zmq.Context[Any] | None = None,
        heartbeat_ms: int = DEFAULT_HEARTBEAT_MS,
        hwm: int = _DEFAULT_HWM,
    ) -> None:
        self._xsub_endpoint = xsub_endpoint
        self._xpub_endpoint = xpub_endpoint
        self._security = security
        self._heartbeat_ms = heartbeat_ms
        self._hwm = hwm
        # A shadow does not own the context: keep the caller's object alive alongside it.
        self._owner = context
        self._context: zmq.Context[zmq.Socket[bytes]] = (
            zmq.Context.instance() if context is None else zmq.Context.shadow(context.underlying)
        )
        self._control = f"inproc://trader-stream-forwarder-{os.getpid()}-{next(_FORWARDER_IDS)}"
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()
        self._control_socket: zmq.Socket[bytes] | None = None
        self.xsub_socket: zmq.Socket[bytes] | None = None
        self.xpub_socket: zmq.Socket[bytes] | None = None
        self.xsub_address = ""
        self.xpub_address = ""

    def bind(self) -> None:
        """Create and bind both sockets (idempotent); raises ConfigError for bad endpoints."""
        if self.xsub_socket is not None:
            return
        options: dict[int, int | bytes] = {zmq.SNDHWM: self._hwm, zmq.RCVHWM: self._hwm}
        xsub = make_socket(
            self._context,
            zmq.XSUB,
            self._xsub_endpoint,
            bind=True,
            security=self._security,
            heartbeat_ms=self._heartbeat_ms,
            options=options,
        )
        try:
            xpub = make_socket(
                self._context,
                zmq.XPUB,
                self._xpub_endpoint,
                bind=True,
                security=self._security,
                heartbeat_ms=self._heartbeat_ms,
                options=options,
            )
        except BaseException:
            xsub.close(linger=0)
            raise
        # The stop pipe is bound before any thread runs, so stop() can never miss it.
        control = self._context.socket(zmq.PAIR)
        control.setsockopt(zmq.LINGER, 0)
        control.bind(self._control)
        self._control_socket = control
        self.xsub_socket, self.xpub_socket = xsub, xpub
        self.xsub_address = bound_endpoint(xsub)
        self.xpub_address = bound_endpoint(xpub)

    def pump(self, limit: int = 10_000) -> int:
        """Move what is waiting, without blocking: data to subscribers, subscriptions to
        publishers. Returns how many messages moved. For callers with their own poll loop."""
        assert self.xsub_socket is not None and self.xpub_socket is not None, "call bind() first"
        moved = 0
        for source, target in (
            (self.xsub_socket, self.xpub_socket),
            (self.xpub_socket, self.xsub_socket),
        ):
            while moved < limit:
                try:
                    frames = source.recv_multipart(zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    break
                target.send_multipart(frames, copy=False)
                moved += 1
        return moved

    def run(self) -> None:
        """Bind if needed and forward on this thread until :meth:`stop` (or context end)."""
        self.bind()
        assert self.xsub_socket is not None and self.xpub_socket is not None
        assert self._control_socket is not None
        try:
            if not self._stopped.is_set():
                zmq.proxy_steerable(self.xsub_socket, self.xpub_socket, None, self._control_socket)
        except zmq.ContextTerminated:
            pass
        finally:
            self._close_sockets()

    def start(self) -> StreamForwarder:
        """Bind now (errors raise here) and forward on a daemon thread; returns self."""
        self.bind()
        ready = threading.Event()

        def target() -> None:
            ready.set()
            self.run()

        self._thread = threading.Thread(target=target, name="trader-stream-forwarder", daemon=True)
        self._thread.start()
        ready.wait()
        return self

    def stop(self) -> None:
        """Stop forwarding and close the sockets (idempotent)."""
        self._stopped.set()
        thread = self._thread
        if thread is None:
            self._close_sockets()
            return
        if thread.is_alive():
            # Keep the pipe open until the proxy has ended: closing it at once can drop the
            # command before the proxy reads it.
            pipe = self._context.socket(zmq.PAIR)
            try:
                pipe.setsockopt(zmq.LINGER, 0)
                pipe.connect(self._control)
                pipe.send(b"TERMINATE", zmq.NOBLOCK)
                thread.join(timeout=5)
            except zmq.ZMQError:
                pass  # the context is gone: the proxy has ended with it
            finally:
                pipe.close(linger=0)
        self._thread = None

    def _close_sockets(self) -> None:
        for socket in (self.xsub_socket, self.xpub_socket, self._control_socket):
            if socket is not None:
                socket.close(linger=0)
        self.xsub_socket = self.xpub_socket = self._control_socket = None

    def __enter__(self) -> StreamForwarder:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---------------------------------------------------------------------------------------------
# Publisher


class Publisher:
    """Stamp per-topic sequences and send to the forwarder's XSUB endpoint.

    Sending never blocks: past the high-water mark ZeroMQ drops, and subscribers repair the
    gap from the replay source. Give a :class:`ReplayBuffer` to keep what is sent (sequences
    then continue from it in its epoch, so a publisher rebuilt on the same buffer does not
    restart at 1). Without one, each publisher numbers from 1 in a fresh :attr:`epoch`, and
    subscribers resynchronise when they see it. Call :meth:`keepalive` now and then (e.g. every
    heartbeat) so subscribers notice a lost tail. Not thread-safe: publish from one thread.
    """

    def __init__(
        self,
        context: zmq.Context[Any],
        endpoint: str | Endpoint,
        *,
        security: Security | None = None,
        replay_buffer: ReplayBuffer | None = None,
        heartbeat_ms: int = DEFAULT_HEARTBEAT_MS,
        hwm: int = _DEFAULT_HWM,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        # A shadow does not own the context: keep the caller's object alive alongside it.
        self._owner = context
        self._context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.shadow(context.underlying)
        self.socket = make_socket(
            self._context,
            zmq.PUB,
            endpoint,
            bind=False,
            security=security,
            heartbeat_ms=heartbeat_ms,
            options={zmq.SNDHWM: hwm},
        )
        self.replay_buffer = replay_buffer
        #: The numbering this publisher's sequences belong to: its buffer's, else its own.
        self.epoch = replay_buffer.epoch if replay_buffer is not None else new_epoch()
        self._clock = clock
        self._last: dict[str, int] = {}

    def last_seq(self, topic: str) -> int:
        """The last sequence stamped on ``topic`` (0 before the first)."""
        last = self._last.get(topic)
        if last is None:
            last = self.replay_buffer.last_seq(topic) if self.replay_buffer else 0
            self._last[topic] = last
        return last

    def publish(self, topic: str, body: bytes) -> int:
        """Send one message; return its sequence."""
        return self.publish_many(topic, (body,))

    def publish_many(self, topic: str, bodies: Sequence[bytes]) -> int:
        """Send ``bodies`` as consecutive sequences in one frame; return the last sequence."""
        first = self.last_seq(topic) + 1
        last = first + len(bodies) - 1
        if not bodies:
            return last
        now = self._clock()
        if self.replay_buffer is not None:
            self.replay_buffer.record(topic, first, now, bodies)
        self._last[topic] = last
        self._send(topic, first, now, bodies)
        return last

    def keepalive(self, topics: Iterable[str] | None = None) -> None:
        """Announce the latest sequence of each topic (all published ones by default)."""
        now = self._clock()
        for topic in list(self._last) if topics is None else topics:
            self._send(topic, self.last_seq(topic) + 1, now, ())

    def _send(self, topic: str, first: int, now: int, bodies: Sequence[bytes]) -> None:
        self.socket.send_multipart(
            encode_stream_frames(topic, self.epoch, first, now, bodies), copy=True
        )

    def close(self) -> None:
        """Close the socket."""
        self.socket.close(linger=0)

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------
# Subscriber


@dataclass
class StreamStats:
    """Counters of one subscriber: what arrived, what was repaired, what was dropped."""

    received: int = 0  # messages taken off the wire (bodies, not frames)
    delivered: int = 0  # messages handed to the consumer (replayed ones included)
    duplicates: int = 0  # messages already delivered (or covered by a snapshot), dropped
    gaps: int = 0  # gaps detected
    replayed: int = 0  # messages obtained from the replay source
    lost: int = 0  # messages neither the replay source nor a snapshot could restore
    malformed: int = 0  # frames that were not stream messages, dropped
    snapshots: int = 0  # snapshots delivered
    restarts: int = 0  # new epochs seen on a topic (its publisher restarted)
    stale: int = 0  # messages of an epoch already replaced (a late or second publisher), dropped


class Subscriber:
    """Receive topics from the forwarder's XPUB endpoint, in order, each sequence once.

    Use in a coroutine::

        async with Subscriber(context, xpub_address, replay=source) as subscriber:
            await subscriber.subscribe("candles.bitfinex.BTCUSD.1m", snapshot=True)
            async for item in subscriber:       # Snapshot, then StreamMessage...
                ...

    A subscribed topic is matched exactly (ZeroMQ prefix matches are filtered out). When a
    sequence is skipped, the missing range is fetched from ``replay`` before anything later is
    delivered; if the source no longer has it, the subscriber resynchronises from a snapshot
    and counts what could not be restored in ``stats.lost``. Without a replay source, gaps are
    only counted. ``replay_timeout`` bounds each call to the source.

    When a topic's epoch changes (its publisher restarted without its replay buffer and counts
    from 1 again), the subscriber logs it and starts over in the new numbering: from a fresh
    snapshot if the topic was subscribed with ``snapshot=True``, else from sequence 1 (replaying
    what it missed of the new epoch, counting what it cannot get in ``stats.lost``). Messages of
    the replaced epoch that still arrive are dropped and counted in ``stats.stale``.
    """

    def __init__(
        self,
        context: zmq.asyncio.Context,
        endpoint: str | Endpoint,
        *,
        replay: ReplaySource | None = None,
        security: Security | None = None,
        heartbeat_ms: int = DEFAULT_HEARTBEAT_MS,
        hwm: int = _DEFAULT_HWM,
        replay_timeout: float = 5.0,
        max_batch: int = 10_000,
    ) -> None:
        self.socket = make_socket(
            context,
            zmq.SUB,
            endpoint,
            bind=False,
            security=security,
            heartbeat_ms=heartbeat_ms,
            options={zmq.RCVHWM: hwm},
        )
        # Draining through a plain socket that shares the asyncio one's handle is much cheaper
        # than awaiting each receive.
        self._sync: zmq.Socket[bytes] = zmq.Socket.shadow(self.socket.underlying)
        self._replay = replay
        self._replay_timeout = replay_timeout
        self._max_batch = max_batch
        self._expected: dict[str, int | None] = {}
        self._epochs: dict[str, int] = {}
        self._retired: dict[str, deque[int]] = {}
        self._with_snapshot: set[str] = set()
        self._ready: deque[StreamItem] = deque()
        self.stats = StreamStats()

    async def subscribe(self, topic: str, *, snapshot: bool = False) -> Snapshot | None:
        """Start receiving ``topic``. With ``snapshot=True`` (needs a replay source) first
        deliver the topic's snapshot, then only messages after it; returns the snapshot.

        Subscribing to a topic already subscribed keeps its subscription and its place in the
        sequence (nothing is delivered twice); with ``snapshot=True`` it fetches a snapshot,
        delivered only if it is ahead of what was received, and snapshots are used from then on
        when the topic's publisher restarts. A failing snapshot call raises what the source
        raised (or TimeoutError after ``replay_timeout``); the subscription itself stays.
        """
        if snapshot and self._replay is None:
            raise ConfigError([f"stream {topic!r}: a snapshot needs a replay source"])
        if not topic or len(topic.encode()) > MAX_TOPIC_BYTES:
            raise ConfigError([f"stream topic {topic!r} must be 1-{MAX_TOPIC_BYTES} bytes"])
        if topic not in self._expected:
            # ZeroMQ counts subscriptions: subscribe once, so one unsubscribe ends it.
            self.socket.setsockopt(zmq.SUBSCRIBE, topic.encode())
            self._expected[topic] = None
            self._retired[topic] = deque(maxlen=_RETIRED_EPOCHS)
        if not snapshot:
            return None
        self._with_snapshot.add(topic)
        return await self._resync(topic)

    def unsubscribe(self, topic: str) -> None:
        """Stop receiving ``topic`` (and forget its place in the sequence)."""
        if topic in self._expected:
            del self._expected[topic]
            self._epochs.pop(topic, None)
            self._retired.pop(topic, None)
            self._with_snapshot.discard(topic)
            self.socket.setsockopt(zmq.UNSUBSCRIBE, topic.encode())

    async def receive(self, timeout: float | None = None) -> list[StreamItem]:
        """The next items in order (at least one). Raises TimeoutError after ``timeout`` s."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while not self._ready:
            if not await self._drain():
                wait_ms = None if deadline is None else max(0, (deadline - loop.time()) * 1000)
                if wait_ms is not None and wait_ms <= 0:
                    raise TimeoutError(f"no stream message within {timeout} s")
                await self.socket.poll(wait_ms)
        items = list(self._ready)
        self._ready.clear()
        return items

    def __aiter__(self) -> Subscriber:
        return self

    async def __anext__(self) -> StreamItem:
        if not self._ready:
            self._ready.extend(await self.receive())
        return self._ready.popleft()

    async def _drain(self) -> bool:
        """Handle everything waiting on the socket (up to max_batch frames); True if any."""
        handled = 0
        while handled < self._max_batch:
            try:
                frames = self._sync.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            handled += 1
            slow = self._take(frames)
            if slow is not None:
                await self._take_slowly(slow)
        return handled > 0

    def _malformed(self, frames: Sequence[bytes], exc: Exception) -> None:
        self.stats.malformed += 1
        count = self.stats.malformed
        if count <= 10 or count % 1000 == 0:
            logger.warning(
                "bus stream: dropped malformed frame #%d (%d frames): %s", count, len(frames), exc
            )

    def _take(self, frames: Sequence[bytes]) -> StreamFrame | None:
        """Deliver the frames' messages, or return them decoded when they need more care (a
        gap before them, or an epoch not seen before).

        The common case (same epoch, no gap) stays synchronous: no coroutine per frame.
        """
        try:
            frame = decode_stream_frames(frames)
        except MalformedMessage as exc:
            self._malformed(frames, exc)
            return None
        topic = frame.topic
        if topic not in self._expected:
            return None  # a prefix match of another topic
        self.stats.received += len(frame.bodies)
        if self._epochs.get(topic) != frame.epoch:
            return frame
        expected = self._expected[topic]
        if expected is not None and frame.first_seq > expected:
            return frame
        self._deliver(topic, frame.epoch, frame.first_seq, frame.time_ns, frame.bodies)
        return None

    async def _take_slowly(self, frame: StreamFrame) -> None:
        """Settle the frame's epoch, fill a gap before it if needed, then deliver it."""
        topic, epoch, first, time_ns, bodies = frame
        known = self._epochs.get(topic)
        if known is None:
            self._epochs[topic] = epoch  # the first frame of the topic sets the numbering
        elif known != epoch:
            if epoch in self._retired[topic]:
                self._stale(topic, epoch, len(bodies))
                return
            await self._restart(topic, known, epoch)
        expected = self._expected[topic]
        if expected is not None and first > expected:
            self.stats.gaps += 1
            await self._fill(topic, expected, first - 1)
        self._deliver(topic, epoch, first, time_ns, bodies)

    def _stale(self, topic: str, epoch: int, count: int) -> None:
        self.stats.stale += count
        if self.stats.stale <= 10 or self.stats.stale % 1000 == 0:
            logger.warning(
                "bus stream %s: dropped %d message(s) of the replaced epoch %x (is a second "
                "publisher sending on this topic?)",
                topic,
                count,
                epoch,
            )

    async def _restart(self, topic: str, old: int, new: int) -> None:
        """The topic's publisher restarted: start over in the numbering ``new``."""
        self.stats.restarts += 1
        self._retired[topic].append(old)
        self._epochs[topic] = new
        self._expected[topic] = None
        with_snapshot = topic in self._with_snapshot and self._replay is not None
        logger.warning(
            "bus stream %s: the publisher restarted (epoch %x replaced %x); resynchronising "
            "from %s",
            topic,
            new,
            old,
            "a snapshot" if with_snapshot else "its first sequence",
        )
        if with_snapshot:
            try:
                await self._resync(topic)
                return
            except Exception as exc:  # the source is remote: report and fall back
                logger.warning("bus stream %s: snapshot failed: %r", topic, exc)
        self._expected[topic] = 1

    def _deliver(
        self, topic: str, epoch: int, first: int, time_ns: int, bodies: list[bytes]
    ) -> None:
        """Queue the bodies the consumer has not seen yet (the rest count as duplicates)."""
        stats = self.stats
        expected = self._expected[topic]
        if expected is None:
            expected = first
        end = first + len(bodies)  # one past the last sequence carried
        if end <= expected:
            stats.duplicates += len(bodies)
            return
        skip = max(expected - first, 0)
        stats.duplicates += skip
        ready = self._ready
        for index in range(skip, len(bodies)):
            ready.append(StreamMessage(topic, first + index, time_ns, bodies[index], epoch))
        stats.delivered += len(bodies) - skip
        self._expected[topic] = end

    async def _fill(self, topic: str, from_seq: int, to_seq: int) -> None:
        """Deliver ``from_seq..to_seq`` from the replay source, or resync from a snapshot."""
        epoch = self._epochs.get(topic, 0)
        messages: list[StreamMessage] = []
        if self._replay is not None:
            try:
                messages = await asyncio.wait_for(
                    self._replay.replay(topic, from_seq, to_seq), self._replay_timeout
                )
            except Exception as exc:  # the source is remote: report and fall back, never crash
                logger.warning(
                    "bus stream %s: replay of %d..%d failed: %r", topic, from_seq, to_seq, exc
                )
                messages = []
        expected = from_seq
        for message in messages:
            if message.topic != topic or message.seq != expected or message.seq > to_seq:
                break
            if message.epoch != epoch:
                if message.epoch:
                    break  # another numbering's history (an older publisher's buffer)
                message = message._replace(epoch=epoch)
            self._ready.append(message)
            expected += 1
        self.stats.replayed += expected - from_seq
        self.stats.delivered += expected - from_seq
        self._expected[topic] = expected
        if expected > to_seq:
            return
        logger.warning(
            "bus stream %s: sequences %d..%d are not available for replay; resynchronising",
            topic,
            expected,
            to_seq,
        )
        before = expected
        if self._replay is not None:
            try:
                await self._resync(topic)
            except Exception as exc:
                logger.warning("bus stream %s: snapshot failed: %r", topic, exc)
        after = self._expected[topic] or before
        # What neither replay nor the snapshot restored is lost; skip past it.
        self.stats.lost += max(0, to_seq + 1 - max(before, after))
        if after <= to_seq:
            self._expected[topic] = to_seq + 1

    async def _resync(self, topic: str) -> Snapshot:
        """Fetch the snapshot; deliver it unless it is older than what was already received."""
        assert self._replay is not None
        seq, state = await asyncio.wait_for(self._replay.snapshot(topic), self._replay_timeout)
        snapshot = Snapshot(topic, seq, state)
        current = self._expected.get(topic)
        if current is not None and seq < current:
            return snapshot  # nothing in it that the consumer lacks
        # Every message of this epoch still queued is at most current - 1 <= seq: covered.
        # Messages of an earlier epoch stay: they come before the snapshot, not inside it.
        epoch = self._epochs.get(topic)
        kept: deque[StreamItem] = deque()
        covered = 0
        for item in self._ready:
            if item.topic != topic:
                kept.append(item)
            elif isinstance(item, StreamMessage):
                if item.epoch == epoch:
                    covered += 1
                else:
                    kept.append(item)
        self.stats.delivered -= covered
        self.stats.duplicates += covered
        kept.append(snapshot)
        self._ready = kept
        self.stats.snapshots += 1
        self._expected[topic] = seq + 1
        return snapshot

    def close(self) -> None:
        """Close the socket."""
        self.socket.close(linger=0)

    async def __aenter__(self) -> Subscriber:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
