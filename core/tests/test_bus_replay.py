"""Replay over the bus: a ReplayService serving a ReplayBuffer, called by BusReplaySource.

The broker runs in a thread of the test process; the service and the caller run in the test's
event loop, with calls going through the broker (the direct local path is off).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Iterator, Sequence
from typing import Any, TypeVar

import pytest
import zmq
import zmq.asyncio

from trader.bus.broker import Broker
from trader.bus.client import Client
from trader.bus.errors import RemoteError
from trader.bus.replay import (
    REPLAY_SERVICE,
    BusReplaySource,
    ReplayRange,
    ReplayRequest,
    ReplayService,
    SnapshotReply,
    SnapshotRequest,
)
from trader.bus.service import ServiceHost
from trader.bus.streams import (
    Publisher,
    ReplayBuffer,
    ReplaySource,
    Snapshot,
    StreamForwarder,
    StreamItem,
    StreamMessage,
    Subscriber,
)

T = TypeVar("T")
TOPIC = "candles.test.ETHUSD.1m"
HEARTBEAT = 0.1
_names = itertools.count()


def run(coroutine: Awaitable[T], timeout: float = 20.0) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coroutine, timeout)

    return asyncio.run(bounded())


@pytest.fixture
def broker() -> Iterator[Broker]:
    running = Broker(f"inproc://test-replay-{next(_names)}", heartbeat_interval=HEARTBEAT)
    running.start()
    try:
        yield running
    finally:
        running.stop()


def filled_buffer(count: int, capacity: int = 1000) -> ReplayBuffer:
    buffer = ReplayBuffer(capacity)
    buffer.record(TOPIC, 1, 1_000, [f"m{n}".encode() for n in range(1, count + 1)])
    return buffer


def serve(broker: Broker, service: ReplayService) -> ServiceHost:
    return ServiceHost(broker.endpoint, [service], heartbeat_interval=HEARTBEAT, local_calls=False)


def test_replay_source_over_the_bus_returns_ranges_in_chunks_and_snapshots(
    broker: Broker,
) -> None:
    service = ReplayService(filled_buffer(20, capacity=15), max_messages=4)

    async def scenario() -> None:
        async with serve(broker, service), Client(broker.endpoint, local_calls=False) as client:
            await client.wait_for_service(REPLAY_SERVICE, timeout=10)
            source = BusReplaySource(client, timeout=5.0)
            assert isinstance(source, ReplaySource)

            got = await source.replay(TOPIC, 7, 17)  # 11 messages at 4 a call: 3 calls
            epoch = service.source.epoch  # type: ignore[attr-defined]
            assert got == [
                StreamMessage(TOPIC, n, 1_000, f"m{n}".encode(), epoch) for n in range(7, 18)
            ]
            assert source.calls == 3 and service.replays == 3

            # Ranges past the end stop where the history ends; one more call finds nothing.
            assert [m.seq for m in await source.replay(TOPIC, 19, 30)] == [19, 20]
            assert await source.replay(TOPIC, 21, 25) == []
            # Sequences 1..5 rolled out of the ring (capacity 15): none of them come back.
            assert await source.replay(TOPIC, 2, 8) == []
            assert await source.replay("other.topic", 1, 3) == []

            assert await source.snapshot(TOPIC) == (20, b"m20")
            assert await source.snapshot("other.topic") == (0, None)

    run(scenario())


def test_replay_service_refuses_bad_ranges_and_topics(broker: Broker) -> None:
    service = ReplayService(filled_buffer(5))

    async def scenario() -> None:
        async with serve(broker, service), Client(broker.endpoint, local_calls=False) as client:
            await client.wait_for_service(REPLAY_SERVICE, timeout=10)
            with pytest.raises(RemoteError, match=r"range 5\.\.4"):
                await client.call(REPLAY_SERVICE, ReplayRequest(TOPIC, 5, 4))
            with pytest.raises(RemoteError, match="range 0"):
                await client.call(REPLAY_SERVICE, ReplayRequest(TOPIC, 0, 4))
            with pytest.raises(RemoteError, match="topic"):
                await client.call(REPLAY_SERVICE, SnapshotRequest(""))
            reply = await client.call(
                REPLAY_SERVICE, ReplayRequest(TOPIC, 2, 3), expect=ReplayRange
            )
            epoch = service.source.epoch  # type: ignore[attr-defined]
            assert reply == ReplayRange(TOPIC, 2, [1_000, 1_000], [b"m2", b"m3"], epoch)
            snapshot = await client.call(
                REPLAY_SERVICE, SnapshotRequest(TOPIC), expect=SnapshotReply
            )
            assert snapshot == SnapshotReply(TOPIC, 5, b"m5")

    run(scenario())
    with pytest.raises(ValueError, match="max_messages"):
        ReplayService(ReplayBuffer(), max_messages=0)


class SkippingPublisher(Publisher):
    """Records every message in its buffer but sends no envelope starting at a skipped seq."""

    def __init__(
        self, context: zmq.Context[Any], endpoint: str, *, buffer: ReplayBuffer, skip: set[int]
    ) -> None:
        super().__init__(context, endpoint, replay_buffer=buffer)
        self.skip = skip

    def _send(self, topic: str, first: int, now: int, bodies: Sequence[bytes]) -> None:
        if topic == TOPIC and bodies and first in self.skip:
            return
        super()._send(topic, first, now, bodies)


def test_subscriber_repairs_gaps_through_the_replay_service_in_one_process(
    broker: Broker,
) -> None:
    """The same repair as the process test, in one process: quick to debug."""
    name = next(_names)

    async def scenario() -> tuple[list[StreamItem], Subscriber]:
        context = zmq.asyncio.Context()
        forwarder = StreamForwarder(
            f"inproc://test-replay-in-{name}", f"inproc://test-replay-out-{name}", context=context
        ).start()
        buffer = ReplayBuffer()
        publisher = SkippingPublisher(
            context, forwarder.xsub_address, buffer=buffer, skip={1, 31, 41, 91}
        )
        items: list[StreamItem] = []
        try:
            async with (
                serve(broker, ReplayService(buffer, max_messages=7)),
                Client(broker.endpoint, local_calls=False) as client,
            ):
                await client.wait_for_service(REPLAY_SERVICE, timeout=10)
                subscriber = Subscriber(
                    context, forwarder.xpub_address, replay=BusReplaySource(client)
                )
                try:
                    snapshot = await subscriber.subscribe(TOPIC, snapshot=True)
                    assert snapshot is not None
                    items.append(snapshot)
                    await subscriber.subscribe("probe")
                    while True:  # wait until the subscriptions reach the publisher
                        publisher.publish("probe", b"")
                        try:
                            got = await subscriber.receive(timeout=0.05)
                        except TimeoutError:
                            continue
                        if any(item.topic == "probe" for item in got):
                            break
                    subscriber.unsubscribe("probe")
                    for start in range(1, 101, 10):
                        publisher.publish_many(
                            TOPIC, [f"m{n}".encode() for n in range(start, start + 10)]
                        )
                    publisher.keepalive([TOPIC])  # reveals the lost tail (91..100)
                    while not any(
                        isinstance(item, StreamMessage) and item.seq == 100 for item in items
                    ):
                        got = await subscriber.receive(timeout=5)
                        items += [item for item in got if item.topic == TOPIC]
                finally:
                    subscriber.close()
        finally:
            publisher.close()
            forwarder.stop()
            context.destroy(linger=0)
        return items, subscriber

    items, subscriber = run(scenario())
    assert items[0] == Snapshot(TOPIC, 0, None)
    messages = [item for item in items[1:] if isinstance(item, StreamMessage)]
    assert [m.seq for m in messages] == list(range(1, 101))
    assert [m.body for m in messages] == [f"m{n}".encode() for n in range(1, 101)]
    stats = subscriber.stats
    assert (stats.gaps, stats.replayed, stats.lost, stats.duplicates) == (3, 40, 0, 0)
