"""Tasks: ids, declarations, the owner over a real SQLite state store, timeouts, restarts."""

from __future__ import annotations

import asyncio
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trader.errors import StorageError, TraderError
from trader.interfaces import PluginContext, StateStore, TaskRecord, TaskTransition
from trader.state.sqlite import SqliteStateOptions, SqliteStateStore
from trader.tasks import (
    BACKTEST_JOB_TASK,
    ORDER_TASK,
    TASK_DEFINITIONS,
    TaskDefinition,
    TaskDefinitionError,
    TaskError,
    TaskIdGenerator,
    TaskOwner,
    is_task_id,
    new_task_id,
    task_id_time,
)
from trader.tasks.diagram import mermaid_diagram, update_doc_blocks

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_700_000_000_000
WAIT_S = 5.0  # the longest any test waits for an event; they normally arrive at once

ORDER = ORDER_TASK.with_timeouts(submitted=10.0, reconciling=10.0)
JOB = BACKTEST_JOB_TASK.with_timeouts(dispatched=10.0, running=60.0)


# ---------------------------------------------------------------------- helpers


class FakeClock:
    """A wall clock that moves only when a test moves it; sleepers wake on every move."""

    def __init__(self, now_ms: int = T0) -> None:
        self.now = now_ms
        self._moved = asyncio.Event()

    def now_ms(self) -> int:
        return self.now

    async def sleep(self, seconds: float) -> None:
        await self._moved.wait()  # waking early is allowed: the owner re-reads the clock

    def advance(self, ms: int) -> None:
        self.now += ms
        self._moved.set()
        self._moved = asyncio.Event()


class Steps:
    """A listener that records every step and lets a test wait for a particular one."""

    def __init__(self) -> None:
        self.seen: list[tuple[TaskRecord, TaskTransition]] = []
        self._changed = asyncio.Event()

    def __call__(self, task: TaskRecord, step: TaskTransition) -> None:
        self.seen.append((task, step))
        self._changed.set()

    async def wait_for(self, task_id: str, trigger: str, dest: str) -> TaskTransition:
        async def found() -> TaskTransition:
            while True:
                for _, step in self.seen:
                    if (step.task_id, step.trigger, step.dest) == (task_id, trigger, dest):
                        return step
                self._changed.clear()
                await self._changed.wait()

        return await asyncio.wait_for(found(), WAIT_S)


def make_store(path: Path) -> SqliteStateStore:
    context = PluginContext(data_dir=path.parent, config_dir=path.parent)
    return SqliteStateStore(SqliteStateOptions(path=str(path)), context)


def run_with_store(path: Path, scenario: Callable[[StateStore], Awaitable[Any]]) -> Any:
    """Run ``scenario`` in a fresh event loop over a freshly opened store on ``path``.

    Leaving the loop drops everything the scenario built (owners, timers), as a crash would:
    only what reached the file survives."""

    async def main() -> Any:
        async with make_store(path) as store:
            return await scenario(store)

    return asyncio.run(main())


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "state.sqlite"


def triggers(history: list[TaskTransition]) -> list[tuple[str, str, str]]:
    return [(step.source, step.trigger, step.dest) for step in history]


# ---------------------------------------------------------------------- ids


class ScriptedClock:
    """Returns the given times in turn (then the last one again)."""

    def __init__(self, times: list[int]) -> None:
        self.times = list(times)

    def __call__(self) -> int:
        return self.times.pop(0) if len(self.times) > 1 else self.times[0]


@given(
    steps=st.lists(st.integers(min_value=-5, max_value=3), min_size=1, max_size=300),
    random_mode=st.sampled_from(["random", "all_ones", "zeros"]),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_ids_made_in_sequence_sort_in_that_order_and_are_unique(
    steps: list[int], random_mode: str, seed: int
) -> None:
    """Whatever the clock does (stands still, steps back, moves on) and whatever the random
    source gives (even all ones, which forces the counter to roll over), each id is a UUIDv7
    greater than the one before."""
    times, now = [], T0
    for step in steps:
        now = max(0, now + step)
        times.append(now)
    rng = random.Random(seed)
    random_bits: Callable[[int], int] = {
        "random": rng.getrandbits,
        "all_ones": lambda bits: (1 << bits) - 1,
        "zeros": lambda bits: 0,
    }[random_mode]
    generate = TaskIdGenerator(ScriptedClock(times), random_bits)
    ids = [generate() for _ in times]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    for task_id in ids:
        parsed = uuid.UUID(task_id)
        assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
        assert str(parsed) == task_id and is_task_id(task_id)
    # An id carries the latest time the clock has shown, or later only after a rollover.
    for index, task_id in enumerate(ids):
        latest = max(times[: index + 1])
        if random_mode == "all_ones":
            assert task_id_time(task_id) >= latest
        else:
            assert task_id_time(task_id) == latest


def test_default_ids_are_increasing_across_threads_and_carry_the_time() -> None:
    per_thread: list[list[str]] = [[] for _ in range(4)]

    def work(out: list[str]) -> None:
        out.extend(new_task_id() for _ in range(2000))

    threads = [threading.Thread(target=work, args=(out,)) for out in per_thread]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    everything = [task_id for out in per_thread for task_id in out]
    assert len(set(everything)) == len(everything) == 8000
    assert all(out == sorted(out) for out in per_thread)
    made = task_id_time(everything[0])
    assert abs(made - task_id_time(new_task_id())) < 60_000
    assert not is_task_id("0192B5C4-0000-7000-8000-000000000000")  # upper case is not canonical
    with pytest.raises(ValueError, match="not a task id"):
        task_id_time("not-an-id")


# ---------------------------------------------------------------------- declarations


def test_a_declaration_with_mistakes_reports_every_problem() -> None:
    with pytest.raises(TaskDefinitionError) as caught:
        TaskDefinition(
            type="broken",
            initial="start",
            states=[
                {"name": "start", "timeout": 5.0},
                {"name": "middle"},
                {"name": "middle"},
                {"name": "island"},
                {"name": "end", "final": True},
            ],
            transitions=[
                {"trigger": "go", "source": "start", "dest": "middle"},
                {"trigger": "go", "source": "start", "dest": "end"},
                {"trigger": "back", "source": "end", "dest": "start"},
                {"trigger": "to_end", "source": "middle", "dest": "nowhere"},
                {"trigger": "check", "source": "middle", "dest": "end", "guard": "missing"},
            ],
        )
    problems = "\n".join(caught.value.problems)
    assert isinstance(caught.value, TaskError) and isinstance(caught.value, TraderError)
    assert "state 'middle' is declared twice" in problems
    assert "'go' from 'start' is declared again after an unguarded one" in problems
    assert "leaves final state 'end'" in problems
    assert "trigger name 'to_end' is reserved" in problems
    assert "goes to 'nowhere', which is not a declared state" in problems
    assert "names guard 'missing'" in problems
    assert "state 'start' times out but has no 'timeout' transition" in problems
    assert "state 'island' is not final but no transition leaves it" in problems
    assert "states island cannot be reached from the start" in problems
    assert str(caught.value).startswith("task type 'broken' is declared wrongly: ")


def test_the_declared_tasks_have_the_states_the_architecture_names() -> None:
    assert set(TASK_DEFINITIONS) == {"order", "backtest_job"}
    assert ORDER_TASK.final_states == {"filled", "cancelled", "rejected"}
    assert BACKTEST_JOB_TASK.final_states == {"done", "failed"}
    order_edges = {(e.source, e.trigger, e.dest) for e in ORDER_TASK.edges()}
    assert {
        ("created", "submit", "submitted"),
        ("submitted", "acknowledge", "acknowledged"),
        ("acknowledged", "partially_fill", "partially_filled"),
        ("partially_filled", "partially_fill", "partially_filled"),
        ("partially_filled", "fill", "filled"),
        ("submitted", "timeout", "reconciling"),
        ("reconciling", "resubmit", "submitted"),
    } <= order_edges
    assert {e.dest for e in ORDER_TASK.edges() if e.source == "reconciling"} == {
        "acknowledged",
        "partially_filled",
        "filled",
        "cancelled",
        "rejected",
        "submitted",
        "reconciling",
    }
    job_edges = {(e.source, e.trigger, e.dest) for e in BACKTEST_JOB_TASK.edges()}
    assert {
        ("queued", "dispatch", "dispatched"),
        ("dispatched", "start", "running"),
        ("running", "finish", "done"),
        ("running", "fail", "failed"),
        ("running", "timeout", "queued"),
        ("running", "worker_lost", "queued"),
    } <= job_edges
    assert ORDER.timeout_of("submitted") == 10.0 and ORDER_TASK.timeout_of("submitted") == 30.0
    with pytest.raises(TaskDefinitionError, match="states filled have no timeout"):
        ORDER_TASK.with_timeouts(filled=1.0)


def test_the_guide_s_example_declaration_is_valid() -> None:
    guide = (ROOT / "docs" / "tasks.md").read_text()
    example = re.search(r"```python\n(from trader.tasks import Guard.*?)```", guide, re.DOTALL)
    assert example is not None
    namespace: dict[str, Any] = {}
    exec(example.group(1), namespace)  # noqa: S102 - running the guide's own example is the point
    definition = namespace["DOWNLOAD_TASK"]
    assert isinstance(definition, TaskDefinition)
    assert definition.timeout_of("fetching") == 60.0


# ---------------------------------------------------------------------- diagrams


def test_the_diagram_shows_every_declared_step() -> None:
    for definition in TASK_DEFINITIONS.values():
        diagram = mermaid_diagram(definition)
        lines = diagram.splitlines()
        assert lines[0] == "stateDiagram-v2"
        assert f"    [*] --> {definition.initial}" in lines
        for edge in definition.edges():
            line = next(x for x in lines if x.startswith(f"    {edge.source} --> {edge.dest}: "))
            assert edge.trigger in line
        for final in definition.final_states:
            assert f"    {final} --> [*]" in lines
    assert "reconciling --> submitted: resubmit if exchange_never_saw_order" in mermaid_diagram(
        ORDER_TASK
    )
    assert "submitted --> reconciling: timeout after 30 s" in mermaid_diagram(ORDER_TASK)


def test_the_docs_show_the_diagrams_of_the_current_declarations() -> None:
    """docs/tasks.md is regenerated by tools/generate_task_diagrams.py; this fails if it
    drifted from the code (run the tool to fix it)."""
    document = (ROOT / "docs" / "tasks.md").read_text()
    assert update_doc_blocks(document, TASK_DEFINITIONS.values()) == document
    for definition in TASK_DEFINITIONS.values():
        assert mermaid_diagram(definition) in document
    check = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "generate_task_diagrams.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stderr


def test_the_generator_rewrites_a_stale_block_and_refuses_a_missing_one(tmp_path: Path) -> None:
    stale = "# x\n<!-- diagram:order -->\nold\n<!-- /diagram:order -->\n"
    updated = update_doc_blocks(stale, [ORDER_TASK])
    assert "old" not in updated and mermaid_diagram(ORDER_TASK) in updated
    assert updated.startswith("# x\n<!-- diagram:order -->\n```mermaid\n")
    with pytest.raises(TaskError, match="no diagram block for task type 'backtest_job'"):
        update_doc_blocks(stale, [ORDER_TASK, BACKTEST_JOB_TASK])
    with pytest.raises(TaskError, match="undeclared task types order"):
        update_doc_blocks(stale, [BACKTEST_JOB_TASK])
    stale += "<!-- diagram:backtest_job -->\n<!-- /diagram:backtest_job -->\n"
    updated = update_doc_blocks(stale, TASK_DEFINITIONS.values())
    document = tmp_path / "tasks.md"
    document.write_text(stale)
    tool = [sys.executable, str(ROOT / "tools" / "generate_task_diagrams.py")]
    check = subprocess.run([*tool, "--check", "--document", str(document)], check=False)
    assert check.returncode == 1 and document.read_text() == stale
    write = subprocess.run([*tool, "--document", str(document)], check=False, capture_output=True)
    assert write.returncode == 0 and document.read_text() == updated


# ---------------------------------------------------------------------- owner: steps


def test_an_order_moves_step_by_step_and_every_step_is_stored(db: Path) -> None:
    async def scenario(store: StateStore) -> None:
        clock = FakeClock()
        async with TaskOwner(store, "trader", [ORDER], clock=clock) as owner:
            task = await owner.create("order", {"client_order_id": "c1", "amount": "2"})
            assert task.state == "created" and task.owner == "trader" and is_task_id(task.task_id)
            assert await store.get_task(task.task_id) == task
            clock.advance(5)
            step = await owner.fire(task.task_id, "submit", note="sent to demo")
            assert (step.seq, step.source, step.dest, step.time) == (
                1,
                "created",
                "submitted",
                T0 + 5,
            )
            await owner.fire(task.task_id, "acknowledge", update={"exchange_order_id": "x9"})
            await owner.fire(task.task_id, "partially_fill", update={"filled": "0.5"})
            await owner.fire(task.task_id, "partially_fill", update={"filled": "1.5"})
            held = owner.get(task.task_id)
            assert held.state == "partially_filled"
            assert held.payload == {
                "client_order_id": "c1",
                "amount": "2",
                "exchange_order_id": "x9",
                "filled": "1.5",
            }
            assert await store.get_task(task.task_id) == held  # memory and store agree
            last = await owner.fire(task.task_id, "fill", update={"filled": "2"})
            assert last.seq == 5 and last.dest == "filled"
            # A final task is let go, and stored as final with its last payload.
            assert owner.open_tasks() == []
            stored = await store.get_task(task.task_id)
            assert stored is not None and stored.final and stored.state == "filled"
            assert stored.payload["filled"] == "2"
            history = await owner.history(task.task_id)
            assert triggers(history) == [
                ("created", "submit", "submitted"),
                ("submitted", "acknowledge", "acknowledged"),
                ("acknowledged", "partially_fill", "partially_filled"),
                ("partially_filled", "partially_fill", "partially_filled"),
                ("partially_filled", "fill", "filled"),
            ]
            assert [s.seq for s in history] == [1, 2, 3, 4, 5]
            assert history[0].note == "sent to demo"

    run_with_store(db, scenario)


def test_a_trigger_not_allowed_in_the_state_raises_a_clear_error_and_changes_nothing(
    db: Path,
) -> None:
    async def scenario(store: StateStore) -> None:
        async with TaskOwner(store, "trader", [ORDER], clock=FakeClock()) as owner:
            task = await owner.create("order")
            with pytest.raises(TaskError) as caught:
                await owner.fire(task.task_id, "fill")
            message = str(caught.value)
            assert task.task_id in message and "(order)" in message
            assert "state 'created'" in message and "trigger 'fill' is not allowed" in message
            assert "allowed there: submit, cancel, reject" in message
            # No automatic to_* shortcuts exist, in the machine or through the owner.
            machine = owner._machines["order"]
            assert not [name for name in machine.events if name.startswith("to_")]
            with pytest.raises(TaskError, match="order tasks have no trigger 'to_filled'"):
                await owner.fire(task.task_id, "to_filled")
            assert owner.get(task.task_id).state == "created"
            assert await owner.history(task.task_id) == []
            assert owner.allowed_triggers(task.task_id) == ["submit", "cancel", "reject"]
            with pytest.raises(TaskError, match="no task type 'sweep'"):
                await owner.create("sweep")
            with pytest.raises(TaskError, match="is not held by owner 'trader'"):
                await owner.fire("0192b5c4-0000-7000-8000-000000000000", "submit")

    run_with_store(db, scenario)


def test_resubmit_happens_only_when_the_exchange_never_saw_the_order(db: Path) -> None:
    async def scenario(store: StateStore) -> None:
        clock = FakeClock()
        steps = Steps()
        async with TaskOwner(store, "trader", [ORDER], clock=clock) as owner:
            owner.add_listener(steps)
            task = await owner.create("order")
            await owner.fire(task.task_id, "submit")
            clock.advance(10_000)
            await steps.wait_for(task.task_id, "timeout", "reconciling")
            with pytest.raises(TaskError) as caught:
                await owner.fire(
                    task.task_id, "resubmit", evidence={"exchange_lookup": "no answer"}
                )
            assert "trigger 'resubmit' refused by guard 'exchange_never_saw_order'" in str(
                caught.value
            )
            assert "exchange_lookup" in str(caught.value)
            assert owner.get(task.task_id).state == "reconciling"
            step = await owner.fire(
                task.task_id, "resubmit", evidence={"exchange_lookup": "not_found"}
            )
            assert (step.source, step.dest) == ("reconciling", "submitted")

    run_with_store(db, scenario)


@settings(max_examples=40)
@given(
    attempts=st.lists(
        st.tuples(
            st.sampled_from([*ORDER_TASK.triggers, "to_filled", "explode"]),
            st.sampled_from(["not_found", "no answer"]),
        ),
        max_size=12,
    )
)
def test_any_sequence_of_triggers_keeps_memory_and_store_in_step(
    attempts: list[tuple[str, str]],
) -> None:
    """Whatever triggers arrive in whatever order, each either moves the task along a declared
    transition (and is stored) or raises TaskError and changes nothing."""
    by_step = {(e.source, e.trigger): e for e in ORDER_TASK.edges()}

    async def scenario(store: StateStore) -> None:
        async with TaskOwner(store, "trader", [ORDER_TASK], clock=FakeClock()) as owner:
            task = await owner.create("order")
            state, stored_steps = "created", 0
            for trigger, lookup in attempts:
                edge = by_step.get((state, trigger))
                allowed = edge is not None and (edge.guard is None or lookup == "not_found")
                if state in ORDER_TASK.final_states:
                    with pytest.raises(TaskError, match="is not held"):
                        await owner.fire(task.task_id, trigger)
                    continue
                if not allowed:
                    with pytest.raises(TaskError, match=f"'{state}'.*'{trigger}'"):
                        await owner.fire(
                            task.task_id, trigger, evidence={"exchange_lookup": lookup}
                        )
                else:
                    assert edge is not None
                    step = await owner.fire(
                        task.task_id, trigger, evidence={"exchange_lookup": lookup}
                    )
                    state, stored_steps = edge.dest, stored_steps + 1
                    assert (step.source, step.dest, step.seq) == (edge.source, state, stored_steps)
                stored = await store.get_task(task.task_id)
                assert stored is not None and stored.state == state
                assert stored.final == (state in ORDER_TASK.final_states)
                if not stored.final:
                    assert owner.get(task.task_id) == stored
                assert len(await store.task_history(task.task_id)) == stored_steps

    with tempfile.TemporaryDirectory() as folder:
        run_with_store(Path(folder) / "state.sqlite", scenario)


def test_a_failed_write_leaves_the_task_where_it_was(db: Path) -> None:
    """Persisted first: when the store cannot record a step, memory does not move either."""

    async def scenario(store: StateStore) -> None:
        async with TaskOwner(store, "trader", [ORDER], clock=FakeClock()) as owner:
            task = await owner.create("order")
            await store.close()
            with pytest.raises(StorageError, match="not open"):
                await owner.fire(task.task_id, "submit")
            assert owner.get(task.task_id).state == "created"
            await store.open()
            step = await owner.fire(task.task_id, "submit")
            assert step.seq == 1 and owner.get(task.task_id).state == "submitted"

    run_with_store(db, scenario)


def test_a_task_moved_by_someone_else_is_let_go_not_overwritten(db: Path) -> None:
    async def scenario(store: StateStore) -> None:
        async with TaskOwner(store, "trader", [ORDER], clock=FakeClock()) as owner:
            task = await owner.create("order")
            # Another owner (here: a direct write) moves the task and takes it over.
            await store.record_transition(
                task.task_id, "created", "submitted", "submit", T0 + 1, owner="other"
            )
            with pytest.raises(StorageError, match="is in state 'submitted', not 'created'"):
                await owner.fire(task.task_id, "submit")
            assert owner.open_tasks() == []
            stored = await store.get_task(task.task_id)
            assert stored is not None and stored.owner == "other"
            assert len(await store.task_history(task.task_id)) == 1

    run_with_store(db, scenario)


def test_a_cancelled_caller_never_leaves_a_step_half_done(db: Path) -> None:
    async def scenario(store: StateStore) -> None:
        owner = TaskOwner(store, "trader", [ORDER], clock=FakeClock())
        task = await owner.create("order")
        caller = asyncio.ensure_future(owner.fire(task.task_id, "submit"))
        await asyncio.sleep(0)  # let it start the write, then give up on it
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        await owner.close()  # waits for the step in progress
        stored = await store.get_task(task.task_id)
        assert stored is not None and stored.state == owner.get(task.task_id).state == "submitted"
        assert len(await store.task_history(task.task_id)) == 1
        with pytest.raises(TaskError, match="is closed"):
            await owner.fire(task.task_id, "acknowledge")

    run_with_store(db, scenario)


# ---------------------------------------------------------------------- owner: timeouts


def test_an_order_not_answered_in_time_goes_to_reconciling(db: Path) -> None:
    async def scenario(store: StateStore) -> None:
        clock = FakeClock()
        steps = Steps()
        async with TaskOwner(store, "trader", [ORDER], clock=clock) as owner:
            owner.add_listener(steps)
            task = await owner.create("order")
            assert owner.deadline(task.task_id) is None
            await owner.fire(task.task_id, "submit")
            assert owner.deadline(task.task_id) == T0 + 10_000
            clock.advance(9_999)
            clock.advance(1)
            step = await steps.wait_for(task.task_id, "timeout", "reconciling")
            assert step.time == T0 + 10_000 and step.note == "no change within 10 s"
            assert owner.get(task.task_id).state == "reconciling"
            stored = await store.get_task(task.task_id)
            assert stored is not None and stored.state == "reconciling"
            # Reconciling times out too (the lookup went unanswered): ask again.
            assert owner.deadline(task.task_id) == T0 + 20_000
            clock.advance(10_000)
            await steps.wait_for(task.task_id, "timeout", "reconciling")
            await owner.fire(task.task_id, "fill")
            assert triggers(await owner.history(task.task_id)) == [
                ("created", "submit", "submitted"),
                ("submitted", "timeout", "reconciling"),
                ("reconciling", "timeout", "reconciling"),
                ("reconciling", "fill", "filled"),
            ]

    run_with_store(db, scenario)


def test_leaving_a_state_disarms_its_timeout(db: Path) -> None:
    async def scenario(store: StateStore) -> None:
        clock = FakeClock()
        async with TaskOwner(store, "trader", [ORDER], clock=clock) as owner:
            task = await owner.create("order")
            await owner.fire(task.task_id, "submit")
            await owner.fire(task.task_id, "acknowledge")
            assert owner.deadline(task.task_id) is None
            clock.advance(60_000)
            for _ in range(10):  # give a stray timer every chance to run
                await asyncio.sleep(0)
            assert owner.get(task.task_id).state == "acknowledged"
            assert len(await owner.history(task.task_id)) == 2

    run_with_store(db, scenario)


def test_a_lost_worker_sends_the_job_back_to_the_queue(db: Path) -> None:
    async def scenario(store: StateStore) -> None:
        clock = FakeClock()
        steps = Steps()
        async with TaskOwner(store, "broker", [JOB], clock=clock) as owner:
            owner.add_listener(steps)
            job = await owner.create("backtest_job", {"strategy": "sma"})
            await owner.fire(job.task_id, "dispatch", update={"worker": "w1"})
            await owner.fire(job.task_id, "start")
            clock.advance(50_000)
            await owner.fire(job.task_id, "progress", update={"done": 0.5})
            assert owner.deadline(job.task_id) == T0 + 50_000 + 60_000  # progress re-arms
            clock.advance(59_999)
            clock.advance(1)
            await steps.wait_for(job.task_id, "timeout", "queued")
            assert owner.get(job.task_id).state == "queued"
            await owner.fire(job.task_id, "dispatch", update={"worker": "w2"})
            await owner.fire(job.task_id, "start")
            await owner.fire(job.task_id, "worker_lost", note="w2 stopped heartbeating")
            await owner.fire(job.task_id, "dispatch", update={"worker": "w3"})
            await owner.fire(job.task_id, "start")
            await owner.fire(job.task_id, "finish", update={"result": "r1"})
            stored = await store.get_task(job.task_id)
            assert stored is not None and stored.state == "done" and stored.final
            assert stored.payload == {
                "strategy": "sma",
                "worker": "w3",
                "done": 0.5,
                "result": "r1",
            }
            assert [s.dest for s in await owner.history(job.task_id)] == [
                "dispatched",
                "running",
                "running",
                "queued",
                "dispatched",
                "running",
                "queued",
                "dispatched",
                "running",
                "done",
            ]

    run_with_store(db, scenario)


def test_a_timeout_racing_another_step_never_splits_memory_from_the_store(db: Path) -> None:
    async def scenario(store: StateStore) -> None:
        clock = FakeClock()
        async with TaskOwner(store, "trader", [ORDER], clock=clock) as owner:
            tasks = [await owner.create("order") for _ in range(8)]
            for task in tasks:
                await owner.fire(task.task_id, "submit")
            # Half the acknowledgements start just before the timers come due, half just after,
            # so both sides of the race happen: each task ends acknowledged either way.
            early = [
                asyncio.ensure_future(owner.fire(t.task_id, "acknowledge")) for t in tasks[::2]
            ]
            clock.advance(10_000)
            await asyncio.sleep(0)
            late = [
                asyncio.ensure_future(owner.fire(t.task_id, "acknowledge")) for t in tasks[1::2]
            ]
            results = await asyncio.gather(*early, *late, return_exceptions=True)
            assert all(isinstance(result, TaskTransition) for result in results), results
            await owner.close()
            acknowledged_in_time = [
                ("created", "submit", "submitted"),
                ("submitted", "acknowledge", "acknowledged"),
            ]
            acknowledged_late = [
                ("created", "submit", "submitted"),
                ("submitted", "timeout", "reconciling"),
                ("reconciling", "acknowledge", "acknowledged"),
            ]
            outcomes = []
            for task in tasks:
                stored = await store.get_task(task.task_id)
                assert stored is not None and stored.state == owner.get(task.task_id).state
                history = triggers(await store.task_history(task.task_id))
                assert history in (acknowledged_in_time, acknowledged_late)
                outcomes.append(history == acknowledged_late)
            assert outcomes == [False, True] * 4

    run_with_store(db, scenario)


# ---------------------------------------------------------------------- owner: restarts


def test_a_restarted_owner_resumes_its_open_tasks_and_their_timeouts(db: Path) -> None:
    clock = FakeClock()

    async def before_crash(store: StateStore) -> dict[str, str]:
        owner = TaskOwner(store, "trader", [ORDER, JOB], clock=clock)
        waiting = await owner.create("order", {"client_order_id": "c1"})
        sent = await owner.create("order", {"client_order_id": "c2"})
        await owner.fire(sent.task_id, "submit")
        done = await owner.create("order", {"client_order_id": "c3"})
        await owner.fire(done.task_id, "reject", note="risk limit")
        job = await owner.create("backtest_job")
        await owner.fire(job.task_id, "dispatch")
        await owner.fire(job.task_id, "start", update={"worker": "w1"})
        other = TaskOwner(store, "someone-else", [ORDER], clock=clock)
        foreign = await other.create("order")
        # No close(): leaving the event loop drops both owners with their timers armed.
        return {
            "waiting": waiting.task_id,
            "sent": sent.task_id,
            "done": done.task_id,
            "job": job.task_id,
            "foreign": foreign.task_id,
        }

    ids = run_with_store(db, before_crash)
    clock.now += 3_600_000  # down for an hour: every deadline passed meanwhile

    async def after_restart(store: StateStore) -> None:
        clock._moved = asyncio.Event()  # the old loop's event belongs to the old loop
        steps = Steps()
        owner = TaskOwner(store, "trader", [ORDER, JOB], clock=clock)
        owner.add_listener(steps)
        resumed = await owner.resume()
        assert [r.task_id for r in resumed] == sorted([ids["waiting"], ids["sent"], ids["job"]])
        # Overdue timeouts fire at once, without the clock moving on.
        await steps.wait_for(ids["sent"], "timeout", "reconciling")
        await steps.wait_for(ids["job"], "timeout", "queued")
        assert owner.get(ids["waiting"]).state == "created"
        assert owner.get(ids["job"]).payload == {"worker": "w1"}
        assert await owner.resume() == []  # resuming twice takes nothing twice
        # Carry on where the tasks were.
        await owner.fire(ids["waiting"], "submit")
        await owner.fire(ids["sent"], "fill")
        await owner.fire(ids["job"], "dispatch")
        assert triggers(await owner.history(ids["sent"])) == [
            ("created", "submit", "submitted"),
            ("submitted", "timeout", "reconciling"),
            ("reconciling", "fill", "filled"),
        ]
        assert [s.seq for s in await owner.history(ids["job"])] == [1, 2, 3, 4]
        assert triggers(await owner.history(ids["done"])) == [("created", "reject", "rejected")]
        with pytest.raises(TaskError, match="not held"):
            owner.get(ids["foreign"])
        await owner.close()

    run_with_store(db, after_restart)


def test_resume_fails_closed_on_a_task_type_the_owner_does_not_know(db: Path) -> None:
    async def scenario(store: StateStore) -> None:
        first = TaskOwner(store, "trader", [ORDER, JOB], clock=FakeClock())
        job = await first.create("backtest_job")
        await first.close()
        second = TaskOwner(store, "trader", [ORDER], clock=FakeClock())
        with pytest.raises(TaskError) as caught:
            await second.resume()
        assert job.task_id in str(caught.value) and "'backtest_job'" in str(caught.value)
        assert second.open_tasks() == []

    run_with_store(db, scenario)


CRASHING_OWNER = """
import asyncio, os, signal, sys
from trader.interfaces import PluginContext
from trader.state.sqlite import SqliteStateOptions, SqliteStateStore
from trader.tasks import ORDER_TASK, TaskOwner

async def main():
    path = sys.argv[1]
    store = SqliteStateStore(SqliteStateOptions(path=path), PluginContext(os.getcwd(), os.getcwd()))
    await store.open()
    owner = TaskOwner(store, "trader", [ORDER_TASK.with_timeouts(submitted=0.2)])
    task = await owner.create("order", {"client_order_id": "k1"})
    await owner.fire(task.task_id, "submit")
    print(task.task_id, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)

asyncio.run(main())
"""


def test_an_owner_killed_with_sigkill_is_resumed_by_a_new_process(db: Path) -> None:
    killed = subprocess.run(
        [sys.executable, "-c", CRASHING_OWNER, str(db)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    task_id = killed.stdout.strip()

    async def scenario(store: StateStore) -> None:
        steps = Steps()
        definition = ORDER_TASK.with_timeouts(submitted=0.2)
        async with TaskOwner(store, "trader", [definition]) as owner:  # the real clock
            owner.add_listener(steps)
            assert [r.task_id for r in await owner.resume()] == [task_id]
            await steps.wait_for(task_id, "timeout", "reconciling")
            await owner.fire(task_id, "cancel")
        assert triggers(await store.task_history(task_id)) == [
            ("created", "submit", "submitted"),
            ("submitted", "timeout", "reconciling"),
            ("reconciling", "cancel", "cancelled"),
        ]

    run_with_store(db, scenario)
