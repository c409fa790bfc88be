"""Service calls through a real broker: typed replies, errors, retries, dedupe, load balancing,
heartbeats and reconnection, over inproc, ipc and tcp with the same code.

The broker runs in a thread of the test process; workers and clients run in the test's event
loop. Every wait is on a reply or an event, bounded by a timeout.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import zmq
from hypothesis import given
from hypothesis import strategies as st

from trader.bus import mdp
from trader.bus.broker import Broker
from trader.bus.client import Client
from trader.bus.codec import Message, MessageRegistry, default_registry
from trader.bus.errors import (
    BusError,
    CallTimeout,
    NotUnderstood,
    RemoteError,
    ServiceUnavailable,
)
from trader.bus.service import Service, ServiceDispatcher, ServiceHost, handler
from trader.bus.transport import Security, bound_endpoint
from trader.bus.worker import Worker
from trader.errors import ConfigError, StorageError
from trader.model import Candle

T = TypeVar("T")
PLAINTEXT = Security(plaintext_tcp=True)
HEARTBEAT = 0.1
_names = itertools.count()


@dataclass(frozen=True)
class Ping(Message, type_name="test.rpc.ping"):
    text: str


@dataclass(frozen=True)
class Pong(Message, type_name="test.rpc.pong"):
    text: str
    served_by: str = ""


@dataclass(frozen=True)
class Fail(Message, type_name="test.rpc.fail"):
    reason: str


@dataclass(frozen=True)
class Hang(Message, type_name="test.rpc.hang"):
    pass


class Echo(Service):
    name = "test.rpc.echo"

    def __init__(self, label: str = "") -> None:
        self.label = label
        self.calls = 0
        self.release = asyncio.Event()
        self.started = asyncio.Event()

    @handler
    async def ping(self, request: Ping) -> Pong:
        self.calls += 1
        return Pong(request.text, self.label)

    @handler
    async def fail(self, request: Fail) -> Pong:
        raise StorageError(f"cannot store: {request.reason}")

    @handler
    async def hang(self, request: Hang) -> Pong:
        self.calls += 1
        self.started.set()
        await self.release.wait()
        return Pong("released", self.label)

    @handler
    async def candle(self, request: Candle) -> Candle:
        return Candle(request.time + 60_000, request.open, request.high, request.low, 1.0, 2.0)


async def eventually(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait until ``condition()`` holds (checked every 10 ms); fail after ``timeout`` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.01)


def run(coroutine: Awaitable[T], timeout: float = 30.0) -> T:
    """Run a test scenario in a fresh event loop, bounded by ``timeout`` seconds."""

    async def bounded() -> T:
        return await asyncio.wait_for(coroutine, timeout)

    return asyncio.run(bounded())


@pytest.fixture
def ipc_dir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="trb", dir="/tmp")  # ipc paths must stay short
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _endpoint(transport: str, ipc_dir: str) -> str:
    if transport == "inproc":
        return f"inproc://test-rpc-{next(_names)}"
    if transport == "ipc":
        return f"ipc://{ipc_dir}/b{next(_names)}"
    return "tcp://127.0.0.1:0"


@pytest.fixture
def start_broker(ipc_dir: str) -> Iterator[Callable[..., Broker]]:
    brokers: list[Broker] = []

    def start(transport: str = "inproc", **options: Any) -> Broker:
        options.setdefault("heartbeat_interval", HEARTBEAT)
        broker = Broker(_endpoint(transport, ipc_dir), security=PLAINTEXT, **options)
        brokers.append(broker)
        broker.start()
        return broker

    yield start
    for broker in brokers:
        broker.stop()


def host(broker: Broker, *services: Service, **options: Any) -> ServiceHost:
    """Host services on the broker; calls go through it (the direct local path is off)."""
    options.setdefault("heartbeat_interval", HEARTBEAT)
    options.setdefault("local_calls", False)
    return ServiceHost(broker.endpoint, list(services), security=PLAINTEXT, **options)


def client(broker: Broker, **options: Any) -> Client:
    return Client(broker.endpoint, security=PLAINTEXT, **options)


@pytest.mark.parametrize("transport", ["inproc", "ipc", "tcp"])
def test_call_returns_the_typed_reply_over_every_transport(
    start_broker: Callable[..., Broker], transport: str
) -> None:
    broker = start_broker(transport)

    async def scenario() -> tuple[Pong, Candle]:
        async with host(broker, Echo("w")), client(broker) as caller:
            await caller.wait_for_service(Echo.name)
            pong = await caller.call(Echo.name, Ping("hello"), timeout=5.0, expect=Pong)
            candle = await caller.call(Echo.name, Candle(0, 1.0, 2.0, 0.5, 1.5, 3.0), expect=Candle)
            return pong, candle

    pong, candle = run(scenario())
    assert pong == Pong("hello", "w")
    assert candle == Candle(60_000, 1.0, 2.0, 0.5, 1.0, 2.0)


def test_inproc_calls_in_one_loop_go_direct_with_the_same_semantics(
    start_broker: Callable[..., Broker],
) -> None:
    broker = start_broker("inproc")
    echo = Echo("local")

    async def scenario() -> tuple[Pong, BaseException, BaseException]:
        async with host(broker, echo, local_calls=True), client(broker) as caller:
            pong = await caller.call(Echo.name, Ping("near"), expect=Pong)
            with pytest.raises(RemoteError) as failed:
                await caller.call(Echo.name, Fail("nope"))
            with pytest.raises(CallTimeout) as timed_out:
                await caller.call(Echo.name, Hang(), timeout=0.2)
            with pytest.raises(BusError, match="expected Candle"):
                await caller.call(Echo.name, Ping("typed"), expect=Candle)
            return pong, failed.value, timed_out.value

    pong, failed, timed_out = run(scenario())
    assert pong == Pong("near", "local")
    assert "nope" in str(failed)
    assert isinstance(timed_out, CallTimeout)
    assert broker.stats.requests == 0  # nothing went through the sockets


def test_many_concurrent_calls_each_get_their_own_reply(
    start_broker: Callable[..., Broker],
) -> None:
    broker = start_broker("inproc")

    async def scenario() -> list[str]:
        async with host(broker, Echo(), concurrency=8), client(broker) as caller:
            await caller.wait_for_service(Echo.name)
            replies = await asyncio.gather(
                *(caller.call(Echo.name, Ping(str(n)), expect=Pong) for n in range(500))
            )
            return [reply.text for reply in replies]

    assert run(scenario()) == [str(n) for n in range(500)]


def test_a_lone_call_goes_alone_and_calls_made_together_travel_in_one_message(
    start_broker: Callable[..., Broker],
) -> None:
    broker = start_broker("inproc")
    echo = Echo()

    async def scenario() -> None:
        async with host(broker, echo, concurrency=4), client(broker) as caller:
            await caller.wait_for_service(Echo.name)
            before = broker.stats.requests
            assert (await caller.call(Echo.name, Ping("lone"), expect=Pong)).text == "lone"
            assert broker.stats.requests == before + 1
            # With a call in flight, calls made in one turn of the loop share one message.
            hanging = asyncio.create_task(caller.call(Echo.name, Hang()))
            await echo.started.wait()
            before = broker.stats.requests
            replies = await asyncio.gather(
                *(caller.call(Echo.name, Ping(str(n)), expect=Pong) for n in range(10))
            )
            assert [reply.text for reply in replies] == [str(n) for n in range(10)]
            assert broker.stats.requests == before + 1
            echo.release.set()
            assert (await hanging).text == "released"

    run(scenario())


def test_handler_error_is_raised_in_the_caller_as_remote_error(
    start_broker: Callable[..., Broker],
) -> None:
    broker = start_broker()

    async def scenario() -> None:
        async with host(broker, Echo()), client(broker) as caller:
            await caller.wait_for_service(Echo.name)
            await caller.call(Echo.name, Fail("disk full"))

    with pytest.raises(RemoteError, match="disk full") as raised:
        run(scenario())
    assert raised.value.error_type == "StorageError"
    assert raised.value.service == Echo.name


def test_request_of_unknown_type_is_not_understood(start_broker: Callable[..., Broker]) -> None:
    broker = start_broker()
    worker_registry = MessageRegistry()  # the worker has never heard of test.rpc.ping
    worker_registry.add(Pong)

    async def scenario() -> None:
        async with host(broker, Echo(), registry=worker_registry), client(broker) as caller:
            await caller.wait_for_service(Echo.name)
            await caller.call(Echo.name, Ping("?"))

    with pytest.raises(NotUnderstood, match=r"test\.rpc\.ping"):
        run(scenario())


def test_request_type_without_handler_is_not_understood(
    start_broker: Callable[..., Broker],
) -> None:
    broker = start_broker()

    async def scenario() -> None:
        async with host(broker, Echo()), client(broker) as caller:
            await caller.wait_for_service(Echo.name)
            await caller.call(Echo.name, Pong("not a request"))

    with pytest.raises(NotUnderstood, match="no handler"):
        run(scenario())


def test_call_to_service_without_workers_fails_in_bounded_time(
    start_broker: Callable[..., Broker],
) -> None:
    broker = start_broker(unavailable_after=0.3)

    async def scenario() -> None:
        async with client(broker) as caller:
            assert not await caller.service_available("test.rpc.nobody")
            await caller.call("test.rpc.nobody", Ping("anyone?"), timeout=20.0)

    with pytest.raises(ServiceUnavailable, match=r"test\.rpc\.nobody"):
        run(scenario(), timeout=10.0)
    assert broker.stats.expired_requests == 1


def test_every_call_of_a_batch_to_a_service_without_workers_fails_unavailable(
    start_broker: Callable[..., Broker],
) -> None:
    broker = start_broker(unavailable_after=0.3)

    async def scenario() -> list[BaseException | Pong]:
        # No retry before the end: each call must be answered by the broker's expiry alone.
        async with client(broker, retry_interval=30.0, timeout=30.0) as caller:
            return await asyncio.gather(
                *(caller.call("test.rpc.nobody", Ping(str(n))) for n in range(8)),
                return_exceptions=True,
            )

    outcomes = run(scenario(), timeout=5.0)
    assert all(isinstance(outcome, ServiceUnavailable) for outcome in outcomes), outcomes
    assert broker.stats.expired_requests == 8


def test_call_times_out_when_the_handler_never_answers(
    start_broker: Callable[..., Broker],
) -> None:
    broker = start_broker()

    async def scenario() -> None:
        async with host(broker, Echo()), client(broker, retry_interval=0.1) as caller:
            await caller.wait_for_service(Echo.name)
            await caller.call(Echo.name, Hang(), timeout=0.5)

    with pytest.raises(CallTimeout, match=r"test\.rpc\.echo") as raised:
        run(scenario())
    assert raised.value.attempts >= 2


def test_retries_reuse_the_id_and_the_handler_runs_once(
    start_broker: Callable[..., Broker],
) -> None:
    broker = start_broker()
    echo = Echo()

    async def scenario() -> tuple[Pong, int, int]:
        served = host(broker, echo, concurrency=4)
        async with served, client(broker, retry_interval=0.05) as caller:
            await caller.wait_for_service(Echo.name)
            call = asyncio.create_task(caller.call(Echo.name, Hang(), timeout=10.0))
            await echo.started.wait()
            dispatcher = served.dispatchers[0]
            await eventually(lambda: dispatcher.duplicates >= 2)  # retries reached the handler
            echo.release.set()
            reply = await call
            return reply, dispatcher.duplicates, caller.retries

    reply, duplicates, retries = run(scenario())
    assert reply == Pong("released", "")
    assert echo.calls == 1
    assert retries >= 2 and duplicates >= 2


def test_retries_of_slow_calls_reach_the_worker_running_them_not_another(
    start_broker: Callable[..., Broker],
) -> None:
    broker = start_broker()
    first, second = Echo("first"), Echo("second")

    async def scenario() -> tuple[list[Pong], int]:
        # Handlers slower than the retry interval, with an idle worker the retries could reach.
        first_host = host(broker, first, concurrency=1)
        second_host = host(broker, second, concurrency=1)
        third = Echo("third")
        async with first_host, second_host, client(broker, retry_interval=0.05) as caller:
            await eventually(lambda: broker.worker_count(Echo.name) == 2)
            calls = [asyncio.create_task(caller.call(Echo.name, Hang())) for _ in range(2)]
            await first.started.wait()
            await second.started.wait()
            async with host(broker, third, concurrency=1):  # a third, idle worker
                await eventually(lambda: broker.worker_count(Echo.name) == 3)
                await eventually(lambda: caller.retries >= 10)
                first.release.set()
                second.release.set()
                replies = await asyncio.gather(*calls)
            return replies, third.calls

    replies, third_calls = run(scenario())
    assert sorted(reply.served_by for reply in replies) == ["first", "second"]
    assert (first.calls, second.calls, third_calls) == (1, 1, 0)  # each ran once
    assert broker.stats.sticky_retries >= 10


def test_worker_runs_at_most_concurrency_handlers_even_for_batched_calls(
    start_broker: Callable[..., Broker],
) -> None:
    broker = start_broker()
    running = [0, 0]  # now, peak

    class Counting(Service):
        name = "test.rpc.counting"

        @handler(Ping)
        async def ping(self, request: Ping) -> Pong:
            running[0] += 1
            running[1] = max(running)
            await asyncio.sleep(0.01)
            running[0] -= 1
            return Pong(request.text)

    async def scenario() -> list[str]:
        async with host(broker, Counting(), concurrency=2), client(broker) as caller:
            await caller.wait_for_service(Counting.name)
            replies = await asyncio.gather(
                *(caller.call(Counting.name, Ping(str(n)), expect=Pong) for n in range(40))
            )
            return [reply.text for reply in replies]

    assert run(scenario()) == [str(n) for n in range(40)]
    assert running[1] == 2


def test_broker_drops_calls_nobody_waits_for_and_keeps_one_copy_of_retries(
    start_broker: Callable[..., Broker],
) -> None:
    broker = start_broker()
    echo = Echo()

    async def scenario() -> Pong:
        async with host(broker, echo, concurrency=1), client(broker, retry_interval=0.05) as caller:
            await caller.wait_for_service(Echo.name)
            hanging = asyncio.create_task(caller.call(Echo.name, Hang()))
            await echo.started.wait()  # the only worker slot is taken
            with pytest.raises(CallTimeout):
                await caller.call(Echo.name, Ping("too late"), timeout=0.3)
            assert broker.stats.duplicates >= 2  # its retries did not queue more copies
            # The broker drops the queued call once its caller's deadline has passed.
            await eventually(lambda: broker.stats.late_requests == 1)
            echo.release.set()
            await hanging
            return await caller.call(Echo.name, Ping("after"), expect=Pong)

    assert run(scenario()) == Pong("after", "")
    assert echo.calls == 2  # Hang and "after": the abandoned call never ran
    assert broker.stats.late_requests == 1


def test_broker_refuses_calls_beyond_its_queue_bound_with_a_clear_error(
    start_broker: Callable[..., Broker],
) -> None:
    broker = start_broker(max_queue=2)
    echo = Echo()

    async def scenario() -> list[BaseException | Pong]:
        async with host(broker, echo, concurrency=1), client(broker) as caller:
            await caller.wait_for_service(Echo.name)
            hanging = asyncio.create_task(caller.call(Echo.name, Hang()))
            await echo.started.wait()
            outcomes = await asyncio.gather(
                *(caller.call(Echo.name, Ping(str(n)), timeout=2.0) for n in range(3)),
                return_exceptions=True,
            )
            echo.release.set()
            await hanging
            return outcomes

    outcomes = run(scenario())
    assert all(isinstance(outcome, RemoteError) for outcome in outcomes), outcomes
    refused = outcomes[0]
    assert isinstance(refused, RemoteError) and refused.error_type == "ServiceBusy"
    assert "max_queue is 2" in str(refused)
    assert broker.stats.refused_requests == 3


def test_broker_heartbeats_only_idle_workers_and_expires_them_on_the_deadline() -> None:
    broker = Broker("inproc://test-rpc-timers", heartbeat_interval=1.0, liveness=3)
    broker.bind()
    sent: list[list[bytes]] = []
    broker._send = sent.append  # type: ignore[method-assign]  # record instead of sending
    try:
        broker._now = 0.0
        broker._handle([b"w", b"", mdp.WORKER, mdp.READY, b"svc"], 0.0)
        broker._now = 0.5
        frame = mdp.client_request(b"svc", b"x")
        broker._handle([b"c", *frame], 0.5)
        assert sent[-1][3] == mdp.REQUEST
        broker._tick(1.2)  # a REQUEST went 0.7 s ago: no HEARTBEAT yet
        assert all(frames[3] != mdp.HEARTBEAT for frames in sent)
        assert broker._next_tick == pytest.approx(1.5)  # when one is due, not a tick later
        broker._tick(1.5)
        assert sent[-1] == mdp.broker_command(b"w", mdp.HEARTBEAT)
        broker._tick(2.999)
        assert broker.worker_count("svc") == 1
        assert broker._next_tick == pytest.approx(3.0)  # last heard at 0 + 3 intervals
        broker._tick(3.0)
        assert broker.worker_count("svc") == 0
        assert broker.stats.workers_expired == 1
    finally:
        broker.stop()


def test_broker_splits_a_retried_batch_between_the_workers_that_have_its_calls() -> None:
    from trader.bus.codec import encode_envelope

    broker = Broker("inproc://test-rpc-split", heartbeat_interval=1.0)
    broker.bind()
    sent: list[list[bytes]] = []
    broker._send = sent.append  # type: ignore[method-assign]  # record instead of sending
    a, b, c = (encode_envelope(default_registry.envelope(Ping(text))) for text in "abc")

    def client_sends(*frames: bytes) -> None:
        broker._handle([b"c", *mdp.client_requests(b"svc", list(frames), [5000])], 0.0)

    def requests() -> list[tuple[bytes, list[bytes]]]:
        found = [(frames[0], frames[6:]) for frames in sent if frames[3] == mdp.REQUEST]
        sent.clear()
        return found

    try:
        broker._now = 0.0
        for worker in (b"w1", b"w2"):
            broker._handle([worker, b"", mdp.WORKER, mdp.READY, b"svc"], 0.0)
        client_sends(a)
        client_sends(b)
        assert requests() == [(b"w1", [a]), (b"w2", [b])]
        client_sends(a, b, c)  # two retries and a new call; no slot is free
        assert requests() == [(b"w1", [a]), (b"w2", [b])]  # each retry to its worker
        client_sends(c)  # a retry of the queued call: dropped, the queued copy stands
        assert requests() == [] and broker.stats.duplicates == 1
        reply = [b"w1", b"", mdp.WORKER, mdp.REPLY, b"c", b"", b"r"]
        broker._handle(reply, 0.0)  # answers the retry: the slot stays busy
        assert requests() == []
        broker._handle(reply, 0.0)  # answers the call: w1 is free and takes c
        assert requests() == [(b"w1", [c])]
        assert broker.stats.sticky_retries == 2
    finally:
        broker.stop()


def test_worker_heartbeats_only_when_it_sent_nothing_else() -> None:
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    fake = context.socket(zmq.ROUTER)
    fake.setsockopt(zmq.LINGER, 0)
    fake.bind("tcp://127.0.0.1:0")
    endpoint = bound_endpoint(fake)

    async def echo(body: bytes) -> bytes:
        return body

    def broker_side() -> tuple[int, int]:
        ready = _recv_ready(fake)
        identity, replies, heartbeats = ready[0], 0, 0
        # Keep the worker busy replying (every 20 ms, a fifth of its interval) for 0.5 s.
        for n in range(25):
            fake.send_multipart(
                [identity, b"", mdp.WORKER, mdp.REQUEST, b"c", b"", str(n).encode()]
            )
            while fake.poll(20):
                command = fake.recv_multipart()[3]
                replies += command == mdp.REPLY
                heartbeats += command == mdp.HEARTBEAT
        busy_heartbeats = heartbeats
        while fake.poll(2000):  # then idle: it heartbeats
            if fake.recv_multipart()[3] == mdp.HEARTBEAT:
                return busy_heartbeats, replies
        raise AssertionError("an idle worker sent no HEARTBEAT")

    async def scenario() -> tuple[int, int]:
        worker = Worker(
            endpoint, "test.rpc.quiet", echo, security=PLAINTEXT, heartbeat_interval=0.1
        )
        worker.start()
        try:
            return await asyncio.get_running_loop().run_in_executor(None, broker_side)
        finally:
            await worker.stop()

    try:
        busy_heartbeats, replies = run(scenario(), timeout=20.0)
    finally:
        fake.close()
    assert replies == 25
    assert busy_heartbeats == 0


def test_broker_disconnects_a_worker_that_sends_an_unexpected_command(
    start_broker: Callable[..., Broker],
) -> None:
    broker = start_broker()
    rogue = _raw_worker(broker.endpoint)
    try:
        rogue.send_multipart(mdp.worker_ready(b"test.rpc.rogue"))
        rogue.send_multipart([b"", mdp.WORKER, mdp.REQUEST, b"someone", b"", b"body"])
        while rogue.poll(5000):
            if rogue.recv_multipart() == [b"", mdp.WORKER, mdp.DISCONNECT]:
                break
        else:
            raise AssertionError("no DISCONNECT within 5 s")
        assert broker.worker_count("test.rpc.rogue") == 0
    finally:
        rogue.close()


def test_worker_concurrency_beyond_what_ready_carries_is_refused_at_once() -> None:
    async def echo(body: bytes) -> bytes:
        return body

    with pytest.raises(BusError, match="concurrency 1000000 is out of range"):
        Worker("inproc://test-rpc-big", "svc", echo, concurrency=mdp.MAX_CAPACITY + 1)
    with pytest.raises(BusError, match="concurrency 0"):
        ServiceHost("inproc://test-rpc-big", [Echo()], concurrency=0)


def test_closing_the_client_during_a_service_query_fails_it_cleanly() -> None:
    async def scenario() -> None:
        async with Client("inproc://test-rpc-nobroker") as caller:
            query = asyncio.create_task(caller.service_available("x", timeout=5.0))
            await asyncio.sleep(0)  # let the query start
            await caller.close()
            await query

    with pytest.raises(BusError, match="closed during a service query"):
        run(scenario())


@given(
    type_name=st.text(min_size=1, max_size=300),
    version=st.integers(0, 2**64 - 1),
    message_id=st.binary(min_size=1, max_size=64),
)
def test_envelope_id_reads_the_id_of_any_envelope(
    type_name: str, version: int, message_id: bytes
) -> None:
    from trader.bus.codec import Envelope, encode_envelope

    frame = encode_envelope(Envelope(type_name, version, message_id, b"c", 0, 1, [1, "x"]))
    assert mdp.envelope_id(frame) == message_id


@given(st.binary(max_size=80))
def test_envelope_id_never_raises_and_agrees_with_the_decoder(frame: bytes) -> None:
    from trader.bus.codec import decode_envelope
    from trader.bus.errors import MalformedMessage

    found = mdp.envelope_id(frame)
    try:
        envelope = decode_envelope(frame)
    except MalformedMessage:
        return
    assert found == (envelope.id or None)


def test_dedupe_returns_the_cached_reply_and_forgets_beyond_its_size() -> None:
    echo = Echo()
    dispatcher = ServiceDispatcher(echo, dedupe_size=2)
    frames = [default_registry.envelope(Ping(str(n))) for n in range(3)]

    async def scenario() -> list[bytes | None]:
        from trader.bus.codec import encode_envelope

        encoded = [encode_envelope(frame) for frame in frames]
        first = await dispatcher(encoded[0])
        again = await dispatcher(encoded[0])
        await dispatcher(encoded[1])
        await dispatcher(encoded[2])  # evicts the first
        await dispatcher(encoded[0])
        return [first, again]

    first, again = run(scenario())
    assert first == again
    assert echo.calls == 4  # 0, 1, 2 and 0 again after eviction
    assert dispatcher.duplicates == 1


def test_broker_balances_least_recently_used_workers(
    start_broker: Callable[..., Broker],
) -> None:
    broker = start_broker()
    first, second = Echo("first"), Echo("second")

    async def scenario() -> list[str]:
        first_host = host(broker, first, concurrency=1)
        second_host = host(broker, second, concurrency=1)
        async with first_host, second_host, client(broker) as caller:
            await eventually(lambda: broker.worker_count(Echo.name) == 2)
            return [
                (await caller.call(Echo.name, Ping(str(n)), expect=Pong)).served_by
                for n in range(20)
            ]

    served = run(scenario())
    assert sorted(set(served)) == ["first", "second"]
    assert all(a != b for a, b in itertools.pairwise(served))  # strictly alternating


def test_mmi_answers_found_not_found_and_not_implemented(
    start_broker: Callable[..., Broker],
) -> None:
    broker = start_broker()

    async def scenario() -> list[bytes]:
        async with host(broker, Echo()), client(broker) as caller:
            await caller.wait_for_service(Echo.name)
            socket = mdp.shared_sync_context().socket(zmq.DEALER)
            socket.connect(broker.endpoint)
            try:
                codes = []
                for service, body in (
                    (mdp.MMI_SERVICE, Echo.name.encode()),
                    (mdp.MMI_SERVICE, b"nobody"),
                    (b"mmi.nothing", b""),
                ):
                    socket.send_multipart(mdp.client_request(service, body))
                    assert socket.poll(5000)
                    codes.append(socket.recv_multipart()[3])
                return codes
            finally:
                socket.close(linger=0)

    assert run(scenario()) == [mdp.MMI_FOUND, mdp.MMI_NOT_FOUND, mdp.MMI_NOT_IMPLEMENTED]


def _raw_worker(endpoint: str) -> zmq.Socket[bytes]:
    socket: zmq.Socket[bytes] = mdp.shared_sync_context().socket(zmq.DEALER)
    socket.setsockopt(zmq.LINGER, 0)
    socket.connect(endpoint)
    return socket


def test_broker_disconnects_unknown_workers_and_forgets_silent_ones(
    start_broker: Callable[..., Broker],
) -> None:
    broker = start_broker()
    stranger = _raw_worker(broker.endpoint)
    silent = _raw_worker(broker.endpoint)
    try:
        stranger.send_multipart(mdp.worker_heartbeat())
        assert stranger.poll(5000)
        assert stranger.recv_multipart() == [b"", mdp.WORKER, mdp.DISCONNECT]

        silent.send_multipart(mdp.worker_ready(b"test.rpc.silent"))

        async def until_forgotten() -> None:
            async with client(broker) as caller:
                await caller.wait_for_service("test.rpc.silent")
                while await caller.service_available("test.rpc.silent"):
                    await asyncio.sleep(HEARTBEAT / 2)

        run(until_forgotten(), timeout=10.0)
        assert broker.stats.workers_expired == 1
        # The broker heartbeat the silent worker while it counted as alive.
        assert silent.poll(1000)
        assert silent.recv_multipart() == [b"", mdp.WORKER, mdp.HEARTBEAT]
    finally:
        stranger.close()
        silent.close()


def test_worker_reconnects_when_the_broker_goes_silent_or_says_disconnect() -> None:
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    fake = context.socket(zmq.ROUTER)
    fake.setsockopt(zmq.LINGER, 0)
    fake.bind("tcp://127.0.0.1:0")
    endpoint = bound_endpoint(fake)

    async def echo(body: bytes) -> bytes:
        return body

    async def scenario() -> list[bytes]:
        worker = Worker(
            endpoint,
            "test.rpc.fake",
            echo,
            security=PLAINTEXT,
            heartbeat_interval=HEARTBEAT,
            reconnect_initial=0.01,
        )
        worker.start()
        loop = asyncio.get_running_loop()
        identities: list[bytes] = []
        try:
            while len(identities) < 3:
                frames = await loop.run_in_executor(None, _recv_ready, fake)
                identities.append(frames[0])
                if len(identities) == 2:  # the second session ends by DISCONNECT
                    fake.send_multipart(mdp.broker_command(frames[0], mdp.DISCONNECT))
            return identities
        finally:
            await worker.stop()

    try:
        identities = run(scenario(), timeout=20.0)
    finally:
        fake.close()
    assert len(set(identities)) == 3  # each session is a new connection


def test_worker_gives_up_on_a_silent_broker_three_intervals_after_last_hearing_it() -> None:
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    fake = context.socket(zmq.ROUTER)
    fake.setsockopt(zmq.LINGER, 0)
    fake.bind("tcp://127.0.0.1:0")
    endpoint = bound_endpoint(fake)
    interval = 0.2

    async def echo(body: bytes) -> bytes:
        return body

    def broker_side() -> float:
        first = _recv_ready(fake)
        time.sleep(interval / 2)  # out of phase with the worker's own heartbeats
        fake.send_multipart(mdp.broker_command(first[0], mdp.HEARTBEAT))
        heard_at = time.monotonic()
        again = _recv_ready(fake)  # then silence until the worker starts a new session
        assert again[0] != first[0]
        return time.monotonic() - heard_at

    async def scenario() -> float:
        worker = Worker(
            endpoint,
            "test.rpc.silence",
            echo,
            security=PLAINTEXT,
            heartbeat_interval=interval,
            reconnect_initial=0.01,
        )
        worker.start()
        try:
            return await asyncio.get_running_loop().run_in_executor(None, broker_side)
        finally:
            await worker.stop()

    try:
        silence = run(scenario(), timeout=20.0)
    finally:
        fake.close()
    # Three intervals exactly (checked at the deadline, not on the next tick), plus the 10 ms
    # reconnection delay and a little scheduling slack.
    assert 3 * interval - 0.01 <= silence <= 3 * interval + 0.01 + 0.08


def _recv_ready(socket: zmq.Socket[bytes]) -> list[bytes]:
    while socket.poll(10_000):
        frames = socket.recv_multipart()
        if frames[3] == mdp.READY:
            return frames
    raise AssertionError("no READY from the worker within 10 s")


def test_heartbeat_busy_count_frees_slots_a_lost_reply_held(
    start_broker: Callable[..., Broker],
) -> None:
    broker = start_broker(heartbeat_interval=5.0)  # the raw worker need not heartbeat
    raw = _raw_worker(broker.endpoint)
    try:
        raw.send_multipart(mdp.worker_ready(b"test.rpc.lossy"))

        async def scenario() -> None:
            async with client(broker, retry_interval=5.0) as caller:
                await caller.wait_for_service("test.rpc.lossy")
                first = asyncio.create_task(caller.call("test.rpc.lossy", Ping("1")))
                loop = asyncio.get_running_loop()
                request = await loop.run_in_executor(None, _recv_request, raw)
                first.cancel()  # its reply is "lost": the worker never answers
                # The worker says it runs nothing: the broker frees the slot and sends more.
                raw.send_multipart(mdp.worker_heartbeat(0))
                second = asyncio.create_task(caller.call("test.rpc.lossy", Ping("2")))
                again = await loop.run_in_executor(None, _recv_request, raw)
                assert again[3] == request[3]  # same client
                second.cancel()

        run(scenario(), timeout=20.0)
    finally:
        raw.close()


def _recv_request(socket: zmq.Socket[bytes]) -> list[bytes]:
    while socket.poll(10_000):
        frames = socket.recv_multipart()
        if frames[2] == mdp.REQUEST:
            return frames
    raise AssertionError("no REQUEST within 10 s")


def test_calls_need_an_open_client() -> None:
    async def scenario() -> None:
        await Client("inproc://test-rpc-closed").call(Echo.name, Ping("x"))

    with pytest.raises(BusError, match="not open"):
        run(scenario())


def test_calls_over_curve_tcp_and_strangers_are_kept_out(
    tmp_path: Path, start_broker: Callable[..., Broker]
) -> None:
    from trader.bus.security import generate_keypair, stop_authenticator

    allowed, others = tmp_path / "allowed", tmp_path / "others"
    generate_keypair("broker", tmp_path)
    for name in ("worker", "caller"):
        generate_keypair(name, allowed)
    generate_keypair("stranger", others)
    server = Security.server(tmp_path / "broker.key_secret", allowed)
    broker_context: zmq.Context[Any] = zmq.Context()  # its own ZAP handler, stopped below
    broker = Broker(
        "tcp://127.0.0.1:0", security=server, heartbeat_interval=HEARTBEAT, context=broker_context
    )
    endpoint = broker.start()

    def peer(name: str, folder: Path) -> Security:
        return Security.client(folder / f"{name}.key_secret", tmp_path / "broker.key")

    async def scenario() -> tuple[Pong, BaseException]:
        services = ServiceHost(endpoint, [Echo("curve")], security=peer("worker", allowed))
        async with services, Client(endpoint, security=peer("caller", allowed)) as caller:
            await caller.wait_for_service(Echo.name)
            pong = await caller.call(Echo.name, Ping("secret"), expect=Pong)
        async with Client(endpoint, security=peer("stranger", others)) as stranger:
            with pytest.raises(CallTimeout) as refused:
                await stranger.call(Echo.name, Ping("let me in"), timeout=0.5)
        return pong, refused.value

    try:
        pong, refused = run(scenario())
    finally:
        broker.stop()
        stop_authenticator(broker_context)
        broker_context.term()
    assert pong == Pong("secret", "curve")
    assert isinstance(refused, CallTimeout)


def test_plaintext_tcp_without_the_opt_in_is_refused_at_once() -> None:
    async def serve() -> None:
        await ServiceHost("tcp://127.0.0.1:5999", [Echo()]).start()

    async def call() -> None:
        await Client("tcp://127.0.0.1:5999").open()

    with pytest.raises(ConfigError, match="plaintext"):
        run(serve())
    with pytest.raises(ConfigError, match="plaintext"):
        run(call())
    with pytest.raises(ConfigError, match="plaintext"):
        Broker("tcp://127.0.0.1:0").bind()


def test_worker_backs_off_exponentially_until_the_broker_answers() -> None:
    async def echo(body: bytes) -> bytes:
        return body

    worker = Worker("inproc://test-rpc-backoff", "svc", echo, reconnect_initial=0.05)
    delays = [0.05]
    for _ in range(10):
        delays.append(worker.next_delay(delays[-1], heard=False))
    assert delays[:4] == [0.05, 0.1, 0.2, 0.4]
    assert delays[-1] == worker.reconnect_max == 5.0
    assert worker.next_delay(delays[-1], heard=True) == 0.05


def test_broker_hosts_the_stream_forwarder_and_stops_it() -> None:
    from trader.bus.streams import StreamForwarder

    forwarder = StreamForwarder("tcp://127.0.0.1:0", "tcp://127.0.0.1:0", PLAINTEXT)
    broker = Broker("tcp://127.0.0.1:0", security=PLAINTEXT, forwarder=forwarder)
    broker.start()
    context = mdp.shared_sync_context()
    subscriber = context.socket(zmq.SUB)
    publisher = context.socket(zmq.PUB)
    try:
        subscriber.setsockopt(zmq.SUBSCRIBE, b"")
        subscriber.connect(forwarder.xpub_address)
        publisher.connect(forwarder.xsub_address)
        for _ in range(500):  # until the subscription has travelled to the publisher
            publisher.send(b"tick")
            if subscriber.poll(20):
                break
        assert subscriber.recv() == b"tick"
    finally:
        subscriber.close(linger=0)
        publisher.close(linger=0)
        broker.stop()
    assert forwarder.xsub_socket is None  # stopped with the broker


def test_handlers_take_their_request_type_from_annotation_or_argument() -> None:
    @dataclass(frozen=True)
    class Local(Message, type_name="test.rpc.local"):
        value: int

    class Explicit(Service):
        name = "test.rpc.explicit"

        @handler(Local)
        async def local(self, request: Local) -> Pong:
            return Pong(str(request.value))

    class Unresolvable(Service):
        name = "test.rpc.unresolvable"

        @handler
        async def local(self, request: Local) -> Pong:
            return Pong(str(request.value))

    class Twice(Service):
        name = "test.rpc.twice"

        @handler
        async def one(self, request: Ping) -> Pong:
            return Pong("one")

        @handler
        async def two(self, request: Ping) -> Pong:
            return Pong("two")

    assert set(Explicit().handlers()) == {Local}
    assert set(Echo().handlers()) == {Ping, Fail, Hang, Candle}
    with pytest.raises(TypeError, match=r"@handler\(RequestType\)"):
        Unresolvable().handlers()
    with pytest.raises(TypeError, match="two handlers take Ping"):
        Twice().handlers()
    with pytest.raises(TypeError, match="async"):
        handler(Ping)(_not_async)


def _not_async(self: Any, request: Ping) -> Any:
    return None


def test_garbage_on_the_sockets_is_dropped_and_service_goes_on(
    start_broker: Callable[..., Broker],
) -> None:
    broker = start_broker("tcp")
    generator = random.Random(3)
    pieces = [b"", mdp.CLIENT, mdp.WORKER, *mdp.COMMANDS, Echo.name.encode(), b"mmi.service"]

    async def scenario() -> Pong:
        async with host(broker, Echo("steady")), client(broker) as caller:
            await caller.wait_for_service(Echo.name)
            vandal = mdp.shared_sync_context().socket(zmq.DEALER)
            vandal.setsockopt(zmq.LINGER, 0)
            vandal.connect(broker.endpoint)
            try:
                for _ in range(2_000):
                    vandal.send_multipart(
                        [
                            generator.choice(pieces)
                            if generator.random() < 0.7
                            else generator.randbytes(generator.randrange(0, 40))
                            for _ in range(generator.randrange(1, 8))
                        ]
                    )
                await eventually(lambda: broker.stats.malformed > 100)
            finally:
                vandal.close()
            return await caller.call(Echo.name, Ping("still here"), expect=Pong)

    assert run(scenario()) == Pong("still here", "steady")
