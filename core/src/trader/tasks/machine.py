"""Task machines declared as data: states and transitions as lists of dicts, checked on creation.

A :class:`TaskDefinition` is what a task type is: its states (which are final, which time out
and after how long), its transitions (``trigger``, ``source``, ``dest``, optionally a named
``guard``), and the guard functions those names refer to. A
:class:`~trader.tasks.owner.TaskOwner` builds a ``transitions`` machine from it, and
:mod:`trader.tasks.diagram` draws it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from typing_extensions import NotRequired, Required, TypedDict

from trader.errors import TraderError
from trader.interfaces import TaskRecord

__all__ = [
    "TIMEOUT",
    "Edge",
    "Guard",
    "GuardContext",
    "StateSpec",
    "TaskDefinition",
    "TaskDefinitionError",
    "TaskError",
    "TransitionSpec",
]

#: The trigger an owner fires when a task stays in a state longer than the state's timeout.
TIMEOUT: Final = "timeout"

#: Names a trigger may not take: the attributes ``transitions`` adds to every model.
_RESERVED_TRIGGERS: Final = frozenset({"trigger", "state", "machine"})
_STATE_KEYS: Final = frozenset({"name", "final", "timeout", "description"})
_TRANSITION_KEYS: Final = frozenset({"trigger", "source", "dest", "guard", "description"})


class TaskError(TraderError):
    """A task cannot do what was asked: a trigger not allowed in its state, a guard that refused,
    an unknown task or task type. The message names the task, its state and the trigger."""


class TaskDefinitionError(TaskError):
    """A task machine's declaration is inconsistent; ``problems`` lists everything found."""

    def __init__(self, task_type: str, problems: Sequence[str]) -> None:
        self.task_type = task_type
        self.problems = list(problems)
        super().__init__(
            f"task type {task_type!r} is declared wrongly: " + "; ".join(self.problems)
        )


class StateSpec(TypedDict, total=False):
    """One state of a task machine, as data."""

    name: Required[str]
    final: NotRequired[bool]
    """A final state ends the task: no transition leaves it and the owner lets the task go."""
    timeout: NotRequired[float]
    """Seconds a task may stay in this state before the owner fires ``timeout``."""
    description: NotRequired[str]


class TransitionSpec(TypedDict, total=False):
    """One transition of a task machine, as data: ``trigger`` moves ``source`` to ``dest``."""

    trigger: Required[str]
    source: Required[str | list[str]]
    dest: Required[str]
    guard: NotRequired[str]
    """The name of a guard in the definition's ``guards`` that must allow the step."""
    description: NotRequired[str]


@dataclass(frozen=True, slots=True)
class GuardContext:
    """What a guard sees: the task before the step, the step, and the caller's ``evidence``."""

    task: TaskRecord
    trigger: str
    source: str
    dest: str
    evidence: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Guard:
    """A condition on a transition. ``check`` must be a quick, pure function; ``requirement``
    says in words what must hold, and is shown to the caller when the guard refuses."""

    check: Callable[[GuardContext], bool]
    requirement: str


@dataclass(frozen=True, slots=True)
class Edge:
    """One (source, trigger) step of a machine, with one source: declarations expanded."""

    source: str
    trigger: str
    dest: str
    guard: str | None = None


@dataclass(frozen=True, eq=False)
class TaskDefinition:
    """A task type's machine, declared as data and checked when created.

    Definitions compare by identity. Raises :class:`TaskDefinitionError` listing every
    problem: unknown or duplicate states,
    transitions out of final states, states that time out without a ``timeout`` transition (or
    the reverse), unreachable states, dead ends, unknown guards, a trigger declared twice from
    one state without a guard to tell them apart.
    """

    type: str
    initial: str
    states: Sequence[StateSpec]
    transitions: Sequence[TransitionSpec]
    guards: Mapping[str, Guard] = field(default_factory=dict)
    description: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "states", tuple(dict(s) for s in self.states))
        object.__setattr__(self, "transitions", tuple(dict(t) for t in self.transitions))
        object.__setattr__(self, "guards", dict(self.guards))
        problems = _problems(self)
        if problems:
            raise TaskDefinitionError(self.type, problems)

    @property
    def state_names(self) -> tuple[str, ...]:
        """Every state's name, in declaration order."""
        return tuple(state["name"] for state in self.states)

    @property
    def final_states(self) -> frozenset[str]:
        """The names of the final states."""
        return frozenset(s["name"] for s in self.states if s.get("final", False))

    def is_final(self, state: str) -> bool:
        """Whether ``state`` is final."""
        return state in self.final_states

    def timeout_of(self, state: str) -> float | None:
        """How many seconds a task may stay in ``state`` before ``timeout`` fires, or ``None``."""
        for spec in self.states:
            if spec["name"] == state:
                return spec.get("timeout")
        return None

    def edges(self) -> list[Edge]:
        """Every transition with one source each, in declaration order."""
        result = []
        for spec in self.transitions:
            for source in _sources(spec):
                result.append(Edge(source, spec["trigger"], spec["dest"], spec.get("guard")))
        return result

    def triggers_from(self, state: str) -> list[str]:
        """The triggers declared out of ``state``, in declaration order, each once."""
        return list(dict.fromkeys(e.trigger for e in self.edges() if e.source == state))

    @property
    def triggers(self) -> list[str]:
        """Every trigger of the machine, in declaration order, each once."""
        return list(dict.fromkeys(spec["trigger"] for spec in self.transitions))

    def with_timeouts(self, **seconds: float) -> TaskDefinition:
        """Return a copy whose states time out after the given seconds instead (by state name).

        Only states that already time out can be given a new timeout; use this to shorten
        timeouts in tests or to tune them from configuration.
        """
        unknown = sorted(set(seconds) - {s["name"] for s in self.states if "timeout" in s})
        if unknown:
            raise TaskDefinitionError(
                self.type,
                [
                    f"states {', '.join(unknown)} have no timeout to change; only states with a "
                    "'timeout' transition can time out"
                ],
            )
        states: list[StateSpec] = []
        for spec in self.states:
            copy: StateSpec = {**spec}
            if spec["name"] in seconds:
                copy["timeout"] = seconds[spec["name"]]
            states.append(copy)
        return TaskDefinition(
            self.type, self.initial, states, self.transitions, self.guards, self.description
        )


def _sources(spec: Mapping[str, Any]) -> list[str]:
    source = spec.get("source")
    if isinstance(source, str):
        return [source]
    if isinstance(source, list | tuple) and all(isinstance(s, str) for s in source):
        return list(source)
    return []


def _problems(definition: TaskDefinition) -> list[str]:
    problems: list[str] = []
    if not definition.type or not definition.type.replace("_", "").isalnum():
        problems.append("the type must be a non-empty name of letters, digits and underscores")
    names: list[str] = []
    for index, state in enumerate(definition.states):
        problems.extend(_state_problems(index, state))
        name = state.get("name")
        if isinstance(name, str):
            if name in names:
                problems.append(f"state {name!r} is declared twice")
            names.append(name)
    known = set(names)
    final = {s["name"] for s in definition.states if s.get("final", False)}
    if definition.initial not in known:
        problems.append(f"the initial state {definition.initial!r} is not a declared state")
    elif definition.initial in final:
        problems.append(f"the initial state {definition.initial!r} is final")

    seen: dict[tuple[str, str], bool] = {}  # (source, trigger) -> already has an unguarded step
    outgoing: dict[str, set[str]] = {name: set() for name in names}
    for index, spec in enumerate(definition.transitions):
        where = f"transition {index + 1} ({spec.get('trigger', '?')})"
        extra = set(spec) - _TRANSITION_KEYS
        if extra:
            problems.append(f"{where} has unknown keys {', '.join(sorted(extra))}")
        trigger = spec.get("trigger")
        if not isinstance(trigger, str) or not trigger.isidentifier():
            problems.append(f"{where} needs a trigger that is a Python identifier")
            continue
        if trigger in _RESERVED_TRIGGERS or trigger.startswith(("to_", "may_", "is_")):
            problems.append(f"{where}: trigger name {trigger!r} is reserved")
        dest = spec.get("dest")
        if dest not in known:
            problems.append(f"{where} goes to {dest!r}, which is not a declared state")
        sources = _sources(spec)
        if not sources:
            problems.append(f"{where} needs a source: a state name or a list of them")
        guard = spec.get("guard")
        if guard is not None and guard not in definition.guards:
            problems.append(f"{where} names guard {guard!r}, which the definition does not have")
        for source in sources:
            if source not in known:
                problems.append(f"{where} leaves {source!r}, which is not a declared state")
                continue
            if source in final:
                problems.append(f"{where} leaves final state {source!r}")
            if seen.get((source, trigger)):
                problems.append(
                    f"{where}: {trigger!r} from {source!r} is declared again after an "
                    "unguarded one, so it can never happen"
                )
            seen[(source, trigger)] = seen.get((source, trigger), False) or guard is None
            if isinstance(dest, str):
                outgoing[source].add(dest)

    for state in definition.states:
        name = state.get("name")
        if not isinstance(name, str) or name not in outgoing:
            continue
        has_timeout_step = (name, TIMEOUT) in seen
        if "timeout" in state and not has_timeout_step:
            problems.append(f"state {name!r} times out but has no {TIMEOUT!r} transition")
        if has_timeout_step and "timeout" not in state:
            problems.append(f"state {name!r} has a {TIMEOUT!r} transition but no timeout")
        if name not in final and not outgoing[name]:
            problems.append(f"state {name!r} is not final but no transition leaves it")
    if definition.initial in known:
        unreachable = [n for n in names if n not in _reachable(definition.initial, outgoing)]
        if unreachable:
            problems.append(f"states {', '.join(unreachable)} cannot be reached from the start")
    return problems


def _state_problems(index: int, state: Mapping[str, Any]) -> list[str]:
    name = state.get("name")
    if not isinstance(name, str) or not name.isidentifier():
        return [f"state {index + 1} needs a name that is a Python identifier"]
    problems = []
    extra = set(state) - _STATE_KEYS
    if extra:
        problems.append(f"state {name!r} has unknown keys {', '.join(sorted(extra))}")
    timeout = state.get("timeout")
    if "timeout" in state and (
        not isinstance(timeout, int | float)
        or isinstance(timeout, bool)
        or not math.isfinite(timeout)
        or timeout <= 0
    ):
        problems.append(f"state {name!r}: timeout must be a positive number of seconds")
    if "timeout" in state and state.get("final", False):
        problems.append(f"final state {name!r} cannot time out")
    return problems


def _reachable(initial: str, outgoing: Mapping[str, Iterable[str]]) -> set[str]:
    reached, frontier = {initial}, [initial]
    while frontier:
        for dest in outgoing.get(frontier.pop(), ()):
            if dest not in reached:
                reached.add(dest)
                frontier.append(dest)
    return reached
