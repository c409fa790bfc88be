-- sma_cross.lua: long while the fast average is above the slow one, short otherwise.
-- Run it: trader backtest examples/strategies/sma_cross.lua -e demo -s BTC/USD -t 1m
-- Check it: trader strategy check examples/strategies/sma_cross.lua
params = {
  fast = {default = 10, min = 2, max = 50, step = 1, description = "fast SMA period"},
  slow = {default = 30, min = 5, max = 200, step = 1, description = "slow SMA period"},
}

function init(ctx)
  -- indicators live in ctx.state, so snapshots carry them to another worker
  ctx.state.fast = ta.sma(ctx.params.fast)
  ctx.state.slow = ta.sma(ctx.params.slow)
end

function on_candle(ctx, candles)
  local close = candles.close[candles.n]        -- the newest candle is at index candles.n
  local fast = ctx.state.fast:update(close)      -- nil until 10 closes were seen
  local slow = ctx.state.slow:update(close)
  if not slow then return nil end                -- nil: hold (no decision)
  if fast > slow then return 1 end               -- all in long
  return -1                                      -- all in short
end
