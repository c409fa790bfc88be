"""CURVE keys on disk and the ZAP allowlist: allowed clients talk, others are refused and logged."""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq
import zmq.asyncio
import zmq.auth
from zmq.utils.monitor import recv_monitor_message

from trader.bus.security import (
    default_key_dir,
    ensure_authenticator,
    fingerprint,
    generate_keypair,
    list_keys,
    load_keypair,
    load_public_key,
    load_public_keys,
    stop_authenticator,
)
from trader.bus.transport import Security, bound_endpoint, make_socket
from trader.errors import ConfigError


@pytest.fixture
def context() -> Iterator[zmq.Context[zmq.Socket[bytes]]]:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        yield ctx
    finally:
        stop_authenticator(ctx)
        ctx.destroy(linger=0)


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    for name in ("server", "client", "stranger"):
        generate_keypair(name, tmp_path)
    return tmp_path


def test_generate_writes_a_pair_zmq_can_read_with_a_private_secret_file(tmp_path: Path) -> None:
    info = generate_keypair("node-1", tmp_path / "keys")
    secret_file = tmp_path / "keys" / "node-1.key_secret"
    assert info.public_file == tmp_path / "keys" / "node-1.key"
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "keys").stat().st_mode) == 0o700
    public, secret = zmq.auth.load_certificate(secret_file)
    assert public == info.public_key and secret is not None
    assert zmq.auth.load_certificate(info.public_file) == (info.public_key, None)
    assert load_keypair(secret_file) == (public, secret)
    assert load_keypair(tmp_path / "keys" / "node-1") == (public, secret)
    assert load_keypair(info.public_file) == (public, secret)
    assert load_public_key(info.public_file) == public
    assert zmq.curve_public(secret) == public


def test_generate_never_overwrites_and_checks_the_name(tmp_path: Path) -> None:
    generate_keypair("a", tmp_path)
    before = (tmp_path / "a.key_secret").read_bytes()
    with pytest.raises(ConfigError, match="already exists"):
        generate_keypair("a", tmp_path)
    assert (tmp_path / "a.key_secret").read_bytes() == before
    for bad in ("", "../x", "a b", "-x", "x" * 65):
        with pytest.raises(ConfigError, match="key name"):
            generate_keypair(bad, tmp_path)


def test_default_key_dir_is_under_trader_home(tmp_path: Path) -> None:
    assert default_key_dir() == Path(os.environ["TRADER_HOME"]) / "keys"
    info = generate_keypair()
    assert info.public_file.parent == default_key_dir()


def test_list_shows_public_keys_only(keys: Path) -> None:
    (keys / "lone.key").write_bytes((keys / "client.key").read_bytes())
    listed = list_keys(keys)
    assert [k.name for k in listed] == ["client", "lone", "server", "stranger"]
    assert [k.has_secret for k in listed] == [True, False, True, True]
    for key in listed:
        assert key.fingerprint == fingerprint(key.public_key)
        assert len(key.fingerprint) == 16
    assert load_public_keys(keys) == {k.public_key for k in listed}
    assert list_keys(keys / "missing") == []


def test_a_secret_file_others_can_read_is_refused(keys: Path) -> None:
    os.chmod(keys / "client.key_secret", 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_keypair(keys / "client.key_secret")


def test_missing_or_garbage_key_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_keypair(tmp_path / "nope")
    (tmp_path / "junk.key").write_text("metadata\ncurve\n")
    with pytest.raises(ConfigError, match=r"junk\.key"):
        load_public_key(tmp_path / "junk.key")
    with pytest.raises(ConfigError, match="does not exist"):
        load_public_keys(tmp_path / "nodir")


def _server(
    context: zmq.Context[zmq.Socket[bytes]], keys: Path
) -> tuple[zmq.Socket[bytes], str, bytes]:
    security = Security.server(keys / "server.key_secret", [load_public_key(keys / "client.key")])
    server = make_socket(context, zmq.ROUTER, "tcp://127.0.0.1:0", bind=True, security=security)
    return server, bound_endpoint(server), load_public_key(keys / "server.key")


def test_an_allowlisted_client_talks_over_curve(
    context: zmq.Context[zmq.Socket[bytes]], keys: Path
) -> None:
    server, address, server_key = _server(context, keys)
    client = make_socket(
        context,
        zmq.DEALER,
        address,
        bind=False,
        security=Security.client(keys / "client.key_secret", keys / "server.key"),
    )
    try:
        assert server.getsockopt(zmq.CURVE_SERVER) == 1
        client.send(b"hello")
        assert server.poll(5000)
        frames = server.recv_multipart(copy=False)
        assert frames[1].bytes == b"hello"
        # The ZAP handler names the client by its public key.
        assert frames[1].get("User-Id") == load_public_key(keys / "client.key").decode()
        server.send_multipart([frames[0].bytes, b"welcome"])
        assert client.poll(5000)
        assert client.recv() == b"welcome"
        assert ensure_authenticator(context).accepted >= 1
        assert (
            server_key == Security.client(keys / "client.key_secret", server_key).server_public_key
        )
    finally:
        client.close()
        server.close()


def test_an_asyncio_context_uses_the_same_authenticator(keys: Path) -> None:
    async def scenario() -> bytes:
        ctx = zmq.asyncio.Context()
        try:
            security = Security.server(keys / "server.key_secret", keys)
            server = make_socket(ctx, zmq.ROUTER, "tcp://127.0.0.1:0", bind=True, security=security)
            client = make_socket(
                ctx,
                zmq.DEALER,
                bound_endpoint(server),
                bind=False,
                security=Security.client(keys / "client.key_secret", keys / "server.key"),
            )
            await client.send(b"hi")
            _identity, body = await asyncio.wait_for(server.recv_multipart(), 5)
            assert isinstance(body, bytes)
            return body
        finally:
            stop_authenticator(ctx)
            ctx.destroy(linger=0)

    assert asyncio.run(scenario()) == b"hi"


def test_an_unknown_key_is_rejected_and_the_rejection_logged(
    context: zmq.Context[zmq.Socket[bytes]], keys: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="trader.bus.security")
    server, address, _ = _server(context, keys)
    # Watch the server, whose monitor exists before the client connects (no race).
    monitor = server.get_monitor_socket(zmq.EVENT_HANDSHAKE_FAILED_AUTH)
    stranger = make_socket(
        context,
        zmq.DEALER,
        address,
        bind=False,
        security=Security.client(keys / "stranger.key_secret", keys / "server.key"),
    )
    try:
        stranger.send(b"let me in")
        assert monitor.poll(5000), "the server never refused the stranger"
        event = recv_monitor_message(monitor)
        assert event["event"] == zmq.EVENT_HANDSHAKE_FAILED_AUTH
        assert not server.poll(100), "a refused client's message reached the server"
        stranger_print = fingerprint(load_public_key(keys / "stranger.key"))
        lines = [r.getMessage() for r in caplog.records if r.name == "trader.bus.security"]
        assert any(stranger_print in line and address in line for line in lines), lines
        assert ensure_authenticator(context).rejected >= 1
    finally:
        server.disable_monitor()
        monitor.close()
        stranger.close()
        server.close()


def test_a_plaintext_client_cannot_reach_a_curve_server(
    context: zmq.Context[zmq.Socket[bytes]], keys: Path
) -> None:
    server, address, _ = _server(context, keys)
    monitor = server.get_monitor_socket(zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL)
    plain = make_socket(
        context, zmq.DEALER, address, bind=False, security=Security(plaintext_tcp=True)
    )
    try:
        plain.send(b"sneak")
        assert monitor.poll(5000), "the mismatched handshake went unnoticed"
        assert not server.poll(100)
    finally:
        server.disable_monitor()
        monitor.close()
        plain.close()
        server.close()


def test_an_empty_allowlist_admits_nobody(
    context: zmq.Context[zmq.Socket[bytes]], keys: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="trader.bus.transport")
    security = Security.server(keys / "server.key_secret", [])
    server = make_socket(context, zmq.ROUTER, "tcp://127.0.0.1:0", bind=True, security=security)
    assert any("allowlist is empty" in r.getMessage() for r in caplog.records)
    monitor = server.get_monitor_socket(zmq.EVENT_HANDSHAKE_FAILED_AUTH)
    client = make_socket(
        context,
        zmq.DEALER,
        bound_endpoint(server),
        bind=False,
        security=Security.client(keys / "client.key_secret", keys / "server.key"),
    )
    try:
        client.send(b"x")
        assert monitor.poll(5000)
        assert not server.poll(100)
    finally:
        server.disable_monitor()
        monitor.close()
        client.close()
        server.close()


def test_terminating_the_context_stops_the_authenticator(keys: Path) -> None:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    server, _address, _ = _server(ctx, keys)
    authenticator = ensure_authenticator(ctx)
    assert authenticator.alive
    server.close()
    done = threading.Event()

    def terminate() -> None:
        ctx.term()
        done.set()

    threading.Thread(target=terminate, daemon=True).start()
    assert done.wait(5), "context.term() hung on the ZAP handler"
    authenticator.stop()  # a no-op once the thread has ended
    assert not authenticator.alive
