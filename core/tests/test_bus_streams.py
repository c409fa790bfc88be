"""Numbered streams through the forwarder: order, gap replay, snapshots, hostile bytes."""

from __future__ import annotations

import asyncio
import contextlib
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
    StreamItem,
    StreamMessage,
    Subscriber,
    decode_stream_frames,
    encode_stream_frames,
)
from trader.bus.transport import Security, bound_endpoint, make_socket
from trader.errors import ConfigError

PLAINTEXT = Security(plaintext_tcp=True)
TOPIC = "candles.test.BTCUSD.1m"
T = TypeVar("T")


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


# ---------------------------------------------------------------------------------------------
# Wire format


def test_frames_round_trip() -> None:
    frames = encode_stream_frames(TOPIC, 7, 123, [b"a", b"", b"c" * 100])
    assert frames[0] == TOPIC.encode()
    assert decode_stream_frames(frames) == (TOPIC, 7, 123, [b"a", b"", b"c" * 100])


@given(
    topic=st.text(min_size=1, max_size=60),
    first=st.integers(1, 2**63 - 1),
    time_ns=st.integers(0, 2**63 - 1),
    bodies=st.lists(st.binary(max_size=200), max_size=20),
)
def test_encode_then_decode_is_identity(
    topic: str, first: int, time_ns: int, bodies: list[bytes]
) -> None:
    assert decode_stream_frames(encode_stream_frames(topic, first, time_ns, bodies)) == (
        topic,
        first,
        time_ns,
        bodies,
    )


@given(st.lists(st.binary(max_size=300), max_size=4))
def test_decoder_survives_random_bytes(frames: list[bytes]) -> None:
    with contextlib.suppress(MalformedMessage):
        decode_stream_frames(frames)


def test_mutated_frames_never_crash_the_subscriber() -> None:
    """Random bytes fuzz: flip, cut and splice valid frames; every result is either a valid
    stream message or counted as malformed, and the subscriber keeps working."""
    rng = random.Random(20261122)
    valid = [
        encode_stream_frames(TOPIC, n, n * 10, [b"x" * (n % 7)] * (n % 4)) for n in range(1, 50)
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
        subscriber = Subscriber(context, "inproc://unused", replay=ReplayBuffer())
        try:
            await subscriber.subscribe(TOPIC)
            accepted = 0
            for _ in range(5000):
                frames = mutate(rng.choice(valid))
                try:
                    decode_stream_frames(frames)
                    accepted += 1
                except MalformedMessage:
                    pass
                await subscriber._handle(frames)
            assert subscriber.stats.malformed == 5000 - accepted
            assert subscriber.stats.malformed > 0
        finally:
            subscriber.close()

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
        st.tuples(st.just(1), st.integers(-5, 2**64 - 1), msgpack_values, st.lists(msgpack_values)),
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
    assert decoded[1] >= 1 and all(isinstance(body, bytes) for body in decoded[3])


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
        StreamMessage("a", 3, 10, b"3"),
        StreamMessage("a", 4, 20, b"4"),
        StreamMessage("a", 5, 20, b"5"),
        StreamMessage("a", 6, 20, b"6"),
        StreamMessage("a", 7, 20, b"7"),
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
                    _topic, first, _t, bodies = decode_stream_frames(frames)
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
                [TOPIC.encode(), msgpack.packb([1, 0, 0, []])],
                [TOPIC.encode(), msgpack.packb([9, 1, 0, []])],
                [TOPIC.encode(), msgpack.packb({"a": 1})],
                [TOPIC.encode() + b"\xff", msgpack.packb([1, 1, 0, [b"x"]])],
                [TOPIC.encode(), msgpack.packb([1, 2, 0, ["text"]]), b"extra"],
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
        subscriber = Subscriber(context, "inproc://unused", replay=buffer)
        try:
            await subscriber.subscribe(TOPIC)
            seq = 1
            for index, size in enumerate(batches):
                bodies = [b"%d" % (seq + k) for k in range(size)]
                buffer.record(TOPIC, seq, 0, bodies)
                frames = encode_stream_frames(TOPIC, seq, 0, bodies)
                if index not in lost:
                    await subscriber._handle(frames)
                    if index in repeated:
                        await subscriber._handle(frames)
                seq += size
            await subscriber._handle(encode_stream_frames(TOPIC, seq, 0, []))  # keep-alive
            items = await subscriber.receive(timeout=0) if subscriber._ready else []
            delivered = seqs(items)
            first_kept = next((i for i in range(len(batches)) if i not in lost), None)
            if first_kept is None:
                # Nothing arrived before the keep-alive: the baseline starts after it.
                assert delivered == []
            else:
                start = 1 + sum(batches[:first_kept])
                assert delivered == list(range(start, seq))
                assert bodies_of(items) == [b"%d" % n for n in delivered]
        finally:
            subscriber.close()

    run(scenario)


def test_a_failing_replay_source_never_crashes_the_subscriber() -> None:
    async def scenario(context: zmq.asyncio.Context) -> None:
        subscriber = Subscriber(context, "inproc://unused", replay=FailingSource())
        try:
            await subscriber.subscribe(TOPIC)
            await subscriber._handle(encode_stream_frames(TOPIC, 1, 0, [b"1"]))
            await subscriber._handle(encode_stream_frames(TOPIC, 5, 0, [b"5"]))
            assert seqs(await subscriber.receive(timeout=0)) == [1, 5]
            assert subscriber.stats.lost == 3 and subscriber.stats.gaps == 1
        finally:
            subscriber.close()

    run(scenario)


@pytest.fixture(autouse=True)
def _no_thread_leaks() -> Iterator[None]:
    before = set(threading.enumerate())
    yield
    leaked = [t for t in set(threading.enumerate()) - before if t.is_alive() and t.daemon]
    for thread in leaked:
        thread.join(2)
    assert not [t for t in leaked if t.is_alive()], leaked
