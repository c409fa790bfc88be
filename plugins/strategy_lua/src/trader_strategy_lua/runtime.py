"""The ``lua`` strategy runtime: :class:`LuaStrategyRuntime` loads, :class:`LuaStrategy` runs.

See the plugin README for the strategy API. In short: a file declares ``params``, an optional
``init(ctx)`` and ``on_candle(ctx, candles)``, which returns a target position in [-1, 1], one
order or a list of orders, or ``nil`` to hold.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import msgpack
import numpy as np
import numpy.typing as npt

from trader.errors import DataError
from trader.interfaces import DecisionBatch, Limits, Parameter, StrategyInstance, StrategyRuntime
from trader.model import CandleArrays, Decision, OrderIntent
from trader.strategy_support import (
    bind_parameters,
    concat_batches,
    decision_from_record,
    decision_record,
    declare_parameter,
    expand_changes,
)
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
            # LuaJIT has no integer subtype (a default of 0.0 reads as the int 0): read the
            # declarations on Lua 5.4, as parameters() does, so trust never changes their types
            declared = (
                _parameters(sandbox)
                if sandbox.engine == "lua54"
                else self.parameters(source, filename)
            )
            bound, problems = bind_parameters(declared, params)
            if problems:
                raise LuaStrategyError("; ".join(problems), filename=filename)
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
        batch = concat_batches(assignment, parts)
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
        document = {
            "format": SNAPSHOT_FORMAT,
            "language": "lua",
            "params": self._params,
            "state": dump_state(self._sandbox, self._sandbox.state()),
            "last_time": self._last_time,
            "last": decision_record(self._last),
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
        if (
            not isinstance(document, dict)
            or document.get("format") != SNAPSHOT_FORMAT
            or document.get("language") != "lua"
        ):
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
        self._last = decision_from_record(self._last_time, document.get("last"))
        self._window_loaded = False

    def close(self) -> None:
        """Drop the Lua state."""
        self._sandbox.close()


# parameters ---------------------------------------------------------------------------------


def _parameters(sandbox: Sandbox) -> list[Parameter]:
    raw, problems = sandbox.declarations()
    found: list[Parameter] = []
    for entry in raw:
        name, default, low, high, step, description = (
            text(v) if isinstance(v, bytes) else v for v in entry
        )
        parameter = declare_parameter(str(name), default, low, high, step, description, problems)
        if parameter is not None:
            found.append(parameter)
    if problems:
        raise LuaStrategyError(
            "invalid params declaration: " + "; ".join(problems), filename=sandbox.filename
        )
    return sorted(found, key=lambda p: p.name)


# decisions ----------------------------------------------------------------------------------


def _expand(
    assignment: str, times: npt.NDArray[np.int64], changes: Changes, warm: int
) -> DecisionBatch:
    """Turn the change points of one Lua batch (rows counted from 1) into a batch."""
    orders: dict[int, list[OrderIntent]] = {}
    for row in changes.orders:
        orders.setdefault(row[0] - 1 - warm, []).append(_intent(row))
    return expand_changes(
        assignment,
        times,
        changes.rows,
        changes.kinds,
        changes.values,
        {row: tuple(items) for row, items in orders.items()},
        offset=1 + warm,
    )


def _intent(row: OrderRow) -> OrderIntent:
    _, side, kind, amount, price, stop, tag = row
    return OrderIntent(text(side), text(kind), amount, price, stop, text(tag))  # type: ignore[arg-type]
