"""One sandboxed Lua state: the Python half of ``sandbox.lua``.

A :class:`Sandbox` owns one lupa runtime. It runs the privileged bootstrap (``sandbox.lua``),
then drives the control table it returns. Strategy code only ever runs on the bootstrap's worker
thread (and coroutines created from it), which carries the limit hook; every result crosses back
as plain numbers, booleans, byte strings and tables built by the bootstrap. Lua strings reach
Python as ``bytes`` (the runtime has no encoding) so a strategy's binary strings round-trip and
no Python ``str`` ever enters Lua as a Python object.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, NoReturn, cast

import lupa.lua54
import numpy as np

from trader.interfaces import Limits
from trader.model import CandleArrays
from trader_strategy_lua.errors import LimitKind, LuaStrategyError

#: Instructions between two runs of the limit hook. Lua 5.4 pays for an active count hook on
#: every instruction whatever this is; it only sets how often the budget and clock are checked.
HOOK_STEP = 1000

_BOOTSTRAP = resources.files("trader_strategy_lua").joinpath("sandbox.lua").read_bytes()
_SANDBOX_PREFIX = re.compile(rb"^sandbox:\d+: ")
_ANY_PREFIX = re.compile(rb"^(.*?):(\d+): ", re.DOTALL)

Value = bool | int | float | bytes
#: One explicit order: row (1-based in its batch), side, type, amount, price, stop price, tag.
OrderRow = tuple[int, bytes, bytes, float, float | None, float | None, bytes]


def _deny_attributes(obj: object, name: object, is_setting: bool) -> NoReturn:
    """Refuse every Python attribute access from Lua (no Python object is meant to be reachable)."""
    raise AttributeError("Python attributes are not available to strategies")


def luajit_module() -> Any | None:
    """``lupa.luajit21`` when this platform's lupa wheel has it, else ``None``."""
    try:
        import lupa.luajit21
    except ImportError:  # pragma: no cover - depends on the wheel
        return None
    return lupa.luajit21


def text(value: object) -> str:
    """A Lua string (bytes) as text, undecodable bytes replaced."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


@dataclass(frozen=True, slots=True)
class Changes:
    """What one batch decided: change points and explicit orders (see ``op.batch``)."""

    rows: list[int]
    kinds: list[int]
    values: list[float]
    orders: list[OrderRow]


class Sandbox:
    """A Lua state with the sandbox installed, running one strategy file.

    Limits apply unless ``trusted``: an instruction budget, a wall-clock and a CPU-time limit
    per call (per candle in a batch) and a memory cap. Any limit hit stops the sandbox for good.
    """

    def __init__(
        self,
        *,
        filename: str,
        limits: Limits,
        trusted: bool,
        history: int,
        max_orders: int,
        cpu_seconds: float | None = None,
        luajit: bool = True,
    ) -> None:
        self.filename = filename
        self.limits = limits
        self.cpu_seconds = cpu_seconds
        self.trusted = trusted
        self.stopped: LimitKind | None = None
        self._short_src = filename.encode()
        module = luajit_module() if trusted and luajit else None
        self.engine = "luajit" if module is not None else "lua54"
        if module is None:
            module = lupa.lua54
        hooks = not trusted and (
            limits.instructions_per_call is not None
            or limits.wall_seconds_per_call is not None
            or cpu_seconds is not None
        )
        capped = not trusted and limits.memory_bytes is not None and self.engine == "lua54"
        self._module = module
        self._lua: Any = module.LuaRuntime(
            encoding=None,
            register_eval=False,
            register_builtins=False,
            attribute_filter=_deny_attributes,
            max_memory=0 if capped else None,
        )
        config = self._lua.table_from(
            {
                b"hooks": hooks,
                b"step": HOOK_STEP,
                b"clock": time.perf_counter,
                b"cpu_clock": time.thread_time,
                b"history": history,
                b"max_orders": max_orders,
            }
        )
        ctl = self._lua.execute(_BOOTSTRAP, config, name="=sandbox", mode="t")
        self._fn: dict[str, Callable[..., Any]] = {
            name: ctl[name.encode()]
            for name in (
                "set_limits",
                "load",
                "params",
                "init",
                "step",
                "batch",
                "orders",
                "set_params",
                "set_assignment",
                "state",
                "set_state",
                "table_kind",
                "attach",
                "logs",
                "row",
            )
        }
        if hooks:
            self._fn["set_limits"](
                limits.instructions_per_call, limits.wall_seconds_per_call, cpu_seconds
            )
        self._cap: int | None = None
        if capped:
            self._lua.gccollect()
            self._baseline = int(self._lua.get_memory_used())
            assert limits.memory_bytes is not None
            self._cap = self._baseline + limits.memory_bytes
            self._lua.set_max_memory(self._cap)

    # calls ------------------------------------------------------------------------------------

    def _call(self, name: str, *args: Any) -> tuple[Any, ...]:
        return self._check(self._invoke(name, *args))

    def _invoke(self, name: str, *args: Any) -> tuple[Any, ...]:
        self.check_usable()
        try:
            result = self._fn[name](*args)
        except self._module.LuaMemoryError:
            self._raise_limit("memory", None)
        except self._module.LuaError as error:
            raise LuaStrategyError(
                f"the sandbox failed ({error}); the strategy is stopped",
                filename=self.filename,
                stopped=True,
            ) from None
        return result if isinstance(result, tuple) else (result,)

    def check_usable(self) -> None:
        """Raise unless the sandbox can run strategy code: not stopped by a limit, not closed."""
        if self.stopped is not None:
            self._raise_limit(self.stopped, None)
        if self._lua is None:
            raise LuaStrategyError("the strategy instance is closed", filename=self.filename)

    def _check(self, result: tuple[Any, ...]) -> tuple[Any, ...]:
        """The payload of an ``ok`` result; raise the error any other result describes."""
        status = result[0]
        if status == b"ok":
            return result[1:]
        if status == b"limit":
            self._raise_limit(cast(LimitKind, text(result[1])), result[2])
        if status == b"result":
            raise LuaStrategyError(text(result[1]), filename=self.filename)
        message, line = self._position(result[1], result[2] if len(result) > 2 else None)
        raise LuaStrategyError(message, filename=self.filename, line=line)

    def _position(self, raw: object, line: object) -> tuple[str, int | None]:
        """Split ``file:line: message`` into the message and the strategy's line."""
        message = raw if isinstance(raw, bytes) else text(raw).encode()
        message = _SANDBOX_PREFIX.sub(b"", message, count=1)
        found = _ANY_PREFIX.match(message)
        if found and found.group(1) in (self._short_src, self.filename.encode()):
            return text(message[found.end() :]), int(found.group(2))
        return text(message), line if isinstance(line, int) and not isinstance(line, bool) else None

    def _raise_limit(self, kind: LimitKind, line: object) -> NoReturn:
        self.stopped = kind
        limits = self.limits
        if kind == "instructions":
            what = f"instruction limit reached ({limits.instructions_per_call:,} per call)"
            hint = "limits.instructions_per_call"
        elif kind == "cpu":
            what = f"CPU-time limit reached ({self.cpu_seconds} s per call)"
            hint = "the lua runtime's cpu_seconds_per_call"
        elif kind == "wall":
            what = f"wall-clock limit reached ({limits.wall_seconds_per_call} s per call)"
            hint = "limits.wall_seconds_per_call"
        else:
            size = (limits.memory_bytes or 0) / (1024 * 1024)
            what = f"memory limit reached ({size:g} MiB)"
            hint = "limits.memory_bytes"
        raise LuaStrategyError(
            f"{what}; the strategy instance is stopped: fix the strategy or raise {hint}, "
            "then load it again",
            filename=self.filename,
            line=line if isinstance(line, int) and not isinstance(line, bool) else None,
            limit=kind,
            stopped=True,
        ) from None

    # operations -------------------------------------------------------------------------------

    def load(self, source: str) -> None:
        """Compile ``source`` (text only, never bytecode) and run its top level."""
        result = self._invoke("load", source.encode(), self.filename.encode())
        if result[0] == b"syntax":
            raw = result[1]
            found = _ANY_PREFIX.match(raw)
            line = int(found.group(2)) if found else None
            message = text(raw[found.end() :] if found else raw)
            raise LuaStrategyError(f"syntax error: {message}", filename=self.filename, line=line)
        (self._short_src,) = self._check(result)

    def declarations(self) -> tuple[list[list[Value | None]], list[str]]:
        """The raw ``params`` declarations and the problems found reading them."""
        decl, problems = self._call("params")
        out: list[list[Value | None]] = []
        for entry in _values(decl):
            out.append([entry[i] for i in range(1, 7)])
        return out, [text(p) for p in _values(problems)]

    def set_params(self, params: Mapping[str, Value | str]) -> None:
        table = self._lua.table_from(
            {k.encode(): v.encode() if isinstance(v, str) else v for k, v in params.items()}
        )
        self._fn["set_params"](table)

    def init(self) -> None:
        self._call("init")

    def set_assignment(self, assignment: str) -> None:
        self._fn["set_assignment"](assignment.encode())

    def step(
        self, t: int, o: float, h: float, low: float, c: float, v: float
    ) -> tuple[int, float, list[OrderRow]]:
        """Append one candle and decide on it: kind (0 hold, 1 target, 2 orders), target, orders."""
        kind, value, count = self._call("step", t, o, h, low, c, v)
        return kind, value, self._orders() if count else []

    def batch(self, candles: CandleArrays, warm: int) -> Changes:
        """Append every candle; decide on each after the first ``warm``."""
        lua = self._lua
        columns = (
            candles.time,
            candles.open,
            candles.high,
            candles.low,
            candles.close,
            candles.volume,
        )
        if self._cap is not None:
            # the staged columns are the runtime's, not the strategy's: lift the cap while
            # staging them, then give the strategy back exactly its own allowance
            lua.gccollect()
            strategy_use = int(lua.get_memory_used()) - self._baseline
            lua.set_max_memory(0)
        try:
            # iterating a memoryview yields Python numbers at C speed (2-3x tolist's cost)
            staged = [lua.table_from(np.ascontiguousarray(c).data) for c in columns]
        finally:
            if self._cap is not None:
                assert self.limits.memory_bytes is not None
                room = max(0, self.limits.memory_bytes - strategy_use)
                lua.set_max_memory(int(lua.get_memory_used()) + room)
        try:
            return self._changes(self._call("batch", len(candles), warm, *staged))
        finally:
            del staged
            if self._cap is not None and self.stopped is None:
                lua.gccollect()
                self._cap = self._baseline + (self.limits.memory_bytes or 0)
                lua.set_max_memory(max(self._cap, int(lua.get_memory_used())))

    def failed_row(self) -> int:
        """The row (1-based) of the last batch whose candle was being decided on."""
        return int(self._fn["row"]()) if self._fn else 0

    def _changes(self, result: Sequence[Any]) -> Changes:
        ci, ck, cv, count, order_count = result
        rows = [ci[i] for i in range(1, count + 1)]
        kinds = [ck[i] for i in range(1, count + 1)]
        values = [cv[i] for i in range(1, count + 1)]
        return Changes(rows, kinds, values, self._orders() if order_count else [])

    def _orders(self) -> list[OrderRow]:
        orders: list[OrderRow] = []
        oi, os_, ot, oa, op, ox, og, n = self._fn["orders"]()
        for i in range(1, n + 1):
            price, stop = op[i], ox[i]
            orders.append(
                (
                    oi[i],
                    os_[i],
                    ot[i],
                    float(oa[i]),
                    None if price is False else float(price),
                    None if stop is False else float(stop),
                    og[i],
                )
            )
        return orders

    # state ------------------------------------------------------------------------------------

    def state(self) -> Any:
        """``ctx.state`` (read raw)."""
        return self._fn["state"]()

    def set_state(self, table: Any) -> None:
        self._fn["set_state"](table)

    def table_kind(self, table: Any) -> str | bool | None:
        """``None`` for a plain table, the indicator kind for a ``ta`` object, else ``False``."""
        kind = self._fn["table_kind"](table)
        return text(kind) if isinstance(kind, bytes) else kind

    def lua_type(self, value: object) -> str | None:
        """``"table"``, ``"function"``, ``"userdata"``, ``"thread"``; ``None`` for Python values."""
        kind: str | None = self._module.lua_type(value)
        return kind

    def new_table(self) -> Any:
        return self._lua.table()

    def attach(self, table: Any, kind: str) -> bool:
        return bool(self._fn["attach"](table, kind.encode()))

    def guard_memory(self) -> Any:
        """The exception lupa raises when the memory cap refuses an allocation."""
        return self._module.LuaMemoryError

    def logs(self) -> list[str]:
        lines, dropped = self._fn["logs"]()
        out = [text(line) for line in _values(lines)]
        if dropped:
            out.append(f"({dropped} more lines dropped)")
        return out

    def memory_used(self) -> int:
        return int(self._lua.get_memory_used())

    def close(self) -> None:
        self._fn = {}
        self._lua = None


def _values(table: Any) -> list[Any]:
    """The array part 1..n of a table the bootstrap built."""
    if table is None:
        return []
    return [table[i] for i in range(1, len(table) + 1)]
