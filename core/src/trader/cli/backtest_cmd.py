"""``trader backtest``: run a strategy file over stored candles and show its metrics."""

from __future__ import annotations

import asyncio
import json
import math
import os
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from trader.cli.data_cmd import range_options, series_options
from trader.cli.main import load_cli_config
from trader.errors import DataError, StrategyError, TraderError
from trader.model import CandleArrays, SeriesKey, Timeframe
from trader.timeutil import format_time

if TYPE_CHECKING:
    from trader.backtest import BacktestResult, Sizing
    from trader.backtest.jobs import RunSettings
    from trader.backtest.sweep import SweepOutcome, SweepRow
    from trader.interfaces import StrategyRuntime
    from trader.interfaces.strategy import Parameter

#: Rows of the sweep table without ``--top``.
DEFAULT_TOP = 10
#: Failed combinations listed under the sweep table.
SHOWN_FAILURES = 5
#: Metrics shown as percentages.
_FRACTIONS = frozenset(
    {"total_return", "cagr", "max_drawdown", "exposure", "win_rate", "average_trade_return"}
)

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
    exact decimal string). Non-finite figures (a profit factor without losses) become null.
    A sweep's jobs send back the same summary (:func:`trader.backtest.jobs.job_summary`)."""
    from trader.backtest.jobs import job_summary

    return job_summary(result)


def _metric_names() -> list[str]:
    from dataclasses import fields

    from trader.backtest.metrics import Metrics

    return [f.name for f in fields(Metrics)]


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
@click.option("--json", "as_json", is_flag=True, help="Print the metrics (or sweep rows) as JSON.")
@click.option(
    "--report",
    "report_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write a self-contained HTML report of the run (with --sweep: of the best run by "
    "--sort-by, run again here).",
)
@click.option(
    "--sweep",
    "sweeps",
    multiple=True,
    metavar="NAME=SPEC",
    help="Sweep a parameter: NAME=START:STOP:STEP, NAME=START:STOP (declared step), "
    "NAME=V1,V2,... or NAME (its declared min:max:step). Repeat for a grid; every combination "
    "runs as a job on workers.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    help="Local worker processes for --sweep [default: the number of CPUs].",
)
@click.option(
    "--local",
    "force_local",
    is_flag=True,
    help="Run --sweep on local workers even when [cluster] names a broker.",
)
@click.option(
    "--sort-by",
    type=click.Choice(_metric_names()),
    help="Metric that ranks --sweep results [default: sharpe]; drawdowns and fees rank lowest "
    "first, everything else highest first.",
)
@click.option(
    "--top",
    type=click.IntRange(min=1),
    help="Rows of the --sweep table [default: 10]; --json prints them all.",
)
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
    report_path: Path | None,
    sweeps: tuple[str, ...],
    workers: int | None,
    force_local: bool,
    sort_by: str | None,
    top: int | None,
) -> None:
    """Backtest STRATEGY_FILE (.lua or .py) on the stored candles of one series.

    Candles come from the configured candle store (fill it with `trader data import` or
    `trader data download`). Prices and amounts are kept to 8 decimal places, with no minimum
    order size (stored candles do not carry the exchange's rules).

    With --sweep, every combination of the swept parameters is a backtest job run by workers:
    local worker processes (--workers), or the workers of the broker [cluster] names (started
    with `trader worker backtest`). The results are ranked by --sort-by. See docs/sweeps.md.

    Exit status: 0 done (a sweep with some failed combinations included), 1 a strategy or
    data error (for a sweep: when no combination ran to the end), 2 bad usage.
    """
    from trader.backtest import decide, run_decisions
    from trader.backtest.jobs import RunSettings
    from trader.cli.progress import ProgressReporter
    from trader.cli.strategy_cmd import one_line, parameters_of
    from trader.interfaces import Limits

    given = parse_params(params)
    size = parse_sizing(sizing)
    if not sweeps:
        used = [
            option
            for option, value in (
                ("--workers", workers),
                ("--local", force_local or None),
                ("--sort-by", sort_by),
                ("--top", top),
            )
            if value is not None
        ]
        if used:
            raise click.UsageError(f"{', '.join(used)} only go with --sweep")
    run_settings = RunSettings(
        initial_cash=cash,
        maker_fee=fee,
        taker_fee=fee,
        fill_timing=fill_timing,
        sizing_mode=size.mode.value,
        sizing_value=size.value,
        whole_units=size.whole_units,
        assignment=strategy_file.stem or "backtest",
        timeframe_ms=timeframe.nominal_ms,
        decimals=MARKET_DECIMALS,
    )
    try:
        series = SeriesKey(exchange, symbol, timeframe)
        settings = run_settings.backtest_settings()
        market = run_settings.market(symbol)
    except TraderError as error:
        raise click.UsageError(str(error)) from None

    runtime, source, declared = parameters_of(strategy_file)
    if sweeps:
        _sweep(
            ctx,
            _SweepRequest(
                strategy_file=strategy_file,
                runtime=runtime,
                source=source,
                declared=declared,
                given=given,
                sweeps=sweeps,
                series=series,
                start=start,
                end=end,
                settings=run_settings,
                workers=workers,
                force_local=force_local,
                metric=sort_by or "sharpe",
                top=top or DEFAULT_TOP,
                as_json=as_json,
                report_path=report_path,
            ),
        )
        return
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
    else:
        _print_summary(result, strategy_file, series, bound)
    if report_path is not None:
        _write_report(result, report_path, strategy_file, series, bound)


def _write_report(
    result: BacktestResult,
    path: Path,
    strategy_file: Path,
    series: SeriesKey,
    params: dict[str, bool | int | float | str],
) -> None:
    """Write the HTML report of ``result`` to ``path`` and say so on stderr."""
    from trader.backtest.report import write_report

    try:
        write_report(result, path, title=strategy_file.name, series=series, params=params)
    except OSError as error:
        raise TraderError(f"cannot write the report {path}: {error.strerror or error}") from None
    click.echo(f"report: {path}", err=True)


async def _load(config: Any, series: SeriesKey, start: int | None, end: int | None) -> Any:
    from trader.app import open_candle_store

    async with open_candle_store(config) as store:
        candles: CandleArrays = await store.read(series, start, end)
        return candles


def _no_candles(series: SeriesKey, start: int | None, end: int | None) -> str:
    from trader.backtest.jobs import no_candles_message

    return no_candles_message(series, start, end)


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


# sweeps ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _SweepRequest:
    """What ``trader backtest --sweep`` was asked to do."""

    strategy_file: Path
    runtime: StrategyRuntime
    source: str
    declared: list[Parameter]
    given: dict[str, str]
    sweeps: tuple[str, ...]
    series: SeriesKey
    start: int | None
    end: int | None
    settings: RunSettings
    workers: int | None
    force_local: bool
    metric: str
    top: int
    as_json: bool
    report_path: Path | None


def _sweep(ctx: click.Context, request: _SweepRequest) -> None:
    """Run a sweep (see the command's help) and print its ranked results."""
    from trader.backtest.jobs import StrategySource, run_job
    from trader.backtest.sweep import SweepError, SweepPlan, build_axes, expand_grid, run_sweep
    from trader.cli.progress import ProgressReporter
    from trader.cli.strategy_cmd import language_of

    try:
        axes = build_axes(request.sweeps, request.declared, fixed=request.given)
    except SweepError as error:
        raise click.BadParameter(str(error), param_hint="--sweep") from None
    base = bind_params(request.declared, request.given)
    combinations = expand_grid(axes, base)
    config = load_cli_config(ctx, "storage.candles", "storage.state")
    local = request.force_local or config.cluster.transport == "inproc"
    if not local and request.workers is not None:
        raise click.UsageError(
            f"--workers starts local workers, but [cluster] names the broker at "
            f"{config.cluster.broker}, whose workers are started with `trader worker backtest`; "
            "add --local to run on local workers instead"
        )
    count = request.workers or max(1, os.cpu_count() or 1)
    series, start, end = request.series, request.start, request.end
    if local:  # the workers read this store: say now, not once per job, when it is empty
        asyncio.run(_check_candles(config, series, start, end))
    strategy_file = request.strategy_file
    strategy = StrategySource.of(language_of(strategy_file), str(strategy_file), request.source)
    plan = SweepPlan(strategy, series, start, end, request.settings, combinations)
    root = ctx.find_root().obj or {}
    config_path = root.get("config_path")
    where = f"{count} local worker{'s' if count != 1 else ''}" if local else "cluster workers"
    name = strategy_file.name
    with ProgressReporter(
        f"{name}: {len(combinations):,} combinations on {where}", len(combinations), "runs"
    ) as progress:
        outcome = run_sweep(
            plan,
            config,
            local_workers=count if local else None,
            config_path=Path(config_path).resolve() if config_path else None,
            on_progress=lambda state: progress.advance_to(state.finished),
        )
    rows = outcome.sorted(request.metric)
    names = [axis.name for axis in axes]
    summary = (
        f"sweep: {outcome.done:,} done, {outcome.failed:,} failed, {outcome.reruns:,} re-run "
        f"after a lost worker, on {outcome.workers} worker{'s' if outcome.workers != 1 else ''} "
        f"in {outcome.seconds:.1f} s ({outcome.total_seconds:.1f} s with start-up)"
    )
    if request.as_json:
        click.echo(json.dumps(_sweep_json(request, outcome, rows)))
        click.echo(summary, err=True)
    else:
        _print_sweep(request, outcome, rows, names, summary)
    if outcome.done == 0:
        first = rows[0].error if rows else "nothing ran"
        raise TraderError(f"no combination ran to the end; the first failed with: {first}")
    if request.report_path is not None:
        best = rows[0]
        candles = asyncio.run(_load(config, series, start, end))
        result = run_job(
            request.runtime, strategy, best.params, candles, series.symbol, request.settings
        )
        _write_report(result, request.report_path, strategy_file, series, best.params)


async def _check_candles(
    config: Any, series: SeriesKey, start: int | None, end: int | None
) -> None:
    """Raise :class:`DataError` unless the store holds candles of ``series`` in the range."""
    from trader.app import open_candle_store

    async with open_candle_store(config) as store:
        stored = [info for info in await store.list_series() if info.key == series]
    extent = stored[0] if stored else None
    if (
        extent is None
        or extent.count == 0
        or (start is not None and extent.last < start)
        or (end is not None and extent.first >= end)
    ):
        raise DataError(_no_candles(series, start, end))


def _sweep_json(
    request: _SweepRequest, outcome: SweepOutcome, rows: list[SweepRow]
) -> dict[str, Any]:
    return {
        "strategy": request.strategy_file.name,
        "series": str(request.series),
        "sort_by": request.metric,
        "combinations": len(rows),
        "done": outcome.done,
        "failed": outcome.failed,
        "reruns": outcome.reruns,
        "requeued": outcome.requeued,
        "workers": outcome.workers,
        "seconds": round(outcome.seconds, 3),
        "total_seconds": round(outcome.total_seconds, 3),
        "sweep_id": outcome.sweep_id,
        "rows": [row.as_dict() for row in rows],
    }


def _figure(metric: str, value: float | None) -> str:
    return _fraction(value) if metric in _FRACTIONS else _plain(value)


def _print_sweep(
    request: _SweepRequest,
    outcome: SweepOutcome,
    rows: list[SweepRow],
    names: list[str],
    summary: str,
) -> None:
    from rich.table import Table

    from trader.backtest.sweep import higher_is_better
    from trader.cli.output import console

    out = console()
    metric = request.metric
    order = "highest" if higher_is_better(metric) else "lowest"
    out.print(
        f"{request.strategy_file.name} on {request.series}: {len(rows):,} combinations, "
        f"ranked by {metric} ({order} first)",
        highlight=False,
    )
    shown_metrics = [metric] + [
        m for m in ("total_return", "sharpe", "max_drawdown") if m != metric
    ]
    labels = {"total_return": "return", "max_drawdown": "max drawdown", "sharpe": "Sharpe"}
    table = Table("#", *names, *(labels.get(m, m) for m in shown_metrics), "trades", "equity")
    for rank, row in enumerate(rows[: request.top], start=1):
        params = [str(row.params.get(name)) for name in names]
        if row.status == "done":
            figures = [_figure(m, row.metric(m)) for m in shown_metrics]
            final = _plain(float(row.final_equity)) if row.final_equity else "-"
            table.add_row(str(rank), *params, *figures, f"{row.trades:,}", final)
        else:
            table.add_row(str(rank), *params, *("-" for _ in shown_metrics), "-", "failed")
    out.print(table)
    if len(rows) > request.top:
        out.print(
            f"the best {request.top} of {len(rows):,}; --top N shows more, --json all",
            highlight=False,
        )
    failed = [row for row in rows if row.status != "done"]
    for row in failed[:SHOWN_FAILURES]:
        where = ", ".join(f"{name}={row.params.get(name)}" for name in names)
        out.print(f"failed: {where}: {row.error}", highlight=False, markup=False)
    if len(failed) > SHOWN_FAILURES:
        out.print(f"... and {len(failed) - SHOWN_FAILURES} more failed", highlight=False)
    out.print(summary, highlight=False)
