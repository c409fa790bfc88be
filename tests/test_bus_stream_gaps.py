"""A subscriber gap replayed over the bus, with real processes.

Three processes: the broker (``python -m trader.bus.broker`` hosting the stream forwarder), a
publisher that keeps what it publishes in a ReplayBuffer and serves it as the ``streams.replay``
service through the same broker, and this test process as the subscriber. The publisher records
every message but skips the sends of some envelopes (at the start, in the middle, a range longer
than one replay reply, and the tail), so the subscriber sees gaps it must repair by calling the
replay service over the bus. Every wait is on a message, bounded by a timeout; every process is
killed in ``finally``.
"""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq.asyncio

from trader.bus.client import Client
from trader.bus.replay import REPLAY_SERVICE, BusReplaySource
from trader.bus.streams import Snapshot, StreamMessage, Subscriber
from trader.bus.transport import Security
from trader_sdk.testing.processes import ProcessGroup

PLAINTEXT = Security(plaintext_tcp=True)
HEARTBEAT = 0.2
TOPIC = "candles.test.BTCUSD.1m"
TOTAL = 2000
BATCH = 10
MAX_REPLY = 50
#: First sequences of the envelopes the publisher does not send: the first one, two in a row,
#: 100 messages (three replay calls of at most 50), a lone one, and the very last (the tail,
#: revealed only by the publisher's keep-alives).
SKIPPED = {1, 201, 211, *range(801, 901, BATCH), 1501, TOTAL - BATCH + 1}

PUBLISHER_MODULE = '''
"""Publisher with a replay service, for the stream gap test (written by the test)."""
import asyncio
import contextlib
import sys
import threading

import zmq

from trader.bus.replay import ReplayService
from trader.bus.service import ServiceHost
from trader.bus.streams import Publisher, ReplayBuffer
from trader.bus.transport import Security

PLAINTEXT = Security(plaintext_tcp=True)


class SkippingPublisher(Publisher):
    """Records every message but does not send envelopes starting at a skipped sequence."""

    def __init__(self, *args, topic, skip, **options):
        super().__init__(*args, **options)
        self.topic = topic
        self.skip = skip
        self.skipped = 0

    def _send(self, topic, first, now, bodies):
        if topic == self.topic and bodies and first in self.skip:
            self.skipped += len(bodies)
            return
        super()._send(topic, first, now, bodies)


async def main() -> None:
    broker, xsub, topic, total, batch, max_reply, heartbeat, skip = sys.argv[1:9]
    total, batch = int(total), int(batch)
    buffer = ReplayBuffer()
    publisher = SkippingPublisher(
        zmq.Context(),
        xsub,
        security=PLAINTEXT,
        replay_buffer=buffer,
        topic=topic,
        skip={int(seq) for seq in skip.split(",")},
    )
    loop = asyncio.get_running_loop()
    go = asyncio.Event()

    def read_stdin() -> None:
        sys.stdin.readline()
        loop.call_soon_threadsafe(go.set)

    threading.Thread(target=read_stdin, daemon=True).start()
    service = ReplayService(buffer, max_messages=int(max_reply))
    async with ServiceHost(
        broker, [service], security=PLAINTEXT, heartbeat_interval=float(heartbeat)
    ):
        print("serving", flush=True)
        while not go.is_set():  # probes until the subscriber says its subscriptions are live
            publisher.publish("probe", b"")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(go.wait(), 0.02)
        last = 0
        while last < total:
            bodies = [f"m{n}".encode() for n in range(last + 1, min(total, last + batch) + 1)]
            last = publisher.publish_many(topic, bodies)
        print("published", last, publisher.skipped, flush=True)
        while True:  # keep-alives let the subscriber notice the lost tail
            publisher.keepalive([topic])
            await asyncio.sleep(0.05)


asyncio.run(main())
'''


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[ProcessGroup]:
    (tmp_path / "gappublisher.py").write_text(textwrap.dedent(PUBLISHER_MODULE))
    started = ProcessGroup(tmp_path)
    try:
        yield started
    finally:
        started.stop_all()


def test_subscriber_gaps_are_replayed_over_the_bus_with_no_loss_and_no_duplicates(
    processes: ProcessGroup,
) -> None:
    async def scenario() -> tuple[list[StreamMessage], Subscriber, BusReplaySource, str]:
        processes.start(
            "-m",
            "trader.bus.broker",
            "tcp://127.0.0.1:0",
            "--plaintext",
            "--heartbeat",
            str(HEARTBEAT),
            "--streams",
            "tcp://127.0.0.1:0",
            "tcp://127.0.0.1:0",
        )
        endpoint = await processes.line("tcp://")
        xsub, xpub = (await processes.line("tcp://")).split()
        publisher = processes.start(
            "-c",
            "import gappublisher",
            endpoint,
            xsub,
            TOPIC,
            str(TOTAL),
            str(BATCH),
            str(MAX_REPLY),
            str(HEARTBEAT),
            ",".join(str(seq) for seq in sorted(SKIPPED)),
        )
        context = zmq.asyncio.Context()
        messages: list[StreamMessage] = []
        try:
            async with Client(endpoint, security=PLAINTEXT, timeout=10.0) as client:
                await client.wait_for_service(REPLAY_SERVICE, timeout=20.0)
                source = BusReplaySource(client)
                subscriber = Subscriber(context, xpub, replay=source, security=PLAINTEXT)
                try:
                    # A late joiner's snapshot, fetched over the bus: nothing published yet.
                    assert await subscriber.subscribe(TOPIC, snapshot=True) == Snapshot(
                        TOPIC, 0, None
                    )
                    await subscriber.subscribe("probe")
                    # Subscriptions travel in order: once a probe arrives, TOPIC is live too.
                    while not any(i.topic == "probe" for i in await subscriber.receive(20)):
                        pass
                    subscriber.unsubscribe("probe")
                    assert publisher.stdin is not None
                    publisher.stdin.write("go\n")
                    publisher.stdin.flush()
                    published = await processes.line("published")
                    while not messages or messages[-1].seq < TOTAL:
                        for item in await subscriber.receive(timeout=10):
                            if item.topic == TOPIC:
                                assert isinstance(item, StreamMessage)
                                messages.append(item)
                finally:
                    subscriber.close()
        finally:
            context.destroy(linger=0)
        return messages, subscriber, source, published

    async def bounded() -> tuple[list[StreamMessage], Subscriber, BusReplaySource, str]:
        return await asyncio.wait_for(scenario(), 60)

    messages, subscriber, source, published = asyncio.run(bounded())
    skipped_messages = len(SKIPPED) * BATCH
    assert published == f"published {TOTAL} {skipped_messages}"
    assert [m.seq for m in messages] == list(range(1, TOTAL + 1))  # in order, no loss, no dups
    assert [m.body for m in messages] == [f"m{n}".encode() for n in range(1, TOTAL + 1)]
    stats = subscriber.stats
    assert stats.replayed == skipped_messages
    assert stats.gaps == 5  # 1, 201-220, 801-900, 1501, the tail
    assert (stats.lost, stats.duplicates, stats.malformed) == (0, 0, 0)
    # One snapshot call, one replay call per gap, and one more for the 100 messages of 801-900.
    assert source.calls == 1 + stats.gaps + 1
