"""Numbered streams through the forwarder: order, gap replay, snapshots, hostile bytes."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import tempfile
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import msgpack
import pytest
import zmq
import zmq.asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trader.bus.errors import MalformedMessage
from trader.bus.security import generate_keypair, load_public_key, stop_authenticator
from trader.bus.streams import (
    Publisher,
    ReplayBuffer,
    ReplaySource,
    Snapshot,
    StreamForwarder,
    StreamFrame,
    StreamItem,
    StreamMessage,
    Subscriber,
    decode_stream_frames,
    encode_stream_frames,
    new_epoch,
)
from trader.bus.transport import Security, bound_endpoint, make_socket
from trader.errors import ConfigError

PLAINTEXT = Security(plaintext_tcp=True)
TOPIC = "candles.test.BTCUSD.1m"
END = "feed.end"
EPOCH = 7
T = TypeVar("T")
_FEEDS = itertools.count(1)


def run(scenario: Callable[[zmq.asyncio.Context], Awaitable[T]]) -> T:
    """Run a scenario with a fresh asyncio context, destroyed afterwards whatever happens."""

    async def main() -> T:
        context = zmq.asyncio.Context()
        try:
            return await asyncio.wait_for(scenario(context), 30)
        finally:
            stop_authenticator(context)
            context.destroy(linger=0)

    return asyncio.run(main())


class Rig:
    """A forwarder on loopback TCP with a publisher (and its replay buffer) attached."""

    def __init__(
        self, context: zmq.asyncio.Context, capacity: int = 10_000, transport: str = "tcp"
    ) -> None:
        self.context = context
        self._folder = tempfile.TemporaryDirectory(prefix="ts", dir="/tmp")
        name = f"{self._folder.name}/{id(self)}"
        xsub, xpub = {
            "tcp": ("tcp://127.0.0.1:0", "tcp://127.0.0.1:0"),
            "ipc": (f"ipc://{name}.in", f"ipc://{name}.out"),
            "inproc": (f"inproc://{id(self)}.in", f"inproc://{id(self)}.out"),
        }[transport]
        self.forwarder = StreamForwarder(xsub, xpub, PLAINTEXT, context=context).start()
        self.buffer = ReplayBuffer(capacity)
        self.publisher = Publisher(
            context, self.forwarder.xsub_address, security=PLAINTEXT, replay_buffer=self.buffer
        )

    def subscriber(self, endpoint: str | None = None) -> Subscriber:
        return Subscriber(
            self.context,
            endpoint or self.forwarder.xpub_address,
            replay=self.buffer,
            security=PLAINTEXT,
        )

    def close(self) -> None:
        self.publisher.close()
        self.forwarder.stop()
        self._folder.cleanup()


async def wait_until_live(publisher: Publisher, subscriber: Subscriber) -> list[StreamItem]:
    """Return once the subscriber's subscriptions reach the publisher, with any other items
    received meanwhile (a snapshot, say), in order.

    Subscriptions travel in order, so once a probe topic subscribed last gets through, every
    earlier subscription is active too. Each try waits on the message, not on a clock.
    """
    probe = f"probe.{id(subscriber)}"
    await subscriber.subscribe(probe)
    others: list[StreamItem] = []
    for _ in range(200):
        publisher.publish(probe, b"")
        try:
            items = await subscriber.receive(timeout=0.05)
        except TimeoutError:
            continue
        rest = [item for item in items if item.topic != probe]
        others += rest
        if len(rest) < len(items):
            subscriber.unsubscribe(probe)
            return others
    raise AssertionError("subscription never reached the publisher")


async def collect(
    subscriber: Subscriber,
    until_seq: int,
    topic: str = TOPIC,
    items: list[StreamItem] | None = None,
) -> list[StreamItem]:
    """Receive until ``topic`` reaches ``until_seq``; ``items`` then everything received."""
    items = list(items or [])
    while not any(item.topic == topic and item.seq >= until_seq for item in items):
        items.extend(await subscriber.receive(timeout=10))
    return items


def seqs(items: list[StreamItem], topic: str = TOPIC) -> list[int]:
    return [item.seq for item in items if isinstance(item, StreamMessage) and item.topic == topic]


def bodies_of(items: list[StreamItem], topic: str = TOPIC) -> list[bytes]:
    return [item.body for item in items if isinstance(item, StreamMessage) and item.topic == topic]


class Feed:
    """A bound XPUB a subscriber connects to over inproc: hand-made frames reach it in order,
    through its public path (the socket), and the subscriptions it sends can be read."""

    def __init__(self, context: zmq.asyncio.Context) -> None:
        self.context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.shadow(context.underlying)
        self.socket = self.context.socket(zmq.XPUB)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.SNDHWM, 0)
        self.address = f"inproc://feed-{next(_FEEDS)}"
        self.socket.bind(self.address)
        self.ends = 0

    def expect(self, message: bytes) -> None:
        """Wait (bounded) until the subscriber side sends ``message`` (\\x01/\\x00 + topic)."""
        while self.socket.poll(5000):
            if self.socket.recv() == message:
                return
        raise AssertionError(f"the subscriber never sent {message!r}")

    async def run(self, subscriber: Subscriber, frames: list[list[bytes]]) -> list[StreamItem]:
        """Send ``frames``, then an end marker; return what the subscriber delivered before it.

        The subscriber handles frames in order, so once the marker arrives every frame before
        it has been handled (gaps repaired included).
        """
        if not self.ends:
            await subscriber.subscribe(END)
            self.expect(b"\x01" + END.encode())
        for frame in frames:
            self.socket.send_multipart(frame)
        self.ends += 1
        self.socket.send_multipart(encode_stream_frames(END, EPOCH, self.ends, 0, [b""]))
        items: list[StreamItem] = []
        while not any(item.topic == END for item in items):
            items += await subscriber.receive(timeout=10)
        return [item for item in items if item.topic != END]

    def close(self) -> None:
        self.socket.close(linger=0)


async def fed(
    context: zmq.asyncio.Context,
    frames: list[list[bytes]],
    replay: ReplaySource | None = None,
    topics: tuple[str, ...] = (TOPIC,),
) -> tuple[list[StreamItem], Subscriber]:
    """Feed ``frames`` to a fresh subscriber of ``topics``; return the items and the subscriber
    (closed)."""
    feed = Feed(context)
    subscriber = Subscriber(context, feed.address, replay=replay)
    try:
        for topic in topics:
            await subscriber.subscribe(topic)
            feed.expect(b"\x01" + topic.encode())
        return await feed.run(subscriber, frames), subscriber
    finally:
        subscriber.close()
        feed.close()


# ---------------------------------------------------------------------------------------------
# Wire format


def test_frames_round_trip() -> None:
    frames = encode_stream_frames(TOPIC, 99, 7, 123, [b"a", b"", b"c" * 100])
    assert frames[0] == TOPIC.encode()
    assert decode_stream_frames(frames) == StreamFrame(TOPIC, 99, 7, 123, [b"a", b"", b"c" * 100])


@given(
    topic=st.text(min_size=1, max_size=60),
    epoch=st.integers(0, 2**64 - 1),
    first=st.integers(1, 2**63 - 1),
    time_ns=st.integers(0, 2**63 - 1),
    bodies=st.lists(st.binary(max_size=200), max_size=20),
)
def test_encode_then_decode_is_identity(
    topic: str, epoch: int, first: int, time_ns: int, bodies: list[bytes]
) -> None:
    assert decode_stream_frames(encode_stream_frames(topic, epoch, first, time_ns, bodies)) == (
        topic,
        epoch,
        first,
        time_ns,
        bodies,
    )


def test_epochs_are_random_positive_63_bit_ids() -> None:
    epochs = {new_epoch() for _ in range(1000)}
    assert len(epochs) == 1000 and all(0 < epoch < 2**63 for epoch in epochs)
    assert ReplayBuffer().epoch != ReplayBuffer().epoch
    assert ReplayBuffer(epoch=42).epoch == 42
    with pytest.raises(ConfigError, match="epoch"):
        ReplayBuffer(epoch=0)


@given(st.lists(st.binary(max_size=300), max_size=4))
def test_decoder_survives_random_bytes(frames: list[bytes]) -> None:
    with contextlib.suppress(MalformedMessage):
        decode_stream_frames(frames)


def test_mutated_frames_never_crash_the_subscriber() -> None:
    """Random bytes fuzz: flip, cut and splice valid frames; every result is either a valid
    stream message or counted as malformed, and the subscriber keeps working."""
    rng = random.Random(20261122)
    valid = [
        encode_stream_frames(TOPIC, EPOCH, n, n * 10, [b"x" * (n % 7)] * (n % 4))
        for n in range(1, 50)
    ]

    def mutate(frames: list[bytes]) -> list[bytes]:
        out = [bytearray(frame) for frame in frames]
        for _ in range(rng.randint(1, 4)):
            target = out[rng.randrange(len(out))]
            action = rng.randrange(4)
            if action == 0 and target:
                target[rng.randrange(len(target))] = rng.randrange(256)
            elif action == 1 and target:
                del target[rng.randrange(len(target)) :]
            elif action == 2:
                target.extend(rng.randbytes(rng.randint(1, 8)))
            else:
                out.append(bytearray(rng.randbytes(rng.randint(0, 8))))
        return [bytes(frame) for frame in out]

    async def scenario(context: zmq.asyncio.Context) -> None:
        sent = [mutate(rng.choice(valid)) for _ in range(5000)]
        # Only frames whose first part starts with the topic pass ZeroMQ's prefix filter.
        arriving = [frames for frames in sent if frames[0].startswith(TOPIC.encode())]
        bad = 0
        for frames in arriving:
            try:
                decode_stream_frames(frames)
            except MalformedMessage:
                bad += 1
        _items, subscriber = await fed(context, sent, replay=ReplayBuffer())
        assert subscriber.stats.malformed == bad > 0

    run(scenario)


msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=10)
    | st.binary(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=5), inner, max_size=5)
    ),
    max_leaves=20,
)


@given(
    topic=st.binary(max_size=300),
    envelope=st.one_of(
        msgpack_values,
        st.tuples(st.integers(-3, 3), msgpack_values, msgpack_values, msgpack_values),
        st.tuples(
            st.integers(-3, 3), msgpack_values, msgpack_values, msgpack_values, msgpack_values
        ),
        st.tuples(
            st.just(2),
            st.integers(-5, 2**64 - 1),
            st.integers(-5, 2**64 - 1),
            msgpack_values,
            st.lists(msgpack_values),
        ),
    ),
)
def test_decoder_survives_well_formed_msgpack_of_the_wrong_shape(
    topic: bytes, envelope: object
) -> None:
    packed = msgpack.packb(envelope, use_bin_type=True)
    try:
        decoded = decode_stream_frames([topic, packed])
    except MalformedMessage:
        return
    assert decoded.epoch >= 0 and decoded.first_seq >= 1
    assert all(isinstance(body, bytes) for body in decoded.bodies)


# ---------------------------------------------------------------------------------------------
# Replay buffer


def test_replay_buffer_keeps_a_bounded_ring_per_topic() -> None:
    buffer = ReplayBuffer(capacity=5)
    buffer.record("a", 1, 10, [b"1", b"2", b"3"])
    buffer.record("a", 4, 20, [b"4", b"5", b"6", b"7"])
    buffer.record("b", 1, 30, [b"x"])
    assert buffer.last_seq("a") == 7 and buffer.last_seq("b") == 1 and buffer.last_seq("c") == 0
    assert buffer.topics() == ["a", "b"]
    assert buffer.replay_now("a", 1, 7) == [
        StreamMessage("a", 3, 10, b"3", buffer.epoch),
        StreamMessage("a", 4, 20, b"4", buffer.epoch),
        StreamMessage("a", 5, 20, b"5", buffer.epoch),
        StreamMessage("a", 6, 20, b"6", buffer.epoch),
        StreamMessage("a", 7, 20, b"7", buffer.epoch),
    ]
    assert [m.seq for m in buffer.replay_now("a", 5, 6)] == [5, 6]
    assert buffer.replay_now("a", 8, 9) == [] and buffer.replay_now("c", 1, 2) == []
    assert buffer.snapshot_now("a") == (7, b"7")
    assert buffer.snapshot_now("c") == (0, None)
    with pytest.raises(ValueError, match="does not follow"):
        buffer.record("a", 9, 0, [b"9"])
    assert isinstance(buffer, ReplaySource)


def test_replay_buffer_folds_state_for_snapshots() -> None:
    def add(state: bytes | None, body: bytes) -> bytes:
        return str(int(state or b"0") + int(body)).encode()

    buffer = ReplayBuffer(capacity=2, fold=add)
    buffer.record("sum", 1, 0, [b"1", b"2", b"3", b"4"])
    assert asyncio.run(buffer.snapshot("sum")) == (4, b"10")
    assert [m.seq for m in asyncio.run(buffer.replay("sum", 1, 4))] == [3, 4]


# ---------------------------------------------------------------------------------------------
# Through the forwarder


@pytest.mark.parametrize("transport", ["tcp", "ipc", "inproc"])
def test_messages_arrive_in_order_through_the_forwarder(transport: str) -> None:
    async def scenario(context: zmq.asyncio.Context) -> None:
        rig = Rig(context, transport=transport)
        subscriber = rig.subscriber()
        try:
            await subscriber.subscribe(TOPIC)
            await subscriber.subscribe("other")
            await wait_until_live(rig.publisher, subscriber)
            for n in range(1, 301):
                rig.publisher.publish(TOPIC, b"m%d" % n)
            # One publisher, one forwarder: order holds across topics, so these come first.
            rig.publisher.publish("other", b"o1")
            rig.publisher.publish(TOPIC + "x", b"prefix match, not subscribed")
            rig.publisher.publish_many(TOPIC, [b"m%d" % n for n in range(301, 1001)])
            items = await collect(subscriber, 1000)
            assert seqs(items) == list(range(1, 1001))
            assert bodies_of(items) == [b"m%d" % n for n in range(1, 1001)]
            assert seqs(items, "other") == [1]
            assert all(i.topic in (TOPIC, "other") for i in items)
            assert subscriber.stats.gaps == 0 and subscriber.stats.replayed == 0
        finally:
            subscriber.close()
            rig.close()

    run(scenario)


class LossyHop:
    """A real XSUB/XPUB hop between forwarder and subscriber that drops chosen sequences."""

    def __init__(self, context: zmq.Context[zmq.Socket[bytes]], upstream: str, drop: set[int]):
        self.drop = drop
        self.dropped: list[int] = []
        self.upstream = context.socket(zmq.XSUB)
        self.upstream.connect(upstream)
        self.downstream = context.socket(zmq.XPUB)
        self.downstream.bind("tcp://127.0.0.1:*")
        self.address = bound_endpoint(self.downstream)
        self.control = f"inproc://lossy-hop-{id(self)}"
        self.pipe = context.socket(zmq.PAIR)
        self.pipe.bind(self.control)
        self.context = context
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        poller = zmq.Poller()
        for socket in (self.upstream, self.downstream, self.pipe):
            poller.register(socket, zmq.POLLIN)
        while True:
            events = dict(poller.poll())
            if self.pipe in events:
                return
            if self.downstream in events:
                self.upstream.send_multipart(self.downstream.recv_multipart())
            if self.upstream in events:
                frames = self.upstream.recv_multipart()
                try:
                    _topic, _epoch, first, _t, bodies = decode_stream_frames(frames)
                except MalformedMessage:
                    self.downstream.send_multipart(frames)
                    continue
                if bodies and first in self.drop:
                    self.dropped.append(first)
                    continue
                self.downstream.send_multipart(frames)

    def close(self) -> None:
        with self.context.socket(zmq.PAIR) as stop:
            stop.connect(self.control)
            stop.send(b"stop")
        self.thread.join(5)
        for socket in (self.upstream, self.downstream, self.pipe):
            socket.close(linger=0)


def test_a_gap_is_replayed_with_no_loss_and_no_duplicates() -> None:
    dropped = {5, 6, 7, 100, *range(250, 261), 499, 500}

    async def scenario(context: zmq.asyncio.Context) -> None:
        rig = Rig(context)
        sync_context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.shadow(context.underlying)
        hop = LossyHop(sync_context, rig.forwarder.xpub_address, dropped)
        subscriber = rig.subscriber(hop.address)
        try:
            await subscriber.subscribe(TOPIC)
            await wait_until_live(rig.publisher, subscriber)
            for n in range(1, 501):
                rig.publisher.publish(TOPIC, b"%d" % n)
            rig.publisher.keepalive()  # the tail (499, 500) is lost: the keep-alive reveals it
            items = await collect(subscriber, 500)
            assert seqs(items) == list(range(1, 501))
            assert bodies_of(items) == [b"%d" % n for n in range(1, 501)]
            assert sorted(hop.dropped) == sorted(dropped)
            assert subscriber.stats.replayed == len(dropped)
            assert subscriber.stats.gaps == 4
            assert subscriber.stats.duplicates == 0 and subscriber.stats.lost == 0
        finally:
            subscriber.close()
            hop.close()
            rig.close()

    run(scenario)


def test_a_late_joiner_starts_from_the_snapshot() -> None:
    async def scenario(context: zmq.asyncio.Context) -> None:
        rig = Rig(context)
        for n in range(1, 101):
            rig.publisher.publish(TOPIC, b"%d" % n)
        subscriber = rig.subscriber()
        try:
            snapshot = await subscriber.subscribe(TOPIC, snapshot=True)
            assert snapshot == Snapshot(TOPIC, 100, b"100")
            early = await wait_until_live(rig.publisher, subscriber)
            rig.publisher.publish_many(TOPIC, [b"%d" % n for n in range(101, 151)])
            items = await collect(subscriber, 150, items=early)
            assert items[0] == snapshot
            assert seqs(items) == list(range(101, 151))
            assert subscriber.stats.snapshots == 1 and subscriber.stats.duplicates == 0
        finally:
            subscriber.close()
            rig.close()

    run(scenario)


def test_a_gap_older_than_the_replay_ring_resyncs_from_a_snapshot() -> None:
    async def scenario(context: zmq.asyncio.Context) -> None:
        rig = Rig(context, capacity=5)
        sync_context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.shadow(context.underlying)
        hop = LossyHop(sync_context, rig.forwarder.xpub_address, set(range(3, 31)))
        subscriber = rig.subscriber(hop.address)
        try:
            await subscriber.subscribe(TOPIC)
            await wait_until_live(rig.publisher, subscriber)
            for n in range(1, 41):
                rig.publisher.publish(TOPIC, b"%d" % n)
            items = await collect(subscriber, 40)
            snapshot_at = next(i for i, item in enumerate(items) if isinstance(item, Snapshot))
            snapshot = items[snapshot_at]
            # 3..30 are gone from the ring, so the snapshot must cover them.
            assert snapshot.seq >= 30
            # Before it: 1, 2 unless they were still queued when the snapshot superseded them.
            assert seqs(items[:snapshot_at]) in ([1, 2], [1], [])
            after = [i.seq for i in items[snapshot_at + 1 :]]
            assert after == list(range(snapshot.seq + 1, 41))
            assert subscriber.stats.lost == 0 and subscriber.stats.snapshots == 1
        finally:
            subscriber.close()
            hop.close()
            rig.close()

    run(scenario)


def test_malformed_frames_are_counted_and_logged_never_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="trader.bus.streams")

    async def scenario(context: zmq.asyncio.Context) -> None:
        rig = Rig(context)
        sync_context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.shadow(context.underlying)
        rogue = make_socket(
            sync_context, zmq.PUB, rig.forwarder.xsub_address, bind=False, security=PLAINTEXT
        )
        subscriber = rig.subscriber()
        try:
            await subscriber.subscribe(TOPIC)
            await wait_until_live(rig.publisher, subscriber)
            rig.publisher.publish(TOPIC, b"first")
            garbage = [
                [TOPIC.encode()],
                [TOPIC.encode(), b"\xc1"],
                [TOPIC.encode(), msgpack.packb([2, 1, 0, 0, []])],
                [TOPIC.encode(), msgpack.packb([9, 1, 1, 0, []])],
                [TOPIC.encode(), msgpack.packb([1, 1, 0, [b"x"]])],  # the old version 1 layout
                [TOPIC.encode(), msgpack.packb([2, -1, 1, 0, [b"x"]])],
                [TOPIC.encode(), msgpack.packb({"a": 1})],
                [TOPIC.encode() + b"\xff", msgpack.packb([2, 1, 1, 0, [b"x"]])],
                [TOPIC.encode(), msgpack.packb([2, 1, 2, 0, ["text"]]), b"extra"],
            ]
            for frames in garbage:
                rogue.send_multipart(frames)
            # The rogue's frames travel on their own connection: wait until each is counted
            # rather than assuming an order between the two publishers.
            while subscriber.stats.malformed < len(garbage):
                with contextlib.suppress(TimeoutError):
                    await subscriber.receive(timeout=0.05)
            rig.publisher.publish(TOPIC, b"second")
            items = await collect(subscriber, 2)
            assert bodies_of(items)[-1] == b"second"
            assert subscriber.stats.malformed == len(garbage)
            assert any("malformed" in r.getMessage() for r in caplog.records)
        finally:
            rogue.close()
            subscriber.close()
            rig.close()

    run(scenario)


def test_streams_run_over_curve(tmp_path: Path) -> None:
    for name in ("broker", "publisher", "subscriber"):
        generate_keypair(name, tmp_path)

    async def scenario(context: zmq.asyncio.Context) -> None:
        server = Security.server(tmp_path / "broker.key_secret", tmp_path)
        forwarder = StreamForwarder(
            "tcp://127.0.0.1:0", "tcp://127.0.0.1:0", server, context=context
        ).start()
        broker_key = load_public_key(tmp_path / "broker.key")
        buffer = ReplayBuffer()
        publisher = Publisher(
            context,
            forwarder.xsub_address,
            security=Security.client(tmp_path / "publisher.key_secret", broker_key),
            replay_buffer=buffer,
        )
        subscriber = Subscriber(
            context,
            forwarder.xpub_address,
            replay=buffer,
            security=Security.client(tmp_path / "subscriber.key_secret", broker_key),
        )
        try:
            await subscriber.subscribe(TOPIC, snapshot=True)
            early = await wait_until_live(publisher, subscriber)
            publisher.publish_many(TOPIC, [b"a", b"b", b"c"])
            items = await collect(subscriber, 3, items=early)
            assert items[0] == Snapshot(TOPIC, 0, None)
            assert seqs(items) == [1, 2, 3]
        finally:
            subscriber.close()
            publisher.close()
            forwarder.stop()

    run(scenario)


def test_the_forwarder_can_be_pumped_from_a_poll_loop() -> None:
    async def scenario(context: zmq.asyncio.Context) -> None:
        forwarder = StreamForwarder(
            "tcp://127.0.0.1:0", "tcp://127.0.0.1:0", PLAINTEXT, context=context
        )
        forwarder.bind()
        stop = threading.Event()

        def loop() -> None:
            poller = zmq.Poller()
            assert forwarder.xsub_socket is not None and forwarder.xpub_socket is not None
            poller.register(forwarder.xsub_socket, zmq.POLLIN)
            poller.register(forwarder.xpub_socket, zmq.POLLIN)
            while not stop.is_set():
                if poller.poll(20):
                    forwarder.pump()

        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        buffer = ReplayBuffer()
        publisher = Publisher(
            context, forwarder.xsub_address, security=PLAINTEXT, replay_buffer=buffer
        )
        subscriber = Subscriber(context, forwarder.xpub_address, replay=buffer, security=PLAINTEXT)
        try:
            await subscriber.subscribe(TOPIC)
            await wait_until_live(publisher, subscriber)
            publisher.publish_many(TOPIC, [b"1", b"2"])
            assert seqs(await collect(subscriber, 2)) == [1, 2]
        finally:
            stop.set()
            thread.join(5)
            subscriber.close()
            publisher.close()
            forwarder.stop()

    run(scenario)


def test_subscribe_checks_its_arguments() -> None:
    async def scenario(context: zmq.asyncio.Context) -> None:
        subscriber = Subscriber(context, "inproc://nowhere")
        try:
            with pytest.raises(ConfigError, match="replay source"):
                await subscriber.subscribe(TOPIC, snapshot=True)
            with pytest.raises(ConfigError, match="1-255 bytes"):
                await subscriber.subscribe("")
            with pytest.raises(TimeoutError):
                await subscriber.receive(timeout=0.01)
        finally:
            subscriber.close()

    run(scenario)


# ---------------------------------------------------------------------------------------------
# Sequence logic under any loss pattern (frames fed straight to the subscriber's decoder)


class FailingSource:
    """A replay source that is down: every call raises."""

    async def replay(self, topic: str, from_seq: int, to_seq: int) -> list[StreamMessage]:
        raise ConnectionError("replay service down")

    async def snapshot(self, topic: str) -> tuple[int, bytes | None]:
        raise ConnectionError("replay service down")


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    batches=st.lists(st.integers(1, 8), min_size=1, max_size=40),
    lost=st.sets(st.integers(0, 39)),
    repeated=st.sets(st.integers(0, 39)),
)
def test_any_loss_pattern_is_repaired_exactly_once_in_order(
    batches: list[int], lost: set[int], repeated: set[int]
) -> None:
    async def scenario(context: zmq.asyncio.Context) -> None:
        buffer = ReplayBuffer()
        frames: list[list[bytes]] = []
        seq = 1
        for index, size in enumerate(batches):
            bodies = [b"%d" % (seq + k) for k in range(size)]
            buffer.record(TOPIC, seq, 0, bodies)
            frame = encode_stream_frames(TOPIC, buffer.epoch, seq, 0, bodies)
            if index not in lost:
                frames.append(frame)
                if index in repeated:
                    frames.append(frame)
            seq += size
        frames.append(encode_stream_frames(TOPIC, buffer.epoch, seq, 0, []))  # keep-alive
        items, _ = await fed(context, frames, replay=buffer)
        delivered = seqs(items)
        first_kept = next((i for i in range(len(batches)) if i not in lost), None)
        if first_kept is None:
            # Nothing arrived before the keep-alive: the baseline starts after it.
            assert delivered == []
        else:
            start = 1 + sum(batches[:first_kept])
            assert delivered == list(range(start, seq))
            assert bodies_of(items) == [b"%d" % n for n in delivered]

    run(scenario)


def test_a_failing_replay_source_never_crashes_the_subscriber() -> None:
    async def scenario(context: zmq.asyncio.Context) -> None:
        frames = [
            encode_stream_frames(TOPIC, EPOCH, 1, 0, [b"1"]),
            encode_stream_frames(TOPIC, EPOCH, 5, 0, [b"5"]),
        ]
        items, subscriber = await fed(context, frames, replay=FailingSource())
        assert seqs(items) == [1, 5]
        assert subscriber.stats.lost == 3 and subscriber.stats.gaps == 1

    run(scenario)


# ---------------------------------------------------------------------------------------------
# Epochs: a restarted publisher


def test_a_restarted_publisher_is_followed_not_dropped_as_duplicates(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The reviewer's case: a publisher without a replay buffer restarts and counts from 1."""
    caplog.set_level(logging.WARNING, logger="trader.bus.streams")

    async def scenario(context: zmq.asyncio.Context) -> None:
        forwarder = StreamForwarder(
            f"inproc://restart-{id(context)}.in",
            f"inproc://restart-{id(context)}.out",
            context=context,
        ).start()
        subscriber = Subscriber(context, forwarder.xpub_address)
        first = Publisher(context, forwarder.xsub_address)
        second: Publisher | None = None
        try:
            await subscriber.subscribe(TOPIC)
            await wait_until_live(first, subscriber)
            first.publish_many(TOPIC, [b"old%d" % n for n in range(1, 101)])
            assert seqs(await collect(subscriber, 100)) == list(range(1, 101))
            first.close()
            second = Publisher(context, forwarder.xsub_address)  # the process restarted
            assert second.epoch != first.epoch
            await wait_until_live(second, subscriber)
            second.publish_many(TOPIC, [b"new%d" % n for n in range(1, 51)])
            items = await collect(subscriber, 50)
            assert seqs(items) == list(range(1, 51))
            assert bodies_of(items) == [b"new%d" % n for n in range(1, 51)]
            assert {item.epoch for item in items if isinstance(item, StreamMessage)} == {
                second.epoch
            }
            assert subscriber.stats.restarts == 1 and subscriber.stats.duplicates == 0
            assert any("publisher restarted" in r.getMessage() for r in caplog.records)
        finally:
            subscriber.close()
            first.close()
            if second is not None:
                second.close()
            forwarder.stop()

    run(scenario)


def test_a_publisher_restarted_on_its_buffer_keeps_its_numbering() -> None:
    async def scenario(context: zmq.asyncio.Context) -> None:
        buffer = ReplayBuffer()
        frames = []
        for publisher_run in range(2):
            # Each "run" numbers on from the shared buffer, in its epoch.
            last = buffer.last_seq(TOPIC)
            bodies = [b"%d" % (last + k + 1) for k in range(3)]
            buffer.record(TOPIC, last + 1, publisher_run, bodies)
            frames.append(encode_stream_frames(TOPIC, buffer.epoch, last + 1, 0, bodies))
        items, subscriber = await fed(context, frames, replay=buffer)
        assert seqs(items) == [1, 2, 3, 4, 5, 6]
        assert subscriber.stats.restarts == 0

    run(scenario)


def test_a_new_epoch_starts_from_its_first_sequence_replaying_what_it_can() -> None:
    async def scenario(context: zmq.asyncio.Context) -> None:
        old, new = ReplayBuffer(), ReplayBuffer()
        new.record(TOPIC, 1, 0, [b"n1", b"n2", b"n3", b"n4"])
        frames = [
            encode_stream_frames(TOPIC, old.epoch, 1, 0, [b"o1", b"o2", b"o3"]),
            # The restarted publisher's first two messages were lost on the way.
            encode_stream_frames(TOPIC, new.epoch, 3, 0, [b"n3", b"n4"]),
            # A late frame of the replaced publisher: dropped, not taken for a new restart.
            encode_stream_frames(TOPIC, old.epoch, 4, 0, [b"o4"]),
            encode_stream_frames(TOPIC, new.epoch, 5, 0, [b"n5"]),
        ]
        items, subscriber = await fed(context, frames, replay=new)
        assert bodies_of(items) == [b"o1", b"o2", b"o3", b"n1", b"n2", b"n3", b"n4", b"n5"]
        assert seqs(items) == [1, 2, 3, 1, 2, 3, 4, 5]
        assert [item.epoch for item in items if isinstance(item, StreamMessage)] == [
            old.epoch
        ] * 3 + [new.epoch] * 5
        stats = subscriber.stats
        assert (stats.restarts, stats.gaps, stats.replayed, stats.stale) == (1, 1, 2, 1)
        assert stats.lost == 0 and stats.duplicates == 0

        # Without a replay source, what the new epoch's start lacked is counted as lost.
        items, subscriber = await fed(context, frames[:2])
        assert bodies_of(items) == [b"o1", b"o2", b"o3", b"n3", b"n4"]
        assert subscriber.stats.lost == 2 and subscriber.stats.restarts == 1

    run(scenario)


class NoSnapshots:
    """Replays from a buffer; has no snapshots."""

    def __init__(self, buffer: ReplayBuffer) -> None:
        self.buffer = buffer

    async def replay(self, topic: str, from_seq: int, to_seq: int) -> list[StreamMessage]:
        return self.buffer.replay_now(topic, from_seq, to_seq)

    async def snapshot(self, topic: str) -> tuple[int, bytes | None]:
        raise ConnectionError("no snapshots here")


def test_replayed_history_of_another_epoch_is_refused() -> None:
    async def scenario(context: zmq.asyncio.Context) -> None:
        stale = ReplayBuffer()  # an earlier run's buffer: same sequences, other messages
        stale.record(TOPIC, 1, 0, [b"s1", b"s2", b"s3", b"s4", b"s5"])
        frames = [
            encode_stream_frames(TOPIC, EPOCH, 1, 0, [b"1"]),
            encode_stream_frames(TOPIC, EPOCH, 5, 0, [b"5"]),
        ]
        items, subscriber = await fed(context, frames, replay=NoSnapshots(stale))
        assert bodies_of(items) == [b"1", b"5"]
        assert subscriber.stats.replayed == 0 and subscriber.stats.lost == 3

    run(scenario)


class SwitchingSource:
    """A replay source that moves to the restarted publisher's buffer, as a service would."""

    def __init__(self, buffer: ReplayBuffer) -> None:
        self.buffer = buffer

    async def replay(self, topic: str, from_seq: int, to_seq: int) -> list[StreamMessage]:
        return self.buffer.replay_now(topic, from_seq, to_seq)

    async def snapshot(self, topic: str) -> tuple[int, bytes | None]:
        return self.buffer.snapshot_now(topic)


def test_a_new_epoch_resyncs_from_a_snapshot_when_the_topic_asked_for_snapshots() -> None:
    async def scenario(context: zmq.asyncio.Context) -> None:
        old, new = ReplayBuffer(), ReplayBuffer()
        old.record(TOPIC, 1, 0, [b"o1", b"o2"])
        new.record(TOPIC, 1, 0, [b"n1", b"n2", b"n3", b"n4", b"n5"])
        source = SwitchingSource(old)
        feed = Feed(context)
        subscriber = Subscriber(context, feed.address, replay=source)
        try:
            assert await subscriber.subscribe(TOPIC, snapshot=True) == Snapshot(TOPIC, 2, b"o2")
            feed.expect(b"\x01" + TOPIC.encode())
            before = await feed.run(
                subscriber, [encode_stream_frames(TOPIC, old.epoch, 3, 0, [b"o3"])]
            )
            assert before == [
                Snapshot(TOPIC, 2, b"o2"),
                StreamMessage(TOPIC, 3, 0, b"o3", old.epoch),
            ]
            source.buffer = new  # the publisher restarted, and its replay service with it
            after = await feed.run(
                subscriber, [encode_stream_frames(TOPIC, new.epoch, 4, 0, [b"n4", b"n5"])]
            )
            assert after == [Snapshot(TOPIC, 5, b"n5")]
            assert subscriber.stats.restarts == 1 and subscriber.stats.snapshots == 2
            assert subscriber.stats.lost == 0
        finally:
            subscriber.close()
            feed.close()

    run(scenario)


def test_subscribing_again_keeps_the_place_and_the_single_zmq_subscription() -> None:
    async def scenario(context: zmq.asyncio.Context) -> None:
        feed = Feed(context)
        subscriber = Subscriber(context, feed.address)
        try:
            await subscriber.subscribe(TOPIC)
            feed.expect(b"\x01" + TOPIC.encode())
            first = await feed.run(
                subscriber, [encode_stream_frames(TOPIC, EPOCH, 1, 0, [b"1", b"2", b"3"])]
            )
            assert seqs(first) == [1, 2, 3]
            assert await subscriber.subscribe(TOPIC) is None  # again: nothing is reset
            again = await feed.run(
                subscriber, [encode_stream_frames(TOPIC, EPOCH, 2, 0, [b"2", b"3", b"4"])]
            )
            assert seqs(again) == [4] and subscriber.stats.duplicates == 2
            # One unsubscribe ends the subscription: ZeroMQ was subscribed once, not twice.
            subscriber.unsubscribe(TOPIC)
            feed.expect(b"\x00" + TOPIC.encode())
        finally:
            subscriber.close()
            feed.close()

    run(scenario)


@pytest.fixture(autouse=True)
def _no_thread_leaks() -> Iterator[None]:
    before = set(threading.enumerate())
    yield
    leaked = [t for t in set(threading.enumerate()) - before if t.is_alive() and t.daemon]
    for thread in leaked:
        thread.join(2)
    assert not [t for t in leaked if t.is_alive()], leaked
