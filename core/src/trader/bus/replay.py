"""Replay over the bus: serve a :class:`~trader.bus.streams.ReplaySource` as a service.

A subscriber that sees a gap asks its replay source for the missing range; when the messages are
kept in another process (the publisher's :class:`~trader.bus.streams.ReplayBuffer`, later the
data processor's stores), the source is that process's :class:`ReplayService`, reached through
the broker like any other service::

    # the side that keeps the messages (e.g. the publisher's process)
    async with ServiceHost(broker, [ReplayService(buffer)], security=client_security):
        ...

    # the subscriber's side
    async with Client(broker, security=client_security) as client:
        subscriber = Subscriber(context, xpub, replay=BusReplaySource(client))

:class:`BusReplaySource` is itself a :class:`~trader.bus.streams.ReplaySource`, so the
subscriber's promises (order, no loss, no duplicates, snapshots for late joiners) hold
unchanged. Large ranges travel in several calls of at most ``max_messages`` each.

The request and reply types are bus messages (:mod:`trader.bus.codec`); a range travels as its
first sequence, the send times, the bodies and its epoch, the same compact shape as a stream
frame. A subscriber takes replayed messages only from the epoch it is following, so the buffer
of an earlier publisher run is never passed off as the current one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from trader.bus.client import Client
from trader.bus.codec import Message
from trader.bus.errors import BusError
from trader.bus.service import Service, handler
from trader.bus.streams import MAX_TOPIC_BYTES, ReplaySource, StreamMessage

__all__ = [
    "REPLAY_SERVICE",
    "BusReplaySource",
    "ReplayRange",
    "ReplayRequest",
    "ReplayService",
    "SnapshotReply",
    "SnapshotRequest",
]

#: The service name replay sources are served under unless told otherwise.
REPLAY_SERVICE = "streams.replay"
#: Most messages one reply carries; a longer range takes several calls.
DEFAULT_MAX_MESSAGES = 10_000


@dataclass(frozen=True)
class ReplayRequest(Message, type_name="streams.replay_request"):
    """Ask for the messages ``from_seq..to_seq`` (inclusive) of ``topic``."""

    topic: str
    from_seq: int
    to_seq: int


@dataclass(frozen=True)
class ReplayRange(Message, type_name="streams.replay_range"):
    """Consecutive messages of ``topic`` from ``first_seq``: one send time and body each.

    Empty when the source keeps none of the range. It may stop early: at the service's
    ``max_messages``, or where the source's history ends. ``epoch`` is the numbering the
    sequences belong to (0 when the source does not say), so a subscriber can refuse the
    history of another publisher run.
    """

    topic: str
    first_seq: int
    times_ns: list[int]
    bodies: list[bytes]
    epoch: int = 0


@dataclass(frozen=True)
class SnapshotRequest(Message, type_name="streams.snapshot_request"):
    """Ask for the state of ``topic``."""

    topic: str


@dataclass(frozen=True)
class SnapshotReply(Message, type_name="streams.snapshot"):
    """The state of ``topic`` including every message up to ``seq`` (0 and None: nothing yet)."""

    topic: str
    seq: int
    state: bytes | None


class ReplayRequestError(BusError):
    """A replay request named an invalid topic or range; the caller gets it as a RemoteError."""


class ReplayService(Service):
    """Serve ``replay`` and ``snapshot`` of a :class:`ReplaySource` under ``streams.replay``.

    Subclass and set ``name`` to serve several sources on one bus. Each reply carries at most
    ``max_messages`` messages (:class:`BusReplaySource` asks again for the rest).
    """

    name: ClassVar[str] = REPLAY_SERVICE

    def __init__(self, source: ReplaySource, *, max_messages: int = DEFAULT_MAX_MESSAGES) -> None:
        if max_messages < 1:
            raise ValueError("max_messages must be at least 1")
        self.source = source
        self.max_messages = max_messages
        #: Requests answered, for tests and monitoring.
        self.replays = 0
        self.snapshots = 0

    @handler
    async def replay(self, request: ReplayRequest) -> ReplayRange:
        """Return the consecutive messages the source keeps from ``request.from_seq`` on."""
        _check_topic(request.topic)
        if request.from_seq < 1 or request.to_seq < request.from_seq:
            raise ReplayRequestError(
                f"replay of {request.topic!r}: range {request.from_seq}..{request.to_seq} is "
                "not 1 <= from_seq <= to_seq"
            )
        self.replays += 1
        to_seq = min(request.to_seq, request.from_seq + self.max_messages - 1)
        messages = await self.source.replay(request.topic, request.from_seq, to_seq)
        times: list[int] = []
        bodies: list[bytes] = []
        first = messages[0].seq if messages else request.from_seq
        epoch = messages[0].epoch if messages else 0
        for message in messages:
            # Keep the consecutive run the source promised; anything else is not sent.
            if (
                message.topic != request.topic
                or message.seq != first + len(bodies)
                or message.epoch != epoch
            ):
                break
            if message.seq > to_seq:
                break
            times.append(message.time_ns)
            bodies.append(message.body)
        return ReplayRange(request.topic, first, times, bodies, epoch)

    @handler
    async def snapshot(self, request: SnapshotRequest) -> SnapshotReply:
        """Return the source's snapshot of ``request.topic``."""
        _check_topic(request.topic)
        self.snapshots += 1
        seq, state = await self.source.snapshot(request.topic)
        return SnapshotReply(request.topic, seq, state)


def _check_topic(topic: object) -> None:
    if type(topic) is not str or not topic or len(topic.encode()) > MAX_TOPIC_BYTES:
        raise ReplayRequestError(f"stream topic {topic!r} must be 1-{MAX_TOPIC_BYTES} bytes")


class BusReplaySource:
    """A :class:`ReplaySource` that calls a :class:`ReplayService` through ``client``.

    ``client`` must be open while the source is used. ``timeout`` bounds each call (the
    client's default when None); the subscriber also bounds a whole repair with its own
    ``replay_timeout``. Bus errors propagate: a subscriber logs them and treats the range as
    unavailable (it then resynchronises from a snapshot).
    """

    def __init__(
        self, client: Client, *, service: str = REPLAY_SERVICE, timeout: float | None = None
    ) -> None:
        self.client = client
        self.service = service
        self.timeout = timeout
        #: Calls made, for tests and monitoring.
        self.calls = 0

    async def replay(self, topic: str, from_seq: int, to_seq: int) -> list[StreamMessage]:
        """Messages ``from_seq..to_seq`` of ``topic`` the service still keeps, in order."""
        messages: list[StreamMessage] = []
        next_seq = from_seq
        epoch: int | None = None
        while next_seq <= to_seq:
            self.calls += 1
            reply = await self.client.call(
                self.service,
                ReplayRequest(topic, next_seq, to_seq),
                timeout=self.timeout,
                expect=ReplayRange,
            )
            if (
                reply.topic != topic
                or reply.first_seq != next_seq
                or not reply.bodies
                or len(reply.times_ns) != len(reply.bodies)
                or (epoch is not None and reply.epoch != epoch)
            ):
                # Nothing kept from next_seq on (or an answer about something else, or from
                # another publisher run): stop here; the subscriber resynchronises for the rest.
                break
            epoch = reply.epoch
            for index, body in enumerate(reply.bodies):
                seq = next_seq + index
                if seq > to_seq:
                    break
                messages.append(StreamMessage(topic, seq, reply.times_ns[index], body, epoch))
            next_seq = messages[-1].seq + 1
        return messages

    async def snapshot(self, topic: str) -> tuple[int, bytes | None]:
        """``(seq, state)`` of ``topic`` from the service."""
        self.calls += 1
        reply = await self.client.call(
            self.service, SnapshotRequest(topic), timeout=self.timeout, expect=SnapshotReply
        )
        if reply.topic != topic:
            raise BusError(
                f"replay service {self.service!r} answered a snapshot of {reply.topic!r} "
                f"for {topic!r}"
            )
        return reply.seq, reply.state
