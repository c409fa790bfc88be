"""``trader data migrate``: copy candles and state from the stores of one configuration to
those of another, resumably, and verify the copy."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from trader.cli.main import load_cli_config
from trader.cli.progress import ProgressReporter
from trader.migrate import (
    DEFAULT_CHUNK,
    CandleReport,
    Journal,
    MigrateError,
    StateReport,
    copy_candles,
    migrate_state,
    verify_candles,
)

if TYPE_CHECKING:
    from trader.config import Config


def store_identity(config: Config, table: str) -> str:
    """A text naming the store ``[storage.<table>]`` of ``config`` opens (plugin, options and
    the folders relative paths resolve against); secrets appear only as their references."""
    component = getattr(config.storage, table)
    return json.dumps(
        {
            "plugin": component.plugin,
            "options": component.plugin_options(),
            "config_dir": str(config.config_dir),
            "data_dir": str(config.data_dir),
        },
        sort_keys=True,
        default=str,
    )


def _load(ctx: click.Context, path: Path | None, components: list[str], option: str) -> Config:
    from trader.config import load_config
    from trader.plugins import get_plugin_manager

    if path is None:
        config: Config = load_cli_config(ctx, *components)
        return config
    if not path.is_file():
        raise MigrateError(
            f"{option} {path}: no such file; give the path of a trader.toml whose [storage] "
            "names the stores"
        )
    return load_config(path, host=get_plugin_manager(), components=components)


def journal_identity(source: Config, target: Config) -> str:
    """The digest a journal records, naming the pair of candle stores it is about."""
    pair = store_identity(source, "candles") + "\n" + store_identity(target, "candles")
    return hashlib.sha256(pair.encode("utf-8")).hexdigest()


def _default_journal(source: Config, target: Config) -> Path:
    digest = journal_identity(source, target)[:16]
    return target.data_dir / "migrate" / f"candles-{digest}.json"


@click.command("migrate")
@click.option(
    "--from",
    "source_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="trader.toml whose [storage] stores are copied (default: the configuration in use).",
)
@click.option(
    "--to",
    "target_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="trader.toml whose [storage] stores receive the copy.",
)
@click.option("--candles/--no-candles", default=True, show_default=True, help="Copy candles.")
@click.option("--state/--no-state", default=True, show_default=True, help="Copy state.")
@click.option(
    "--chunk",
    type=click.IntRange(min=1),
    default=DEFAULT_CHUNK,
    show_default=True,
    help="Candles per read/write (a window of this many candle periods).",
)
@click.option(
    "--journal",
    "journal_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Progress journal (default: DATA_DIR/migrate/candles-<pair>.json of the target).",
)
@click.option("--restart", is_flag=True, help="Ignore the journal and copy every candle again.")
@click.pass_context
def migrate_command(
    ctx: click.Context,
    source_path: Path | None,
    target_path: Path,
    candles: bool,
    state: bool,
    chunk: int,
    journal_path: Path | None,
    restart: bool,
) -> None:
    """Copy candles and state from one configuration's stores to another's, then verify.

    Stores are named by configuration files: --from and --to each take the path of a
    trader.toml, of which only the [storage] section is used: [storage.candles],
    [storage.state] and secret_key (account secrets are decrypted with the source's key and
    encrypted with the target's). --from defaults to the configuration trader runs with
    (--config). To move everything to PostgreSQL, for example, write a target file such as

    \b
        [storage]
        secret_key = "${TRADER_SECRET_KEY}"
        [storage.candles]
        plugin = "timescale"
        dsn = "postgresql://trader@db.example:5432/trader"
        [storage.state]
        plugin = "timescale"
        dsn = "postgresql://trader@db.example:5432/trader"

    and run: trader data migrate --to pg.toml

    Candles are copied per series in time-ordered chunks with progress. A journal records
    what is copied after every chunk, so an interrupted migration run again resumes where it
    stopped (--restart copies everything again). Every series is then verified: candle count
    and a SHA-256 checksum over its rows on both sides. State is copied entity by entity
    (idempotently) and its counts compared. Exit status 1 when anything does not match.
    See docs/data-migrate.md.
    """
    components = [
        name for name, wanted in (("storage.candles", candles), ("storage.state", state)) if wanted
    ]
    if not components:
        raise click.UsageError("nothing to copy: drop --no-candles or --no-state")
    source = _load(ctx, source_path, components, "--from")
    target = _load(ctx, target_path, components, "--to")
    for table, wanted in (("candles", candles), ("state", state)):
        if wanted and store_identity(source, table) == store_identity(target, table):
            raise MigrateError(
                f"--from and --to name the same {table} store; give --to a configuration whose "
                f"[storage.{table}] is another store"
            )
    journal = None
    if candles:
        path = journal_path or _default_journal(source, target)
        if restart:
            path.unlink(missing_ok=True)
        journal = Journal(path, journal_identity(source, target))
        if journal.series:
            click.echo(f"resuming from journal {path}", err=True)
    candle_report, state_report = asyncio.run(_migrate(source, target, journal, state, chunk))
    failed = 0
    if candle_report is not None:
        failed += _print_candles(candle_report)
    if state_report is not None:
        failed += _print_state(state_report)
    if failed:
        click.echo(
            f"error: {failed} item(s) differ between source and target (see the table above); "
            "the target may have held other data before, or the source changed during the "
            "copy: run again with --restart",
            err=True,
        )
        raise click.exceptions.Exit(1)


async def _migrate(
    source: Config, target: Config, journal: Journal | None, state: bool, chunk: int
) -> tuple[CandleReport | None, StateReport | None]:
    from trader.app import open_candle_store, open_state_store

    candle_report = None
    state_report = None
    if journal is not None:
        async with open_candle_store(source) as reader, open_candle_store(target) as writer:
            total = sum(info.count for info in await reader.list_series())
            with ProgressReporter("copying candles", total, "candles") as bar:
                infos, copied, skipped = await copy_candles(
                    reader, writer, journal, chunk=chunk, progress=bar.advance_to
                )
            total = sum(info.count for info in infos)
            with ProgressReporter("verifying candles", total, "candles") as bar:
                checks = await verify_candles(
                    reader, writer, infos, chunk=chunk, progress=bar.advance_to
                )
            candle_report = CandleReport(copied, skipped, checks)
    if state:
        async with open_state_store(source) as reader, open_state_store(target) as writer:
            has_key = target.storage.secret_key is not None
            state_report = await migrate_state(reader, writer, target_has_key=has_key)
    return candle_report, state_report


def _table(rows: list[tuple[Any, ...]], align: str) -> None:
    """Echo ``rows`` (the first a header) in columns; ``align`` has ``l`` or ``r`` per column."""
    widths = [max(len(str(row[index])) for row in rows) for index in range(len(align))]
    for row in rows:
        cells = [
            str(cell).ljust(width) if side == "l" else str(cell).rjust(width)
            for cell, width, side in zip(row, widths, align, strict=True)
        ]
        click.echo("  ".join(cells).rstrip())


def _print_candles(report: CandleReport) -> int:
    click.echo(
        f"candles: copied {report.copied:,} in this run, {report.skipped:,} copied before "
        f"(journal); {len(report.checks)} series verified"
    )
    if not report.checks:
        return 0
    rows: list[tuple[Any, ...]] = [("series", "source", "target", "checksum", "result")]
    for check in report.checks:
        same = check.source_checksum == check.target_checksum
        rows.append(
            (
                str(check.key),
                f"{check.source_count:,}",
                f"{check.target_count:,}",
                check.source_checksum[:16] if same else "differs",
                "ok" if check.ok else "MISMATCH",
            )
        )
    _table(rows, "lrrll")
    return sum(not check.ok for check in report.checks)


def _print_state(report: StateReport) -> int:
    written = sum(report.written.values())
    click.echo(f"state: wrote {written:,} rows; counts per entity:")
    rows: list[tuple[Any, ...]] = [("entity", "source", "target", "result")]
    for count in report.counts:
        rows.append(
            (
                count.entity,
                f"{count.source:,}",
                f"{count.target:,}",
                "ok" if count.ok else "MISMATCH",
            )
        )
    _table(rows, "lrrl")
    for gap in report.gaps:
        click.echo(f"note: {gap}")
    return sum(not count.ok for count in report.counts)
