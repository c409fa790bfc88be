"""``trader data download``: fetch candles from any exchange plugin into the candle store.

Wire it into the data group with ``data_group.add_command(download_command)`` (in
``trader.cli.data_cmd``).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, cast

import click

from trader.cli.main import load_cli_config
from trader.cli.progress import ProgressReporter
from trader.errors import TraderError
from trader.model import SeriesKey, Timeframe
from trader.registry import Kind
from trader.timeutil import format_time, parse_time

if TYPE_CHECKING:
    from trader.config import Config
    from trader.interfaces import CandleStore, Exchange, WriteResult


def _timeframe(_ctx: click.Context, _param: click.Parameter, value: str) -> Timeframe:
    try:
        return Timeframe.parse(value)
    except TraderError as error:
        raise click.BadParameter(str(error)) from None


def _time(_ctx: click.Context, _param: click.Parameter, value: str) -> int:
    try:
        return parse_time(value)
    except TraderError as error:
        raise click.BadParameter(str(error)) from None


def build_exchange(config: Config, name: str) -> Exchange:
    """Build the exchange ``[exchanges.NAME]`` configures, or plugin ``NAME`` with defaults.

    Public candles need no API key, so an exchange plugin that is installed but not configured
    is built with its default options.
    """
    from trader.config import validate_options
    from trader.plugins import get_plugin_manager

    host = get_plugin_manager()
    table = config.exchanges.get(name)
    plugin = table.plugin if table is not None else name
    raw = table.plugin_options() if table is not None else {}
    options = validate_options(
        host.registration(Kind.EXCHANGE, plugin),
        raw,
        where=f"{config.label}: exchanges.{name}",
        reserved=("plugin",),
        config_dir=config.config_dir,
        environ=config.environ,
    )
    return cast("Exchange", host.build(Kind.EXCHANGE, plugin, options, config.context()))


async def download(
    exchange: Exchange,
    store: CandleStore,
    series: SeriesKey,
    start: int,
    end: int,
    progress: ProgressReporter | None = None,
) -> tuple[int, WriteResult]:
    """Store the closed candles of ``series`` in ``[start, end)``; return where it began.

    ``progress`` counts candle periods from ``start`` (the resumed part counts as done).

    Resumable: it starts after the newest candle already stored in the range (pages are written
    oldest first, so an interrupted download leaves a prefix), and writing is an upsert, so
    running it again never duplicates anything.
    """
    from trader.interfaces import WriteResult

    stored = await store.read(series, start, end)
    resume = int(stored.time[-1]) + 1 if len(stored) else start
    total = WriteResult()
    period = series.timeframe.nominal_ms
    if progress is not None:
        progress.advance_to((resume - start) // period)
    iterator = exchange.fetch_candles(series.symbol, str(series.timeframe), resume, end)
    async for page in cast("Any", iterator):
        total = total + await store.write(series, page)
        if progress is not None and len(page):
            progress.advance_to((int(page.time[-1]) - start) // period + 1)
    if progress is not None:
        progress.advance_to(-(-(end - start) // period))
    return resume, total


@click.command("download")
@click.option("--exchange", "-e", required=True, help="Exchange name (an [exchanges] table).")
@click.option("--symbol", "-s", required=True, help="Unified symbol, e.g. BTC/USD.")
@click.option("--timeframe", "-t", required=True, callback=_timeframe, help="e.g. 1m, 1h.")
@click.option(
    "--from", "start", required=True, callback=_time, help="Start (inclusive): ISO date or ms."
)
@click.option("--to", "end", required=True, callback=_time, help="End (exclusive): ISO date or ms.")
@click.pass_context
def download_command(
    ctx: click.Context, exchange: str, symbol: str, timeframe: Timeframe, start: int, end: int
) -> None:
    """Download candles from an exchange into the configured candle store.

    Shows progress; resumes after the newest candle already stored in the range, so an
    interrupted download continues where it stopped. Periods without trades have no candle.
    """
    if end <= start:
        raise click.BadParameter("--to must be after --from", param_hint="--to")
    config = load_cli_config(ctx, "storage.candles")
    try:
        series = SeriesKey(exchange, symbol, timeframe)
    except TraderError as error:
        raise click.BadParameter(str(error)) from None
    resume, result = asyncio.run(_run(config, series, start, end))
    if resume > start:
        click.echo(f"{series}: resumed from {format_time(resume)}")
    click.echo(
        f"{series}: stored {result.inserted:,} new, {result.updated:,} changed, "
        f"{result.unchanged:,} unchanged candles from {format_time(start)} to {format_time(end)}"
    )


async def _run(config: Config, series: SeriesKey, start: int, end: int) -> tuple[int, Any]:
    from trader.app import open_candle_store

    exchange = build_exchange(config, series.exchange)
    async with open_candle_store(config) as store, exchange:
        label = f"downloading {series}"
        periods = -(-(end - start) // series.timeframe.nominal_ms)
        with ProgressReporter(label, periods, "candle periods") as progress:
            return await download(exchange, store, series, start, end, progress)
