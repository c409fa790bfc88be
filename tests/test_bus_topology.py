"""Topology by configuration only: the same service and caller code in one process (inproc),
several processes (ipc) and over TCP with CURVE keys; only the TOML file changes.

The application module below (written by the test) holds an echo service that also publishes
what it echoes on a stream and serves the replay of that stream, and a caller that calls the
service and subscribes to the stream (snapshot first, gaps repaired through the replay service).
With ``inproc`` one process runs the broker, the service and the caller. With ``ipc`` and ``tcp``
the broker is ``trader broker``, the service another process, the caller this test process.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from trader.bus.security import generate_keypair
from trader.bus.topology import BusSettings
from trader.config import load_config
from trader_sdk.testing.processes import ProcessGroup

TEXTS = [f"hello {n}" for n in range(20)]

APP_MODULE = '''
"""Echo service, its caller and a stream: the same code whatever [cluster] says."""
import asyncio
import os
import sys
from dataclasses import dataclass

from trader.bus import mdp
from trader.bus.client import Client
from trader.bus.codec import Message
from trader.bus.replay import REPLAY_SERVICE, BusReplaySource, ReplayService
from trader.bus.service import Service, ServiceHost, handler
from trader.bus.streams import Publisher, ReplayBuffer, StreamMessage, Subscriber
from trader.bus.topology import BusSettings
from trader.config import load_config

TOPIC = "test.topology.echoed"
HEARTBEAT = 0.2


@dataclass(frozen=True)
class Ping(Message, type_name="test.topology.ping"):
    text: str


@dataclass(frozen=True)
class Pong(Message, type_name="test.topology.pong"):
    text: str
    pid: int
    seq: int


class Echo(Service):
    name = "test.topology.echo"

    def __init__(self, publisher: Publisher) -> None:
        self.publisher = publisher

    @handler
    async def ping(self, request: Ping) -> Pong:
        seq = self.publisher.publish(TOPIC, request.text.encode())
        return Pong(request.text, os.getpid(), seq)


async def serve(settings: BusSettings) -> None:
    """Serve Echo and the replay of what it publishes, until cancelled."""
    security = settings.client_security()
    buffer = ReplayBuffer()
    publisher = Publisher(
        mdp.shared_context(), settings.stream_xsub, security=security, replay_buffer=buffer
    )
    services = [Echo(publisher), ReplayService(buffer)]
    try:
        async with ServiceHost(
            settings.broker, services, security=security, heartbeat_interval=HEARTBEAT
        ):
            print("serving", os.getpid(), flush=True)
            while True:  # keep-alives let subscribers notice a lost tail
                publisher.keepalive()
                await asyncio.sleep(0.05)
    finally:
        publisher.close()


async def call(settings: BusSettings, texts: list[str]) -> tuple[list[Pong], list[StreamMessage]]:
    """Call Echo with each text; return the replies and the stream messages they published."""
    security = settings.client_security()
    async with Client(settings.broker, security=security, timeout=10.0) as client:
        await client.wait_for_service(Echo.name, timeout=20.0)
        await client.wait_for_service(REPLAY_SERVICE, timeout=20.0)
        subscriber = Subscriber(
            mdp.shared_context(),
            settings.stream_xpub,
            replay=BusReplaySource(client),
            security=security,
        )
        try:
            await subscriber.subscribe(TOPIC, snapshot=True)
            replies = [await client.call(Echo.name, Ping(text), expect=Pong) for text in texts]
            messages: list[StreamMessage] = []
            while len(messages) < len(texts):
                for item in await subscriber.receive(timeout=10.0):
                    if isinstance(item, StreamMessage):
                        messages.append(item)
        finally:
            subscriber.close()
    return replies, messages


async def one_process(
    settings: BusSettings, texts: list[str]
) -> tuple[list[Pong], list[StreamMessage]]:
    """Broker, service and caller in this process (for transport = "inproc")."""
    broker = settings.make_broker(heartbeat_interval=HEARTBEAT)
    broker.start()
    server = asyncio.create_task(serve(settings))
    try:
        return await call(settings, texts)
    finally:
        server.cancel()
        await asyncio.gather(server, return_exceptions=True)
        broker.stop()


def main() -> None:
    """``python -c "import topoapp; topoapp.main()" CONFIG``: serve until killed."""
    asyncio.run(serve(BusSettings.from_config(load_config(sys.argv[1]))))
'''


def free_port_triple() -> int:
    """A port P such that P, P + 1 and P + 2 are free on loopback now."""
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port > 65000:
            continue
        held: list[socket.socket] = []
        try:
            for candidate in (port, port + 1, port + 2):
                taken = socket.socket()
                held.append(taken)
                taken.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        finally:
            for taken in held:
                taken.close()
        return port
    raise AssertionError("no three consecutive free ports")


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Any]:
    (tmp_path / "topoapp.py").write_text(textwrap.dedent(APP_MODULE))
    sys.path.insert(0, str(tmp_path))
    try:
        import topoapp  # type: ignore[import-not-found]  # written by the fixture

        yield topoapp
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("topoapp", None)


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[ProcessGroup]:
    started = ProcessGroup(tmp_path)
    try:
        yield started
    finally:
        started.stop_all()


def write_config(tmp_path: Path, cluster: str) -> Path:
    path = tmp_path / "trader.toml"
    path.write_text(textwrap.dedent(cluster))
    return path


def check(replies: list[Any], messages: list[Any], service_pids: set[int]) -> None:
    assert [reply.text for reply in replies] == TEXTS
    assert {reply.pid for reply in replies} == service_pids
    assert [reply.seq for reply in replies] == list(range(1, len(TEXTS) + 1))
    assert [(m.seq, m.body.decode()) for m in messages] == [
        (n, text) for n, text in enumerate(TEXTS, start=1)
    ]


def test_one_process_inproc(tmp_path: Path, app: Any) -> None:
    config = write_config(tmp_path, '[cluster]\ntransport = "inproc"\n')
    settings = BusSettings.from_config(load_config(config))

    async def scenario() -> tuple[list[Any], list[Any]]:
        result: tuple[list[Any], list[Any]] = await app.one_process(settings, TEXTS)
        return result

    replies, messages = asyncio.run(asyncio.wait_for(scenario(), 30))
    check(replies, messages, {os.getpid()})


def run_across_processes(config: Path, app: Any, processes: ProcessGroup, security: str) -> None:
    settings = BusSettings.from_config(load_config(config))

    async def scenario() -> tuple[list[Any], list[Any], int]:
        processes.start("-m", "trader", "-c", str(config), "broker", "--heartbeat", "0.2")
        broker_line = await processes.line("broker:")
        assert broker_line == f"broker: {settings.broker}{security}"
        assert (await processes.line("stream publishers:")).split()[-1] == settings.stream_xsub
        assert (await processes.line("stream subscribers:")).split()[-1] == settings.stream_xpub
        service = processes.start("-c", "import topoapp; topoapp.main()", str(config))
        await processes.line("serving")
        replies, messages = await app.call(settings, TEXTS)
        return replies, messages, service.pid

    replies, messages, service_pid = asyncio.run(asyncio.wait_for(scenario(), 40))
    check(replies, messages, {service_pid})


def test_several_processes_ipc(tmp_path: Path, app: Any, processes: ProcessGroup) -> None:
    config = write_config(tmp_path, '[cluster]\ntransport = "ipc"\n')  # broker in DATA_DIR
    run_across_processes(config, app, processes, security="")


def test_several_hosts_tcp_with_curve(tmp_path: Path, app: Any, processes: ProcessGroup) -> None:
    generate_keypair("broker", tmp_path / "keys")
    generate_keypair("trader", tmp_path / "keys")
    config = write_config(
        tmp_path,
        f"""\
        [cluster]
        transport = "tcp"
        broker = "tcp://127.0.0.1:{free_port_triple()}"
        keys_dir = "keys"
        """,
    )
    settings = BusSettings.from_config(load_config(config))
    assert settings.curve
    run_across_processes(config, app, processes, security=" (CURVE)")
