"""Bench numbered streams through the forwarder; print one JSON line per figure.

Three processes over TCP loopback (plaintext, opted in): a publisher, the forwarder (XSUB/XPUB,
as the broker process hosts it) and a subscriber. Bodies are about 100 bytes of msgpack, packed
one by one in the publisher and unpacked one by one in the subscriber; the subscriber is the
real :class:`trader.bus.streams.Subscriber` with sequence checking on (every sequence checked,
gaps counted). The rate is measured at the subscriber, first message to last.

* ``bus.pubsub_mps``: the publisher sends batches of 100 messages per frame (``publish_many``);
* ``bus.pubsub_unbatched_mps``: one message per frame (``publish``), for comparison;
* ``bus.pubsub_curve_mps``: batched, with CURVE on both hops.

Run ``python bench/bench_bus_pubsub.py`` (``--quick`` for a short run).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import statistics
import tempfile
import time
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import msgpack
import zmq
import zmq.asyncio

from trader.bus.security import generate_keypair
from trader.bus.streams import Publisher, StreamForwarder, StreamMessage, Subscriber
from trader.bus.transport import Security

TOPIC = "candles.bench.BTCUSD.1m"
PROBE = "bench.probe"
PLAINTEXT = Security(plaintext_tcp=True)


def body(n: int) -> bytes:
    """About 100 bytes of msgpack: one quote."""
    return msgpack.packb(
        [
            "BTCUSD",
            1_700_000_000_000 + n,
            42_000.5 + n % 100,
            42_001.25,
            1.5,
            0.25,
            "bitfinex",
            n,
            "some note text here xx",
        ]
    )


def security_for(role: str, keys: str | None) -> Security:
    if keys is None:
        return PLAINTEXT
    folder = Path(keys)
    if role == "forwarder":
        return Security.server(folder / "broker.key_secret", folder)
    return Security.client(folder / f"{role}.key_secret", folder / "broker.key")


def run_forwarder(addresses: Any, stop: Event, keys: str | None) -> None:
    forwarder = StreamForwarder(
        "tcp://127.0.0.1:0",
        "tcp://127.0.0.1:0",
        security_for("forwarder", keys),
        context=zmq.Context(),
        hwm=1_000_000,
    ).start()
    addresses.put((forwarder.xsub_address, forwarder.xpub_address))
    stop.wait()
    forwarder.stop()


def run_publisher(
    endpoint: str, live: Event, done: Event, count: int, batch: int, keys: str | None
) -> None:
    context = zmq.Context()
    publisher = Publisher(
        context, endpoint, security=security_for("publisher", keys), hwm=1_000_000
    )
    while not live.wait(0.01):  # until the subscriber has seen a probe: subscriptions are live
        publisher.publish(PROBE, b"")
    sent = 0
    while sent < count:
        size = min(batch, count - sent)
        if size == 1:
            publisher.publish(TOPIC, body(sent))
        else:
            # Pack fresh bodies each time so the packing cost is in the figure.
            bodies = [body(sent + k) for k in range(size)]
            publisher.publish_many(TOPIC, bodies)
        sent += size
    while not done.wait(0.05):
        publisher.keepalive()  # reveals a lost tail, if any
    publisher.close()
    context.destroy(linger=0)


async def subscribe(endpoint: str, live: Event, count: int, keys: str | None) -> dict[str, Any]:
    context = zmq.asyncio.Context()
    subscriber = Subscriber(
        context, endpoint, security=security_for("subscriber", keys), hwm=1_000_000
    )
    await subscriber.subscribe(TOPIC)
    await subscriber.subscribe(PROBE)
    while True:
        items = await subscriber.receive(timeout=30)
        if any(item.topic == PROBE for item in items):
            break
    subscriber.unsubscribe(PROBE)
    live.set()
    received = 0
    last_seq = 0
    checksum = 0
    started = 0.0
    while last_seq < count:
        items = await subscriber.receive(timeout=30)
        if not started:
            started = time.perf_counter()
        for item in items:
            if isinstance(item, StreamMessage) and item.topic == TOPIC:
                checksum += msgpack.unpackb(item.body)[7]
                last_seq = item.seq
                received += 1
    elapsed = time.perf_counter() - started
    stats = subscriber.stats
    subscriber.close()
    context.destroy(linger=0)
    return {
        "mps": received / elapsed,
        "received": received,
        "gaps": stats.gaps,
        "lost": stats.lost,
        "duplicates": stats.duplicates,
        "complete": checksum == count * (count - 1) // 2,  # every body, once
    }


def one_run(count: int, batch: int, keys: str | None) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    addresses: Any = ctx.Queue()
    stop, live, done = ctx.Event(), ctx.Event(), ctx.Event()
    forwarder = ctx.Process(target=run_forwarder, args=(addresses, stop, keys), daemon=True)
    forwarder.start()
    try:
        xsub, xpub = addresses.get(timeout=30)
        publisher = ctx.Process(
            target=run_publisher, args=(xsub, live, done, count, batch, keys), daemon=True
        )
        publisher.start()
        try:
            return asyncio.run(subscribe(xpub, live, count, keys))
        finally:
            done.set()
            publisher.join(10)
            if publisher.is_alive():
                publisher.kill()
    finally:
        stop.set()
        forwarder.join(10)
        if forwarder.is_alive():
            forwarder.kill()


def figure(name: str, runs: list[dict[str, Any]]) -> None:
    value = statistics.median(run["mps"] for run in runs)
    print(
        json.dumps(
            {
                "name": name,
                "value": round(value),
                "unit": "msg/s",
                "better": "higher",
                "runs": [round(run["mps"]) for run in runs],
                "gaps": sum(run["gaps"] for run in runs),
                "lost": sum(run["lost"] for run in runs),
                "duplicates": sum(run["duplicates"] for run in runs),
                "complete": all(run["complete"] for run in runs),
            }
        ),
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run (smaller counts)")
    args = parser.parse_args()
    count = 200_000 if args.quick else 1_000_000
    repeats = 1 if args.quick else 3
    figure("bus.pubsub_mps", [one_run(count, 100, None) for _ in range(repeats)])
    figure("bus.pubsub_unbatched_mps", [one_run(count // 5, 1, None) for _ in range(repeats)])
    with tempfile.TemporaryDirectory() as keys:
        for name in ("broker", "publisher", "subscriber"):
            generate_keypair(name, keys)
        figure("bus.pubsub_curve_mps", [one_run(count, 100, keys) for _ in range(repeats)])


if __name__ == "__main__":
    main()
