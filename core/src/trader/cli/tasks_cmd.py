"""``trader tasks list|show``: read distributed tasks and their histories from the state store."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import click

from trader.cli.main import load_cli_config
from trader.interfaces import StateStore, TaskRecord, TaskTransition
from trader.tasks.machine import TaskError
from trader.timeutil import format_time

T = TypeVar("T")

#: How many candidates an ambiguous id prefix lists.
SHOWN_CANDIDATES = 5
_ID_PREFIX = re.compile(r"^[0-9a-fA-F-]+$")


@click.group("tasks")
def tasks_group() -> None:
    """List distributed tasks (orders, backtest jobs) and show a task's history."""


@tasks_group.command("list", short_help="List tasks: id, type, state, owner, last change.")
@click.option("--open", "open_only", is_flag=True, help="Only tasks not in a final state.")
@click.option(
    "--type", "task_type", metavar="TYPE", help="Only tasks of this type (order, backtest_job)."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (times in ms since the epoch).")
@click.pass_context
def list_command(ctx: click.Context, open_only: bool, task_type: str | None, as_json: bool) -> None:
    """List tasks by id (which is by creation time): type, state, owner and last change."""

    async def read(store: StateStore) -> list[TaskRecord]:
        return await store.list_tasks(open_only=open_only, task_type=task_type)

    tasks = _with_store(ctx, read)
    if as_json:
        click.echo(json.dumps([_task_json(task) for task in tasks], indent=2))
        return
    if not tasks:
        kind = f"{task_type} tasks" if task_type else "tasks"
        click.echo(f"no {'open ' if open_only else ''}{kind}")
        return
    rows = [
        [task.task_id, task.type, _state(task), task.owner, format_time(task.updated_at)]
        for task in tasks
    ]
    for line in _table(["ID", "TYPE", "STATE", "OWNER", "UPDATED"], rows):
        click.echo(line)


@tasks_group.command("show", short_help="Show a task's state, payload and history.")
@click.argument("task_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (times in ms since the epoch).")
@click.pass_context
def show_command(ctx: click.Context, task_id: str, as_json: bool) -> None:
    """Show a task: its state, payload, and every step of its history with its time.

    ID is a task id or a unique prefix of one.
    """

    async def read(store: StateStore) -> tuple[TaskRecord, list[TaskTransition]]:
        task = await _find_task(store, task_id)
        return task, await store.task_history(task.task_id)

    task, history = _with_store(ctx, read)
    if as_json:
        document = {"task": _task_json(task), "history": [_step_json(s) for s in history]}
        click.echo(json.dumps(document, indent=2))
        return
    for label, value in (
        ("task", task.task_id),
        ("type", task.type),
        ("state", _state(task)),
        ("owner", task.owner),
        ("created", format_time(task.created_at)),
        ("updated", format_time(task.updated_at)),
    ):
        click.echo(f"{label:<9}{value}")
    payload = json.dumps(task.payload, indent=2, sort_keys=True, default=str)
    click.echo("payload  " + payload.replace("\n", "\n         "))
    count = len(history)
    click.echo(f"history  {count} step{'' if count == 1 else 's'}")
    if history:
        rows = [
            [str(s.seq), format_time(s.time), s.source, s.trigger, s.dest, s.note] for s in history
        ]
        for line in _table(["#", "TIME", "FROM", "TRIGGER", "TO", "NOTE"], rows):
            click.echo("  " + line)


def _with_store(ctx: click.Context, read: Callable[[StateStore], Awaitable[T]]) -> T:
    """Open the configured state store, run ``read(store)``, close it, return the result."""
    from trader.app import open_state_store

    config = load_cli_config(ctx, "storage.state")

    async def run() -> T:
        async with open_state_store(config) as store:
            return await read(store)

    return asyncio.run(run())


async def _find_task(store: StateStore, wanted: str) -> TaskRecord:
    task = await store.get_task(wanted)
    if task is not None:
        return task
    if _ID_PREFIX.match(wanted):
        prefix = wanted.lower()
        matches = [t for t in await store.list_tasks() if t.task_id.startswith(prefix)]
        if len(matches) == 1:
            return matches[0]
        if matches:
            shown = ", ".join(t.task_id for t in matches[:SHOWN_CANDIDATES])
            more = len(matches) - SHOWN_CANDIDATES
            raise TaskError(
                f"task id prefix {wanted!r} matches {len(matches)} tasks ({shown}"
                f"{f', and {more} more' if more > 0 else ''}); give more of the id"
            )
    raise TaskError(f"no task {wanted!r} in the state store; `trader tasks list` shows the ids")


def _state(task: TaskRecord) -> str:
    return f"{task.state} (final)" if task.final else task.state


def _task_json(task: TaskRecord) -> dict[str, Any]:
    return {
        "task_id": task.task_id,
        "type": task.type,
        "state": task.state,
        "final": task.final,
        "owner": task.owner,
        "created_at": task.created_at,
        "updated_at": task.updated_at,
        "payload": task.payload,
    }


def _step_json(step: TaskTransition) -> dict[str, Any]:
    return {
        "seq": step.seq,
        "time": step.time,
        "source": step.source,
        "trigger": step.trigger,
        "dest": step.dest,
        "note": step.note,
    }


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]
    return [
        "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [headers, *rows]
    ]
