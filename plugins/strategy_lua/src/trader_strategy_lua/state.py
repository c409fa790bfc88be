"""Snapshot and restore ``ctx.state``: plain Lua data to msgpack and back.

A table becomes a msgpack array ``[key, value, key, value, ...]``; a ``ta`` indicator an
extension value holding its kind and its fields the same way.

State holds numbers (integers stay integers), strings (any bytes), booleans and tables of them,
nested up to :data:`MAX_DEPTH`; ``ta`` indicators are kept with their kind and re-attached on
restore. Functions, coroutines, userdata and tables with other metatables are refused with a
:class:`LuaStrategyError` naming the path (``ctx.state.signals.fn``).
"""

from __future__ import annotations

from typing import Any

import msgpack

from trader_strategy_lua.errors import LuaStrategyError
from trader_strategy_lua.sandbox import Sandbox, text

MAX_DEPTH = 64
_TA = 1  # msgpack extension type of a ta indicator: [kind, fields]


def dump_state(sandbox: Sandbox, root: Any) -> Any:
    """``root`` (a Lua value) as a msgpack-ready Python tree."""

    def refuse(path: str, why: str) -> LuaStrategyError:
        return LuaStrategyError(
            f"{path} {why}; state holds numbers, strings, booleans and tables of them only",
            filename=sandbox.filename,
        )

    def convert(value: Any, path: str, depth: int) -> Any:
        if value is None or isinstance(value, (bool, int, float, bytes)):
            return value
        kind = sandbox.lua_type(value)
        if kind != "table":
            # lupa hands a Lua coroutine over as a "coroutine function"
            if "Coroutine" in type(value).__name__ or "Thread" in type(value).__name__:
                kind = "coroutine"
            return _raise(refuse(path, f"is a {kind or type(value).__name__}"))
        if depth >= MAX_DEPTH:
            return _raise(refuse(path, f"is nested deeper than {MAX_DEPTH} tables (or is a cycle)"))
        meta = sandbox.table_kind(value)
        if meta is False:
            return _raise(refuse(path, "has a metatable"))
        # a table is a flat list key, value, key, value...: a dict would merge 1 and true
        items: list[Any] = []
        for key, item in value.items():
            if not isinstance(key, (bool, int, float, bytes)):
                return _raise(refuse(path, f"has a {sandbox.lua_type(key)} key"))
            items.append(key)
            items.append(convert(item, f"{path}.{_key_text(key)}", depth + 1))
        if isinstance(meta, str):
            return msgpack.ExtType(_TA, msgpack.packb([meta, items], use_bin_type=True))
        return items

    return convert(root, "ctx.state", 0)


def load_state(sandbox: Sandbox, tree: Any) -> Any:
    """Build the Lua value ``tree`` (from :func:`dump_state`) inside ``sandbox``."""

    def build(value: Any, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise _bad(sandbox, "nested too deeply")
        if value is None or isinstance(value, (bool, int, float, bytes)):
            return value
        if isinstance(value, list) and len(value) % 2 == 0:
            table = sandbox.new_table()
            for index in range(0, len(value), 2):
                key = value[index]
                if not isinstance(key, (bool, int, float, bytes)) or key != key:
                    raise _bad(sandbox, f"a key of type {type(key).__name__}")
                table[key] = build(value[index + 1], depth + 1)
            return table
        if isinstance(value, msgpack.ExtType) and value.code == _TA:
            kind, fields = msgpack.unpackb(value.data, raw=False, strict_map_key=False)
            table = build(fields, depth + 1)
            if not isinstance(kind, str) or not sandbox.attach(table, kind):
                raise _bad(sandbox, f"an unknown indicator kind {kind!r}")
            return table
        raise _bad(sandbox, f"a value of type {type(value).__name__}")

    return build(tree, 0)


def _bad(sandbox: Sandbox, what: str) -> LuaStrategyError:
    return LuaStrategyError(
        f"the snapshot holds {what}; it was not made by this runtime", filename=sandbox.filename
    )


def _raise(error: LuaStrategyError) -> Any:
    raise error


def _key_text(key: object) -> str:
    return text(key) if isinstance(key, bytes) else f"[{key!r}]"
