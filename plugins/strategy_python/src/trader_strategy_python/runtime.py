"""The ``python`` strategy runtime: :class:`PythonStrategyRuntime` loads, :class:`PythonStrategy`
runs in this process, :class:`~trader_strategy_python.worker.WorkerStrategy` in a worker process
under resource limits.

See the plugin README for the strategy API. In short: a ``.py`` file declares ``params``, an
optional ``init(ctx)`` and ``on_candle(ctx, candles)``, which returns a target position in
[-1, 1], one order dict or a list of them, or ``None`` to hold. The API is the Lua runtime's.
"""

from __future__ import annotations

import builtins
import linecache
import math
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import msgpack
import numpy as np
import numpy.typing as npt

from trader.errors import DataError
from trader.interfaces import DecisionBatch, Limits, Parameter, StrategyInstance, StrategyRuntime
from trader.model import CandleArrays, Decision, OrderIntent
from trader.strategy_support import (
    concat_batches,
    decision_from_record,
    decision_record,
    expand_changes,
)
from trader_strategy_python import ta
from trader_strategy_python.errors import PythonStrategyError
from trader_strategy_python.params import Params, Value, bind_parameters, declared_parameters
from trader_strategy_python.state import dump_state, load_state

if TYPE_CHECKING:
    from trader_strategy_python.worker import WorkerStrategy

SNAPSHOT_FORMAT = 1
#: The limits worker processes use when the caller has none: 1 s of wall clock per call (per
#: candle), 256 MiB of memory above what the worker holds before loading the strategy.
#: ``instructions_per_call`` has no meaning for Python and is ignored.
DEFAULT_LIMITS = Limits(None, 256 * 1024 * 1024, 1.0)
#: CPU seconds per call (per candle) in worker processes.
DEFAULT_CPU_SECONDS = 0.25
_COLUMNS = ("time", "open", "high", "low", "close", "volume")
_NUMBER = (int, float, np.integer, np.floating)


class Candles:
    """The candle history a strategy sees, newest last: ``time``, ``open``, ``high``, ``low``,
    ``close`` and ``volume`` are read-only NumPy views ending at the candle being decided on
    (``candles.close[-1]`` is its close), ``candles.n`` and ``len(candles)`` their length."""

    __slots__ = ("_c", "_h", "_l", "_o", "_t", "_v", "n")

    def __init__(self, columns: tuple[npt.NDArray[Any], ...], n: int) -> None:
        self._t, self._o, self._h, self._l, self._c, self._v = columns
        self.n = n

    @property
    def time(self) -> npt.NDArray[np.int64]:
        """Candle open times, ms since the epoch."""
        return self._t[: self.n]

    @property
    def open(self) -> npt.NDArray[np.float64]:
        return self._o[: self.n]

    @property
    def high(self) -> npt.NDArray[np.float64]:
        return self._h[: self.n]

    @property
    def low(self) -> npt.NDArray[np.float64]:
        return self._l[: self.n]

    @property
    def close(self) -> npt.NDArray[np.float64]:
        return self._c[: self.n]

    @property
    def volume(self) -> npt.NDArray[np.float64]:
        return self._v[: self.n]

    def __len__(self) -> int:
        return self.n

    def __repr__(self) -> str:
        return f"Candles(n={self.n})"


class Context:
    """What a strategy gets as ``ctx``: ``params`` (read-only), ``state`` (a dict that persists
    from call to call and is what snapshots save) and ``assignment`` (its name)."""

    __slots__ = ("assignment", "params", "state")

    def __init__(self, params: Params) -> None:
        self.params = params
        self.state: dict[Any, Any] = {}
        self.assignment = ""

    def __repr__(self) -> str:
        return f"Context(assignment={self.assignment!r}, params={dict(self.params)!r})"


# loading --------------------------------------------------------------------------------------


def user_error(error: BaseException, filename: str) -> PythonStrategyError:
    """``error`` (raised by strategy code) as a :class:`PythonStrategyError` whose line is that
    of the innermost frame in ``filename``."""
    if isinstance(error, PythonStrategyError):
        return error
    line: int | None = None
    memory = isinstance(error, MemoryError)
    if isinstance(error, SyntaxError) and error.filename == filename:
        line = error.lineno
    tb = error.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == filename:
            line = tb.tb_lineno
        tb = tb.tb_next
    text = str(error.msg if isinstance(error, SyntaxError) else error)
    message = f"{type(error).__name__}: {text}" if text else type(error).__name__
    if memory:
        return PythonStrategyError(
            f"{message} (out of memory); the strategy instance is stopped",
            filename=filename,
            line=line,
            limit="memory",
            stopped=True,
        )
    return PythonStrategyError(message, filename=filename, line=line)


def load_module(source: str, filename: str) -> dict[str, Any]:
    """Run ``source`` as a module named after ``filename`` (``ta`` is a global) and return its
    namespace; errors become :class:`PythonStrategyError` with the line."""
    try:
        code = compile(source, filename, "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as error:
        raise user_error(error, filename) from None
    # tracebacks show the strategy's lines even when the file is not on disk
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    namespace: dict[str, Any] = {
        "__name__": "trader_strategy",
        "__file__": filename,
        "__builtins__": builtins,
        "ta": ta,
    }
    try:
        exec(code, namespace)  # noqa: S102 - Python strategies are trusted code (ARCHITECTURE §9)
    except (Exception, SystemExit) as error:
        raise user_error(error, filename) from None
    return namespace


def module_parameters(namespace: Mapping[str, Any], filename: str) -> list[Parameter]:
    """The parameters a loaded strategy module declares."""
    return declared_parameters(namespace.get("params"), filename)


class PythonStrategyRuntime(StrategyRuntime):
    """Loads Python strategies: in this process (the fast path of backtests) or in a worker
    process under resource limits (live and paper evaluation).

    ``history`` is how many candles ``on_candle`` sees at least; ``batch_size`` how many
    candles :meth:`PythonStrategy.on_candles` stages at once; ``max_orders`` bounds the orders
    of one decision. ``isolate`` makes :meth:`load` start a worker process for every strategy
    not marked trusted (otherwise :meth:`load` runs strategies in this process, without limits:
    Python strategies are trusted code). ``default_limits`` and ``cpu_seconds_per_call`` are
    the worker limits for callers that have none.
    """

    language = "python"

    def __init__(
        self,
        *,
        history: int = 2000,
        batch_size: int = 65_536,
        max_orders: int = 100,
        isolate: bool = False,
        default_limits: Limits | None = None,
        cpu_seconds_per_call: float | None = DEFAULT_CPU_SECONDS,
    ) -> None:
        self.history = history
        self.batch_size = batch_size
        self.max_orders = max_orders
        self.isolate = isolate
        self.default_limits = default_limits or DEFAULT_LIMITS
        self.cpu_seconds_per_call = cpu_seconds_per_call

    def parameters(self, source: str, filename: str) -> list[Parameter]:
        """Run ``source`` (in a worker process when ``isolate``) and read its ``params``."""
        if self.isolate:
            from trader_strategy_python.worker import worker_parameters

            return worker_parameters(source, filename, self.default_limits)
        return module_parameters(load_module(source, filename), filename)

    def load(
        self,
        source: str,
        filename: str,
        params: Mapping[str, Any],
        limits: Limits,
        trusted: bool = False,
    ) -> PythonStrategy | WorkerStrategy:
        """Load ``source`` with ``params`` and run ``init``: in a worker process under
        ``limits`` when the runtime isolates and the strategy is not ``trusted``, else here."""
        if self.isolate and not trusted:
            return self.start_worker(source, filename, params, limits)
        return self.load_in_process(source, filename, params)

    def load_in_process(
        self, source: str, filename: str, params: Mapping[str, Any]
    ) -> PythonStrategy:
        """Load ``source`` into this process (no limits): the fast path of backtests."""
        namespace = load_module(source, filename)
        bound = bind_parameters(module_parameters(namespace, filename), params, filename)
        return PythonStrategy(
            namespace,
            filename,
            bound,
            history=self.history,
            batch_size=self.batch_size,
            max_orders=self.max_orders,
        )

    def start_worker(
        self,
        source: str,
        filename: str,
        params: Mapping[str, Any],
        limits: Limits | None = None,
        *,
        cpu_seconds_per_call: float | None = None,
    ) -> WorkerStrategy:
        """Load ``source`` in a new worker process under ``limits`` (CPU time per call from
        ``cpu_seconds_per_call``, else the runtime's)."""
        from trader_strategy_python.worker import WorkerStrategy

        return WorkerStrategy(
            source,
            filename,
            params,
            limits or self.default_limits,
            cpu_seconds_per_call=cpu_seconds_per_call or self.cpu_seconds_per_call,
            history=self.history,
            batch_size=self.batch_size,
            max_orders=self.max_orders,
        )


# deciding -------------------------------------------------------------------------------------


class PythonStrategy(StrategyInstance):
    """One Python strategy loaded in this process with its parameters bound.

    Every candle reaches ``on_candle`` once, in time order: :meth:`on_candle` feeds the candles
    of ``history`` newer than the last one seen (the first call takes the earlier ones as
    history only) and answers a repeated call for the same newest candle with the same
    decision, without running the strategy again. After an ordinary error the instance stays
    usable (the failing candle counts as seen).
    """

    def __init__(
        self,
        namespace: dict[str, Any],
        filename: str,
        params: Mapping[str, Value],
        *,
        history: int,
        batch_size: int,
        max_orders: int,
    ) -> None:
        self.filename = filename
        self._namespace = namespace
        self._params = dict(params)
        self._history = history
        self._batch_size = batch_size
        self._max_orders = max_orders
        self._ctx = Context(Params(params))
        self._last_time: int | None = None
        self._last: Decision | None = None
        self._window = _Window(history)
        self._window_loaded = False
        self._stopped: PythonStrategyError | None = None
        init = namespace.get("init")
        if init is not None:
            if not callable(init):
                raise PythonStrategyError(
                    f"init is a {type(init).__name__}, not a function(ctx)", filename=filename
                )
            try:
                init(self._ctx)
            except (Exception, SystemExit) as error:
                raise user_error(error, filename) from None

    @property
    def params(self) -> dict[str, Value]:
        """The bound parameters."""
        return dict(self._params)

    @property
    def last_time(self) -> int | None:
        """The time of the last candle decided on (``None`` before the first)."""
        return self._last_time

    @property
    def stopped(self) -> bool:
        """True after a memory error: every further call raises."""
        return self._stopped is not None

    def _check_usable(self) -> None:
        if self._stopped is not None:
            raise PythonStrategyError(
                f"the strategy instance is stopped ({self._stopped.reason}); load it again",
                filename=self.filename,
                limit=self._stopped.limit,
                stopped=True,
            )

    def on_candle(self, assignment: str, history: CandleArrays) -> Decision:
        """Decide on the newest candle of ``history`` (see the class for how candles are fed)."""
        self._check_usable()
        if not len(history):
            raise DataError(f"{self.filename}: on_candle needs at least one candle")
        newest = int(history.time[-1])
        first_new = len(history) - 1
        if self._last_time is not None:
            if newest == self._last_time:
                if self._last is None:
                    raise PythonStrategyError(
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
            first_new = int(np.searchsorted(history.time, self._last_time, side="right"))
        if not self._window_loaded:
            start = max(0, first_new - self._history)
            self._window.replace([getattr(history, name)[start:first_new] for name in _COLUMNS])
            self._window_loaded = True
        if first_new < len(history) - 1:
            batch = self.on_candles(assignment, history.slice(first_new, len(history)))
            return batch.decision(len(batch) - 1)
        # the live path: one new candle, appended to the window in place
        on_candle = self._namespace.get("on_candle")
        if not callable(on_candle):
            raise PythonStrategyError(
                "the strategy defines no function on_candle(ctx, candles)", filename=self.filename
            )
        self._window.append(
            newest,
            history.open[-1],
            history.high[-1],
            history.low[-1],
            history.close[-1],
            history.volume[-1],
        )
        self._ctx.assignment = assignment
        self._last_time, self._last = newest, None  # consumed, even if it fails
        try:
            r = on_candle(self._ctx, self._window.view)
        except (Exception, SystemExit) as error:
            raise self._failure(error) from None
        if r is None:
            decision = Decision(assignment, newest)
        elif ((t := type(r)) is float or t is int) and -1 <= r <= 1:
            decision = Decision(assignment, newest, float(r))
        else:
            kind, value, orders = self._slow(r)
            decision = Decision(assignment, newest, value if kind == 1 else None, orders)
        self._last = decision
        return decision

    def _failure(self, error: BaseException) -> PythonStrategyError:
        failure = user_error(error, self.filename)
        if failure.stopped:
            # a fresh copy: the raised one holds the failing frames (a memory hoard) alive
            self._stopped = PythonStrategyError(
                failure.reason, filename=self.filename, limit=failure.limit, stopped=True
            )
        return failure

    def on_candles(self, assignment: str, candles: CandleArrays, warmup: int = 0) -> DecisionBatch:
        """Decide on every candle of ``candles`` after the first ``warmup``, in one pass.

        The batch path of backtests. The first ``warmup`` candles only fill the history window.
        Candles must be newer than any seen before, in time order. On an error, the candles up
        to the one that failed have been decided on (their decisions are lost with the
        exception).
        """
        self._check_usable()
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
        on_candle = self._namespace.get("on_candle")
        if size > warmup and not callable(on_candle):
            raise PythonStrategyError(
                "the strategy defines no function on_candle(ctx, candles)", filename=self.filename
            )
        self._ctx.assignment = assignment
        self._window_loaded = True
        parts: list[DecisionBatch] = []
        start = max(0, warmup - self._history)
        while start < size:
            stop = min(size, start + self._batch_size)
            warm = max(0, min(warmup, stop) - start)
            parts.append(self._batch(assignment, candles.slice(start, stop), warm, on_candle))
            start = stop
        batch = concat_batches(assignment, parts)
        if len(batch):
            self._last_time = int(batch.time[-1])
            self._last = batch.decision(len(batch) - 1)
        elif size:
            self._last_time = int(times[-1])
        return batch

    def _batch(
        self, assignment: str, chunk: CandleArrays, warm: int, on_candle: Any
    ) -> DecisionBatch:
        """Append ``chunk`` to the window and decide on its rows after ``warm``."""
        window = self._window.held()
        held = len(window[0])
        columns = []
        for old, name in zip(window, _COLUMNS, strict=True):
            column = np.concatenate([old, getattr(chunk, name)])
            column.flags.writeable = False
            columns.append(column)
        first = held + warm
        end = len(columns[0])
        view = Candles(tuple(columns), first)
        ctx = self._ctx
        rows: list[int] = []
        kinds: list[int] = []
        values: list[float] = []
        orders: dict[int, tuple[OrderIntent, ...]] = {}
        last_kind, last_value = -1, 0.0
        i = first
        try:
            for i in range(first, end):
                view.n = i + 1
                r = on_candle(ctx, view)
                if r is None:
                    kind, value = 0, 0.0
                elif ((t := type(r)) is float or t is int) and -1 <= r <= 1:
                    kind, value = 1, r
                else:
                    kind, value, found = self._slow(r)
                    if kind == 2:
                        orders[i - first] = found
                if kind != last_kind or value != last_value:
                    rows.append(i - first)
                    kinds.append(kind)
                    values.append(value)
                    last_kind, last_value = kind, value
                if kind == 2:
                    last_kind = -1
        except (Exception, SystemExit) as error:
            # the candles up to the failing one are consumed
            self._window.replace([c[: i + 1] for c in columns])
            self._last_time, self._last = int(columns[0][i]), None
            raise self._failure(error) from None
        self._window.replace(columns)
        return expand_changes(assignment, chunk.time[warm:], rows, kinds, values, orders)

    def _slow(self, r: object) -> tuple[int, float, tuple[OrderIntent, ...]]:
        """The uncommon results: NumPy numbers, orders, or something that is no decision."""
        if isinstance(r, _NUMBER) and not isinstance(r, (bool, np.bool_)):
            value = float(r)
            if -1 <= value <= 1:
                return 1, value, ()
            self._reject(f"on_candle returned {value}; a target position must be within [-1, 1]")
        if isinstance(r, (dict, list, tuple)):
            found = self._orders(r)
            if not found:
                return 0, 0.0, ()
            return 2, float(len(found)), found
        self._reject(
            f"on_candle returned a {type(r).__name__}; return a number in [-1, 1], an order "
            "dict, a list of them or None"
        )
        raise AssertionError  # pragma: no cover

    def _reject(self, message: str) -> None:
        raise PythonStrategyError(message, filename=self.filename)

    def _orders(self, r: dict[Any, Any] | list[Any] | tuple[Any, ...]) -> tuple[OrderIntent, ...]:
        items = [r] if isinstance(r, dict) else list(r)
        if len(items) > self._max_orders:
            self._reject(f"more than {self._max_orders} orders in one decision")
        found: list[OrderIntent] = []
        for j, o in enumerate(items, 1):
            if not isinstance(o, dict):
                self._reject(f"order {j} is a {type(o).__name__}, not a dict")
            side = o.get("side")
            if side not in ("buy", "sell"):
                self._reject(f'order {j}: side must be "buy" or "sell"')
            kind = o.get("type", "market")
            if kind not in ("market", "limit", "stop"):
                self._reject(f'order {j}: type must be "market", "limit" or "stop"')
            amount = self._number(o, "amount", j)
            if amount is None:
                self._reject(f"order {j}: amount is missing")
            price = self._number(o, "price", j)
            stop = self._number(o, "stop_price", j)
            if stop is None:
                stop = self._number(o, "stop", j)
            if kind == "limit" and price is None:
                self._reject(f"order {j}: a limit order needs a price")
            if kind == "stop" and stop is None:
                self._reject(f"order {j}: a stop order needs stop_price")
            tag = o.get("tag", "")
            if not isinstance(tag, str):
                self._reject(f"order {j}: tag must be a string")
            assert amount is not None
            found.append(OrderIntent(side, kind, amount, price, stop, tag))  # type: ignore[arg-type]
        return tuple(found)

    def _number(self, o: dict[Any, Any], name: str, j: int) -> float | None:
        v = o.get(name)
        if v is None:
            return None
        if (
            not isinstance(v, _NUMBER)
            or isinstance(v, (bool, np.bool_))
            or not math.isfinite(v)
            or v <= 0
        ):
            self._reject(f"order {j}: {name} must be a finite number above zero")
        return float(v)

    # state ------------------------------------------------------------------------------------

    def snapshot(self) -> bytes:
        """``ctx.state``, the bound parameters and the last decision, as msgpack bytes."""
        self._check_usable()
        state = self._ctx.state
        if not isinstance(state, dict):
            raise PythonStrategyError(
                f"ctx.state is a {type(state).__name__}; it must stay a dict",
                filename=self.filename,
            )
        document = {
            "format": SNAPSHOT_FORMAT,
            "language": "python",
            "params": self._params,
            "state": dump_state(state, self.filename),
            "last_time": self._last_time,
            "last": decision_record(self._last),
        }
        packed: bytes = msgpack.packb(document, use_bin_type=True)
        return packed

    def restore(self, state: bytes) -> None:
        """Replace ``ctx.state`` and the last decision by those of a :meth:`snapshot`.

        The snapshot must come from the same strategy loaded with the same parameters.
        """
        self._check_usable()
        try:
            document = msgpack.unpackb(state, raw=False, strict_map_key=False)
        except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
            raise PythonStrategyError(
                "the snapshot is not valid msgpack", filename=self.filename
            ) from None
        if (
            not isinstance(document, dict)
            or document.get("format") != SNAPSHOT_FORMAT
            or document.get("language") != "python"
        ):
            raise PythonStrategyError(
                "the snapshot is not a Python strategy snapshot of format 1",
                filename=self.filename,
            )
        if document.get("params") != self._params:
            raise PythonStrategyError(
                f"the snapshot was taken with parameters {document.get('params')}, this instance "
                f"has {self._params}; load the strategy with the snapshot's parameters",
                filename=self.filename,
            )
        restored = load_state(document.get("state"), self.filename)
        if not isinstance(restored, dict):
            raise PythonStrategyError("the snapshot's state is not a dict", filename=self.filename)
        self._ctx.state = restored
        self._last_time = document.get("last_time")
        self._last = decision_from_record(self._last_time, document.get("last"))
        self._window.n = 0
        self._window_loaded = False


# batches --------------------------------------------------------------------------------------


class _Window:
    """The newest candles seen, at least ``history`` of them, in buffers of ``history`` +
    max(``history``, 256) rows: the live path appends one candle in place, and compacts (keeps
    the newest ``history``) when the buffers are full, amortised O(1) per candle."""

    def __init__(self, history: int) -> None:
        self.history = history
        size = history + max(history, 256)
        self.buffers: tuple[npt.NDArray[Any], ...] = (
            np.zeros(size, np.int64),
            *(np.zeros(size, np.float64) for _ in range(5)),
        )
        readonly = []
        for buffer in self.buffers:
            alias = buffer.view()
            alias.flags.writeable = False
            readonly.append(alias)
        self.view = Candles(tuple(readonly), 0)
        self.n = 0

    def held(self) -> tuple[npt.NDArray[Any], ...]:
        """The newest ``history`` candles (views into the buffers)."""
        start = max(0, self.n - self.history)
        return tuple(buffer[start : self.n] for buffer in self.buffers)

    def replace(self, columns: list[npt.NDArray[Any]]) -> None:
        """Hold the newest ``history`` rows of ``columns`` instead."""
        keep = min(len(columns[0]), self.history)
        for buffer, column in zip(self.buffers, columns, strict=True):
            buffer[:keep] = column[len(column) - keep :]
        self.n = keep

    def append(
        self, time: int, open_: float, high: float, low: float, close: float, volume: float
    ) -> None:
        """Add one candle; ``view`` then ends at it."""
        n = self.n
        bt, bo, bh, bl, bc, bv = self.buffers
        if n == len(bt):
            keep = self.history
            for buffer in self.buffers:
                buffer[:keep] = buffer[n - keep : n]
            n = keep
        bt[n], bo[n], bh[n], bl[n], bc[n], bv[n] = time, open_, high, low, close, volume
        self.n = self.view.n = n + 1
