"""The commented starter file ``trader config init`` writes.

Lines starting with ``# `` explain; lines starting with ``#`` directly followed by a key or a
``[table]`` are examples, switched off. The active part loads as is (SQLite stores in the default
data directory, paper-safe risk limits, everything in one process); the examples become valid
configuration once uncommented (a test checks both). ``data_dir`` stays commented out, so
writing a starter file never moves where trader looks for data already stored.
"""

from __future__ import annotations

STARTER_TOML = """\
# trader configuration.
#
# Full reference: docs/config-reference.md. Check this file with `trader config check`.
# Relative paths are relative to this file's directory. Keys nobody knows are errors, so a
# typo never goes unnoticed.
#
# Secrets (API keys, passwords, the at-rest key) are never written here. Write a reference:
#   "${ENV_VAR}"      read from the environment variable ENV_VAR
#   "file:PATH"       read from a file (~ expanded; surrounding whitespace removed)
# Lines below that start with "#" directly followed by a key or [table] are examples: remove
# the "#" to switch them on.

# Where components keep their files: the SQLite databases of candles and state, ipc sockets.
# Unset, it is $TRADER_HOME when that variable is set, else your platform's user data folder:
# ~/.local/share/trader on Linux, ~/Library/Application Support/trader on macOS,
# %LOCALAPPDATA%\\trader\\trader on Windows. `trader config check` shows the one in use.
# Setting data_dir points trader at another folder (a relative path is relative to this file's
# directory). Data already stored in the old folder is not moved: it no longer shows until you
# move it there or set data_dir back.
#data_dir = "data"


# --- storage ------------------------------------------------------------------------------
# Candles (OHLCV) and application state (strategies, orders, fills, tasks...), each kept by a
# store plugin chosen by name. "sqlite" is built in; other stores come as plugins
# (pip install trader-storage-timescale gives "timescale"). Keys besides "plugin" are the
# plugin's own options: `trader config check` validates them.
[storage.candles]
plugin = "sqlite"
#path = "candles.sqlite"          # default: candles.sqlite in data_dir

[storage.state]
plugin = "sqlite"
#path = "state.sqlite"            # default: state.sqlite in data_dir

# The key that encrypts secrets kept in the state store (trading-account credentials).
#[storage]
#secret_key = "${TRADER_SECRET_KEY}"


# --- exchanges ----------------------------------------------------------------------------
# One table per trading account. "plugin" defaults to the table's name; install the adapter
# first (pip install trader-exchange-bitfinex). api_key and api_secret must be references.
#[exchanges.bitfinex]
#api_key = "${BITFINEX_API_KEY}"
#api_secret = "file:~/.config/trader/bitfinex.secret"
#
# A second account on the same exchange names its plugin explicitly:
#[exchanges.bitfinex_savings]
#plugin = "bitfinex"
#api_key = "${BITFINEX_SAVINGS_API_KEY}"
#api_secret = "${BITFINEX_SAVINGS_API_SECRET}"


# --- strategies ---------------------------------------------------------------------------
# A strategy is a source file plus default parameters. "runtime" (lua, python...) is inferred
# from .lua and .py; untrusted Lua runs sandboxed, trusted = true allows faster engines.
#[strategies.sma_cross]
#path = "strategies/sma_cross.lua"
#trusted = false
#params = { fast = 10, slow = 30 }


# --- assignments --------------------------------------------------------------------------
# Put a strategy to work on one market of one exchange account, with a share (0 < x <= 1) of
# that account's capital; shares per exchange add up to at most 1. "params" override the
# strategy's. Each assignment gets the id "strategy@exchange:SYMBOL:timeframe" unless it sets
# one. Symbols are unified BASE/QUOTE; timeframes 1m 5m 15m 30m 1h 4h 1d 1w 1M and the like.
#[[assignments]]
#strategy = "sma_cross"
#exchange = "bitfinex"
#symbol = "BTC/USD"
#timeframe = "1h"
#allocation = 0.25
#params = { slow = 50 }


# --- risk ---------------------------------------------------------------------------------
# Safeguards the broker enforces on every order, whatever a strategy asks for.
[risk]
max_orders_per_minute = 60       # across all assignments
max_open_orders = 100            # across all assignments
max_position_fraction = 1.0      # largest position in one market, as a share of equity
#max_daily_loss_fraction = 0.05  # stop opening positions for the day after this loss
kill_switch = false              # true: place no new orders at all (cancels still go out)
quarantine_after_errors = 5      # consecutive worker errors before its assignments pause


# --- schedules ----------------------------------------------------------------------------
# Run a task whenever a scheduler fires. Built-in schedulers and their options:
#   interval      every = "5m", offset = "0s"
#   cron          expression = "0 6 * * *", timezone = "UTC"
#   candle_close  timeframe = "1h", delay = "5s"
# All take start and end (a date-time) too. "args" go to the task.
#[schedules.daily_report]
#scheduler = "cron"
#task = "report.daily"
#expression = "0 6 * * mon-fri"
#timezone = "Europe/London"


# --- cluster ------------------------------------------------------------------------------
# How the services talk. "inproc" runs everything in one process; "ipc" spans processes on
# one host; "tcp" spans hosts and needs CURVE keys (made by `trader keys`). Plaintext TCP is
# refused unless plaintext_tcp = true, and even then only on a loopback address.
[cluster]
transport = "inproc"
workers = 2                      # worker processes started on this host
#broker = "inproc://trader-broker"  # default by transport: inproc://trader-broker,
#                                   # ipc://DATA_DIR/broker.ipc, tcp://127.0.0.1:5555
#keys_dir = "keys"               # CURVE key pairs, required for tcp across hosts
#plaintext_tcp = false
"""
