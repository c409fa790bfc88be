"""CURVE keys on disk and the ZAP allowlist: allowed clients talk, others are refused and logged."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq
import zmq.asyncio
import zmq.auth

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


class LogWaiter(logging.Handler):
    """Let a test wait for a line the product logs from its ZAP thread, without sleeping."""

    def __init__(self, *needles: str) -> None:
        super().__init__(logging.DEBUG)
        self.needles = needles
        self.seen = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if all(needle in record.getMessage() for needle in self.needles):
            self.seen.set()


@contextlib.contextmanager
def waiting_for(*needles: str) -> Iterator[LogWaiter]:
    waiter = LogWaiter(*needles)
    # On the root logger, after pytest's capture handler: once the waiter sees a record,
    # caplog has it too.
    log = logging.getLogger()
    log.addHandler(waiter)
    try:
        yield waiter
    finally:
        log.removeHandler(waiter)


def security_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "trader.bus.security"]


def test_an_unknown_key_is_rejected_and_the_rejection_logged(
    context: zmq.Context[zmq.Socket[bytes]], keys: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="trader.bus.security")
    server, address, _ = _server(context, keys)
    stranger_print = fingerprint(load_public_key(keys / "stranger.key"))
    with waiting_for(stranger_print, address) as logged:
        stranger = make_socket(
            context,
            zmq.DEALER,
            address,
            bind=False,
            security=Security.client(keys / "stranger.key_secret", keys / "server.key"),
        )
        try:
            stranger.send(b"let me in")
            assert logged.seen.wait(5), "the server never refused the stranger"
            assert not server.poll(100), "a refused client's message reached the server"
            assert any(
                stranger_print in line and address in line for line in security_lines(caplog)
            )
            assert ensure_authenticator(context).rejected >= 1
        finally:
            stranger.close()
            server.close()


def test_a_plaintext_client_is_refused_and_logged(
    context: zmq.Context[zmq.Socket[bytes]], keys: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """ZeroMQ fails a plaintext peer's handshake before asking ZAP; the product still logs it
    on the endpoint (the reviewer's case: a plaintext DEALER)."""
    caplog.set_level(logging.WARNING, logger="trader.bus.security")
    server, address, _ = _server(context, keys)
    with waiting_for("rejected a peer from", address, "plaintext") as logged:
        plain = make_socket(
            context, zmq.DEALER, address, bind=False, security=Security(plaintext_tcp=True)
        )
        try:
            plain.send(b"sneak")
            assert logged.seen.wait(5), security_lines(caplog)
            assert not server.poll(100)
            assert ensure_authenticator(context).handshake_failures >= 1
        finally:
            plain.close()
            server.close()


#: A ZMTP 3.0 greeting offering the NULL mechanism (no security), as a plaintext peer sends.
NULL_GREETING = b"\xff" + bytes(8) + b"\x7f" + bytes([3, 0]) + b"NULL".ljust(20, b"\0") + bytes(32)


def test_a_refused_plaintext_peer_is_logged_with_its_address(
    context: zmq.Context[zmq.Socket[bytes]], keys: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="trader.bus.security")
    server, address, _ = _server(context, keys)
    authenticator = ensure_authenticator(context)
    host, port = address.removeprefix("tcp://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as peer:
        local_host, local_port = peer.getsockname()[:2]
        me = f"{local_host}:{local_port}"
        # Hold the greeting until the product has seen the connection, so the address is read
        # while the connection is still open (a real peer may be faster: then it says so).
        deadline = time.monotonic() + 5
        while me not in authenticator.connected_peers():
            assert time.monotonic() < deadline, authenticator.connected_peers()
            time.sleep(0.005)
        with waiting_for(f"rejected a peer from {me} on {address}") as logged:
            peer.sendall(NULL_GREETING)
            assert logged.seen.wait(5), security_lines(caplog)
    lines = [line for line in security_lines(caplog) if me in line]
    assert lines and "does not use CURVE" in lines[0], lines
    assert me not in authenticator.connected_peers()
    server.close()


def test_a_client_with_the_wrong_server_key_is_logged_once_per_minute(
    context: zmq.Context[zmq.Socket[bytes]], keys: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="trader.bus.security")
    server, address, _ = _server(context, keys)
    authenticator = ensure_authenticator(context)
    with waiting_for("rejected a peer from", address) as logged:
        # The client trusts the stranger's key as the server's: CURVE fails before ZAP, and
        # ZeroMQ retries the connection every 100 ms.
        confused = make_socket(
            context,
            zmq.DEALER,
            address,
            bind=False,
            security=Security.client(keys / "client.key_secret", keys / "stranger.key"),
        )
        try:
            confused.send(b"hello?")
            assert logged.seen.wait(5), security_lines(caplog)
            deadline = time.monotonic() + 5
            while authenticator.handshake_failures < 3 and time.monotonic() < deadline:
                assert not server.poll(50)
            assert authenticator.handshake_failures >= 3
            lines = [line for line in security_lines(caplog) if "rejected a peer" in line]
            assert len(lines) == 1, lines
        finally:
            confused.close()
            server.close()


def test_an_empty_allowlist_admits_nobody(
    context: zmq.Context[zmq.Socket[bytes]], keys: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="trader.bus.transport")
    security = Security.server(keys / "server.key_secret", [])
    server = make_socket(context, zmq.ROUTER, "tcp://127.0.0.1:0", bind=True, security=security)
    assert any("allowlist is empty" in r.getMessage() for r in caplog.records)
    with waiting_for("not in the allowlist", bound_endpoint(server)) as logged:
        client = make_socket(
            context,
            zmq.DEALER,
            bound_endpoint(server),
            bind=False,
            security=Security.client(keys / "client.key_secret", keys / "server.key"),
        )
        try:
            client.send(b"x")
            assert logged.seen.wait(5)
            assert not server.poll(100)
        finally:
            client.close()
            server.close()


def test_closing_a_curve_socket_removes_its_zap_domain_and_monitor(
    context: zmq.Context[zmq.Socket[bytes]], keys: Path
) -> None:
    threads = threading.active_count()
    for _ in range(3):
        server, _address, _ = _server(context, keys)
        authenticator = ensure_authenticator(context)
        assert authenticator.domain_count == 1
        server.close()
        deadline = time.monotonic() + 5
        while authenticator.domain_count and time.monotonic() < deadline:
            time.sleep(0.01)
        assert authenticator.domain_count == 0
        assert not authenticator._watches  # the monitor's socket is closed too
    # One handler thread for the context, however many sockets came and went.
    assert threading.active_count() <= threads + 1


def test_secret_keys_never_appear_in_reprs(keys: Path) -> None:
    public, secret = load_keypair(keys / "server.key_secret")
    security = Security(public_key=public, secret_key=secret)
    assert secret.decode() not in repr(security) and public.decode() in repr(security)
    assert secret.decode() not in repr(Security.client(keys / "client.key_secret", public))
    for info in list_keys(keys):
        _, info_secret = load_keypair(keys / f"{info.name}.key_secret")
        assert info_secret.decode() not in repr(info)


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
