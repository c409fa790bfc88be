"""Bench the bus's service calls; print one JSON line per figure.

* ``bus.rpc_p50_us`` / ``bus.rpc_p99_us``: lockstep calls, client, broker and worker as three
  processes over TCP loopback (plaintext, opted in), bodies of about 100 bytes of msgpack;
* ``bus.rpc_rps``: the same three processes with 100 calls in flight;
* ``bus.inproc_p50_us`` / ``bus.inproc_p99_us``: lockstep calls inside one process (inproc://,
  client and service in one event loop: the direct local path);
* ``bus.inproc_broker_p50_us`` / ``..._p99_us``: the same with local calls off, through the
  broker running in a thread of the process.

Run ``python bench/bench_bus_rpc.py``; ``--worker ENDPOINT`` is the worker process's entry.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

from trader.bus.broker import Broker
from trader.bus.client import Client
from trader.bus.codec import Message
from trader.bus.service import Service, ServiceHost, handler
from trader.bus.transport import Security

PLAINTEXT = Security(plaintext_tcp=True)
LOCKSTEP_CALLS = 20_000
WARMUP_CALLS = 2_000
IN_FLIGHT = 100
THROUGHPUT_CALLS = 100_000


@dataclass(frozen=True)
class Quote(Message, type_name="bench.quote"):
    """About 100 bytes of msgpack: a symbol, a few numbers and a note."""

    symbol: str
    bid: float
    ask: float
    size: float
    time_ms: int
    note: str


@dataclass(frozen=True)
class Ack(Message, type_name="bench.ack"):
    """The reply: the quote's symbol and time."""

    symbol: str
    time_ms: int


class Echo(Service):
    """Answer each quote at once."""

    name = "bench.echo"

    @handler
    async def quote(self, request: Quote) -> Ack:
        return Ack(request.symbol, request.time_ms)


def sample(index: int) -> Quote:
    return Quote("BTC/USDT", 65000.5, 65001.25, 0.125, 1_700_000_000_000 + index, "x" * 30)


def percentile(sorted_values: list[float], fraction: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * fraction))]


def emit(name: str, value: float, unit: str, **extra: Any) -> None:
    print(json.dumps({"name": name, "value": round(value, 1), "unit": unit, **extra}), flush=True)


async def lockstep(client: Client, calls: int) -> list[float]:
    for index in range(WARMUP_CALLS):
        await client.call(Echo.name, sample(index))
    latencies = []
    clock = time.perf_counter
    for index in range(calls):
        start = clock()
        await client.call(Echo.name, sample(index))
        latencies.append(clock() - start)
    latencies.sort()
    return latencies


async def throughput(client: Client, calls: int, in_flight: int) -> float:
    per_task = calls // in_flight

    async def run() -> None:
        for index in range(per_task):
            await client.call(Echo.name, sample(index))

    await asyncio.gather(*(run() for _ in range(in_flight // 10)))  # warm up
    start = time.perf_counter()
    await asyncio.gather(*(run() for _ in range(in_flight)))
    return per_task * in_flight / (time.perf_counter() - start)


async def serve_worker(endpoint: str) -> None:
    async with ServiceHost(endpoint, [Echo()], security=PLAINTEXT, concurrency=IN_FLIGHT) as host:
        await asyncio.gather(*(worker.start() for worker in host.workers))


async def tcp_figures() -> None:
    broker = subprocess.Popen(
        [sys.executable, "-m", "trader.bus.broker", "tcp://127.0.0.1:0", "--plaintext"],
        stdout=subprocess.PIPE,
        text=True,
    )
    worker = None
    try:
        assert broker.stdout is not None
        endpoint = broker.stdout.readline().strip()
        worker = subprocess.Popen([sys.executable, __file__, "--worker", endpoint])
        async with Client(endpoint, security=PLAINTEXT, timeout=30.0) as client:
            await client.wait_for_service(Echo.name, timeout=30.0)
            latencies = await lockstep(client, LOCKSTEP_CALLS)
            emit("bus.rpc_p50_us", percentile(latencies, 0.5) * 1e6, "us", target="<=300")
            emit("bus.rpc_p99_us", percentile(latencies, 0.99) * 1e6, "us", target="<=1000")
            rate = await throughput(client, THROUGHPUT_CALLS, IN_FLIGHT)
            emit("bus.rpc_rps", rate, "calls/s", in_flight=IN_FLIGHT, target=">=30000")
    finally:
        for process in (worker, broker):
            if process is not None:
                process.terminate()
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()


async def inproc_figures(local: bool) -> None:
    """Lockstep calls in one process: direct to a local service, or through a broker thread."""
    broker = Broker(f"inproc://bench-bus-{int(local)}")
    endpoint = broker.start()
    try:
        services = ServiceHost(endpoint, [Echo()], local_calls=local)
        async with services, Client(endpoint) as client:
            await client.wait_for_service(Echo.name, timeout=10.0)
            latencies = await lockstep(client, LOCKSTEP_CALLS)
        if local:
            emit("bus.inproc_p50_us", percentile(latencies, 0.5) * 1e6, "us")
            emit("bus.inproc_p99_us", percentile(latencies, 0.99) * 1e6, "us", target="<=100")
        else:
            path = "inproc through the broker thread"
            emit("bus.inproc_broker_p50_us", percentile(latencies, 0.5) * 1e6, "us", path=path)
            emit("bus.inproc_broker_p99_us", percentile(latencies, 0.99) * 1e6, "us", path=path)
    finally:
        broker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--worker", metavar="ENDPOINT", help="run the echo worker process")
    args = parser.parse_args()
    if args.worker:
        asyncio.run(serve_worker(args.worker))
        return
    asyncio.run(tcp_figures())
    asyncio.run(inproc_figures(local=True))
    asyncio.run(inproc_figures(local=False))


if __name__ == "__main__":
    main()
