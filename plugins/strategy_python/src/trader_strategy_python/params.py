"""Parameter declarations of Python strategies: read ``params``, bind the values given at load.

The rules are those of the Lua runtime (the code mirrors ``trader_strategy_lua.runtime`` and
should move to core with it): a declaration is ``{"default": ..., "min": ..., "max": ...,
"step": ..., "description": ...}`` or the shorthand ``name: default``; given values are
converted to the default's type and checked against ``min`` and ``max``; unknown names are
refused.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

from trader.interfaces import Parameter
from trader_strategy_python.errors import PythonStrategyError

Value = bool | int | float | str
_FIELDS = ("default", "min", "max", "step", "description")
_BOOL_WORDS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


class Params(Mapping[str, Value]):
    """The bound parameters a strategy sees as ``ctx.params``: read-only, by key
    (``ctx.params["fast"]``) or by attribute (``ctx.params.fast``, as in Lua)."""

    __slots__ = ("_values",)
    _values: dict[str, Value]

    def __init__(self, values: Mapping[str, Value]) -> None:
        object.__setattr__(self, "_values", dict(values))

    def __getitem__(self, name: str) -> Value:
        return self._values[name]

    def __getattr__(self, name: str) -> Value:
        try:
            return self._values[name]
        except KeyError:
            known = ", ".join(sorted(self._values)) or "none"
            raise AttributeError(f"no parameter {name!r} (declared: {known})") from None

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("ctx.params is read-only; keep changing values in ctx.state")

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Params({self._values!r})"


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def declared_parameters(declaration: object, filename: str) -> list[Parameter]:
    """The parameters a module's ``params`` global declares (``None``: none), sorted by name."""
    if declaration is None:
        return []
    if not isinstance(declaration, Mapping):
        raise PythonStrategyError(
            "invalid params declaration: params must be a dict, not a "
            f"{type(declaration).__name__}",
            filename=filename,
        )
    problems: list[str] = []
    found: list[Parameter] = []
    for name, spec in declaration.items():
        if not isinstance(name, str) or not name.isidentifier():
            problems.append(f"params keys must be names (strings), not {name!r}")
            continue
        where = f"params.{name}"
        if isinstance(spec, (bool, int, float, str)):
            spec = {"default": spec}
        if not isinstance(spec, Mapping):
            problems.append(f"{where} is a {type(spec).__name__}")
            continue
        unknown = sorted(str(key) for key in spec if key not in _FIELDS)
        if unknown:
            problems.append(f"{where} has unknown fields {', '.join(unknown)}")
        for field in _FIELDS:
            value = spec.get(field)
            if value is not None and not isinstance(value, (bool, int, float, str)):
                problems.append(f"{where}.{field} is a {type(value).__name__}")
        default = spec.get("default")
        if default is None:
            problems.append(f"{where} has no default")
            continue
        if not isinstance(default, (bool, int, float, str)):
            continue
        numeric = _is_number(default)
        bounds: list[float | None] = []
        for field in ("min", "max", "step"):
            value = spec.get(field)
            if value is not None and (not numeric or not _is_number(value)):
                problems.append(f"{where}.{field} must be a number on a numeric parameter")
                value = None
            bounds.append(value if _is_number(value) else None)
        minimum, maximum, step = bounds
        if numeric and isinstance(default, (int, float)):
            if minimum is not None and default < minimum:
                problems.append(f"{where}: default {default} is below min {minimum}")
            if maximum is not None and default > maximum:
                problems.append(f"{where}: default {default} is above max {maximum}")
            if step is not None and step <= 0:
                problems.append(f"{where}.step must be above zero")
        description = spec.get("description")
        if description is not None and not isinstance(description, str):
            problems.append(f"{where}.description must be a string")
        found.append(
            Parameter(
                name,
                default,
                minimum,
                maximum,
                step,
                description if isinstance(description, str) else "",
            )
        )
    if problems:
        raise PythonStrategyError(
            "invalid params declaration: " + "; ".join(problems), filename=filename
        )
    return sorted(found, key=lambda p: p.name)


def bind_parameters(
    declared: list[Parameter], given: Mapping[str, Any], filename: str
) -> dict[str, Value]:
    """The value of every declared parameter: ``given`` (coerced to the default's type, checked
    against min and max) or the default. Unknown names are refused."""
    by_name = {p.name: p for p in declared}
    problems: list[str] = []
    for name in given:
        if name not in by_name:
            known = ", ".join(sorted(by_name)) or "none"
            problems.append(f"unknown parameter {name!r} (declared: {known})")
    bound: dict[str, Value] = {}
    for p in declared:
        if p.name not in given:
            bound[p.name] = p.default
            continue
        try:
            value = _coerce(p, given[p.name])
        except ValueError as error:
            problems.append(f"parameter {p.name}: {error}")
            continue
        if _is_number(value):
            assert isinstance(value, (int, float))
            if p.minimum is not None and value < p.minimum:
                problems.append(f"parameter {p.name} = {value} is below its min {p.minimum}")
            if p.maximum is not None and value > p.maximum:
                problems.append(f"parameter {p.name} = {value} is above its max {p.maximum}")
        bound[p.name] = value
    if problems:
        raise PythonStrategyError("; ".join(problems), filename=filename)
    return bound


def _coerce(p: Parameter, value: Any) -> Value:
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
