"""``trader tasks list|show`` against the configured (real SQLite) state store."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from trader.app import open_state_store
from trader.cli.tasks_cmd import tasks_group
from trader.config import load_config
from trader.tasks import BACKTEST_JOB_TASK, ORDER_TASK, TaskError, TaskOwner
from trader.timeutil import format_time

T0 = 1_700_000_000_000


class ManualClock:
    """A clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = T0

    def now_ms(self) -> int:
        return self.now

    def tick(self) -> None:
        self.now += 1000

    async def sleep(self, seconds: float) -> None:
        await asyncio.Event().wait()  # these tests never wait for a timeout


def invoke(*args: str, config: Path | None = None) -> Result:
    return CliRunner().invoke(
        tasks_group, list(args), obj={"config_path": config}, catch_exceptions=False
    )


def populate(config: Path | None = None) -> dict[str, str]:
    """Make an order that is filled, one still open, and a backtest job, in the configured
    state store; return their ids."""

    async def run() -> dict[str, str]:
        async with open_state_store(load_config(config)) as store:
            clock = ManualClock()
            owner = TaskOwner(store, "trader", [ORDER_TASK, BACKTEST_JOB_TASK], clock=clock)
            clock.tick()
            filled = await owner.create("order", {"client_order_id": "c1"})
            clock.tick()
            await owner.fire(filled.task_id, "submit", note="sent to demo")
            clock.tick()
            await owner.fire(filled.task_id, "acknowledge", update={"exchange_order_id": "x9"})
            clock.tick()
            await owner.fire(filled.task_id, "fill")
            clock.tick()
            clock.tick()
            waiting = await owner.create("order", {"client_order_id": "c2"})
            job = await owner.create("backtest_job", {"strategy": "sma"})
            await owner.close()
            return {"filled": filled.task_id, "waiting": waiting.task_id, "job": job.task_id}

    return asyncio.run(run())


def test_list_prints_every_task_with_its_state_and_owner() -> None:
    ids = populate()
    result = invoke("list")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["ID", "TYPE", "STATE", "OWNER", "UPDATED"]
    assert [line.split()[0] for line in lines[1:]] == [ids["filled"], ids["waiting"], ids["job"]]
    assert lines[1].split()[1:] == ["order", "filled", "(final)", "trader", format_time(T0 + 4000)]
    assert lines[3].split()[1:4] == ["backtest_job", "queued", "trader"]


def test_list_filters_open_tasks_and_by_type_and_prints_json() -> None:
    ids = populate()
    open_orders = invoke("list", "--open", "--type", "order", "--json")
    assert open_orders.exit_code == 0
    document = json.loads(open_orders.output)
    assert [task["task_id"] for task in document] == [ids["waiting"]]
    assert document[0] == {
        "task_id": ids["waiting"],
        "type": "order",
        "state": "created",
        "final": False,
        "owner": "trader",
        "created_at": T0 + 5000 + 1000,
        "updated_at": T0 + 5000 + 1000,
        "payload": {"client_order_id": "c2"},
    }
    everything = json.loads(invoke("list", "--json").output)
    assert len(everything) == 3
    assert invoke("list", "--open", "--type", "sweep").output == "no open sweep tasks\n"


def test_show_prints_the_state_payload_and_full_history_with_times() -> None:
    ids = populate()
    result = invoke("show", ids["filled"])
    assert result.exit_code == 0, result.output
    text = result.output
    assert f"task     {ids['filled']}\n" in text
    assert "state    filled (final)\n" in text
    assert "owner    trader\n" in text
    assert f"created  {format_time(T0 + 1000)}\n" in text
    assert '"exchange_order_id": "x9"' in text and '"client_order_id": "c1"' in text
    assert "history  3 steps\n" in text
    history = text.split("history  3 steps\n")[1].splitlines()
    assert history[0].split() == ["#", "TIME", "FROM", "TRIGGER", "TO", "NOTE"]
    assert history[1].split() == [
        "1",
        format_time(T0 + 2000),
        "created",
        "submit",
        "submitted",
        "sent",
        "to",
        "demo",
    ]
    assert history[2].split() == [
        "2",
        format_time(T0 + 3000),
        "submitted",
        "acknowledge",
        "acknowledged",
    ]
    assert history[3].split() == ["3", format_time(T0 + 4000), "acknowledged", "fill", "filled"]


def test_show_json_and_a_unique_prefix_of_the_id() -> None:
    ids = populate()
    result = invoke("show", ids["job"], "--json")
    document = json.loads(result.output)
    assert document["task"]["state"] == "queued" and document["history"] == []
    # The ids share their timestamp digits; a prefix long enough to tell them apart works.
    prefix = next(
        ids["filled"][:length]
        for length in range(1, 37)
        if not any(
            other.startswith(ids["filled"][:length])
            for key, other in ids.items()
            if key != "filled"
        )
    )
    shown = json.loads(invoke("show", prefix, "--json").output)
    assert shown["task"]["task_id"] == ids["filled"]
    assert [(s["seq"], s["source"], s["trigger"], s["dest"]) for s in shown["history"]] == [
        (1, "created", "submit", "submitted"),
        (2, "submitted", "acknowledge", "acknowledged"),
        (3, "acknowledged", "fill", "filled"),
    ]
    assert shown["history"][0] == {
        "seq": 1,
        "time": T0 + 2000,
        "source": "created",
        "trigger": "submit",
        "dest": "submitted",
        "note": "sent to demo",
    }


def test_show_of_an_unknown_or_ambiguous_id_is_a_clear_error() -> None:
    ids = populate()
    with pytest.raises(TaskError, match="no task 'nope' in the state store; `trader tasks list`"):
        invoke("show", "nope")
    common = ids["filled"][:4]  # ids made within a second share their first digits
    with pytest.raises(TaskError, match=f"task id prefix '{common}' matches 3 tasks"):
        invoke("show", common)


def test_the_commands_read_the_store_the_config_file_names(tmp_path: Path) -> None:
    config = tmp_path / "trader.toml"
    config.write_text('[storage.state]\nplugin = "sqlite"\npath = "elsewhere.sqlite"\n')
    ids = populate(config)
    assert (tmp_path / "elsewhere.sqlite").exists()
    assert invoke("list").output == "no tasks\n"  # the default store is empty
    listed = json.loads(invoke("list", "--json", config=config).output)
    assert {task["task_id"] for task in listed} == set(ids.values())
