"""Parameter declarations of Python strategies: read ``params``, bind the values given at load.

The rules are those of every runtime (:mod:`trader.strategy_support`): a declaration is
``{"default": ..., "min": ..., "max": ..., "step": ..., "description": ...}`` or the shorthand
``name: default``; given values are converted to the default's type and checked against ``min``
and ``max``; unknown names are refused.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from trader import strategy_support
from trader.interfaces import Parameter
from trader.strategy_support import PARAMETER_FIELDS, declare_parameter
from trader_strategy_python.errors import PythonStrategyError

Value = strategy_support.ParamValue


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
        unknown = sorted(str(key) for key in spec if key not in PARAMETER_FIELDS)
        if unknown:
            problems.append(f"{where} has unknown fields {', '.join(unknown)}")
        parameter = declare_parameter(
            name,
            spec.get("default"),
            spec.get("min"),
            spec.get("max"),
            spec.get("step"),
            spec.get("description"),
            problems,
        )
        if parameter is not None:
            found.append(parameter)
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
    bound, problems = strategy_support.bind_parameters(declared, given)
    if problems:
        raise PythonStrategyError("; ".join(problems), filename=filename)
    return bound
