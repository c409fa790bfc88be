"""Python strategies in worker processes under resource limits (ARCHITECTURE §9).

:class:`WorkerStrategy` is a :class:`~trader.interfaces.StrategyInstance` whose strategy runs in
a child process (a fresh interpreter, so nothing of the parent is inherited). The child
limits itself before it runs any strategy code:

* *memory*: ``RLIMIT_AS`` set to the address space the child holds after its imports plus
  ``Limits.memory_bytes``, so a strategy can allocate about that much more; an allocation
  beyond it raises ``MemoryError`` in the child;
* *CPU time per call*: a ``ITIMER_PROF`` timer of ``cpu_seconds_per_call`` (per candle decided
  in the call) raises inside strategy code, so the error carries the strategy's line; it keeps
  firing every 10 ms if the strategy swallows it, and the soft ``RLIMIT_CPU`` (two seconds
  above the call's budget) kills the child with ``SIGXCPU`` if strategy code never returns to
  the interpreter (a long call into C);
* *wall clock per call*: the parent waits ``wall_seconds_per_call`` (per candle) for a reply,
  then kills the child.

Every limit hit, and a child that dies, stops the instance: the parent raises a
:class:`PythonStrategyError` with ``stopped`` true and goes on unharmed; further calls raise.
Messages between the processes are msgpack (never pickle): candle columns as raw bytes.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import socket
import subprocess
import sys
import weakref
from collections.abc import Mapping
from multiprocessing.connection import Connection
from types import FrameType
from typing import Any, NoReturn

import msgpack
import numpy as np

from trader.errors import DataError
from trader.interfaces import DecisionBatch, Limits, Parameter, StrategyInstance
from trader.model import CandleArrays, Decision, OrderIntent
from trader_strategy_python.errors import LimitKind, PythonStrategyError
from trader_strategy_python.runtime import (
    PythonStrategy,
    PythonStrategyRuntime,
    load_module,
    module_parameters,
)

#: How long a new worker may take to start (imports) before the parent gives up.
START_TIMEOUT = 60.0
#: Extra wall-clock seconds a call may take for moving candles between the processes.
WALL_SLACK = 0.5
#: CPU and wall seconds loading a strategy may take at least (running its imports).
LOAD_SECONDS = 10.0
_COLUMNS = ("time", "open", "high", "low", "close", "volume")
_CPU_REARM = 0.01


class WorkerStrategy(StrategyInstance):
    """A Python strategy running in its own worker process under ``limits``.

    The same API as :class:`~trader_strategy_python.runtime.PythonStrategy` (``on_candle``,
    ``on_candles``, ``snapshot``, ``restore``); ``close()`` ends the process.
    ``limits.instructions_per_call`` is ignored (Python has no instruction count).
    """

    def __init__(
        self,
        source: str,
        filename: str,
        params: Mapping[str, Any],
        limits: Limits,
        *,
        cpu_seconds_per_call: float | None,
        history: int = 2000,
        batch_size: int = 65_536,
        max_orders: int = 100,
    ) -> None:
        self.filename = filename
        self.limits = limits
        self._history = history
        self._last_time: int | None = None
        self._window_loaded = False
        self._worker = _Worker(
            filename,
            {
                "memory_bytes": limits.memory_bytes,
                "cpu_seconds": cpu_seconds_per_call,
                "history": history,
                "batch_size": batch_size,
                "max_orders": max_orders,
            },
            limits.wall_seconds_per_call,
        )
        try:
            self._worker.call(1, "load", source, filename, dict(params))
        except BaseException:
            self._worker.close()
            raise

    @property
    def pid(self) -> int | None:
        """The worker process's id (``None`` once it has ended)."""
        return self._worker.pid

    @property
    def stopped(self) -> bool:
        """True after a limit hit or the worker's death: every further call raises."""
        return self._worker.stopped is not None

    def on_candle(self, assignment: str, history: CandleArrays) -> Decision:
        """Decide on the newest candle of ``history`` in the worker (only the candles it needs
        travel)."""
        size = len(history)
        if self._last_time is None:
            first_new = max(0, size - 1)
        else:
            first_new = int(np.searchsorted(history.time, self._last_time, side="right"))
            first_new = min(first_new, max(0, size - 1))
        # the worker keeps its window between calls: then only the new candles travel
        start = first_new if self._window_loaded else max(0, first_new - self._history)
        rows = size - first_new
        reply = self._worker.call(
            rows, "on_candle", assignment, _pack_candles(history.slice(start, size))
        )
        self._last_time = reply[0]
        self._window_loaded = True
        target, orders = reply[2], reply[3]
        return Decision(assignment, reply[1], target, _intents(orders))

    def on_candles(self, assignment: str, candles: CandleArrays, warmup: int = 0) -> DecisionBatch:
        """Decide on every candle of ``candles`` after the first ``warmup`` in the worker (the
        CPU and wall limits scale with the number of candles)."""
        reply = self._worker.call(
            max(1, len(candles) - warmup), "on_candles", assignment, _pack_candles(candles), warmup
        )
        self._last_time = reply[0]
        self._window_loaded = True
        times = np.frombuffer(reply[1], dtype=np.int64).copy()
        target = np.frombuffer(reply[2], dtype=np.float64).copy()
        orders = {row: _intents(items) for row, items in reply[3]}
        return DecisionBatch(assignment, times, target, orders)

    def snapshot(self) -> bytes:
        """The strategy's state, as :meth:`PythonStrategy.snapshot` makes it in the worker."""
        state: bytes = self._worker.call(1, "snapshot")
        return state

    def restore(self, state: bytes) -> None:
        """Restore a :meth:`snapshot` in the worker."""
        self._last_time = self._worker.call(1, "restore", state)
        self._window_loaded = False

    def close(self) -> None:
        """End the worker process."""
        self._worker.close()


def worker_parameters(source: str, filename: str, limits: Limits) -> list[Parameter]:
    """Run ``source`` in a short-lived worker process under ``limits`` and read its ``params``."""
    worker = _Worker(
        filename,
        {"memory_bytes": limits.memory_bytes, "cpu_seconds": None},
        limits.wall_seconds_per_call,
    )
    try:
        rows = worker.call(1, "parameters", source, filename)
    finally:
        worker.close()
    return [Parameter(*row) for row in rows]


# the parent's side --------------------------------------------------------------------------


class _Worker:
    """A child process and the socket to it; :meth:`call` sends one request and waits."""

    def __init__(self, filename: str, config: dict[str, Any], wall: float | None) -> None:
        self.filename = filename
        self.wall = wall
        self.stopped: str | None = None
        ours, theirs = socket.socketpair()
        # a fresh interpreter (not multiprocessing's spawn, which re-runs the main module)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-c", _CHILD_CODE, str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                env=env,
            )
        finally:
            theirs.close()
        self._conn = Connection(ours.detach())
        self._finalizer = weakref.finalize(self, _kill, self._process, self._conn)
        self._conn.send_bytes(msgpack.packb([filename, config], use_bin_type=True))
        if not self._conn.poll(START_TIMEOUT):
            self._fail("wall", f"the worker process did not start within {START_TIMEOUT:.0f} s")
        self._receive()  # "ready"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process.poll() is None else None

    def call(self, rows: int, op: str, *args: Any) -> Any:
        if self.stopped is not None:
            raise PythonStrategyError(
                f"the strategy instance is stopped ({self.stopped}); load it again",
                filename=self.filename,
                stopped=True,
            )
        try:
            self._conn.send_bytes(msgpack.packb([op, *args], use_bin_type=True))
        except OSError:
            self._died()
        timeout = None if self.wall is None else self.wall * rows + WALL_SLACK
        if timeout is not None and op in ("load", "parameters"):
            timeout = max(timeout, LOAD_SECONDS)
        if not self._conn.poll(timeout):
            self._fail(
                "wall",
                f"{op} took longer than {timeout:.2f} s of wall clock; the worker was stopped",
            )
        return self._receive()

    def _receive(self) -> Any:
        try:
            reply = msgpack.unpackb(self._conn.recv_bytes(), raw=False, strict_map_key=False)
        except (EOFError, OSError):
            self._died()
        if reply[0] == "ok":
            return reply[1]
        _, kind, message, line, limit, stopped = reply
        if kind == "data":
            raise DataError(message)
        if kind == "value":
            raise ValueError(message)
        if stopped:
            self.stopped = f"{limit} limit" if limit else "failed"
            self.close()
        raise PythonStrategyError(
            message, filename=self.filename, line=line, limit=limit, stopped=stopped
        )

    def _died(self) -> NoReturn:
        try:
            code = self._process.wait(5)
        except subprocess.TimeoutExpired:
            code = None
        if code == -signal.SIGXCPU:
            self._fail("cpu", "the worker process went over its CPU-time limit and was killed")
        self._fail(None, f"the worker process died (exit code {code})")

    def _fail(self, limit: LimitKind | None, message: str) -> NoReturn:
        self.stopped = f"{limit} limit" if limit else "worker died"
        self.close()
        raise PythonStrategyError(
            f"{message}; the strategy instance is stopped",
            filename=self.filename,
            limit=limit,
            stopped=True,
        )

    def close(self) -> None:
        if self._process.poll() is None and not self._conn.closed:
            with contextlib.suppress(OSError):
                self._conn.send_bytes(msgpack.packb(["close"]))
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(1)
        self._finalizer()
        if self.stopped is None:
            self.stopped = "closed"


_CHILD_CODE = "import sys; from trader_strategy_python.worker import child; child(int(sys.argv[1]))"


def _kill(process: subprocess.Popen[bytes], conn: Connection) -> None:
    if process.poll() is None:
        process.kill()
        process.wait(5)
    conn.close()


def _pack_candles(candles: CandleArrays) -> list[bytes]:
    return [np.ascontiguousarray(getattr(candles, name)).tobytes() for name in _COLUMNS]


def _unpack_candles(columns: list[bytes]) -> CandleArrays:
    return CandleArrays(
        np.frombuffer(columns[0], dtype=np.int64),
        *(np.frombuffer(column, dtype=np.float64) for column in columns[1:]),
    )


def _intents(rows: list[list[Any]]) -> tuple[OrderIntent, ...]:
    return tuple(OrderIntent(o[0], o[1], o[2], o[3], o[4], o[5]) for o in rows)


def _order_rows(orders: tuple[OrderIntent, ...]) -> list[list[Any]]:
    return [[o.side.value, o.type.value, o.amount, o.price, o.stop_price, o.tag] for o in orders]


# the child's side ---------------------------------------------------------------------------


class _CpuLimit(BaseException):
    """Raised in strategy code by the CPU timer (a BaseException: ``except Exception`` in the
    strategy does not catch it)."""


def _address_space() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def child(fd: int) -> None:
    """The worker process's main: read its configuration from the socket ``fd``, limit itself,
    then serve requests until ``close`` or end of file."""
    import resource

    conn = Connection(fd)
    filename, config = msgpack.unpackb(conn.recv_bytes(), raw=False)

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when the worker ends
    memory = config.get("memory_bytes")
    if memory is not None:
        limit = _address_space() + int(memory)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    # freed before a reply about running out of memory, so the reply can be built
    ballast = [bytearray(1 << 20)]
    cpu_per_call: float | None = config.get("cpu_seconds")
    # only the soft limit moves: a lowered hard limit could not be raised for the next call
    cpu_hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
    tripped: list[bool] = []

    def send(reply: list[Any]) -> None:
        conn.send_bytes(msgpack.packb(reply, use_bin_type=True))

    def cpu_error(line: int | None) -> list[Any]:
        message = (
            f"went over its CPU-time limit ({cpu_per_call} s per candle); the strategy instance "
            "is stopped"
        )
        return ["error", "strategy", message, line, "cpu", True]

    def on_timer(signum: int, frame: FrameType | None) -> None:
        tripped.append(True)
        if len(tripped) > 1:
            # the strategy caught the first one: report from here and end the worker
            send(cpu_error(_frame_line(frame, filename)))
            os._exit(1)
        raise _CpuLimit

    signal.signal(signal.SIGPROF, on_timer)
    runtime = PythonStrategyRuntime(
        history=config.get("history", 2000),
        batch_size=config.get("batch_size", 65_536),
        max_orders=config.get("max_orders", 100),
    )
    strategy: PythonStrategy | None = None

    def run(op: str, args: list[Any]) -> Any:
        nonlocal strategy
        if op == "parameters":
            source, name = args
            found = module_parameters(load_module(source, name), name)
            return [[p.name, p.default, p.minimum, p.maximum, p.step, p.description] for p in found]
        if op == "load":
            source, name, params = args
            strategy = runtime.load_in_process(source, name, params)
            return None
        assert strategy is not None
        if op == "on_candle":
            assignment, columns = args
            decision = strategy.on_candle(assignment, _unpack_candles(columns))
            return [
                strategy.last_time,
                decision.time,
                decision.target,
                _order_rows(decision.orders),
            ]
        if op == "on_candles":
            assignment, columns, warmup = args
            batch = strategy.on_candles(assignment, _unpack_candles(columns), warmup)
            return [
                strategy.last_time,
                batch.time.tobytes(),
                batch.target.tobytes(),
                [[row, _order_rows(items)] for row, items in batch.orders.items()],
            ]
        if op == "snapshot":
            return strategy.snapshot()
        if op == "restore":
            strategy.restore(args[0])
            return strategy.last_time
        raise ValueError(f"unknown request {op!r}")

    send(["ok", "ready"])
    while True:
        try:
            request = msgpack.unpackb(conn.recv_bytes(), raw=False, strict_map_key=False)
        except (EOFError, OSError):
            return
        op, args = request[0], request[1:]
        if op == "close":
            return
        rows = 1
        if op == "on_candles":
            rows = max(1, len(args[1][0]) // 8 - args[2])
        elif op == "on_candle" and strategy is not None:
            rows = max(1, _new_rows(args[1][0], strategy.last_time))
        # replies are sent after the except blocks, once the exception and the frames it holds
        # (a memory bomb's hoard) are gone
        reply: list[Any]
        try:
            if cpu_per_call is not None:
                budget = cpu_per_call * rows
                if op in ("load", "parameters"):
                    budget = max(budget, LOAD_SECONDS)
                used = sum(os.times()[:2])
                fence = math.ceil(used + budget) + 2
                resource.setrlimit(resource.RLIMIT_CPU, (fence, cpu_hard))
                signal.setitimer(signal.ITIMER_PROF, budget, _CPU_REARM)
            try:
                result = run(op, args)
            finally:
                if cpu_per_call is not None:
                    signal.setitimer(signal.ITIMER_PROF, 0)
            if tripped:
                raise _CpuLimit
            reply = ["ok", result]
        except _CpuLimit as error:
            reply = cpu_error(_user_line(error, filename))
        except PythonStrategyError as error:
            reply = ["error", "strategy", error.reason, error.line, error.limit, error.stopped]
        except DataError as error:
            reply = ["error", "data", str(error), None, None, False]
        except ValueError as error:
            reply = ["error", "value", str(error), None, None, False]
        except MemoryError:
            reply = ["error", "strategy", "MemoryError (out of memory)", None, "memory", True]
        result = None
        if reply[0] == "error" and reply[4] == "memory":
            ballast.clear()
        send(reply)
        if reply[0] == "error" and reply[5]:
            return


def _frame_line(frame: FrameType | None, filename: str) -> int | None:
    while frame is not None:
        if frame.f_code.co_filename == filename:
            return frame.f_lineno
        frame = frame.f_back
    return None


def _new_rows(times: bytes, last_time: int | None) -> int:
    column = np.frombuffer(times, dtype=np.int64)
    if last_time is None:
        return 1
    return len(column) - int(np.searchsorted(column, last_time, side="right"))


def _user_line(error: BaseException, filename: str) -> int | None:
    line = None
    tb = error.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == filename:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


__all__ = ["WorkerStrategy", "worker_parameters"]
