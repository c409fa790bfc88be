"""Python strategies in worker processes: the same decisions, and limits that end the worker
(never the caller) as a ``StrategyError``: a CPU hog, a memory bomb, a hang, a crash."""

from __future__ import annotations

import os
import time

import msgpack
import numpy as np
import pytest

from trader.errors import DataError
from trader.interfaces import Limits, Parameter
from trader.model import MINUTE_MS, CandleArrays
from trader_strategy_python import PythonStrategyError, PythonStrategyRuntime, WorkerStrategy

SMA_CROSS = """
params = {"fast": 10, "slow": 30}

def init(ctx):
    ctx.state["fast"] = ta.sma(ctx.params.fast)
    ctx.state["slow"] = ta.sma(ctx.params.slow)

def on_candle(ctx, candles):
    close = candles.close[-1]
    fast = ctx.state["fast"].update(close)
    slow = ctx.state["slow"].update(close)
    if slow is None:
        return None
    if candles.time[-1] // 60_000 % 50 == 0:
        return {"side": "buy", "type": "limit", "amount": 0.1, "price": float(close)}
    return 1 if fast > slow else -1
"""
LIMITS = Limits(None, 64 * 1024 * 1024, 5.0)


def walk(rows: int) -> CandleArrays:
    rng = np.random.default_rng(3)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.001, rows)))
    time_ = 1_577_836_800_000 + np.arange(rows, dtype=np.int64) * MINUTE_MS
    return CandleArrays(time_, close, close * 1.001, close * 0.999, close, np.ones(rows))


def worker(source: str, cpu: float = 0.25, limits: Limits = LIMITS) -> WorkerStrategy:
    return PythonStrategyRuntime(history=200).start_worker(
        source, "w.py", {}, limits, cpu_seconds_per_call=cpu
    )


def test_a_worker_decides_like_the_in_process_strategy_and_moves_its_state() -> None:
    candles = walk(3000)
    runtime = PythonStrategyRuntime(history=200, isolate=True)
    assert runtime.parameters(SMA_CROSS, "w.py") == [Parameter("fast", 10), Parameter("slow", 30)]
    local = runtime.load(SMA_CROSS, "w.py", {"fast": 5}, LIMITS, trusted=True)
    remote = runtime.load(SMA_CROSS, "w.py", {"fast": 5}, LIMITS)
    assert isinstance(remote, WorkerStrategy) and not isinstance(local, WorkerStrategy)
    pid = remote.pid
    assert pid is not None and pid != os.getpid()
    try:
        a = local.on_candles("x", candles.slice(0, 2000), warmup=100)
        b = remote.on_candles("x", candles.slice(0, 2000), warmup=100)
        assert list(a) == list(b) and a.orders
        for i in range(2000, 2300):
            history = candles.slice(0, i + 1)
            assert local.on_candle("x", history) == remote.on_candle("x", history)
        # a snapshot from the worker continues in this process and the other way round
        moved = PythonStrategyRuntime(history=200).load_in_process(SMA_CROSS, "w.py", {"fast": 5})
        moved.restore(remote.snapshot())
        remote.restore(local.snapshot())
        for i in range(2300, 2400):
            history = candles.slice(0, i + 1)
            expected = local.on_candle("x", history)
            assert moved.on_candle("x", history) == expected == remote.on_candle("x", history)
        with pytest.raises(DataError, match="older than the last one"):
            remote.on_candle("x", candles.slice(0, 10))
    finally:
        remote.close()
    assert remote.pid is None
    with pytest.raises(PythonStrategyError, match="stopped"):
        remote.snapshot()


def test_errors_in_a_worker_carry_the_line_and_leave_it_usable() -> None:
    source = (
        "def on_candle(ctx, candles):\n    if len(candles) == 2:\n        {}['x']\n    return 0\n"
    )
    strategy = worker(source)
    try:
        candles = walk(5)
        strategy.on_candle("a", candles.slice(0, 1))
        with pytest.raises(PythonStrategyError) as caught:
            strategy.on_candle("a", candles.slice(0, 2))
        assert str(caught.value) == "w.py:3: KeyError: 'x'"
        assert not caught.value.stopped
        assert strategy.on_candle("a", candles.slice(0, 3)).target == 0.0
    finally:
        strategy.close()
    with pytest.raises(PythonStrategyError, match=r"w\.py:1: SyntaxError"):
        worker("def on_candle(:\n")


@pytest.mark.parametrize(
    "body",
    [
        "while True:\n        pass",
        # catching the limit does not help: it fires again until the call returns
        "while True:\n        try:\n            sum(range(10**6))\n        except BaseException:\n"
        "            pass",
    ],
)
def test_a_cpu_hog_ends_as_a_strategy_error_in_the_parent(body: str) -> None:
    strategy = worker(f"def on_candle(ctx, candles):\n    {body}\n", cpu=0.1)
    pid = strategy.pid
    began = time.process_time()
    with pytest.raises(PythonStrategyError) as caught:
        strategy.on_candle("a", walk(3))
    error = caught.value
    assert (error.limit, error.stopped, error.filename) == ("cpu", True, "w.py")
    assert error.line is not None and error.line >= 2
    assert "CPU-time limit (0.1 s per candle)" in str(error)
    assert time.process_time() - began < 0.5  # the parent only waited
    assert strategy.pid is None and pid is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(PythonStrategyError, match="instance is stopped"):
        strategy.on_candle("a", walk(4))


def test_a_memory_bomb_ends_as_a_strategy_error_at_the_cap() -> None:
    source = (
        "def on_candle(ctx, candles):\n"
        "    hoard = []\n"
        "    while True:\n"
        "        hoard.append(bytearray(8 << 20))\n"
    )
    strategy = worker(source, limits=Limits(None, 64 * 1024 * 1024, 10.0), cpu=5.0)
    with pytest.raises(PythonStrategyError) as caught:
        strategy.on_candle("a", walk(3))
    assert (caught.value.limit, caught.value.stopped, caught.value.line) == ("memory", True, 4)
    assert strategy.pid is None
    # the parent is unharmed and can allocate as before
    assert len(bytearray(128 << 20)) == 128 << 20
    with pytest.raises(PythonStrategyError, match="instance is stopped"):
        strategy.snapshot()


def test_a_one_shot_allocation_over_the_cap_fails_at_load() -> None:
    with pytest.raises(PythonStrategyError) as caught:
        worker("blob = bytes(200 * 1024 * 1024)\n")
    assert (caught.value.limit, caught.value.line) == ("memory", 1)


def test_a_hang_ends_at_the_wall_clock_limit() -> None:
    source = "import time\ndef on_candle(ctx, candles):\n    time.sleep(60)\n"
    strategy = worker(source, limits=Limits(None, None, 0.2))
    began = time.monotonic()
    with pytest.raises(PythonStrategyError) as caught:
        strategy.on_candle("a", walk(3))
    assert time.monotonic() - began < 5
    assert (caught.value.limit, caught.value.stopped) == ("wall", True)
    assert strategy.pid is None


def test_a_worker_that_dies_is_reported_and_stopped() -> None:
    strategy = worker("import os\ndef on_candle(ctx, candles):\n    os._exit(3)\n")
    with pytest.raises(PythonStrategyError, match=r"died \(exit code 3\)") as caught:
        strategy.on_candle("a", walk(3))
    assert caught.value.stopped and caught.value.limit is None


def test_snapshots_of_a_worker_are_the_in_process_format() -> None:
    strategy = worker(SMA_CROSS)
    try:
        strategy.on_candles("a", walk(100))
        document = msgpack.unpackb(strategy.snapshot(), raw=False, strict_map_key=False)
        assert document["language"] == "python" and document["params"] == {"fast": 10, "slow": 30}
        assert set(document["state"]) == {"fast", "slow"}
    finally:
        strategy.close()
