"""``trader broker``: run the bus broker and its stream forwarder as ``[cluster]`` describes."""

from __future__ import annotations

import logging
import signal
from typing import IO, Any

import click

from trader.cli.main import load_cli_config
from trader.errors import TraderError

log = logging.getLogger("trader.cli.broker")


class _BrokerError(click.ClickException):
    """A mistake the user can fix: one line on stderr, exit status 1."""

    exit_code = 1

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True, file=file)


@click.command("broker")
@click.option(
    "--heartbeat",
    type=click.FloatRange(min=0.01),
    default=1.0,
    show_default=True,
    help="Seconds between heartbeats; a worker silent for three of them is forgotten.",
)
@click.pass_context
def broker_command(ctx: click.Context, heartbeat: float) -> None:
    """Run the broker and the stream forwarder until interrupted (Ctrl-C or SIGTERM).

    The addresses come from the configuration's [cluster] table: the broker on cluster.broker,
    stream publishers on the next endpoint and subscribers on the one after (for tcp, the next
    two ports). TCP is secured with the CURVE keys in cluster.keys_dir: broker.key_secret, and
    every *.key there is admitted. Prints the three addresses once they are bound.
    """
    from trader.bus.topology import BusSettings

    try:
        settings = BusSettings.from_config(load_cli_config(ctx))
        if settings.in_process:
            raise _BrokerError(
                'cluster.transport is "inproc", so the broker runs inside the process that uses '
                'it; set transport = "ipc" (one host) or "tcp" (several hosts) to run it alone'
            )
        broker = settings.make_broker(heartbeat_interval=heartbeat)
        endpoint = broker.bind()
    except TraderError as error:
        raise _BrokerError(str(error)) from error
    forwarder = broker.forwarder
    assert forwarder is not None
    security = "CURVE" if settings.curve else ("plaintext" if settings.transport == "tcp" else "")
    click.echo(f"broker: {endpoint}" + (f" ({security})" if security else ""))
    click.echo(f"stream publishers: {forwarder.xsub_address}")
    click.echo(f"stream subscribers: {forwarder.xpub_address}")
    log.info(
        "bus broker on %s; streams: publishers %s, subscribers %s",
        endpoint,
        forwarder.xsub_address,
        forwarder.xpub_address,
    )

    def stop(signum: int, frame: object) -> None:
        broker.stop()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        broker.run()
    finally:
        broker.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    click.echo("broker stopped")
