#!/usr/bin/env bash
# The main job on embedded defaults (no trader.toml): generate a candle set, import it into the
# default SQLite candle store, build hourly candles from it, list what is stored, and backtest
# the example strategy in both languages (the two runs give the same trades and equity), writing
# the Lua run's HTML report (charts, metrics, trades; it loads nothing from the network), then
# sweep the parameters on two local worker processes.
# Data lives in ./.demo (override with TRADER_HOME). Run through `make demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
export TRADER_HOME="${TRADER_HOME:-$PWD/.demo}"
trader=".venv/bin/trader"
mkdir -p "$TRADER_HOME"
csv="$TRADER_HOME/btc-usd-1m.csv"

echo "== trader plugins"
"$trader" plugins
echo "== generating 100,000 one-minute candles into $csv"
"$trader" data generate --timeframe 1m --start 2024-01-01 --count 100000 --seed 42 --output "$csv"
echo "== importing them (a second run changes nothing)"
"$trader" data import "$csv" --exchange demo --symbol BTC/USD --timeframe 1m
echo "== building 1h candles"
"$trader" data resample --exchange demo --symbol BTC/USD --from 1m --to 1h
echo "== stored candles"
"$trader" data list
echo "== backtesting the example SMA crossover, in Lua and in Python, on the hourly candles"
report="$TRADER_HOME/report.html"
"$trader" backtest examples/strategies/sma_cross.lua --exchange demo --symbol BTC/USD --timeframe 1h \
  --report "$report"
"$trader" backtest examples/strategies/sma_cross.py --exchange demo --symbol BTC/USD --timeframe 1h
echo "== sweeping the Python strategy's parameters on two local worker processes"
"$trader" backtest examples/strategies/sma_cross.py --exchange demo --symbol BTC/USD --timeframe 1h \
  --sweep fast=5:20:5 --sweep slow=20:60:20 --workers 2 --sort-by sharpe --top 5
echo "== the Lua run's report: $report (open it in a browser: file://$report)"
