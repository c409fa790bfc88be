"""The task owner: creates tasks, moves them by trigger, persists every step, fires timeouts.

How a step happens
------------------
Each task is a model on a ``transitions`` :class:`~transitions.extensions.asyncio.AsyncMachine`
built from its :class:`~trader.tasks.machine.TaskDefinition` (one machine per task type, no
``to_*`` shortcuts). The machine's ``before_state_change`` callback records the step in the
state store (:meth:`~trader.interfaces.StateStore.record_transition`, a compare-and-set on the
task's state) and the machine changes the model's state only after that returned. If recording
fails nothing changes in memory, so memory never runs ahead of the store; if it failed because
the task was moved elsewhere, the owner re-reads the task and lets it go (or adopts the stored
state when the task is still its own).

Steps of one task are serialised by a lock, and each runs in its own shielded task: a caller
that is cancelled while the store is writing does not cut the step in half (the step finishes
in the background and :meth:`TaskOwner.close` waits for it).

Why the owner keeps its own timers
----------------------------------
``transitions`` has an ``AsyncTimeout`` state feature, but its timer starts on entering a state
with a fixed delay, runs on the real clock, and is not started for a model added in a stored
state. A restarted owner needs the opposite: the deadline is the time the state was entered (the
stored ``updated_at``) plus the state's timeout, a deadline that passed while the owner was down
must fire at once, and tests need an injectable clock. So the owner arms one asyncio timer per
open task after each step (and on resume), waits for the wall clock to reach the deadline in
bounded sleeps (as :mod:`trader.scheduling` does), and then fires ``timeout`` through the same
locked, persisted path as any other trigger. A timer that lost the race to another step sees
that the task has moved on (an entry counter) and does nothing. A timeout that could not be
recorded is retried after a short delay.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, Final, TypeVar

from transitions import EventData, MachineError
from transitions.extensions.asyncio import AsyncMachine

from trader.errors import StorageError, TraderError
from trader.interfaces import Component, StateStore, TaskRecord, TaskTransition
from trader.scheduling import MAX_SLEEP_S, SYSTEM_CLOCK, Clock
from trader.tasks.ids import new_task_id
from trader.tasks.machine import TIMEOUT, GuardContext, TaskDefinition, TaskError

__all__ = ["TIMEOUT_RETRY_S", "TaskOwner", "TransitionListener"]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: The longest wait before retrying a timeout that could not be recorded (the store failed).
TIMEOUT_RETRY_S: Final = 5.0

#: Called after every recorded step with the task as it is now and the stored step.
TransitionListener = Callable[[TaskRecord, TaskTransition], Awaitable[None] | None]


@dataclass(eq=False)
class _Pending:
    """One step in progress: what the caller asked for, and what the machine callbacks found."""

    trigger: str
    time: int
    note: str
    payload: dict[str, Any] | None
    evidence: Mapping[str, Any]
    refused: list[str] = field(default_factory=list)
    step: TaskTransition | None = None


class _Model:
    """The object a machine moves: ``transitions`` keeps the state on it and adds triggers."""

    def __init__(self, held: _HeldTask) -> None:
        self.held = held


@dataclass(eq=False)
class _HeldTask:
    record: TaskRecord
    definition: TaskDefinition
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    entry: int = 0  # how many steps this owner made; a timer armed before a step is stale
    deadline: int | None = None
    timer: asyncio.Task[None] | None = None
    model: _Model = field(init=False)

    def __post_init__(self) -> None:
        self.model = _Model(self)


class TaskOwner(Component):
    """Own tasks of the given types on behalf of one service (``name`` is stored as the owner).

    Create tasks with :meth:`create`, move them with :meth:`fire`, and after a restart call
    :meth:`resume` to take back every open task stored under this owner's name, with its
    timeouts re-armed. Every step is recorded in ``store`` before it counts; the owner holds
    open tasks only and lets a task go when it reaches a final state. ``clock`` gives the time
    of steps and deadlines and does the waiting for timeouts (the real clock by default).
    """

    def __init__(
        self,
        store: StateStore,
        name: str,
        definitions: Iterable[TaskDefinition],
        *,
        clock: Clock = SYSTEM_CLOCK,
        new_id: Callable[[], str] = new_task_id,
    ) -> None:
        if not name:
            raise TaskError("a task owner needs a name: the service that owns the tasks")
        self.name = name
        self._store = store
        self._clock = clock
        self._new_id = new_id
        self._definitions: dict[str, TaskDefinition] = {}
        for definition in definitions:
            if definition.type in self._definitions:
                raise TaskError(f"task type {definition.type!r} is given to owner {name!r} twice")
            self._definitions[definition.type] = definition
        self._machines = {t: self._build_machine(d) for t, d in self._definitions.items()}
        self._held: dict[str, _HeldTask] = {}
        self._listeners: list[TransitionListener] = []
        self._inflight: set[asyncio.Task[Any]] = set()
        self._closed = False

    # ------------------------------------------------------------------ public surface

    @property
    def definitions(self) -> Mapping[str, TaskDefinition]:
        """The task types this owner knows, by name."""
        return dict(self._definitions)

    def add_listener(self, listener: TransitionListener) -> None:
        """Call ``listener(task, step)`` after every recorded step, timeouts included.

        Listeners run after the step is recorded and the task's lock released, so they may fire
        further triggers (for example start a lookup when an order enters ``reconciling``). An
        exception from a listener is logged; the step stands.
        """
        self._listeners.append(listener)

    async def create(
        self,
        task_type: str,
        payload: Mapping[str, Any] | None = None,
        *,
        task_id: str | None = None,
    ) -> TaskRecord:
        """Store a new task of ``task_type`` in its initial state, hold it, and return it.

        ``task_id`` defaults to a new sortable id. Raises :class:`TaskError` for an unknown
        type and :class:`~trader.errors.StorageError` if the id is taken or the store fails.
        """
        self._check_open()
        definition = self._definition(task_type)
        now = self._clock.now_ms()
        record = TaskRecord(
            task_id=task_id or self._new_id(),
            type=task_type,
            owner=self.name,
            state=definition.initial,
            payload=dict(payload or {}),
            created_at=now,
            updated_at=now,
        )
        await self._store.create_task(record)
        self._hold(record)
        return record

    async def fire(
        self,
        task_id: str,
        trigger: str,
        *,
        note: str = "",
        update: Mapping[str, Any] | None = None,
        evidence: Mapping[str, Any] | None = None,
    ) -> TaskTransition:
        """Move a held task by ``trigger``; return the recorded step.

        ``update`` is merged into the task's payload in the same store transaction as the step;
        ``note`` is kept in the history; ``evidence`` is what the transition's guard, if any,
        judges. Raises :class:`TaskError` when the task is not held by this owner, the trigger is
        not allowed in the task's state, or a guard refuses; raises
        :class:`~trader.errors.StorageError` when the store fails or the task was moved
        elsewhere. In every failing case the task's state is unchanged.
        """
        self._check_open()
        result = await self._shielded(
            self._step_and_notify(task_id, trigger, note, update, evidence, expected_entry=None)
        )
        assert result is not None  # only a stale timeout step comes back empty
        return result

    def get(self, task_id: str) -> TaskRecord:
        """The held task ``task_id`` as it is now; :class:`TaskError` if this owner does not
        hold it (unknown, final, or owned by another service)."""
        return self._held_task(task_id).record

    def open_tasks(self, task_type: str | None = None) -> list[TaskRecord]:
        """The tasks this owner holds (all open), by id, optionally of one type only."""
        return [
            held.record
            for task_id, held in sorted(self._held.items())
            if task_type is None or held.record.type == task_type
        ]

    def deadline(self, task_id: str) -> int | None:
        """When the held task's ``timeout`` fires (ms since the epoch), or ``None`` if its
        state does not time out."""
        return self._held_task(task_id).deadline

    def allowed_triggers(self, task_id: str) -> list[str]:
        """The triggers the held task's current state allows, in declaration order."""
        held = self._held_task(task_id)
        return held.definition.triggers_from(held.record.state)

    async def history(self, task_id: str) -> list[TaskTransition]:
        """The task's recorded steps, oldest first (read from the store)."""
        return await self._store.task_history(task_id)

    async def resume(self) -> list[TaskRecord]:
        """Take back every open task stored under this owner's name; return them by id.

        Each is rebuilt in its stored state and its timeout re-armed from the time it entered
        that state, so a deadline that passed while the owner was down fires at once. Fails
        closed: if any task has a type this owner does not know or a state its machine does
        not have, raises :class:`TaskError` naming them all and takes back none.
        """
        self._check_open()
        records = [
            record
            for record in await self._store.list_tasks(open_only=True)
            if record.owner == self.name and record.task_id not in self._held
        ]
        problems = [problem for record in records if (problem := self._resume_problem(record))]
        if problems:
            raise TaskError(
                f"task owner {self.name!r} cannot resume its tasks: {'; '.join(problems)}; give "
                "the owner the missing task definitions (or finish those tasks) and restart"
            )
        for record in records:
            self._hold(record)
        if records:
            log.info("task owner %s resumed %d open tasks", self.name, len(records))
        return records

    async def close(self) -> None:
        """Stop the timers and wait for steps in progress; later calls fail. Idempotent."""
        self._closed = True
        for held in self._held.values():
            self._disarm(held)
        while self._inflight:
            await asyncio.gather(*list(self._inflight), return_exceptions=True)

    # ------------------------------------------------------------------ machines

    def _build_machine(self, definition: TaskDefinition) -> AsyncMachine:
        states = [
            {"name": state["name"], "final": bool(state.get("final", False))}
            for state in definition.states
        ]
        transitions: list[dict[str, Any]] = []
        for edge in definition.edges():
            transition: dict[str, Any] = {
                "trigger": edge.trigger,
                "source": edge.source,
                "dest": edge.dest,
            }
            if edge.guard is not None:
                transition["conditions"] = [partial(self._check_guard, edge.guard)]
            transitions.append(transition)
        return AsyncMachine(
            model=[],
            states=states,
            transitions=transitions,
            initial=definition.initial,
            auto_transitions=False,
            send_event=True,
            ignore_invalid_triggers=False,
            before_state_change=[self._record_step],
            name=f"{definition.type} task",
        )

    def _check_guard(self, name: str, event: EventData) -> bool:
        held = _held_of(event)
        pending = _pending_of(event)
        transition = event.transition
        assert transition is not None
        guard = held.definition.guards[name]
        allowed = guard.check(
            GuardContext(
                task=held.record,
                trigger=pending.trigger,
                source=transition.source,
                dest=str(transition.dest),
                evidence=pending.evidence,
            )
        )
        if not allowed:
            pending.refused.append(f"guard {name!r}: {guard.requirement}")
        return bool(allowed)

    async def _record_step(self, event: EventData) -> None:
        """The machine's ``before_state_change``: record the step; raising stops the change."""
        held = _held_of(event)
        pending = _pending_of(event)
        transition = event.transition
        assert transition is not None and transition.dest is not None
        pending.step = await self._store.record_transition(
            held.record.task_id,
            transition.source,
            str(transition.dest),
            pending.trigger,
            pending.time,
            final=held.definition.is_final(str(transition.dest)),
            note=pending.note,
            payload=pending.payload,
        )

    # ------------------------------------------------------------------ steps

    async def _step_and_notify(
        self,
        task_id: str,
        trigger: str,
        note: str,
        update: Mapping[str, Any] | None,
        evidence: Mapping[str, Any] | None,
        *,
        expected_entry: int | None,
    ) -> TaskTransition | None:
        done = await self._step(task_id, trigger, note, update, evidence, expected_entry)
        if done is None:
            return None
        record, step = done
        for listener in list(self._listeners):
            try:
                result = listener(record, step)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception(
                    "task %s: a listener failed after step %s -> %s",
                    task_id,
                    step.source,
                    step.dest,
                )
        return step

    async def _step(
        self,
        task_id: str,
        trigger: str,
        note: str,
        update: Mapping[str, Any] | None,
        evidence: Mapping[str, Any] | None,
        expected_entry: int | None,
    ) -> tuple[TaskRecord, TaskTransition] | None:
        while True:
            held = self._held.get(task_id)
            if held is None:
                if expected_entry is not None:
                    return None
                raise self._not_held(task_id)
            async with held.lock:
                if self._held.get(task_id) is not held:
                    continue  # let go or rebuilt while we waited: look again
                if expected_entry is not None and held.entry != expected_entry:
                    return None  # a timeout that lost the race to another step
                return await self._step_locked(held, trigger, note, update, evidence)

    async def _step_locked(
        self,
        held: _HeldTask,
        trigger: str,
        note: str,
        update: Mapping[str, Any] | None,
        evidence: Mapping[str, Any] | None,
    ) -> tuple[TaskRecord, TaskTransition]:
        record, definition = held.record, held.definition
        where = f"task {record.task_id} ({record.type}) is in state {record.state!r}"
        if trigger not in definition.triggers:
            raise TaskError(
                f"{where}, and {record.type} tasks have no trigger {trigger!r}; their triggers "
                f"are {', '.join(definition.triggers)}"
            )
        allowed = definition.triggers_from(record.state)
        if trigger not in allowed:
            raise TaskError(
                f"{where}, where trigger {trigger!r} is not allowed; allowed there: "
                f"{', '.join(allowed) or 'none'}"
            )
        payload = {**record.payload, **update} if update else None
        pending = _Pending(
            trigger=trigger,
            # A step never goes back in time, even if the wall clock does.
            time=max(self._clock.now_ms(), record.updated_at),
            note=note,
            payload=payload,
            evidence=dict(evidence or {}),
        )
        machine = self._machines[record.type]
        try:
            moved = await machine.events[trigger].trigger(held.model, pending)
        except StorageError:
            await self._resync(held)
            raise
        except MachineError as error:  # the checks above make this unexpected
            raise TaskError(f"{where}: trigger {trigger!r} failed: {error}") from None
        step = pending.step
        if not moved or step is None:
            reasons = "; ".join(pending.refused) or "the step was interrupted"
            raise TaskError(f"{where}: trigger {trigger!r} refused by {reasons}")
        final = definition.is_final(step.dest)
        held.record = replace(
            record,
            state=step.dest,
            payload=payload if payload is not None else record.payload,
            updated_at=step.time,
            final=final,
        )
        held.entry += 1
        if final:
            self._release(held)
        else:
            self._arm(held)
        return held.record, step

    async def _resync(self, held: _HeldTask) -> None:
        """After a failed step, make memory agree with the store (or let the task go)."""
        task_id = held.record.task_id
        try:
            stored = await self._store.get_task(task_id)
        except TraderError:
            return  # the store is failing: keep the task as it is and let a later step retry
        if self._held.get(task_id) is not held:
            return
        if stored is None or stored.final or stored.owner != self.name:
            log.warning(
                "task %s was moved elsewhere (now %s, owner %s); letting it go",
                task_id,
                stored.state if stored else "deleted",
                stored.owner if stored else "none",
            )
            self._release(held)
        elif (stored.state, stored.updated_at) != (held.record.state, held.record.updated_at):
            problem = self._resume_problem(stored)
            self._release(held)
            if problem:
                log.warning("task %s changed in the store and cannot be held: %s", task_id, problem)
            else:
                log.warning("task %s changed in the store; now in state %s", task_id, stored.state)
                self._hold(stored)

    # ------------------------------------------------------------------ timeouts

    def _arm(self, held: _HeldTask) -> None:
        self._disarm(held)
        seconds = held.definition.timeout_of(held.record.state)
        if seconds is None or self._closed:
            held.deadline = None
            return
        self._arm_at(held, held.record.updated_at + math.ceil(seconds * 1000))

    def _arm_at(self, held: _HeldTask, deadline: int) -> None:
        held.deadline = deadline
        held.timer = asyncio.get_running_loop().create_task(
            self._expire(held.record.task_id, held.entry, deadline),
            name=f"timeout of task {held.record.task_id}",
        )

    def _disarm(self, held: _HeldTask) -> None:
        if held.timer is not None:
            held.timer.cancel()
            held.timer = None

    async def _expire(self, task_id: str, entry: int, deadline: int) -> None:
        while (remaining := deadline - self._clock.now_ms()) > 0:
            await self._clock.sleep(min(remaining / 1000, MAX_SLEEP_S))
        held = self._held.get(task_id)
        if held is None or held.entry != entry:
            return
        held.timer = None  # from here on the step must not be cancelled by the state change
        seconds = held.definition.timeout_of(held.record.state) or 0.0
        try:
            await self._shielded(
                self._step_and_notify(
                    task_id,
                    TIMEOUT,
                    f"no change within {seconds:g} s",
                    None,
                    None,
                    expected_entry=entry,
                )
            )
        except asyncio.CancelledError:
            raise
        except Exception as error:  # any store failure: the timer must not end for good
            held = self._held.get(task_id)
            if held is None or held.entry != entry or held.timer is not None or self._closed:
                return
            retry = min(seconds, TIMEOUT_RETRY_S)
            log.warning(
                "task %s: could not record its timeout (%s); retrying in %g s",
                task_id,
                error if isinstance(error, TraderError) else repr(error),
                retry,
                exc_info=not isinstance(error, TraderError),
            )
            self._arm_at(held, self._clock.now_ms() + math.ceil(retry * 1000))

    # ------------------------------------------------------------------ holding

    def _hold(self, record: TaskRecord) -> None:
        held = _HeldTask(record, self._definitions[record.type])
        self._machines[record.type].add_model(held.model, initial=record.state)
        self._held[record.task_id] = held
        self._arm(held)

    def _release(self, held: _HeldTask) -> None:
        self._disarm(held)
        held.deadline = None
        self._machines[held.record.type].remove_model(held.model)
        if self._held.get(held.record.task_id) is held:
            del self._held[held.record.task_id]

    def _resume_problem(self, record: TaskRecord) -> str | None:
        definition = self._definitions.get(record.type)
        if definition is None:
            return f"task {record.task_id} has type {record.type!r}, which this owner does not know"
        if record.state not in definition.state_names or definition.is_final(record.state):
            return (
                f"task {record.task_id} ({record.type}) is in state {record.state!r}, which is "
                f"not an open state of the {record.type} machine"
            )
        return None

    def _definition(self, task_type: str) -> TaskDefinition:
        definition = self._definitions.get(task_type)
        if definition is None:
            known = ", ".join(sorted(self._definitions)) or "none"
            raise TaskError(
                f"task owner {self.name!r} has no task type {task_type!r}; it knows: {known}"
            )
        return definition

    def _held_task(self, task_id: str) -> _HeldTask:
        held = self._held.get(task_id)
        if held is None:
            raise self._not_held(task_id)
        return held

    def _not_held(self, task_id: str) -> TaskError:
        return TaskError(
            f"task {task_id} is not held by owner {self.name!r}: it is unknown, final, or owned "
            "by another service (`trader tasks show ID` prints its state)"
        )

    def _check_open(self) -> None:
        if self._closed:
            raise TaskError(f"task owner {self.name!r} is closed; create a new owner to go on")

    async def _shielded(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` as its own task so that cancelling the caller does not cut it off."""
        task = asyncio.ensure_future(coroutine)
        self._inflight.add(task)
        task.add_done_callback(_forget(self._inflight))
        return await asyncio.shield(task)


def _forget(inflight: set[asyncio.Task[Any]]) -> Callable[[asyncio.Task[Any]], None]:
    def done(task: asyncio.Task[Any]) -> None:
        inflight.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: a caller that went away has no one else to see it

    return done


def _held_of(event: EventData) -> _HeldTask:
    model = event.model
    assert isinstance(model, _Model)
    return model.held


def _pending_of(event: EventData) -> _Pending:
    pending = next(iter(event.args))
    assert isinstance(pending, _Pending)
    return pending
