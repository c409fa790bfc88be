"""``trader backtest``: run a strategy file over stored candles and show its metrics."""

from __future__ import annotations

import asyncio
import json
import math
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from trader.cli.data_cmd import range_options, series_options
from trader.cli.main import load_cli_config
from trader.errors import DataError, StrategyError, TraderError
from trader.model import CandleArrays, Market, SeriesKey, Timeframe
from trader.timeutil import format_time

if TYPE_CHECKING:
    from trader.backtest import BacktestResult, Sizing
    from trader.interfaces.strategy import Parameter

#: Decimal places of prices and amounts of the market a CLI backtest trades (stored candles do
#: not carry an exchange's precisions; 8 places rounds nothing a candle store holds away).
MARKET_DECIMALS = 8

_SIZING_MODES = {
    "fraction": "fraction_of_equity",
    "quote": "fixed_quote",
    "base": "fixed_base",
}


def parse_params(values: tuple[str, ...]) -> dict[str, str]:
    """``("fast=12", ...)`` as a dict; a :class:`click.BadParameter` for a malformed entry."""
    given: dict[str, str] = {}
    for item in values:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise click.BadParameter(f"{item!r} is not NAME=VALUE", param_hint="--param")
        if name in given:
            raise click.BadParameter(f"parameter {name!r} is given twice", param_hint="--param")
        given[name] = value.strip()
    return given


def bind_params(
    declared: list[Parameter], given: dict[str, str]
) -> dict[str, bool | int | float | str]:
    """The bound value of every declared parameter; unknown names and values that do not fit
    their parameter are a :class:`click.BadParameter` naming them."""
    from trader.strategy_support import bind_parameters

    bound, problems = bind_parameters(declared, given)
    if problems:
        raise click.BadParameter("; ".join(problems), param_hint="--param")
    return bound


def parse_sizing(text: str) -> Sizing:
    """``fraction:1``, ``quote:1000`` or ``base:0.1`` as a :class:`~trader.backtest.Sizing`."""
    from trader.backtest import Sizing, SizingMode

    mode, sep, value = text.partition(":")
    known = ", ".join(f"{m}:N" for m in _SIZING_MODES)
    if not sep or mode not in _SIZING_MODES:
        raise click.BadParameter(f"{text!r} is not one of {known}", param_hint="--sizing")
    try:
        return Sizing(SizingMode(_SIZING_MODES[mode]), Decimal(value))
    except (InvalidOperation, TraderError) as error:
        reason = str(error) if isinstance(error, TraderError) else f"{value!r} is not a number"
        raise click.BadParameter(reason, param_hint="--sizing") from None


def _decimal(_ctx: click.Context, param: click.Parameter, value: str | None) -> Decimal | None:
    if value is None:
        return None
    try:
        number = Decimal(value)
    except InvalidOperation:
        raise click.BadParameter(f"{value!r} is not a number") from None
    if not number.is_finite():
        raise click.BadParameter(f"{value!r} is not a finite number")
    return number


def result_summary(result: BacktestResult) -> dict[str, Any]:
    """What ``--json`` prints: the metrics, the number of trades and the final equity (an
    exact decimal string). Non-finite figures (a profit factor without losses) become null."""
    metrics = {
        key: (None if isinstance(value, float) and not math.isfinite(value) else value)
        for key, value in result.metrics.as_dict().items()
    }
    return {
        "metrics": metrics,
        "trades": len(result.trades),
        "final_equity": str(result.final_equity),
    }


@click.command("backtest")
@click.argument("strategy_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@series_options
@range_options
@click.option(
    "--param",
    "-p",
    "params",
    multiple=True,
    metavar="NAME=VALUE",
    help="Set a declared strategy parameter (repeatable).",
)
@click.option(
    "--cash",
    default="10000",
    show_default=True,
    callback=_decimal,
    help="Starting cash, in the quote currency.",
)
@click.option(
    "--fee",
    callback=_decimal,
    help="Fee fraction of every fill, maker and taker (0.001 is 0.1%) "
    "[default: 0.001 maker, 0.002 taker].",
)
@click.option(
    "--fill-timing",
    type=click.Choice(["next_open", "close"]),
    default="next_open",
    show_default=True,
    help="Fill market orders at the next candle's open or at the deciding candle's close.",
)
@click.option(
    "--sizing",
    default="fraction:1",
    show_default=True,
    help="What a target of 1 buys: fraction:F of equity, quote:Q worth, or base:B units.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON.")
@click.pass_context
def backtest_command(
    ctx: click.Context,
    strategy_file: Path,
    exchange: str,
    symbol: str,
    timeframe: Timeframe,
    start: int | None,
    end: int | None,
    params: tuple[str, ...],
    cash: Decimal,
    fee: Decimal | None,
    fill_timing: str,
    sizing: str,
    as_json: bool,
) -> None:
    """Backtest STRATEGY_FILE (.lua or .py) on the stored candles of one series.

    Candles come from the configured candle store (fill it with `trader data import` or
    `trader data download`). Prices and amounts are kept to 8 decimal places, with no minimum
    order size (stored candles do not carry the exchange's rules).

    Exit status: 0 done, 1 a strategy or data error, 2 bad usage.
    """
    from trader.backtest import BacktestSettings, decide, run_decisions
    from trader.cli.progress import ProgressReporter
    from trader.cli.strategy_cmd import one_line, parameters_of
    from trader.interfaces import Limits
    from trader.model.market import Precision, PrecisionMode
    from trader.paper import FillSettings, FillTiming

    given = parse_params(params)
    size = parse_sizing(sizing)
    try:
        series = SeriesKey(exchange, symbol, timeframe)
        market = Market(
            symbol,
            Precision(PrecisionMode.DECIMALS, Decimal(MARKET_DECIMALS)),
            Precision(PrecisionMode.DECIMALS, Decimal(MARKET_DECIMALS)),
        )
        fills = (
            FillSettings(timing=FillTiming(fill_timing))
            if fee is None
            else FillSettings(timing=FillTiming(fill_timing), maker_fee=fee, taker_fee=fee)
        )
        settings = BacktestSettings(
            initial_cash=cash,
            fills=fills,
            sizing=size,
            assignment=strategy_file.stem or "backtest",
            timeframe_ms=timeframe.nominal_ms,
        )
    except TraderError as error:
        raise click.UsageError(str(error)) from None

    runtime, source, declared = parameters_of(strategy_file)
    bound = bind_params(declared, given)
    config = load_cli_config(ctx, "storage.candles")

    name = strategy_file.name
    # The engine has no progress hook: report each phase as it completes.
    with ProgressReporter(f"{name}: loading candles", 1, "phases") as progress:
        candles = asyncio.run(_load(config, series, start, end))
        if not len(candles):
            raise DataError(_no_candles(series, start, end))
        progress.advance_to(1)
    with ProgressReporter(f"{name}: deciding on {len(candles):,} candles", 1, "phases") as progress:
        try:
            strategy = runtime.load(source, str(strategy_file), bound, Limits(), trusted=False)
            rows = decide(strategy, candles, settings.assignment)
        except StrategyError as error:
            raise one_line(error) from None
        progress.advance_to(1)
    with ProgressReporter(f"{name}: filling and measuring", 1, "phases") as progress:
        result = run_decisions(rows, candles, market, settings)
        summary = result_summary(result)
        progress.advance_to(1)

    if as_json:
        click.echo(json.dumps(summary))
        return
    _print_summary(result, strategy_file, series, bound)


async def _load(config: Any, series: SeriesKey, start: int | None, end: int | None) -> Any:
    from trader.app import open_candle_store

    async with open_candle_store(config) as store:
        candles: CandleArrays = await store.read(series, start, end)
        return candles


def _no_candles(series: SeriesKey, start: int | None, end: int | None) -> str:
    where = ""
    if start is not None or end is not None:
        low = "the start" if start is None else format_time(start)
        high = "the end" if end is None else format_time(end)
        where = f" from {low} to {high}"
    return (
        f"no stored candles for {series}{where}; fill the store with `trader data import` or "
        "`trader data download` (`trader data list` shows what is stored)"
    )


def _fraction(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


def _plain(value: float | None, places: int = 2) -> str:
    if value is None:
        return "-"
    if not math.isfinite(value):
        return "inf" if value > 0 else ("-inf" if value < 0 else "nan")
    return f"{value:,.{places}f}"


def _print_summary(
    result: BacktestResult,
    path: Path,
    series: SeriesKey,
    params: dict[str, bool | int | float | str],
) -> None:
    from rich.table import Table

    from trader.cli.output import console

    m = result.metrics
    candles = result.candles
    out = console()
    out.print(
        f"{path.name} on {series}: {len(candles):,} candles, "
        f"{format_time(int(candles.time[0]))} .. {format_time(int(candles.time[-1]))}",
        highlight=False,
    )
    table = Table("metric", "value")
    shown = ", ".join(f"{k}={v}" for k, v in params.items()) or "none"
    rows = [
        ("parameters", shown),
        ("initial equity", _plain(m.initial_equity)),
        ("final equity", _plain(float(result.final_equity))),
        ("total return", _fraction(m.total_return)),
        ("CAGR", _fraction(m.cagr)),
        ("Sharpe", _plain(m.sharpe)),
        ("Sortino", _plain(m.sortino)),
        ("Calmar", _plain(m.calmar)),
        ("max drawdown", _fraction(m.max_drawdown)),
        ("max drawdown length", f"{m.max_drawdown_candles:,} candles"),
        ("exposure", _fraction(m.exposure)),
        ("trades", f"{len(result.trades):,} ({m.trades:,} closed)"),
        ("win rate", _fraction(m.win_rate)),
        ("profit factor", _plain(m.profit_factor)),
        ("average trade", _plain(m.average_trade)),
        ("best trade", _plain(m.best_trade)),
        ("worst trade", _plain(m.worst_trade)),
        ("fees", _plain(m.fees)),
    ]
    for name, value in rows:
        table.add_row(name, value)
    out.print(table)
