"""``trader worker``: run worker processes that serve tasks from the broker."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
from typing import IO, TYPE_CHECKING, Any

import click

from trader.cli.main import load_cli_config
from trader.errors import TraderError

if TYPE_CHECKING:
    from trader.backtest.jobs import BacktestService
    from trader.bus.transport import Security
    from trader.config import Config

log = logging.getLogger("trader.cli.worker")


class _WorkerError(click.ClickException):
    """A mistake the user can fix: one line on stderr, exit status 1."""

    exit_code = 1

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True, file=file)


@click.group("worker")
def worker_group() -> None:
    """Run a worker that serves tasks from the broker (for sweeps across processes and hosts)."""


@worker_group.command("backtest")
@click.option(
    "--broker",
    "broker",
    metavar="ENDPOINT",
    help="Broker address (ipc://PATH or tcp://HOST:PORT) [default: cluster.broker].",
)
@click.option("--name", help="This worker's name in job histories [default: HOST:PID].")
@click.option(
    "--heartbeat",
    type=click.FloatRange(min=0.01),
    default=1.0,
    show_default=True,
    help="Seconds between heartbeats with the broker (use the broker's value).",
)
@click.option(
    "--watch-stdin",
    is_flag=True,
    help="Stop when standard input closes (how a sweep's local workers end with it).",
)
@click.option("--quiet", "-q", is_flag=True, help="Print nothing but errors.")
@click.pass_context
def backtest_worker_command(
    ctx: click.Context,
    broker: str | None,
    name: str | None,
    heartbeat: float,
    watch_stdin: bool,
    quiet: bool,
) -> None:
    """Serve backtest jobs (sweep combinations) from the broker until Ctrl-C or SIGTERM.

    The broker is the configuration's [cluster] broker (start it with `trader broker`), or
    --broker. Candles come from this host's configured candle store, which must hold the
    series the sweeps backtest. One job runs at a time: start one worker per core.

    Exit status: 0 stopped, 1 a configuration error.
    """
    try:
        config = load_cli_config(ctx, "storage.candles")
        endpoint, security = _broker(config, broker)
    except TraderError as error:
        raise _WorkerError(str(error)) from error
    try:
        asyncio.run(_serve(config, endpoint, security, name, heartbeat, watch_stdin, quiet))
    except TraderError as error:
        raise _WorkerError(str(error)) from error
    if not quiet:
        click.echo("worker stopped")


def _broker(config: Config, broker: str | None) -> tuple[str, Security | None]:
    """The broker address to serve and its security, from ``--broker`` or ``[cluster]``."""
    from trader.bus.topology import BusSettings
    from trader.bus.transport import parse_endpoint

    settings = BusSettings.from_config(config)
    endpoint = broker or settings.broker
    scheme = parse_endpoint(endpoint).scheme
    if scheme == "inproc":
        raise TraderError(
            f"a worker process cannot reach the broker at {endpoint}: set [cluster] "
            'transport = "ipc" (one host) or "tcp" (several hosts) and run `trader broker`, '
            "or pass --broker"
        )
    if scheme == "tcp":
        if settings.transport != "tcp":
            raise TraderError(
                f'--broker {endpoint}: a tcp broker needs [cluster] transport = "tcp" with '
                "keys_dir (or plaintext_tcp on loopback)"
            )
        return endpoint, settings.client_security()
    return endpoint, None


async def _serve(
    config: Config,
    endpoint: str,
    security: Security | None,
    name: str | None,
    heartbeat: float,
    watch_stdin: bool,
    quiet: bool,
) -> None:
    from trader.app import open_candle_store
    from trader.backtest.jobs import serve_backtest_worker

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not on every platform
            loop.add_signal_handler(sig, stop.set)
    if watch_stdin:
        _watch_stdin(loop, stop)

    def ready(service: BacktestService) -> None:
        if not quiet:
            click.echo(
                f"worker {service.worker} serving backtest at {endpoint} (pid {os.getpid()})"
            )

    async with open_candle_store(config) as store:
        await serve_backtest_worker(
            endpoint,
            store,
            security=security,
            worker=name,
            heartbeat=heartbeat,
            stop=stop,
            ready=ready,
        )


def _watch_stdin(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    """Set ``stop`` when standard input reaches its end (the parent closed it or died)."""
    stream = sys.stdin.buffer if sys.stdin is not None else None

    def read() -> None:
        with contextlib.suppress(OSError, ValueError):
            while stream is not None and stream.read(65536):
                pass
        with contextlib.suppress(RuntimeError):  # the loop is already closed
            loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=read, name="watch-stdin", daemon=True).start()
