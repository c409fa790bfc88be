"""Snapshot and restore ``ctx.state``: plain Python data to msgpack and back.

State holds ``None``, booleans, integers, floats, strings, bytes, lists and tuples (restored as
lists), dicts whose keys are strings, numbers, booleans or bytes, and ``ta`` indicators, nested
up to :data:`MAX_DEPTH`. NumPy scalars are saved as the Python number they hold. Anything else
(functions, modules, NumPy arrays, class instances, cycles) is refused with a
:class:`PythonStrategyError` naming the path (``ctx.state['signals']['fn'] is a function``).
"""

from __future__ import annotations

from typing import Any

import msgpack
import numpy as np

from trader_strategy_python.errors import PythonStrategyError
from trader_strategy_python.ta import Indicator

MAX_DEPTH = 64
_TA = 1  # msgpack extension type of a ta indicator: [kind, fields]
_SCALARS = (str, bytes, bool, int, float)


def dump_state(root: object, filename: str) -> Any:
    """``root`` (``ctx.state``) as a msgpack-ready tree; ``PythonStrategyError`` naming the path
    of the first value that cannot be saved."""

    def refuse(path: str, why: str) -> PythonStrategyError:
        return PythonStrategyError(
            f"{path} {why}; state holds None, booleans, numbers, strings, bytes, lists, dicts "
            "and ta indicators only",
            filename=filename,
        )

    def convert(value: object, path: str, depth: int) -> Any:
        if value is None or type(value) in _SCALARS:
            return value
        if isinstance(value, np.generic) and isinstance(value, (np.number, np.bool_)):
            return value.item()
        if isinstance(value, _SCALARS):  # subclasses: save the plain value
            if isinstance(value, bytes):
                return bytes(value)
            for base in (bool, int, float, str):
                if isinstance(value, base):
                    return base(value)
        if depth >= MAX_DEPTH:
            raise refuse(path, f"is nested deeper than {MAX_DEPTH} levels (or is a cycle)")
        if isinstance(value, (list, tuple)):
            return [convert(item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value)]
        if isinstance(value, dict):
            out: dict[Any, Any] = {}
            for key, item in value.items():
                if isinstance(key, np.generic) and isinstance(key, (np.number, np.bool_)):
                    key = key.item()
                if key is None or not isinstance(key, _SCALARS):
                    raise refuse(path, f"has a key of type {type(key).__name__} ({key!r})")
                out[key] = convert(item, f"{path}[{key!r}]", depth + 1)
            return out
        if isinstance(value, Indicator):
            fields = convert(value.dump(), f"{path}", depth + 1)
            return msgpack.ExtType(_TA, msgpack.packb([value.kind, fields], use_bin_type=True))
        if callable(value) and not isinstance(value, type):
            kind = "function" if hasattr(value, "__code__") else "callable"
            return _raise(refuse(path, f"is a {kind} ({type(value).__name__})"))
        return _raise(refuse(path, f"is a {type(value).__module__}.{type(value).__qualname__}"))

    return convert(root, "ctx.state", 0)


def load_state(tree: object, filename: str) -> Any:
    """The Python value of ``tree`` (from :func:`dump_state`)."""

    def build(value: object, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise _bad(filename, "values nested too deeply")
        if value is None or isinstance(value, _SCALARS):
            return value
        if isinstance(value, list):
            return [build(item, depth + 1) for item in value]
        if isinstance(value, dict):
            return {key: build(item, depth + 1) for key, item in value.items()}
        if isinstance(value, msgpack.ExtType) and value.code == _TA:
            try:
                kind, fields = msgpack.unpackb(value.data, raw=False, strict_map_key=False)
                return Indicator.load(kind, build(fields, depth + 1))
            except (ValueError, TypeError) as error:
                raise _bad(filename, f"a broken indicator ({error})") from None
        raise _bad(filename, f"a value of type {type(value).__name__}")

    return build(tree, 0)


def _bad(filename: str, what: str) -> PythonStrategyError:
    return PythonStrategyError(
        f"the snapshot holds {what}; it was not made by this runtime", filename=filename
    )


def _raise(error: PythonStrategyError) -> Any:
    raise error
