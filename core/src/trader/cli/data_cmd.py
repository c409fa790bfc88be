"""``trader data``: import, export, list, find gaps in, resample and generate candles."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, TypeVar

import click

from trader.candles import resample as resample_in_python
from trader.candles import whole_candles
from trader.cli.download_cmd import download_command
from trader.cli.main import load_cli_config
from trader.cli.migrate_cmd import migrate_command
from trader.cli.progress import ProgressReporter
from trader.errors import DataError, TraderError
from trader.interfaces import WriteResult
from trader.model import CandleArrays, SeriesKey, Timeframe
from trader.timeutil import format_time, parse_time

if TYPE_CHECKING:
    from trader.csvio import RowProblem

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])
#: How many rejected rows are printed; the rest are counted (and written with --errors).
SHOWN_PROBLEMS = 20


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


def _timeframe(_ctx: click.Context, _param: click.Parameter, value: str | None) -> Timeframe | None:
    if value is None:
        return None
    try:
        return Timeframe.parse(value)
    except TraderError as error:
        raise click.BadParameter(str(error)) from None


def _time(_ctx: click.Context, _param: click.Parameter, value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return parse_time(value)
    except TraderError as error:
        raise click.BadParameter(str(error)) from None


def series_options(function: F) -> F:
    """The options that name one candle series."""
    function = click.option(
        "--timeframe",
        "-t",
        required=True,
        callback=_timeframe,
        help="Candle timeframe, e.g. 1m, 1h.",
    )(function)
    function = click.option("--symbol", "-s", required=True, help="Unified symbol, e.g. BTC/USD.")(
        function
    )
    return click.option(
        "--exchange", "-e", required=True, help="Exchange name the candles belong to."
    )(function)


def range_options(function: F) -> F:
    """``--start`` (inclusive) and ``--end`` (exclusive), ISO dates or epoch milliseconds."""
    function = click.option("--end", callback=_time, help="End (exclusive): ISO date/time or ms.")(
        function
    )
    return click.option("--start", callback=_time, help="Start (inclusive): ISO date/time or ms.")(
        function
    )


def _series(exchange: str, symbol: str, timeframe: Timeframe) -> SeriesKey:
    try:
        return SeriesKey(exchange, symbol, timeframe)
    except TraderError as error:
        raise click.BadParameter(str(error)) from None


@click.group("data")
def data_group() -> None:
    """Manage stored candles (through the configured candle store)."""


@data_group.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@series_options
@click.option(
    "--time-unit",
    type=click.Choice(["auto", "ms", "s"]),
    default="auto",
    show_default=True,
    help="Unit of integer times; auto takes values below 1e11 as seconds.",
)
@click.option(
    "--errors",
    "errors_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write every rejected row's line number and reason to this file.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=100_000,
    show_default=True,
    help="Rows per write.",
)
@click.pass_context
def import_command(
    ctx: click.Context,
    file: Path,
    exchange: str,
    symbol: str,
    timeframe: Timeframe,
    time_unit: str,
    errors_path: Path | None,
    batch_size: int,
) -> None:
    """Import candles from a CSV FILE. Importing the same file twice changes nothing.

    Malformed rows are reported with their line numbers and skipped; every good row is stored.
    The exit status is 1 when any row was rejected.
    """

    config = load_cli_config(ctx, "storage.candles")
    series = _series(exchange, symbol, timeframe)
    problems: list[RowProblem] = []
    # Opened before the import, so an unwritable path fails before anything is stored.
    errors_file = None if errors_path is None else _open_for_writing(errors_path, "--errors")
    try:
        result, rows = _import(config, file, series, timeframe, time_unit, batch_size, problems)
        if errors_file is not None:
            try:
                errors_file.writelines(f"{problem}\n" for problem in problems)
                errors_file.flush()
            except OSError as error:
                raise DataError(f"cannot write {errors_path}: {error.strerror or error}") from None
    finally:
        if errors_file is not None:
            with contextlib.suppress(OSError):
                errors_file.close()
    click.echo(
        f"{series}: read {rows:,} rows; stored {result.inserted:,} new, {result.updated:,} "
        f"changed, {result.unchanged:,} unchanged; rejected {len(problems):,}"
    )
    if problems:
        for problem in problems[:SHOWN_PROBLEMS]:
            click.echo(f"{file}: {problem}", err=True)
        if len(problems) > SHOWN_PROBLEMS:
            more = len(problems) - SHOWN_PROBLEMS
            hint = f" (all in {errors_path})" if errors_path else " (use --errors FILE for all)"
            click.echo(f"... and {more:,} more rejected rows{hint}", err=True)
        raise click.exceptions.Exit(1)


def _import(
    config: Any,
    file: Path,
    series: SeriesKey,
    timeframe: Timeframe,
    time_unit: str,
    batch_size: int,
    problems: list[RowProblem],
) -> tuple[WriteResult, int]:
    """Read ``file`` chunk by chunk into the store with progress; collect rejected rows."""
    from trader.app import open_candle_store
    from trader.csvio import read_candle_csv

    async def run() -> tuple[WriteResult, int]:
        total = WriteResult()
        rows = 0
        async with open_candle_store(config) as store:
            with ProgressReporter(f"importing {file.name}", file.stat().st_size, "bytes") as bar:
                for chunk in read_candle_csv(
                    file, timeframe, chunk_rows=batch_size, time_unit=time_unit
                ):
                    if len(chunk.candles):
                        total = total + await store.write(series, chunk.candles)
                    problems.extend(chunk.problems)
                    rows += chunk.rows
                    bar.advance_to(chunk.bytes_read)
        return total, rows

    return _run(run())


def _open_for_writing(path: Path, option: str) -> TextIO:
    """Open ``path`` for writing text, or raise a one-line DataError saying why it cannot be."""
    try:
        return path.open("w", newline="", encoding="utf-8")
    except OSError as error:
        raise DataError(
            f"cannot write {option} file {path}: {error.strerror or error}; "
            "pick a path in an existing, writable folder"
        ) from None


@data_group.command("export")
@series_options
@range_options
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write to this file instead of standard output.",
)
@click.option("--iso", is_flag=True, help="Write times as ISO 8601 instead of milliseconds.")
@click.pass_context
def export_command(
    ctx: click.Context,
    exchange: str,
    symbol: str,
    timeframe: Timeframe,
    start: int | None,
    end: int | None,
    output: Path | None,
    iso: bool,
) -> None:
    """Export candles as CSV (time,open,high,low,close,volume,closed), oldest first.

    With --output, progress is shown on standard error; writing to standard output, only when
    standard error is a terminal.
    """
    from trader.app import open_candle_store

    config = load_cli_config(ctx, "storage.candles")
    series = _series(exchange, symbol, timeframe)

    async def read() -> Any:
        async with open_candle_store(config) as store:
            return await store.read(series, start, end)

    if output is None:
        candles = _run(read())
        if sys.stderr.isatty():
            with ProgressReporter(f"exporting {series}", len(candles), "candles") as bar:
                _write_in_chunks(sys.stdout, candles, iso, bar)
        else:
            _write_in_chunks(sys.stdout, candles, iso, None)
        return
    # Opened before reading, so an unwritable path fails at once.
    with _open_for_writing(output, "--output") as handle:
        candles = _run(read())
        with ProgressReporter(f"exporting {series}", len(candles), "candles") as bar:
            try:
                _write_in_chunks(handle, candles, iso, bar)
            except OSError as error:
                raise DataError(f"cannot write {output}: {error.strerror or error}") from None
    click.echo(f"{series}: wrote {len(candles):,} candles to {output}", err=True)


#: Candles written per step of ``data export`` (each step advances the progress report).
EXPORT_CHUNK = 100_000


def _write_in_chunks(
    handle: TextIO, candles: CandleArrays, iso: bool, bar: ProgressReporter | None
) -> None:
    from trader.csvio import write_candle_csv

    for begin in range(0, max(len(candles), 1), EXPORT_CHUNK):
        stop = min(begin + EXPORT_CHUNK, len(candles))
        write_candle_csv(handle, candles.slice(begin, stop), iso=iso, header=begin == 0)
        if bar is not None:
            bar.advance_to(stop)


@data_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def list_command(ctx: click.Context, as_json: bool) -> None:
    """List stored series with their candle counts and time ranges."""
    from trader.app import open_candle_store

    config = load_cli_config(ctx, "storage.candles")

    async def run() -> Any:
        async with open_candle_store(config) as store:
            return await store.list_series()

    series = _run(run())
    if as_json:
        click.echo(
            json.dumps(
                [
                    {
                        "exchange": s.key.exchange,
                        "symbol": s.key.symbol,
                        "timeframe": str(s.key.timeframe),
                        "count": s.count,
                        "first": s.first,
                        "last": s.last,
                    }
                    for s in series
                ],
                indent=2,
            )
        )
        return
    if not series:
        click.echo("no candles stored yet; add some with: trader data import FILE ...")
        return
    from rich.table import Table

    from trader.cli.output import console

    table = Table(title="stored candles")
    for column in ("exchange", "symbol", "timeframe", "candles", "first", "last"):
        table.add_column(column, justify="right" if column == "candles" else "left")
    for s in series:
        table.add_row(
            s.key.exchange,
            s.key.symbol,
            str(s.key.timeframe),
            f"{s.count:,}",
            format_time(s.first),
            format_time(s.last),
        )
    console().print(table)


@data_group.command("gaps")
@series_options
@range_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def gaps_command(
    ctx: click.Context,
    exchange: str,
    symbol: str,
    timeframe: Timeframe,
    start: int | None,
    end: int | None,
    as_json: bool,
) -> None:
    """List ranges of missing candles in a series (or in [--start, --end))."""
    from trader.app import open_candle_store

    config = load_cli_config(ctx, "storage.candles")
    series = _series(exchange, symbol, timeframe)

    async def run() -> Any:
        async with open_candle_store(config) as store:
            return await store.gaps(series, start, end)

    gaps = _run(run())
    if as_json:
        click.echo(
            json.dumps([{"start": g.start, "end": g.end, "missing": g.missing} for g in gaps])
        )
        return
    if not gaps:
        click.echo(f"{series}: no gaps")
        return
    for gap in gaps:
        click.echo(f"{format_time(gap.start)} .. {format_time(gap.end)}  {gap.missing:,} missing")
    total = sum(g.missing for g in gaps)
    click.echo(f"{series}: {len(gaps):,} gaps, {total:,} candles missing")


@data_group.command("resample")
@click.option("--exchange", "-e", required=True, help="Exchange name of the source series.")
@click.option("--symbol", "-s", required=True, help="Unified symbol, e.g. BTC/USD.")
@click.option(
    "--from", "source_tf", required=True, callback=_timeframe, help="Source timeframe, e.g. 1m."
)
@click.option("--to", "target_tf", required=True, callback=_timeframe, help="Target, e.g. 1h.")
@range_options
@click.pass_context
def resample_command(
    ctx: click.Context,
    exchange: str,
    symbol: str,
    source_tf: Timeframe,
    target_tf: Timeframe,
    start: int | None,
    end: int | None,
) -> None:
    """Build higher-timeframe candles from stored ones and store them.

    --start and --end are widened to whole target candles, so each candle built covers its
    whole period. Uses the store's own resampling when it has one, else resamples in Python.
    Re-running changes nothing.
    """
    from trader.app import open_candle_store

    if not source_tf.divides(target_tf):
        raise click.BadParameter(
            f"{source_tf} candles do not tile {target_tf} candles", param_hint="--to"
        )
    config = load_cli_config(ctx, "storage.candles")
    source = _series(exchange, symbol, source_tf)
    target = _series(exchange, symbol, target_tf)

    # Whole target candles only: a bound inside one would build it from part of its period.
    low, high = whole_candles(target_tf, start, end)

    async def run() -> tuple[WriteResult, bool]:
        async with open_candle_store(config) as store:
            built = await store.resample(source, target_tf, low, high)
            in_store = built is not None
            if built is None:
                candles = await store.read(source, low, high)
                built = resample_in_python(candles, source_tf, target_tf)
            return await store.write(target, built), in_store

    result, in_store = _run(run())
    where = "in the store" if in_store else "in Python"
    click.echo(
        f"{target}: built {result.inserted + result.updated + result.unchanged:,} candles "
        f"{where}; {result.inserted:,} new, {result.updated:,} changed, "
        f"{result.unchanged:,} unchanged"
    )


@data_group.command("generate")
@click.option(
    "--timeframe", "-t", default="1m", show_default=True, callback=_timeframe, help="Timeframe."
)
@click.option(
    "--start", default="2024-01-01", show_default=True, callback=_time, help="First open time."
)
@click.option("--count", "-n", default=10_000, show_default=True, help="Number of candles.")
@click.option("--seed", default=0, show_default=True, help="Random seed (same seed, same data).")
@click.option("--price", default=30_000.0, show_default=True, help="Starting price.")
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    help="CSV file to write (default: standard output).",
)
def generate_command(
    timeframe: Timeframe,
    start: int,
    count: int,
    seed: int,
    price: float,
    output: Path | None,
) -> None:
    """Write synthetic candles (a seeded random walk) as CSV, for demos and tests."""
    from trader.csvio import write_candle_csv
    from trader.synthetic import generate_candles

    if count < 1:
        raise click.BadParameter("must be at least 1", param_hint="--count")
    candles = generate_candles(timeframe, start, count, seed=seed, start_price=price)
    if output is None:
        write_candle_csv(sys.stdout, candles)
        return
    with _open_for_writing(output, "--output") as handle:
        try:
            write_candle_csv(handle, candles)
        except OSError as error:
            raise DataError(f"cannot write {output}: {error.strerror or error}") from None
    click.echo(f"wrote {count:,} {timeframe} candles to {output}", err=True)


data_group.add_command(migrate_command)
data_group.add_command(download_command)
