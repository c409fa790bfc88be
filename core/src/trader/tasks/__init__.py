"""Distributed tasks: state machines declared as data, persisted step by step, resumable.

Every unit of work that crosses services (an order, a backtest job) is a task: a sortable unique
id, a type, a payload, an owner, and a ``transitions`` machine. A :class:`TaskOwner` records
each step in the state store before it counts, fires ``timeout`` when a task stays too long in a
state, and after a restart resumes the open tasks stored under its name. See ``docs/tasks.md``.
"""

from __future__ import annotations

from trader.tasks.definitions import BACKTEST_JOB_TASK, ORDER_TASK, TASK_DEFINITIONS
from trader.tasks.ids import TaskIdGenerator, is_task_id, new_task_id, task_id_time
from trader.tasks.machine import (
    TIMEOUT,
    Guard,
    GuardContext,
    StateSpec,
    TaskDefinition,
    TaskDefinitionError,
    TaskError,
    TransitionSpec,
)
from trader.tasks.owner import TaskOwner, TransitionListener

__all__ = [
    "BACKTEST_JOB_TASK",
    "ORDER_TASK",
    "TASK_DEFINITIONS",
    "TIMEOUT",
    "Guard",
    "GuardContext",
    "StateSpec",
    "TaskDefinition",
    "TaskDefinitionError",
    "TaskError",
    "TaskIdGenerator",
    "TaskOwner",
    "TransitionListener",
    "TransitionSpec",
    "is_task_id",
    "new_task_id",
    "task_id_time",
]
