# sma_cross.py: long while the fast average is above the slow one, short otherwise.
# Run it: trader backtest examples/strategies/sma_cross.py -e demo -s BTC/USD -t 1m
# Check it: trader strategy check examples/strategies/sma_cross.py
# `ta` is a global the runtime provides (`from trader_strategy_python import ta` for linters).
params = {
    "fast": {"default": 10, "min": 2, "max": 50, "step": 1, "description": "fast SMA period"},
    "slow": {"default": 30, "min": 5, "max": 200, "step": 1, "description": "slow SMA period"},
}


def init(ctx):
    # indicators live in ctx.state, so snapshots carry them to another worker
    ctx.state["fast"] = ta.sma(ctx.params.fast)  # noqa: F821 - ta is provided by the runtime
    ctx.state["slow"] = ta.sma(ctx.params.slow)  # noqa: F821


def on_candle(ctx, candles):
    close = candles.close[-1]  # the newest candle is the last
    fast = ctx.state["fast"].update(close)  # None until 10 closes were seen
    slow = ctx.state["slow"].update(close)
    if slow is None:
        return None  # None: hold (no decision)
    if fast > slow:
        return 1  # all in long
    return -1  # all in short
