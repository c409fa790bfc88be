"""What every strategy runtime shares: parameter declarations and binding, decision batches.

The strategy API is the same in every language (see the Lua and Python runtime plugins): a
strategy declares ``params`` as ``name = {default, min, max, step, description}`` or the
shorthand ``name = default``; the values given at load are converted to the default's type and
checked against ``min`` and ``max``; unknown names are refused. The helpers here take values a
runtime has already read from its language and return problems as one-line messages, so each
runtime raises its own :class:`~trader.errors.StrategyError` with the file name.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from trader.interfaces.strategy import DecisionBatch, Parameter
from trader.model import Decision, OrderIntent

#: The value of a bound parameter.
ParamValue = bool | int | float | str
#: The fields of a full parameter declaration.
PARAMETER_FIELDS = ("default", "min", "max", "step", "description")
_BOOL_WORDS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# parameters -----------------------------------------------------------------------------------


def declare_parameter(
    name: str,
    default: object,
    minimum: object,
    maximum: object,
    step: object,
    description: object,
    problems: list[str],
) -> Parameter | None:
    """The parameter ``params.<name>`` declares (``None`` where a field is absent), or ``None``
    when it has no usable default.

    Appends what is wrong to ``problems`` (a field that is no bool, number or string; no
    default; bounds or step on a non-numeric parameter, or not numbers; a default outside
    min..max; a step not above zero; a description that is no string).
    """
    where = f"params.{name}"
    fields = (default, minimum, maximum, step, description)
    for label, value in zip(PARAMETER_FIELDS, fields, strict=True):
        if value is not None and not isinstance(value, (bool, int, float, str)):
            problems.append(f"{where}.{label} is a {type(value).__name__}")
    if default is None:
        problems.append(f"{where} has no default")
        return None
    if not isinstance(default, (bool, int, float, str)):
        return None
    numeric = _is_number(default)
    bounds: list[float | None] = []
    for label, value in (("min", minimum), ("max", maximum), ("step", step)):
        if value is not None and (not numeric or not _is_number(value)):
            problems.append(f"{where}.{label} must be a number on a numeric parameter")
            value = None
        bounds.append(value if isinstance(value, (int, float)) else None)
    low, high, step_value = bounds
    if numeric and isinstance(default, (int, float)):
        if low is not None and default < low:
            problems.append(f"{where}: default {default} is below min {low}")
        if high is not None and default > high:
            problems.append(f"{where}: default {default} is above max {high}")
        if step_value is not None and step_value <= 0:
            problems.append(f"{where}.step must be above zero")
    if description is not None and not isinstance(description, str):
        problems.append(f"{where}.description must be a string")
    return Parameter(
        name,
        default,
        low,
        high,
        step_value,
        description if isinstance(description, str) else "",
    )


def bind_parameters(
    declared: list[Parameter], given: Mapping[str, Any]
) -> tuple[dict[str, ParamValue], list[str]]:
    """The value of every declared parameter: ``given`` (coerced to the default's type, checked
    against min and max) or the default; and the problems (unknown names, values that do not
    convert or are out of range). The values are only usable when there are no problems."""
    by_name = {p.name: p for p in declared}
    problems: list[str] = []
    for name in given:
        if name not in by_name:
            known = ", ".join(sorted(by_name)) or "none"
            problems.append(f"unknown parameter {name!r} (declared: {known})")
    bound: dict[str, ParamValue] = {}
    for p in declared:
        if p.name not in given:
            bound[p.name] = p.default
            continue
        try:
            value = coerce_parameter(p, given[p.name])
        except ValueError as error:
            problems.append(f"parameter {p.name}: {error}")
            continue
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if p.minimum is not None and value < p.minimum:
                problems.append(f"parameter {p.name} = {value} is below its min {p.minimum}")
            if p.maximum is not None and value > p.maximum:
                problems.append(f"parameter {p.name} = {value} is above its max {p.maximum}")
        bound[p.name] = value
    return bound, problems


def coerce_parameter(p: Parameter, value: Any) -> ParamValue:
    """``value`` converted to the type of ``p``'s default (a bool from true/yes/1/false/no/0,
    a whole number when the default is an int and the step whole); raises ``ValueError``
    saying why it does not convert."""
    default = p.default
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _BOOL_WORDS:
            return _BOOL_WORDS[value.strip().lower()]
        raise ValueError(f"{value!r} is not true or false")
    if isinstance(default, str):
        if isinstance(value, str):
            return value
        raise ValueError(f"{value!r} is not a string")
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"{value!r} is not a number")
    try:
        number = float(value) if isinstance(value, str) else value
    except ValueError:
        raise ValueError(f"{value!r} is not a number") from None
    if not math.isfinite(number):
        raise ValueError(f"{value!r} is not a finite number")
    whole = isinstance(default, int) and (p.step is None or float(p.step).is_integer())
    if whole:
        if not float(number).is_integer():
            raise ValueError(f"{value!r} is not a whole number")
        return int(number)
    return float(number)


# decisions ------------------------------------------------------------------------------------


def expand_changes(
    assignment: str,
    times: npt.NDArray[np.int64],
    rows: Sequence[int],
    kinds: Sequence[int],
    values: Sequence[float],
    orders: Mapping[int, tuple[OrderIntent, ...]],
    *,
    offset: int = 0,
) -> DecisionBatch:
    """The batch of one decision per candle of ``times`` from its change points.

    From row ``rows[k] - offset`` on, until the next change point, every row holds (kind 0),
    targets ``values[k]`` (kind 1) or gives orders (kind 2, target NaN; ``orders`` maps the
    row, counted from 0, to them).
    """
    size = len(times)
    target = np.full(size, np.nan)
    if rows:
        starts = np.asarray(rows, dtype=np.int64) - offset
        kind = np.asarray(kinds, dtype=np.int64)
        value = np.where(kind == 1, np.asarray(values, dtype=np.float64), np.nan)
        counts = np.diff(np.append(starts, size))
        target[starts[0] :] = np.repeat(value, counts)
    return DecisionBatch(assignment, np.asarray(times, dtype=np.int64), target, orders)


def concat_batches(assignment: str, parts: list[DecisionBatch]) -> DecisionBatch:
    """``parts`` (consecutive runs of candles) as one batch."""
    if len(parts) == 1:
        return parts[0]
    if not parts:
        return DecisionBatch(assignment, np.empty(0, np.int64), np.empty(0))
    orders: dict[int, tuple[OrderIntent, ...]] = {}
    offset = 0
    for part in parts:
        for row, items in part.orders.items():
            orders[row + offset] = items
        offset += len(part)
    return DecisionBatch(
        assignment,
        np.concatenate([p.time for p in parts]),
        np.concatenate([p.target for p in parts]),
        orders,
    )


def decision_record(decision: Decision | None) -> list[Any] | None:
    """``decision``'s target and orders as plain lists for a snapshot (``None`` stays)."""
    if decision is None:
        return None
    return [
        decision.target,
        [
            [o.side.value, o.type.value, o.amount, o.price, o.stop_price, o.tag]
            for o in decision.orders
        ],
    ]


def decision_from_record(time: int | None, record: Any) -> Decision | None:
    """The decision on the candle at ``time`` a :func:`decision_record` describes (without its
    assignment), or ``None`` when either is ``None``."""
    if time is None or record is None:
        return None
    target, orders = record
    return Decision(
        "",
        time,
        target,
        tuple(OrderIntent(o[0], o[1], o[2], o[3], o[4], o[5]) for o in orders),
    )
