"""The task machines trader declares: the order task and the backtest-job task.

Both are plain data (see :class:`~trader.tasks.machine.TaskDefinition`); ``docs/tasks.md``
embeds a diagram of each, generated from these declarations by
``tools/generate_task_diagrams.py``.
"""

from __future__ import annotations

from typing import Final

from trader.tasks.machine import Guard, GuardContext, TaskDefinition

__all__ = ["BACKTEST_JOB_TASK", "ORDER_TASK", "TASK_DEFINITIONS", "exchange_never_saw_order"]


def exchange_never_saw_order(context: GuardContext) -> bool:
    """Allow a resubmit only on the exchange's own word that it never saw the order.

    The caller passes ``evidence={"exchange_lookup": "not_found"}`` after asking the exchange
    for the order by its client order id and being told it does not exist. Anything else (no
    answer, an error, an order in any state) keeps the task reconciling, so a retry can never
    create a second order.
    """
    return context.evidence.get("exchange_lookup") == "not_found"


#: An order's life on an exchange. Its payload holds the order (client order id, market, side,
#: amount, price) and what the exchange said (exchange order id, filled amount).
ORDER_TASK: Final = TaskDefinition(
    type="order",
    description="An order sent to an exchange, from creation to its final state.",
    initial="created",
    states=[
        {"name": "created", "description": "Decided and sized; not sent yet."},
        {
            "name": "submitted",
            "timeout": 30.0,
            "description": "Sent; the exchange has not answered yet.",
        },
        {"name": "acknowledged", "description": "Open on the exchange's book."},
        {"name": "partially_filled", "description": "Part of the amount has been filled."},
        {
            "name": "reconciling",
            "timeout": 30.0,
            "description": "No answer in time: asking the exchange by client order id.",
        },
        {"name": "filled", "final": True, "description": "The whole amount was filled."},
        {
            "name": "cancelled",
            "final": True,
            "description": "Cancelled (by us or the exchange) before it was wholly filled.",
        },
        {
            "name": "rejected",
            "final": True,
            "description": "Refused by the trader's own checks or by the exchange.",
        },
    ],
    transitions=[
        {"trigger": "submit", "source": "created", "dest": "submitted"},
        {"trigger": "acknowledge", "source": ["submitted", "reconciling"], "dest": "acknowledged"},
        {
            "trigger": "partially_fill",
            "source": ["submitted", "acknowledged", "partially_filled", "reconciling"],
            "dest": "partially_filled",
        },
        {
            "trigger": "fill",
            "source": ["submitted", "acknowledged", "partially_filled", "reconciling"],
            "dest": "filled",
        },
        {
            "trigger": "cancel",
            "source": ["created", "submitted", "acknowledged", "partially_filled", "reconciling"],
            "dest": "cancelled",
        },
        {
            "trigger": "reject",
            "source": ["created", "submitted", "reconciling"],
            "dest": "rejected",
        },
        {
            "trigger": "timeout",
            "source": "submitted",
            "dest": "reconciling",
            "description": "No answer in time: look the order up by its client order id.",
        },
        {
            "trigger": "timeout",
            "source": "reconciling",
            "dest": "reconciling",
            "description": "The lookup did not answer in time: ask again.",
        },
        {
            "trigger": "resubmit",
            "source": "reconciling",
            "dest": "submitted",
            "guard": "exchange_never_saw_order",
        },
    ],
    guards={
        "exchange_never_saw_order": Guard(
            exchange_never_saw_order,
            "resubmit only when the exchange, asked by client order id, answered that it never "
            "saw the order: pass evidence {'exchange_lookup': 'not_found'}",
        )
    },
)

#: One backtest run handed to a worker. Its payload holds the run's parameters and, once
#: dispatched, the worker it went to.
BACKTEST_JOB_TASK: Final = TaskDefinition(
    type="backtest_job",
    description="A backtest run, from the queue through a worker to its result.",
    initial="queued",
    states=[
        {"name": "queued", "description": "Waiting for a free worker."},
        {
            "name": "dispatched",
            "timeout": 30.0,
            "description": "Sent to a worker, which has not started it yet.",
        },
        {
            "name": "running",
            "timeout": 300.0,
            "description": "A worker runs it and reports progress at least once per timeout.",
        },
        {"name": "done", "final": True, "description": "Finished; its result is stored."},
        {
            "name": "failed",
            "final": True,
            "description": "Failed in a way another worker would fail too (bad input), or given "
            "up: its worker was lost too often, or the sweep that owned it stopped.",
        },
    ],
    transitions=[
        {"trigger": "dispatch", "source": "queued", "dest": "dispatched"},
        {"trigger": "start", "source": "dispatched", "dest": "running"},
        {
            "trigger": "progress",
            "source": "running",
            "dest": "running",
            "description": "A sign of life from the worker; restarts the timeout.",
        },
        {"trigger": "finish", "source": "running", "dest": "done"},
        {
            "trigger": "fail",
            "source": ["queued", "dispatched", "running"],
            "dest": "failed",
            "description": "Bad input, or given up (noted in the step): never retried.",
        },
        {
            "trigger": "worker_lost",
            "source": ["dispatched", "running"],
            "dest": "queued",
            "description": "The broker saw the worker go: queue the job for another worker.",
        },
        {
            "trigger": "timeout",
            "source": ["dispatched", "running"],
            "dest": "queued",
            "description": "No word from the worker in time: queue the job for another worker.",
        },
    ],
)

#: The declared task types by name.
TASK_DEFINITIONS: Final[dict[str, TaskDefinition]] = {
    definition.type: definition for definition in (ORDER_TASK, BACKTEST_JOB_TASK)
}
