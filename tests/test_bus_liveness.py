"""A peer that vanishes without closing its connection (SIGSTOP) is detected within three
heartbeat intervals: by the real broker (a stopped worker process is forgotten), by the real
worker (a stopped broker process makes it reconnect), and by ZeroMQ's own heartbeats."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest
import zmq
from zmq.utils.monitor import recv_monitor_message

from trader.bus.broker import Broker
from trader.bus.client import Client
from trader.bus.liveness import Liveness
from trader.bus.service import Service, ServiceHost, handler
from trader.bus.transport import Security, bound_endpoint, make_socket
from trader.model import Candle

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="needs POSIX signals")

INTERVAL = 0.3  # seconds between heartbeats
# How late this process may wake up after a deadline on a loaded machine. Detection itself is
# at most three intervals; this only absorbs our own scheduling delay.
SCHEDULING_SLACK = 0.15

# A peer that heartbeats every interval (application level, plus ZeroMQ heartbeats from
# make_socket) and answers nothing else: the smallest honest worker.
PEER = """
import sys, zmq
from trader.bus.liveness import Liveness
from trader.bus.transport import Security, make_socket
endpoint, interval = sys.argv[1], float(sys.argv[2])
context = zmq.Context()
socket = make_socket(context, zmq.DEALER, endpoint, bind=False,
                     security=Security(plaintext_tcp=True), heartbeat_ms=int(interval * 1000))
liveness = Liveness(interval)
socket.send(b"HEARTBEAT")
liveness.sent()
while True:
    socket.poll(int(liveness.next_wakeup() * 1000) + 1)
    while socket.poll(0):
        socket.recv()
    if liveness.send_due():
        socket.send(b"HEARTBEAT")
        liveness.sent()
"""


# A real worker process: a ServiceHost serving one echo service.
WORKER = """
import asyncio, sys
from trader.bus.service import Service, ServiceHost, handler
from trader.bus.transport import Security
from trader.model import Candle

class Live(Service):
    name = "test.liveness.live"

    @handler
    async def echo(self, request: Candle) -> Candle:
        return request

host = ServiceHost(sys.argv[1], [Live()], security=Security(plaintext_tcp=True),
                   heartbeat_interval=float(sys.argv[2]))
print("serving", flush=True)
asyncio.run(host.serve_forever())
"""
PLAINTEXT = Security(plaintext_tcp=True)


class Live(Service):
    name = "test.liveness.inloop"

    @handler
    async def echo(self, request: Candle) -> Candle:
        return request


def wait_until(condition: Callable[[], bool], timeout: float, step: float = 0.005) -> float:
    """Poll ``condition`` every ``step`` s; return the time it held; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(step)
    return time.monotonic()


def test_the_broker_forgets_a_stopped_worker_process_within_three_intervals() -> None:
    broker = Broker("tcp://127.0.0.1:0", security=PLAINTEXT, heartbeat_interval=INTERVAL)
    endpoint = broker.start()
    worker = subprocess.Popen([sys.executable, "-c", WORKER, endpoint, str(INTERVAL)])
    try:
        wait_until(lambda: broker.worker_count("test.liveness.live") == 1, 20.0)
        time.sleep(2 * INTERVAL)  # let heartbeats flow both ways for a while
        assert broker.worker_count("test.liveness.live") == 1  # a live worker stays
        os.kill(worker.pid, signal.SIGSTOP)
        stopped_at = time.monotonic()
        forgotten_at = wait_until(lambda: broker.worker_count("test.liveness.live") == 0, 10.0)
        assert forgotten_at - stopped_at <= 3 * INTERVAL + SCHEDULING_SLACK
        assert broker.stats.workers_expired == 1
    finally:
        os.kill(worker.pid, signal.SIGCONT)
        worker.kill()
        worker.wait(10)
        broker.stop()


def test_a_worker_reconnects_within_three_intervals_of_its_broker_process_stopping() -> None:
    broker = subprocess.Popen(
        [
            sys.executable,
            *("-m", "trader.bus.broker", "--plaintext", "--heartbeat", str(INTERVAL)),
            "tcp://127.0.0.1:0",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )

    async def scenario(endpoint: str) -> tuple[float, float, float]:
        host = ServiceHost(endpoint, [Live()], security=PLAINTEXT, heartbeat_interval=INTERVAL)
        worker = host.workers[0]
        worker.reconnect_initial = 0.01
        await host.start()
        loop = asyncio.get_running_loop()

        async def until(condition: Callable[[], bool], timeout: float) -> float:
            deadline = loop.time() + timeout
            while not condition():
                assert loop.time() < deadline, f"condition not met within {timeout} s"
                await asyncio.sleep(0.005)
            return time.monotonic()

        try:
            async with Client(endpoint, security=PLAINTEXT) as client:
                await client.wait_for_service(Live.name, timeout=20.0)
                await asyncio.sleep(2 * INTERVAL)  # let heartbeats flow both ways for a while
                assert worker.sessions == 1  # a live broker keeps the session
                os.kill(broker.pid, signal.SIGSTOP)
                stopped_at = time.monotonic()
                noticed_at = await until(lambda: not worker.connected.is_set(), 10.0)
                reconnected_at = await until(lambda: worker.sessions == 2, 10.0)
                os.kill(broker.pid, signal.SIGCONT)
                # The resumed broker hears the new session's READY: the service is back.
                candle = Candle(0, 1.0, 1.0, 1.0, 1.0, 1.0)
                assert await client.call(Live.name, candle, timeout=10.0) == candle
                return stopped_at, noticed_at, reconnected_at
        finally:
            await host.stop()

    try:
        assert broker.stdout is not None
        endpoint = broker.stdout.readline().strip()
        stopped_at, noticed_at, reconnected_at = asyncio.run(
            asyncio.wait_for(scenario(endpoint), 60.0)
        )
    finally:
        os.kill(broker.pid, signal.SIGCONT)
        broker.kill()
        broker.wait(10)
        if broker.stdout is not None:
            broker.stdout.close()
    assert noticed_at - stopped_at <= 3 * INTERVAL + SCHEDULING_SLACK
    assert reconnected_at - stopped_at <= 3 * INTERVAL + SCHEDULING_SLACK


@pytest.fixture
def context() -> Iterator[zmq.Context[zmq.Socket[bytes]]]:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        yield ctx
    finally:
        ctx.destroy(linger=0)


def test_liveness_rules_with_a_fake_clock() -> None:
    now = [100.0]
    liveness = Liveness(1.0, clock=lambda: now[0])
    assert not liveness.expired() and not liveness.send_due()
    assert liveness.next_wakeup() == 1.0
    now[0] = 101.0
    assert liveness.send_due()
    liveness.sent()
    now[0] = 102.5
    assert liveness.send_due() and liveness.next_wakeup() == 0.0  # a heartbeat is overdue
    liveness.sent()
    assert not liveness.expired()
    assert liveness.next_wakeup() == pytest.approx(0.5)  # expiry comes before the next send
    now[0] = 103.0
    assert liveness.expired()
    liveness.beat()
    assert not liveness.expired() and liveness.expires_at == 106.0
    with pytest.raises(ValueError, match="positive"):
        Liveness(0)
    with pytest.raises(ValueError, match="at least 1"):
        Liveness(1, misses=0)


def test_a_stopped_peer_is_detected_within_three_intervals(
    context: zmq.Context[zmq.Socket[bytes]],
) -> None:
    server = make_socket(
        context,
        zmq.ROUTER,
        "tcp://127.0.0.1:0",
        bind=True,
        security=Security(plaintext_tcp=True),
        heartbeat_ms=int(INTERVAL * 1000),
    )
    monitor = server.get_monitor_socket(zmq.EVENT_DISCONNECTED)
    peer = subprocess.Popen(
        [sys.executable, "-c", PEER, bound_endpoint(server), str(INTERVAL)],
        stdout=subprocess.DEVNULL,
    )
    try:
        # The peer is alive: its heartbeats keep it from expiring.
        assert server.poll(20_000), "the peer never sent a heartbeat"
        server.recv_multipart()
        liveness = Liveness(INTERVAL)
        for _ in range(4):
            assert server.poll(int(3 * INTERVAL * 1000)), "a live peer missed three heartbeats"
            server.recv_multipart()
            assert not liveness.expired()
            liveness.beat()

        os.kill(peer.pid, signal.SIGSTOP)
        stopped_at = time.monotonic()
        while not liveness.expired():
            if server.poll(int(liveness.next_wakeup() * 1000) + 1):
                server.recv_multipart()  # sent before the stop, delivered just after
                liveness.beat()
        detected_at = time.monotonic()
        assert detected_at - stopped_at <= 3 * INTERVAL + SCHEDULING_SLACK
        assert detected_at - stopped_at >= 2 * INTERVAL  # not before silence is certain

        # ZeroMQ heartbeats drop the dead connection too (the kernel still ACKs TCP, so
        # keepalive alone could not tell).
        remaining = stopped_at + 3 * INTERVAL + SCHEDULING_SLACK - time.monotonic()
        assert monitor.poll(max(1, int(remaining * 1000))), "ZeroMQ kept the dead connection"
        assert recv_monitor_message(monitor)["event"] == zmq.EVENT_DISCONNECTED
        assert time.monotonic() - stopped_at <= 3 * INTERVAL + SCHEDULING_SLACK
    finally:
        os.kill(peer.pid, signal.SIGCONT)
        peer.kill()
        peer.wait(10)
        server.disable_monitor()
        monitor.close()
        server.close()


def test_a_resumed_peer_counts_as_alive_again(context: zmq.Context[zmq.Socket[bytes]]) -> None:
    server = make_socket(
        context,
        zmq.ROUTER,
        "tcp://127.0.0.1:0",
        bind=True,
        security=Security(plaintext_tcp=True),
        heartbeat_ms=int(INTERVAL * 1000),
    )
    peer = subprocess.Popen(
        [sys.executable, "-c", PEER, bound_endpoint(server), str(INTERVAL)],
        stdout=subprocess.DEVNULL,
    )
    try:
        assert server.poll(20_000)
        server.recv_multipart()
        os.kill(peer.pid, signal.SIGSTOP)
        liveness = Liveness(INTERVAL, misses=1)
        while server.poll(int(liveness.next_wakeup() * 1000) + 1):
            server.recv_multipart()  # in flight before the stop
            liveness.beat()
        assert liveness.expired()
        os.kill(peer.pid, signal.SIGCONT)
        # It reconnects (ZeroMQ dropped it meanwhile or not) and heartbeats again.
        assert server.poll(10_000), "a resumed peer stayed silent"
        server.recv_multipart()
        liveness.beat()
        assert not liveness.expired()
    finally:
        os.kill(peer.pid, signal.SIGCONT)
        peer.kill()
        peer.wait(10)
        server.close()
