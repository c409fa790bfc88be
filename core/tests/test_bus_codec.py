"""The bus codec and every socket-facing decoder: round trips, refusals, and fuzzing.

Each decoder that reads bytes off a socket (envelopes, the broker's, worker's and client's MDP
frame handlers, the service dispatcher) is fed random bytes and random frame lists: it must
count and drop what it cannot read, and never raise.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import msgpack
import pytest
import zmq
from hypothesis import given
from hypothesis import strategies as st

from trader.bus import mdp
from trader.bus.broker import Broker
from trader.bus.client import Client
from trader.bus.codec import (
    Envelope,
    ErrorReply,
    Message,
    MessageRegistry,
    decode_envelope,
    default_registry,
    encode_envelope,
    new_message_id,
)
from trader.bus.errors import MalformedMessage, NotUnderstood
from trader.bus.service import Service, ServiceDispatcher, handler
from trader.bus.worker import Worker, _Session
from trader.model import Candle, Order, OrderSide, OrderType


@dataclass(frozen=True)
class Greeting(Message, type_name="test.codec.greeting"):
    text: str
    count: int


@dataclass(frozen=True)
class GreetingV2(Message, type_name="test.codec.greeting_v2", version=2, register=False):
    text: str

    @classmethod
    def from_body(cls, body: Any, version: int) -> GreetingV2:
        if version == 1:  # version 1 carried [text, count]
            return cls(body[0])
        return cls(*body)


@dataclass(frozen=True)
class Reply(Message, type_name="test.codec.reply"):
    text: str


class Greeter(Service):
    name = "test.codec.greeter"

    @handler
    async def greet(self, request: Greeting) -> Reply:
        return Reply(request.text * request.count)


ids = st.binary(max_size=64)
plain_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=12,
)


@given(
    type_name=st.text(min_size=1, max_size=30),
    version=st.integers(0, 2**32),
    message_id=ids,
    correlation_id=ids,
    sequence=st.integers(0, 2**63),
    time_ms=st.integers(0, 2**62),
    body=plain_values,
)
def test_envelope_round_trips_every_field(
    type_name: str,
    version: int,
    message_id: bytes,
    correlation_id: bytes,
    sequence: int,
    time_ms: int,
    body: Any,
) -> None:
    envelope = Envelope(type_name, version, message_id, correlation_id, sequence, time_ms, body)
    assert decode_envelope(encode_envelope(envelope)) == envelope


def test_envelope_is_one_frame_carrying_model_objects() -> None:
    candle = Candle(1_700_000_000_000, 1.0, 2.0, 0.5, 1.5, 10.0)
    order = Order(
        "c-1",
        "bitfinex",
        "BTC/USDT",
        OrderSide.BUY,
        OrderType.LIMIT,
        Decimal("0.1"),
        Decimal("65000.5"),
    )
    envelope = default_registry.envelope(candle)
    decoded = decode_envelope(encode_envelope(envelope))
    assert decoded.type == "model.Candle"
    assert default_registry.decode(decoded) == candle
    nested = Envelope("t", 1, b"i", b"", 0, 0, [order, {"fill": Decimal("1.5")}])
    assert decode_envelope(encode_envelope(nested)) == nested
    inner = default_registry.envelope(Greeting("x", 1))
    assert default_registry.decode(decode_envelope(encode_envelope(inner))) == Greeting("x", 1)


def test_message_ids_are_unique_and_sixteen_bytes() -> None:
    made = {new_message_id() for _ in range(10_000)}
    assert len(made) == 10_000
    assert {len(made_id) for made_id in made} == {16}


def test_registry_refuses_a_second_class_under_a_taken_name() -> None:
    registry = MessageRegistry()
    registry.add(Greeting)

    class Impostor(Message, type_name="test.codec.greeting", register=False):
        pass

    with pytest.raises(ValueError, match="taken"):
        registry.add(Impostor)


def test_unknown_type_is_not_understood() -> None:
    envelope = Envelope("no.such.type", 1, b"id", b"", 0, 0, [])
    with pytest.raises(NotUnderstood, match=r"no\.such\.type"):
        default_registry.decode(envelope)


def test_newer_schema_version_is_not_understood_and_older_is_upgraded() -> None:
    registry = MessageRegistry()
    registry.add(GreetingV2)
    newer = Envelope("test.codec.greeting_v2", 3, b"id", b"", 0, 0, ["hi"])
    with pytest.raises(NotUnderstood, match="newer"):
        registry.decode(newer)
    older = Envelope("test.codec.greeting_v2", 1, b"id", b"", 0, 0, ["hi", 2])
    assert registry.decode(older) == GreetingV2("hi")


@pytest.mark.parametrize("body", [None, "text", [1], ["a", 1, 2], {"text": "a"}])
def test_malformed_body_is_not_understood(body: Any) -> None:
    envelope = Envelope("test.codec.greeting", 1, b"id", b"", 0, 0, body)
    with pytest.raises(NotUnderstood, match="malformed body"):
        default_registry.decode(envelope)


def test_model_type_name_with_wrong_body_is_not_understood() -> None:
    with pytest.raises(NotUnderstood):
        default_registry.decode(Envelope("model.Candle", 1, b"id", b"", 0, 0, [1, 2]))


@pytest.mark.parametrize(
    "value",
    [
        [],
        ["t", 1, b"id", b"", 0, 0],
        ["", 1, b"id", b"", 0, 0, None],
        ["t", -1, b"id", b"", 0, 0, None],
        ["t", 1, "id", b"", 0, 0, None],
        ["t", 1, b"x" * 65, b"", 0, 0, None],
        ["t", 1, b"id", b"", 1.5, 0, None],
        {"type": "t"},
    ],
)
def test_decoder_refuses_wrong_shapes(value: Any) -> None:
    with pytest.raises(MalformedMessage):
        decode_envelope(msgpack.packb(value, use_bin_type=True))


@given(st.binary(max_size=300))
def test_envelope_decoder_survives_any_bytes(frame: bytes) -> None:
    try:
        envelope = decode_envelope(frame)
    except MalformedMessage:
        return
    assert isinstance(envelope, Envelope)


@given(plain_values)
def test_decoders_survive_any_msgpack(value: Any) -> None:
    _decode_or_refuse(msgpack.packb(value, use_bin_type=True))


envelope_like = st.tuples(
    st.sampled_from(["test.codec.greeting", "model.Candle", "bus.error", "x"]) | plain_values,
    plain_values,
    plain_values,
    plain_values,
    plain_values,
    plain_values,
    plain_values,
).map(list)


@given(envelope_like)
def test_decoders_survive_envelope_shaped_garbage(value: list[Any]) -> None:
    _decode_or_refuse(msgpack.packb(value, use_bin_type=True))


def _decode_or_refuse(frame: bytes) -> None:
    try:
        envelope = decode_envelope(frame)
    except MalformedMessage:
        return
    with contextlib.suppress(NotUnderstood):
        default_registry.decode(envelope)


def test_envelope_decoder_survives_random_and_corrupted_bytes() -> None:
    generator = random.Random(7)
    good = encode_envelope(default_registry.envelope(Greeting("hello", 3)))
    for _ in range(20_000):
        if generator.random() < 0.5:
            frame = generator.randbytes(generator.randrange(0, 200))
        else:
            corrupt = bytearray(good)
            for _ in range(generator.randrange(1, 4)):
                corrupt[generator.randrange(len(corrupt))] = generator.randrange(256)
            frame = bytes(corrupt[: generator.randrange(1, len(corrupt) + 1)])
        with contextlib.suppress(MalformedMessage):
            decode_envelope(frame)


def test_deeply_nested_bytes_are_malformed_not_a_crash() -> None:
    frame = b"\x91" * 100_000 + b"\xc0"
    with pytest.raises(MalformedMessage):
        decode_envelope(frame)


frame_lists = st.lists(
    st.one_of(
        st.binary(max_size=40),
        st.sampled_from(
            [b"", mdp.CLIENT, mdp.WORKER, *mdp.COMMANDS, mdp.MMI_SERVICE, b"svc", b"12"]
        ),
    ),
    max_size=9,
)


@given(frame_lists)
def test_broker_frame_handler_survives_any_frames(frames: list[bytes]) -> None:
    broker = _fuzz_broker()
    broker._handle(frames, 0.0)
    broker._tick(10_000.0)


_BROKERS: list[Broker] = []


def _fuzz_broker() -> Broker:
    if not _BROKERS:
        broker = Broker("inproc://test-codec-fuzz-broker", context=zmq.Context.instance())
        broker.bind()
        _BROKERS.append(broker)
    return _BROKERS[0]


@pytest.fixture(scope="module", autouse=True)
def _close_fuzz_broker() -> Any:
    yield
    for broker in _BROKERS:
        broker.stop()
    _BROKERS.clear()


def test_broker_counts_malformed_messages() -> None:
    broker = _fuzz_broker()
    before = broker.stats.malformed
    broker._handle([b"peer"], 0.0)
    broker._handle([b"peer", b"", b"NOTMDP"], 0.0)
    broker._handle([b"peer", b"", mdp.WORKER, b"\x09"], 0.0)
    assert broker.stats.malformed == before + 3


def test_worker_and_client_frame_handlers_survive_random_frames() -> None:
    asyncio.run(asyncio.wait_for(_fuzz_worker_and_client(), 60))


async def _fuzz_worker_and_client() -> None:
    generator = random.Random(11)
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    served: list[bytes] = []

    async def record(body: bytes) -> bytes:
        served.append(body)
        return body

    worker = Worker("inproc://test-codec-nowhere", "svc", record, context=context)
    socket = context.socket(zmq.DEALER)
    session = _Session(worker, socket)
    client = Client("inproc://test-codec-nowhere-client", context=context)
    await client.open()
    pieces = [b"", mdp.CLIENT, mdp.WORKER, *mdp.COMMANDS, b"svc", b"mmi.service"]
    try:
        for _ in range(5_000):
            frames = [
                generator.choice(pieces)
                if generator.random() < 0.6
                else generator.randbytes(generator.randrange(0, 30))
                for _ in range(generator.randrange(0, 8))
            ]
            session.on_message(frames)
            client._on_message(frames)
        await asyncio.sleep(0)  # let the request tasks the fuzz started run
        assert worker.malformed > 0 and client.malformed > 0
    finally:
        session.pump.close()
        await client.close()
        for task in list(worker._handlers):
            task.cancel()


@given(st.binary(max_size=200))
def test_service_dispatcher_survives_any_bytes(frame: bytes) -> None:
    dispatcher = ServiceDispatcher(Greeter())
    reply = asyncio.run(dispatcher(frame))
    if reply is None:
        assert dispatcher.malformed == 1
    else:  # a valid envelope of some type: it is answered, here with an error
        answer = default_registry.decode(decode_envelope(reply))
        assert isinstance(answer, ErrorReply | Reply)


def test_dispatcher_answers_unknown_type_with_not_understood() -> None:
    dispatcher = ServiceDispatcher(Greeter())
    request = Envelope("test.codec.unknown", 1, b"req-1", b"", 0, 0, [])
    reply = decode_envelope(asyncio.run(dispatcher(encode_envelope(request))) or b"")
    error = default_registry.decode(reply)
    assert reply.correlation_id == b"req-1"
    assert error == ErrorReply("not_understood", "test.codec.unknown", error.message)


def test_capacity_and_busy_count_frames_parse_strictly() -> None:
    assert mdp.parse_count(b"16", minimum=1) == 16
    assert mdp.parse_count(b"0", minimum=1) is None
    assert mdp.parse_count(b"0") == 0
    assert mdp.parse_count(b"-1") is None
    assert mdp.parse_count(b"1e3") is None
    assert mdp.parse_count(b"9999999") is None
