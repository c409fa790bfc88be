"""Endpoints and sockets: same code on inproc, ipc and tcp; liveness options; plaintext rules."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq
import zmq.asyncio

from trader.bus.security import generate_keypair
from trader.bus.transport import (
    Endpoint,
    Security,
    bound_endpoint,
    make_socket,
    parse_endpoint,
)
from trader.errors import ConfigError

PLAINTEXT = Security(plaintext_tcp=True)


@pytest.fixture
def context() -> Iterator[zmq.Context[zmq.Socket[bytes]]]:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        yield ctx
    finally:
        ctx.destroy(linger=0)


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path, so ipc socket paths stay under the OS limit."""
    with tempfile.TemporaryDirectory(prefix="tb", dir="/tmp") as name:
        yield Path(name)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("inproc://broker", Endpoint("inproc", path="broker")),
        ("ipc:///tmp/trader.sock", Endpoint("ipc", path="/tmp/trader.sock")),
        ("tcp://127.0.0.1:5555", Endpoint("tcp", host="127.0.0.1", port=5555)),
        ("tcp://localhost:*", Endpoint("tcp", host="localhost", port=0)),
        ("tcp://[::1]:7000", Endpoint("tcp", host="[::1]", port=7000)),
        ("tcp://*:80", Endpoint("tcp", host="*", port=80)),
        ("  tcp://eth0:1 ", Endpoint("tcp", host="eth0", port=1)),
    ],
)
def test_parse_endpoint_accepts_each_transport(text: str, expected: Endpoint) -> None:
    assert parse_endpoint(text) == expected


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("udp://1.2.3.4:5", "unknown transport"),
        ("127.0.0.1:5555", "unknown transport"),
        ("inproc://", "inproc needs a name"),
        ("ipc://", "ipc needs a path"),
        ("ipc:///" + "x" * 200, "longer than"),
        ("tcp://127.0.0.1", "HOST:PORT"),
        ("tcp://:5555", "HOST:PORT"),
        ("tcp://host:99999", "0-65535"),
        ("tcp://host:http", "0-65535"),
        ("tcp://ho st:1", "not a host name"),
    ],
)
def test_parse_endpoint_rejects_bad_text_with_a_clear_message(text: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says) as caught:
        parse_endpoint(text)
    assert text.strip()[:20] in str(caught.value)


def test_endpoint_url_and_loopback() -> None:
    assert parse_endpoint("tcp://127.0.0.1:0").url == "tcp://127.0.0.1:*"
    assert parse_endpoint("tcp://127.0.0.2:1").is_loopback
    assert parse_endpoint("tcp://[::1]:1").is_loopback
    assert parse_endpoint("tcp://localhost:1").is_loopback
    assert not parse_endpoint("tcp://0.0.0.0:1").is_loopback
    assert not parse_endpoint("tcp://*:1").is_loopback
    assert not parse_endpoint("tcp://10.0.0.1:1").is_loopback
    assert parse_endpoint("ipc:///x").is_loopback


def _round_trip(
    context: zmq.Context[zmq.Socket[bytes]], endpoint: str, security: Security | None
) -> None:
    server = make_socket(context, zmq.ROUTER, endpoint, bind=True, security=security)
    try:
        client = make_socket(
            context, zmq.DEALER, bound_endpoint(server), bind=False, security=security
        )
        try:
            client.send(b"ping")
            assert server.poll(5000), "no request arrived"
            identity, body = server.recv_multipart()
            assert body == b"ping"
            server.send_multipart([identity, b"pong"])
            assert client.poll(5000), "no reply arrived"
            assert client.recv() == b"pong"
        finally:
            client.close()
    finally:
        server.close()


def test_same_code_works_on_inproc_ipc_and_plaintext_loopback_tcp(
    context: zmq.Context[zmq.Socket[bytes]], short_dir: Path
) -> None:
    _round_trip(context, "inproc://transport-test", None)
    _round_trip(context, f"ipc://{short_dir}/s", None)
    _round_trip(context, "tcp://127.0.0.1:0", PLAINTEXT)


def test_asyncio_context_gives_asyncio_sockets() -> None:
    async def scenario() -> bytes:
        ctx = zmq.asyncio.Context()
        try:
            server = make_socket(ctx, zmq.PAIR, "inproc://async-pair", bind=True)
            client = make_socket(ctx, zmq.PAIR, "inproc://async-pair", bind=False)
            assert isinstance(server, zmq.asyncio.Socket)
            await client.send(b"hello")
            reply = await asyncio.wait_for(server.recv(), 5)
            assert isinstance(reply, bytes)
            return reply
        finally:
            ctx.destroy(linger=0)

    assert asyncio.run(scenario()) == b"hello"


def test_liveness_options_are_set(context: zmq.Context[zmq.Socket[bytes]]) -> None:
    socket = make_socket(
        context, zmq.DEALER, "tcp://127.0.0.1:0", bind=True, security=PLAINTEXT, heartbeat_ms=250
    )
    try:
        assert socket.getsockopt(zmq.LINGER) == 0
        assert socket.getsockopt(zmq.HEARTBEAT_IVL) == 250
        assert socket.getsockopt(zmq.HEARTBEAT_TIMEOUT) == 500
        assert socket.getsockopt(zmq.HEARTBEAT_TTL) == 700  # rounded down to deciseconds
        assert socket.getsockopt(zmq.TCP_KEEPALIVE) == 1
        assert socket.getsockopt(zmq.TCP_KEEPALIVE_IDLE) == 1
        assert socket.getsockopt(zmq.TCP_KEEPALIVE_CNT) == 3
    finally:
        socket.close()


def test_extra_options_are_applied_before_bind(context: zmq.Context[zmq.Socket[bytes]]) -> None:
    socket = make_socket(context, zmq.PUB, "inproc://opts", bind=True, options={zmq.SNDHWM: 12345})
    try:
        assert socket.getsockopt(zmq.SNDHWM) == 12345
    finally:
        socket.close()


def test_plaintext_tcp_is_refused_without_the_flag(
    context: zmq.Context[zmq.Socket[bytes]],
) -> None:
    for bind in (True, False):
        with pytest.raises(ConfigError, match="plaintext_tcp"):
            make_socket(context, zmq.DEALER, "tcp://127.0.0.1:0", bind=bind)
        with pytest.raises(ConfigError, match="plaintext_tcp"):
            make_socket(context, zmq.DEALER, "tcp://127.0.0.1:0", bind=bind, security=Security())


def test_plaintext_bind_on_a_public_address_is_refused_even_with_the_flag(
    context: zmq.Context[zmq.Socket[bytes]],
) -> None:
    for address in ("tcp://0.0.0.0:0", "tcp://*:0"):
        with pytest.raises(ConfigError, match="non-loopback"):
            make_socket(context, zmq.ROUTER, address, bind=True, security=PLAINTEXT)


def test_curve_bind_on_any_interface_is_allowed(
    context: zmq.Context[zmq.Socket[bytes]], tmp_path: Path
) -> None:
    server = generate_keypair("server", tmp_path)
    security = Security.server(tmp_path / "server.key_secret", [server.public_key])
    socket = make_socket(context, zmq.ROUTER, "tcp://0.0.0.0:0", bind=True, security=security)
    try:
        assert socket.getsockopt(zmq.CURVE_SERVER) == 1
        assert bound_endpoint(socket).startswith("tcp://0.0.0.0:")
    finally:
        socket.close()


def test_curve_client_without_server_key_is_refused(
    context: zmq.Context[zmq.Socket[bytes]], tmp_path: Path
) -> None:
    client = generate_keypair("client", tmp_path)
    public, secret = client.public_key, (tmp_path / "client.key_secret")
    from trader.bus.security import load_keypair

    security = Security(public_key=public, secret_key=load_keypair(secret)[1])
    with pytest.raises(ConfigError, match="server's public key"):
        make_socket(context, zmq.DEALER, "tcp://127.0.0.1:5", bind=False, security=security)


def test_bind_on_a_taken_address_is_a_config_error(
    context: zmq.Context[zmq.Socket[bytes]],
) -> None:
    first = make_socket(context, zmq.ROUTER, "tcp://127.0.0.1:0", bind=True, security=PLAINTEXT)
    try:
        with pytest.raises(ConfigError, match="cannot bind"):
            make_socket(context, zmq.ROUTER, bound_endpoint(first), bind=True, security=PLAINTEXT)
    finally:
        first.close()


def test_security_rejects_malformed_keys() -> None:
    with pytest.raises(ConfigError, match="Z85"):
        Security(server_public_key=b"short")
    with pytest.raises(ConfigError, match="Z85"):
        Security(allowed_client_keys=frozenset({b"x" * 39}))
    public, secret = zmq.curve_keypair()
    with pytest.raises(ConfigError, match="both public_key and secret_key"):
        Security(public_key=public)
    assert Security(public_key=public, secret_key=secret).has_keypair
