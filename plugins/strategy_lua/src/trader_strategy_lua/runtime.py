"""The ``lua`` strategy runtime: :class:`LuaStrategyRuntime` loads, :class:`LuaStrategy` runs.

See the plugin README for the strategy API. In short: a file declares ``params``, an optional
``init(ctx)`` and ``on_candle(ctx, candles)``, which returns a target position in [-1, 1], one
order or a list of orders, or ``nil`` to hold.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import msgpack
import numpy as np
import numpy.typing as npt

from trader.errors import DataError
from trader.interfaces import Limits, Parameter, StrategyInstance, StrategyRuntime
from trader.model import CandleArrays, Decision, OrderIntent
from trader_strategy_lua.errors import LuaStrategyError
from trader_strategy_lua.sandbox import Changes, OrderRow, Sandbox, Value, text
from trader_strategy_lua.state import dump_state, load_state

SNAPSHOT_FORMAT = 1
#: The limits used when the caller has none (those of ``Limits()``): 10M instructions and 1 s of
#: wall clock per call (per candle), 64 MiB of memory.
DEFAULT_LIMITS = Limits(10_000_000, 64 * 1024 * 1024, 1.0)
#: CPU seconds per call (per candle) for untrusted strategies. This is what stops a runaway
#: loop within 50 ms even when its instructions are costly (pcall, coroutine switches, long
#: strings), where 10M instructions could take seconds; CPU time rather than wall time, so a
#: loaded machine that preempts an honest strategy does not trip it.
DEFAULT_CPU_SECONDS = 0.025
_BOOL_WORDS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


@dataclass(frozen=True, eq=False)
class DecisionBatch:
    """The decisions on a run of candles, in compact form.

    ``time[i]`` is the candle of row ``i``; ``target[i]`` its target position (NaN when the row
    holds or gives orders); ``orders`` maps a row to its explicit orders.
    """

    assignment: str
    time: npt.NDArray[np.int64]
    target: npt.NDArray[np.float64]
    orders: Mapping[int, tuple[OrderIntent, ...]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.time)

    def decision(self, row: int) -> Decision:
        """Row ``row`` as a :class:`~trader.model.Decision`."""
        target = float(self.target[row])
        return Decision(
            self.assignment,
            int(self.time[row]),
            None if math.isnan(target) else target,
            self.orders.get(row, ()),
        )

    def __iter__(self) -> Iterator[Decision]:
        return (self.decision(row) for row in range(len(self)))


class LuaStrategyRuntime(StrategyRuntime):
    """Loads Lua strategies into sandboxes: Lua 5.4 with limits, LuaJIT when trusted.

    ``history`` is how many candles ``on_candle`` sees at least (the window holds up to twice
    as many); ``batch_size`` bounds the candles staged into Lua at once by
    :meth:`LuaStrategy.on_candles`; ``max_orders`` bounds the orders of one decision;
    ``luajit`` lets trusted strategies run on LuaJIT (else Lua 5.4 without limits);
    ``cpu_seconds_per_call`` is a CPU-time limit per call (per candle) on top of ``Limits``,
    which has no such field; ``default_limits`` are for callers that have no limits of their own.
    """

    language = "lua"

    def __init__(
        self,
        *,
        history: int = 2000,
        batch_size: int = 65_536,
        max_orders: int = 100,
        luajit: bool = True,
        default_limits: Limits | None = None,
        cpu_seconds_per_call: float | None = DEFAULT_CPU_SECONDS,
    ) -> None:
        self.history = history
        self.batch_size = batch_size
        self.max_orders = max_orders
        self.luajit = luajit
        self.default_limits = default_limits or DEFAULT_LIMITS
        self.cpu_seconds_per_call = cpu_seconds_per_call

    def _sandbox(self, filename: str, limits: Limits, trusted: bool) -> Sandbox:
        return Sandbox(
            filename=filename,
            limits=limits,
            trusted=trusted,
            history=self.history,
            max_orders=self.max_orders,
            cpu_seconds=self.cpu_seconds_per_call,
            luajit=self.luajit,
        )

    def parameters(self, source: str, filename: str) -> list[Parameter]:
        """Load ``source`` in a fresh sandbox (default limits) and read its ``params``."""
        sandbox = self._sandbox(filename, self.default_limits, trusted=False)
        try:
            sandbox.load(source)
            return _parameters(sandbox)
        finally:
            sandbox.close()

    def load(
        self,
        source: str,
        filename: str,
        params: Mapping[str, Any],
        limits: Limits,
        trusted: bool = False,
    ) -> LuaStrategy:
        """Load ``source``, bind ``params`` (checked against the declarations) and run ``init``."""
        sandbox = self._sandbox(filename, limits, trusted)
        try:
            sandbox.load(source)
            declared = _parameters(sandbox)
            bound = bind_parameters(declared, params, filename)
            sandbox.set_params(bound)
            sandbox.init()
        except BaseException:
            sandbox.close()
            raise
        return LuaStrategy(sandbox, bound, history=self.history, batch_size=self.batch_size)


class LuaStrategy(StrategyInstance):
    """One loaded Lua strategy with its parameters bound.

    Every candle reaches ``on_candle`` once, in time order: :meth:`on_candle` feeds the candles
    of ``history`` newer than the last one seen (the first call takes the earlier ones as
    history only) and answers a repeated call for the same newest candle with the same
    decision, without running Lua again.
    """

    def __init__(
        self, sandbox: Sandbox, params: Mapping[str, Value | str], *, history: int, batch_size: int
    ) -> None:
        self._sandbox = sandbox
        self._params = dict(params)
        self._history = history
        self._batch_size = batch_size
        self._assignment: str | None = None
        self._last_time: int | None = None
        self._last: Decision | None = None
        self._window_loaded = False

    @property
    def engine(self) -> str:
        """``"lua54"`` or ``"luajit"``."""
        return self._sandbox.engine

    @property
    def stopped(self) -> bool:
        """True after a limit hit: every further call raises."""
        return self._sandbox.stopped is not None

    @property
    def filename(self) -> str:
        return self._sandbox.filename

    def logs(self) -> list[str]:
        """What the strategy printed since the last call (at most 1,000 lines are kept)."""
        return self._sandbox.logs()

    def memory_used(self) -> int:
        """Bytes the Lua state holds now (runtime and strategy together)."""
        return self._sandbox.memory_used()

    # deciding ---------------------------------------------------------------------------------

    def on_candle(self, assignment: str, history: CandleArrays) -> Decision:
        """Decide on the newest candle of ``history`` (see the class for how candles are fed)."""
        self._sandbox.check_usable()
        if not len(history):
            raise DataError(f"{self.filename}: on_candle needs at least one candle")
        newest = int(history.time[-1])
        if self._last_time is not None:
            if newest == self._last_time:
                if self._last is None:
                    raise LuaStrategyError(
                        f"on_candle already failed on the candle at {newest}; the next candle "
                        "is decided on as usual",
                        filename=self.filename,
                    )
                return replace(self._last, assignment=assignment)
            if newest < self._last_time:
                raise DataError(
                    f"{self.filename}: candle {newest} is older than the last one decided on "
                    f"({self._last_time}); load the strategy again to replay"
                )
        if not self._window_loaded:
            if self._last_time is None:
                first_new = len(history) - 1
            else:
                first_new = int(np.searchsorted(history.time, self._last_time, side="right"))
            start = max(0, first_new - self._history)
            if first_new > start:
                self._sandbox.batch(history.slice(start, first_new), first_new - start)
            self._window_loaded = True
        else:
            assert self._last_time is not None
            first_new = int(np.searchsorted(history.time, self._last_time, side="right"))
        if first_new == len(history) - 1:
            self._use_assignment(assignment)
            self._last_time, self._last = newest, None  # consumed, even if it fails
            kind, value, orders = self._sandbox.step(
                newest,
                float(history.open[-1]),
                float(history.high[-1]),
                float(history.low[-1]),
                float(history.close[-1]),
                float(history.volume[-1]),
            )
            decision = Decision(
                assignment,
                newest,
                float(value) if kind == 1 else None,
                tuple(_intent(row) for row in orders),
            )
            self._last_time, self._last = newest, decision
            return decision
        batch = self.on_candles(assignment, history.slice(first_new, len(history)))
        decision = batch.decision(len(batch) - 1)
        return decision

    def on_candles(self, assignment: str, candles: CandleArrays, warmup: int = 0) -> DecisionBatch:
        """Decide on every candle of ``candles`` after the first ``warmup``, in one pass.

        The batch path of backtests: Lua is entered once per ``batch_size`` candles rather than
        once per candle. The first ``warmup`` candles only fill the history window. Candles must
        be newer than any seen before, in time order. On an error, the candles before the one
        that failed have been decided on (their decisions are lost with the exception).
        """
        self._sandbox.check_usable()
        size = len(candles)
        if not 0 <= warmup <= size:
            raise ValueError(f"warmup {warmup} is outside 0..{size}")
        times = candles.time
        if size and (
            (self._last_time is not None and int(times[0]) <= self._last_time)
            or bool(np.any(np.diff(times) <= 0))
        ):
            raise DataError(
                f"{self.filename}: candles for on_candles must be in strictly increasing time "
                "order and newer than the last candle decided on"
            )
        self._use_assignment(assignment)
        self._window_loaded = True
        parts: list[DecisionBatch] = []
        start = max(0, warmup - self._history)
        while start < size:
            stop = min(size, start + self._batch_size)
            warm = max(0, min(warmup, stop) - start)
            chunk = candles.slice(start, stop)
            try:
                changes = self._sandbox.batch(chunk, warm)
            except LuaStrategyError:
                # the candles up to the failing one are consumed
                row = self._sandbox.failed_row()
                if row > warm:
                    self._last_time, self._last = int(chunk.time[row - 1]), None
                raise
            parts.append(_expand(assignment, chunk.time[warm:], changes, warm))
            start = stop
        batch = _concat(assignment, parts)
        if len(batch):
            self._last_time = int(batch.time[-1])
            self._last = batch.decision(len(batch) - 1)
        elif size:
            self._last_time = int(times[-1])
        return batch

    def _use_assignment(self, assignment: str) -> None:
        if assignment != self._assignment:
            self._sandbox.set_assignment(assignment)
            self._assignment = assignment

    # state ------------------------------------------------------------------------------------

    def snapshot(self) -> bytes:
        """``ctx.state``, the bound parameters and the last decision, as msgpack bytes."""
        self._sandbox.check_usable()
        last = None
        if self._last is not None:
            last = [
                self._last.target,
                [
                    [o.side.value, o.type.value, o.amount, o.price, o.stop_price, o.tag]
                    for o in self._last.orders
                ],
            ]
        document = {
            "format": SNAPSHOT_FORMAT,
            "language": "lua",
            "params": self._params,
            "state": dump_state(self._sandbox, self._sandbox.state()),
            "last_time": self._last_time,
            "last": last,
        }
        packed: bytes = msgpack.packb(document, use_bin_type=True)
        return packed

    def restore(self, state: bytes) -> None:
        """Replace ``ctx.state`` and the last decision by those of a :meth:`snapshot`.

        The snapshot must come from the same strategy loaded with the same parameters.
        """
        self._sandbox.check_usable()
        try:
            document = msgpack.unpackb(state, raw=False, strict_map_key=False)
        except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
            raise LuaStrategyError(
                "the snapshot is not valid msgpack", filename=self.filename
            ) from None
        if not isinstance(document, dict) or document.get("format") != SNAPSHOT_FORMAT:
            raise LuaStrategyError(
                "the snapshot is not a Lua strategy snapshot of format 1", filename=self.filename
            )
        if document.get("params") != self._params:
            raise LuaStrategyError(
                f"the snapshot was taken with parameters {document.get('params')}, this instance "
                f"has {self._params}; load the strategy with the snapshot's parameters",
                filename=self.filename,
            )
        try:
            table = load_state(self._sandbox, document.get("state"))
        except self._sandbox.guard_memory():
            self._sandbox.stopped = "memory"
            raise LuaStrategyError(
                "the snapshot does not fit in the memory limit; the strategy instance is stopped",
                filename=self.filename,
                limit="memory",
                stopped=True,
            ) from None
        self._sandbox.set_state(table)
        self._last_time = document.get("last_time")
        self._last = None
        last = document.get("last")
        if self._last_time is not None and last is not None:
            target, orders = last
            self._last = Decision(
                "",
                self._last_time,
                target,
                tuple(OrderIntent(o[0], o[1], o[2], o[3], o[4], o[5]) for o in orders),
            )
        self._window_loaded = False

    def close(self) -> None:
        """Drop the Lua state."""
        self._sandbox.close()


# parameters ---------------------------------------------------------------------------------


def _parameters(sandbox: Sandbox) -> list[Parameter]:
    raw, problems = sandbox.declarations()
    found: list[Parameter] = []
    for name_b, raw_default, low, high, step, description in raw:
        name = text(name_b)
        where = f"params.{name}"
        if raw_default is None:
            problems.append(f"{where} has no default")
            continue
        default: float | int | str | bool = (
            text(raw_default) if isinstance(raw_default, bytes) else raw_default
        )
        numeric = isinstance(default, (int, float)) and not isinstance(default, bool)
        bounds: list[float | None] = []
        for label, value in (("min", low), ("max", high), ("step", step)):
            if value is not None and (not numeric or not isinstance(value, (int, float))):
                problems.append(f"{where}.{label} must be a number on a numeric parameter")
                value = None
            bounds.append(value if isinstance(value, (int, float)) else None)
        minimum, maximum, step_value = bounds
        if numeric and isinstance(default, (int, float)):
            if minimum is not None and default < minimum:
                problems.append(f"{where}: default {default} is below min {minimum}")
            if maximum is not None and default > maximum:
                problems.append(f"{where}: default {default} is above max {maximum}")
            if step_value is not None and step_value <= 0:
                problems.append(f"{where}.step must be above zero")
        if description is not None and not isinstance(description, bytes):
            problems.append(f"{where}.description must be a string")
        found.append(
            Parameter(
                name,
                default,
                minimum,
                maximum,
                step_value,
                text(description) if isinstance(description, bytes) else "",
            )
        )
    if problems:
        raise LuaStrategyError(
            "invalid params declaration: " + "; ".join(problems), filename=sandbox.filename
        )
    return sorted(found, key=lambda p: p.name)


def bind_parameters(
    declared: list[Parameter], given: Mapping[str, Any], filename: str
) -> dict[str, Value | str]:
    """The value of every declared parameter: ``given`` (coerced to the default's type, checked
    against min and max) or the default. Unknown names are refused."""
    by_name = {p.name: p for p in declared}
    problems: list[str] = []
    for name in given:
        if name not in by_name:
            known = ", ".join(sorted(by_name)) or "none"
            problems.append(f"unknown parameter {name!r} (declared: {known})")
    bound: dict[str, Value | str] = {}
    for p in declared:
        if p.name not in given:
            bound[p.name] = p.default
            continue
        try:
            value = _coerce(p, given[p.name])
        except ValueError as error:
            problems.append(f"parameter {p.name}: {error}")
            continue
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if p.minimum is not None and value < p.minimum:
                problems.append(f"parameter {p.name} = {value} is below its min {p.minimum}")
            if p.maximum is not None and value > p.maximum:
                problems.append(f"parameter {p.name} = {value} is above its max {p.maximum}")
        bound[p.name] = value
    if problems:
        raise LuaStrategyError("; ".join(problems), filename=filename)
    return bound


def _coerce(p: Parameter, value: Any) -> Value | str:
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


# decisions ----------------------------------------------------------------------------------


def _expand(
    assignment: str, times: npt.NDArray[np.int64], changes: Changes, warm: int
) -> DecisionBatch:
    """Turn the change points of one Lua batch into one target per row and the orders."""
    size = len(times)
    target = np.full(size, np.nan)
    if changes.rows:
        starts = np.asarray(changes.rows, dtype=np.int64) - 1 - warm
        kinds = np.asarray(changes.kinds, dtype=np.int64)
        values = np.where(kinds == 1, np.asarray(changes.values, dtype=np.float64), np.nan)
        counts = np.diff(np.append(starts, size))
        target[starts[0] :] = np.repeat(values, counts)
    orders: dict[int, list[OrderIntent]] = {}
    for row in changes.orders:
        orders.setdefault(row[0] - 1 - warm, []).append(_intent(row))
    return DecisionBatch(
        assignment,
        np.asarray(times, dtype=np.int64),
        target,
        {row: tuple(items) for row, items in orders.items()},
    )


def _intent(row: OrderRow) -> OrderIntent:
    _, side, kind, amount, price, stop, tag = row
    return OrderIntent(text(side), text(kind), amount, price, stop, text(tag))  # type: ignore[arg-type]


def _concat(assignment: str, parts: list[DecisionBatch]) -> DecisionBatch:
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
