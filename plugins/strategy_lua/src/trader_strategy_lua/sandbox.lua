-- The privileged half of the trader Lua sandbox.
--
-- Python runs this chunk once per strategy instance, in a fresh Lua state that still has the
-- whole standard library. It captures what it needs as local variables, builds the restricted
-- environment strategy code runs in, and returns the control table the Python side drives.
-- Nothing defined here is reachable from strategy code, which sees only `env`.
--
-- Rules this file keeps, because strategy code can put metamethods on its own values:
-- * code that runs on the main thread (the `ctl` functions Python calls) never compares,
--   concatenates, indexes or converts a strategy value except with raw operations and type();
-- * strategy code runs only on threads that carry the limit hook: the worker thread and the
--   coroutines it creates through the wrapped `coroutine` library;
-- * no method syntax on strings: the string metatable's __index is the sandbox's own table.

local config = ...

local type, rawget, rawset, rawequal, next, select = type, rawget, rawset, rawequal, next, select
local tostring, error, pcall, xpcall = tostring, error, pcall, xpcall
local setmetatable, getmetatable = setmetatable, getmetatable
local collectgarbage = collectgarbage
local raw_load = load
local d_sethook, d_getinfo, d_getmetatable = debug.sethook, debug.getinfo, debug.getmetatable
local co_create, co_resume, co_yield = coroutine.create, coroutine.resume, coroutine.yield
local co_status, co_running, co_close = coroutine.status, coroutine.running, coroutine.close
local co_isyieldable = coroutine.isyieldable
local s_rep, s_sub, s_find, s_len = string.rep, string.sub, string.find, string.len
local t_concat, t_insert, t_remove, t_sort = table.concat, table.insert, table.remove, table.sort
local t_move = table.move
local t_unpack = table.unpack or unpack
local huge = math.huge

local HOOKS = config.hooks            -- false for trusted strategies (LuaJIT): no limit hook
local STEP = config.step              -- instructions between two runs of the hook
local clock = config.clock            -- wall clock, seconds (Python's time.perf_counter)
local cpu_clock = config.cpu_clock    -- this thread's CPU time, seconds (time.thread_time)
local HISTORY = config.history        -- candles kept in the history window, at least
local MAX_ORDERS = config.max_orders  -- explicit orders one decision may hold
local MEMERR = "not enough memory"

-- limits ------------------------------------------------------------------------------------

local budget_limit = huge   -- instructions per call (per candle in a batch)
local wall_limit = huge     -- wall-clock seconds per call (per candle in a batch)
local cpu_limit = huge      -- CPU seconds per call (per candle in a batch)
local timed = false         -- whether either time limit is set
local budget = huge
-- seq counts calls and candles; the hook times the current one from (wall_at, cpu_at)
local seq, seen_seq, started, wall_at, cpu_at = 0, -1, false, 0, 0
local tripped = nil          -- "instructions" | "wall" | "cpu" | "memory" once a limit was hit
local trip_line = nil
local TRIP_MESSAGE = "strategy stopped: resource limit reached"
local threads = setmetatable({}, { __mode = "k" })  -- every thread strategy code may run on
local user_source = nil      -- "@" .. file name of the strategy chunk

local function user_line(co, level)
  -- The current line of the innermost frame of the strategy's own file.
  for lv = level, level + 250 do
    local info
    if co then info = d_getinfo(co, lv, "Sl") else info = d_getinfo(lv, "Sl") end
    if not info then return nil end
    if info.source == user_source and info.currentline and info.currentline > 0 then
      return info.currentline
    end
  end
  return nil
end

local hook

local function trip(kind, co)
  if not tripped then
    tripped = kind
    trip_line = user_line(co, co and 0 or 2)
  end
  if HOOKS then
    -- From now on every instruction of every strategy thread fails, so no pcall, xpcall,
    -- error handler, __close handler or coroutine can keep strategy code running.
    for th in next, threads do d_sethook(th, hook, "", 1) end
  end
  error(TRIP_MESSAGE, 0)
end

hook = function()
  if tripped then error(TRIP_MESSAGE, 0) end
  local b = budget - STEP
  budget = b
  if b <= 0 then return trip("instructions") end
  if timed then
    -- The clocks are read only for a candle that is still running at its second hook run (a
    -- candle of a batch is timed from there; a single call from its start): short candles,
    -- the common case, never pay for them.
    if seq ~= seen_seq then
      seen_seq = seq
      started = false
    elseif not started then
      started = true
      wall_at, cpu_at = clock(), cpu_clock()
    elseif cpu_clock() - cpu_at > cpu_limit then
      return trip("cpu")
    elseif clock() - wall_at > wall_limit then
      return trip("wall")
    end
  end
end

local function charge(units)
  -- Charge work done inside one C function (copying a long string, shifting a long array) to
  -- the instruction budget, so a loop of cheap-looking calls cannot outrun it.
  if HOOKS then
    local b = budget - units
    budget = b
    if b <= 0 then return trip("instructions") end
  end
end

local function new_thread(f)
  local co = co_create(f)
  threads[co] = true
  if HOOKS then d_sethook(co, hook, "", tripped and 1 or STEP) end
  return co
end

local function check_failure(ok, ...)
  if not ok then
    if tripped then error(TRIP_MESSAGE, 0) end
    local e = ...
    if type(e) == "string" and e == MEMERR then trip("memory") end
  end
  return ok, ...
end

-- the environment strategy code sees ---------------------------------------------------------

local env = {}
env._G = env
env._VERSION = _VERSION
for _, name in next, {
  "assert", "error", "ipairs", "next", "pairs", "select", "tonumber", "tostring", "type",
  "rawequal", "rawget", "rawset", "rawlen", "getmetatable",
} do
  env[name] = _G[name]
end

env.pcall = function(f, ...) return check_failure(pcall(f, ...)) end
-- xpcall runs its message handler after the error has unwound, as an ordinary call. Lua runs
-- a real message handler inside the dynamic extent of whatever raised the error; when that is
-- the limit hook, hooks are still disabled, and the handler could loop forever unhooked.
local function handled(handler, ok, ...)
  if ok then return true, ... end
  if tripped then error(TRIP_MESSAGE, 0) end
  local e = ...
  if type(e) == "string" and e == MEMERR then trip("memory") end
  return false, handler(e)
end
env.xpcall = function(f, handler, ...) return handled(handler, pcall(f, ...)) end

env.setmetatable = function(t, mt)
  if type(mt) == "table" and rawget(mt, "__gc") ~= nil then
    error("setmetatable: __gc metamethods are not available to strategies", 2)
  end
  return setmetatable(t, mt)
end

env.collectgarbage = function(option)
  if option == "count" then return collectgarbage("count") end
  error('collectgarbage: strategies may only ask collectgarbage("count")', 2)
end

local log, log_n, log_dropped = {}, 0, 0
env.print = function(...)
  local parts = {}
  for i = 1, select("#", ...) do parts[i] = tostring((select(i, ...))) end
  local line = t_concat(parts, "\t")
  if s_len(line) > 2000 then line = s_sub(line, 1, 2000) .. "..." end
  if log_n < 1000 then
    log_n = log_n + 1
    log[log_n] = line
  else
    log_dropped = log_dropped + 1
  end
end

local sandbox_math = {}
for k, v in next, math do sandbox_math[k] = v end
env.math = sandbox_math

local sandbox_string = {}
for _, name in next, { "byte", "char", "format", "len", "lower", "upper", "reverse", "sub" } do
  sandbox_string[name] = string[name]
end
sandbox_string.rep = function(s, n, sep)
  -- string.rep("", 2^53) loops 2^53 times inside one C call: answer it without the loop.
  if type(s) == "string" and type(n) == "number" and n > 0 then
    local unit = s_len(s) + (type(sep) == "string" and s_len(sep) or 0)
    if unit == 0 then return "" end
    if n * unit > 16 then charge(n * unit / 16) end
  end
  return s_rep(s, n, sep)
end
sandbox_string.find = function(s, needle, init, plain)
  if plain ~= true then
    error("string.find: patterns are not available to strategies; pass plain = true", 2)
  end
  if type(s) == "string" and type(needle) == "string" then charge(s_len(s) * s_len(needle) / 16) end
  return s_find(s, needle, init, true)
end
env.string = sandbox_string

local function no_metatable(t, fname)
  if type(t) ~= "table" then error("bad argument #1 to '" .. fname .. "' (table expected)", 3) end
  if d_getmetatable(t) ~= nil then
    error("table." .. fname .. ": tables with a metatable are not supported by strategies", 3)
  end
end
local sandbox_table = {}
sandbox_table.unpack = t_unpack
sandbox_table.pack = table.pack
sandbox_table.concat = function(t, sep, i, j)
  local s = t_concat(t, sep, i, j)
  charge(s_len(s) / 16)
  return s
end
sandbox_table.insert = function(t, ...)
  no_metatable(t, "insert")
  charge(#t / 8)
  return t_insert(t, ...)
end
sandbox_table.remove = function(t, ...)
  no_metatable(t, "remove")
  charge(#t / 8)
  return t_remove(t, ...)
end
local function less(a, b) return a < b end
sandbox_table.sort = function(t, comp)
  no_metatable(t, "sort")
  -- a Lua comparator keeps the limit hook running during the sort
  return t_sort(t, comp or less)
end
env.table = sandbox_table

local function sb_create(f)
  if type(f) ~= "function" then error("bad argument #1 to 'create' (function expected)", 2) end
  return new_thread(f)
end
env.coroutine = {
  create = sb_create,
  resume = function(co, ...) return check_failure(co_resume(co, ...)) end,
  yield = co_yield,
  status = co_status,
  running = co_running,
  isyieldable = co_isyieldable,
  close = co_close,
}
local function wrap_result(ok, ...)
  if ok then return ... end
  if tripped then error(TRIP_MESSAGE, 0) end
  local e = ...
  if type(e) == "string" and e == MEMERR then trip("memory") end
  error(e, 0)
end
env.coroutine.wrap = function(f)
  local co = sb_create(f)
  return function(...) return wrap_result(co_resume(co, ...)) end
end

-- Strings index the sandbox's string table and hide their metatable, so ("").dump and
-- getmetatable("").__index reach nothing the sandbox does not list.
do
  local smt = getmetatable("")
  smt.__index = sandbox_string
  smt.__metatable = false
end

-- ta: incremental indicators ----------------------------------------------------------------
-- Each indicator is a plain table of numbers with a locked metatable; snapshots store the
-- fields and the kind, and restore re-attaches the metatable. The arithmetic is trader.ta's
-- (core/src/trader/ta.py), operation for operation, so Lua and Python readings are identical
-- bit for bit; the definitions are TA-Lib's (docs/ta.md). Inputs are made floats (x * 1.0) so
-- integer arguments cannot take Lua's integer arithmetic.

local ta = {}
local KIND_OF = {}   -- metatable -> kind
local META = {}      -- kind -> metatable
local sqrt, abs, tointeger = math.sqrt, math.abs, math.tointeger

local function indicator(kind, methods)
  local mt = { __index = methods, __metatable = "ta." .. kind }
  KIND_OF[mt] = kind
  META[kind] = mt
  return mt
end

local function period_arg(name, p, low, what)
  low = low or 1
  if type(p) ~= "number" or p < low or p % 1 ~= 0 or p > 1e6 then
    error("ta." .. name .. ": " .. (what or "period") .. " must be a whole number from "
      .. low .. " to 1000000", 3)
  end
  return tointeger and tointeger(p) or p
end

local function factor_arg(name, v, what)
  if type(v) ~= "number" or v ~= v or v < 0 or v == huge then
    error("ta." .. name .. ": " .. what .. " must be a finite number >= 0", 3)
  end
  return v * 1.0
end

-- SMA: TA-Lib's running total of the newest period - 1 values, added to before the reading
-- and subtracted from after it.
local SMA = {}
local SMA_MT = indicator("sma", SMA)
function SMA.update(self, x)
  x = x * 1.0
  local p = self.period
  local buf = self.buf
  local pos = self.pos
  buf[pos] = x
  pos = pos + 1
  if pos > p then pos = 1 end
  self.pos = pos
  local total = self.sum + x
  if self.count < p then
    local count = self.count + 1
    self.count = count
    if count < p then
      self.sum = total
      return nil
    end
  end
  self.sum = total - buf[pos]   -- buf[pos]: the oldest value of the window
  local v = total / p
  self.value = v
  return v
end
local function new_sma(p)
  return setmetatable({ period = p, pos = 1, count = 0, sum = 0.0, buf = {} }, SMA_MT)
end
function ta.sma(p)
  return new_sma(period_arg("sma", p))
end

-- EMA: seeded with the simple average of the first `period` values (TA-Lib's default), then
-- value = (x - value) * k + value with k = 2 / (period + 1).
local EMA = {}
local EMA_MT = indicator("ema", EMA)
function EMA.update(self, x)
  x = x * 1.0
  local v = self.value
  if v then
    v = (x - v) * self.k + v
    self.value = v
    return v
  end
  local count = self.count + 1
  self.count = count
  local sum = self.sum + x
  self.sum = sum
  if count == self.period then
    v = sum / count
    self.value = v
    return v
  end
  return nil
end
function ta.ema(p)
  p = period_arg("ema", p)
  return setmetatable({ period = p, k = 2 / (p + 1), count = 0, sum = 0.0 }, EMA_MT)
end

-- WMA: weights 1..period, TA-Lib's two running sums.
local WMA = {}
local WMA_MT = indicator("wma", WMA)
function WMA.update(self, x)
  x = x * 1.0
  local p = self.period
  if p == 1 then
    self.value = x
    return x
  end
  local buf = self.buf
  local pos = self.pos
  buf[pos] = x
  pos = pos + 1
  if pos > p then pos = 1 end
  self.pos = pos
  if self.count < p then
    local count = self.count + 1
    self.count = count
    if count < p then
      self.sub = self.sub + x
      self.sum = self.sum + x * count
      return nil
    end
  end
  local sub = self.sub + x
  sub = sub - self.trailing
  local total = self.sum + x * p
  self.trailing = buf[pos]
  local v = total / (p * (p + 1) / 2)
  self.sum = total - sub
  self.sub = sub
  self.value = v
  return v
end
function ta.wma(p)
  p = period_arg("wma", p)
  return setmetatable(
    { period = p, pos = 1, count = 0, sum = 0.0, sub = 0.0, trailing = 0.0, buf = {} }, WMA_MT)
end

-- RSI: Wilder's smoothing as TA-Lib computes it; the first value needs period + 1 inputs.
local RSI = {}
local RSI_MT = indicator("rsi", RSI)
function RSI.update(self, x)
  x = x * 1.0
  local prev = self.prev
  self.prev = x
  if prev == nil then return nil end
  local p = self.period
  local diff = x - prev
  local count = self.count + 1
  self.count = count
  local gain, loss = self.gain, self.loss
  if count > p then
    gain = gain * (p - 1)
    loss = loss * (p - 1)
  end
  if diff < 0 then loss = loss - diff else gain = gain + diff end
  if count < p then
    self.gain, self.loss = gain, loss
    return nil
  end
  gain = gain / p
  loss = loss / p
  self.gain, self.loss = gain, loss
  local total = gain + loss
  local v = 0.0
  if total ~= 0.0 then v = 100 * (gain / total) end
  self.value = v
  return v
end
function ta.rsi(p)
  if p == nil then p = 14 end
  p = period_arg("rsi", p)
  return setmetatable({ period = p, count = 0, gain = 0.0, loss = 0.0 }, RSI_MT)
end

-- MACD: both EMAs seeded, like TA-Lib, with simple averages ending at the `slow`-th value.
local MACD = {}
local MACD_MT = indicator("macd", MACD)
function MACD.update(self, x)
  x = x * 1.0
  local count = self.count + 1
  self.count = count
  local slow = self.slow
  local f, s
  if count > slow then
    f = (x - self.fast_ema) * self.kf + self.fast_ema
    s = (x - self.slow_ema) * self.ks + self.slow_ema
    self.fast_ema, self.slow_ema = f, s
  else
    local fast = self.fast
    local buf = self.buf
    buf[(count - 1) % fast + 1] = x
    local total = self.slow_sum + x
    self.slow_sum = total
    if count < slow then return nil end
    s = total / slow
    local start = count % fast   -- the oldest of the last `fast` values, 0-based
    local fsum = 0.0
    for i = 0, fast - 1 do fsum = fsum + buf[(start + i) % fast + 1] end
    f = fsum / fast
    self.fast_ema, self.slow_ema = f, s
    self.buf = {}
  end
  local m = f - s
  local n = self.signal_period
  local sig = self.signal
  if sig ~= nil then
    sig = (m - sig) * self.ksig + sig
  else
    local seen = count - slow + 1
    local total = self.signal_sum + m
    self.signal_sum = total
    if seen < n then return nil end
    sig = total / n
  end
  local hist = m - sig
  self.value, self.macd = m, m
  self.signal = sig
  self.hist = hist
  return m, sig, hist
end
function ta.macd(fast, slow, signal)
  if fast == nil then fast = 12 end
  if slow == nil then slow = 26 end
  if signal == nil then signal = 9 end
  fast = period_arg("macd", fast, 2, "fast")
  slow = period_arg("macd", slow, 2, "slow")
  signal = period_arg("macd", signal, 1, "signal")
  if slow < fast then fast, slow = slow, fast end
  return setmetatable({
    fast = fast, slow = slow, signal_period = signal,
    kf = 2 / (fast + 1), ks = 2 / (slow + 1), ksig = 2 / (signal + 1),
    count = 0, slow_sum = 0.0, fast_ema = 0.0, slow_ema = 0.0, signal_sum = 0.0, buf = {},
  }, MACD_MT)
end

-- STDDEV / BBANDS: the population variance of the window from running sums of deviations from
-- a shift, re-anchored at the window's mean when the variance falls below 1e-3 of the mean
-- squared deviation or every 32 * period values (trader.ta._Deviation); a flat window is 0.
local function new_deviation(p, fields)
  fields.period, fields.pos, fields.count, fields.shift = p, 1, 0, 0.0
  fields.s1, fields.s2, fields.since, fields.run, fields.buf = 0.0, 0.0, 0, 0, {}
  return fields
end
local function variance_update(self, x)
  local p = self.period
  local buf = self.buf
  local pos = self.pos
  buf[pos] = x
  pos = pos + 1
  if pos > p then pos = 1 end
  self.pos = pos
  if x == self.last then
    if self.run < p then self.run = self.run + 1 end
  else
    self.last = x
    self.run = 1
  end
  if self.count == 0 then self.shift = x end
  local d = x - self.shift
  local s1 = self.s1 + d
  local s2 = self.s2 + d * d
  if self.count < p then
    local count = self.count + 1
    self.count = count
    if count < p then
      self.s1, self.s2 = s1, s2
      return nil
    end
  end
  local var
  if self.run >= p then
    var = 0.0
  else
    local m1 = s1 / p
    local m2 = s2 / p
    var = m2 - m1 * m1
    local since = self.since + 1
    self.since = since
    if var < 1e-3 * m2 or since >= 32 * p then
      local total = 0.0
      for i = 1, p do total = total + buf[i] end
      local k = total / p
      s1, s2 = 0.0, 0.0
      for i = 1, p do
        local e = buf[i] - k
        s1 = s1 + e
        s2 = s2 + e * e
      end
      self.shift = k
      self.since = 0
      m1 = s1 / p
      var = s2 / p - m1 * m1
    end
    if var < 0.0 then var = 0.0 end
  end
  local old = buf[pos] - self.shift
  self.s1 = s1 - old
  self.s2 = s2 - old * old
  return var
end

local STDDEV = {}
local STDDEV_MT = indicator("stddev", STDDEV)
function STDDEV.update(self, x)
  local var = variance_update(self, x * 1.0)
  if var == nil then return nil end
  local v = sqrt(var) * self.nbdev
  self.value = v
  return v
end
function ta.stddev(p, nbdev)
  p = period_arg("stddev", p)
  if nbdev == nil then nbdev = 1.0 end
  nbdev = factor_arg("stddev", nbdev, "nbdev")
  return setmetatable(new_deviation(p, { nbdev = nbdev }), STDDEV_MT)
end

-- BBANDS: the SMA (TA-Lib's running total) and the deviation above; returns upper, mid, lower.
local BBANDS = {}
local BBANDS_MT = indicator("bbands", BBANDS)
function BBANDS.update(self, x)
  x = x * 1.0
  local var = variance_update(self, x)
  local total = self.sum + x
  if var == nil then
    self.sum = total
    return nil
  end
  local p = self.period
  self.sum = total - self.buf[self.pos]
  local mid = total / p
  local dev = sqrt(var)
  local upper = mid + dev * self.up
  local lower = mid - dev * self.down
  self.value, self.middle = mid, mid
  self.upper, self.lower = upper, lower
  return upper, mid, lower
end
function ta.bbands(p, up, down)
  if p == nil then p = 20 end
  p = period_arg("bbands", p)
  if up == nil then up = 2.0 end
  up = factor_arg("bbands", up, "up")
  if down == nil then down = up end
  down = factor_arg("bbands", down, "down")
  return setmetatable(new_deviation(p, { up = up, down = down, sum = 0.0 }), BBANDS_MT)
end

-- ATR: Wilder's smoothing seeded with the simple average of the first `period` true ranges.
local ATR = {}
local ATR_MT = indicator("atr", ATR)
function ATR.update(self, high, low, close)
  high, low, close = high * 1.0, low * 1.0, close * 1.0
  local prev = self.prev_close
  self.prev_close = close
  if prev == nil then return nil end
  local tr = high - low
  local d = abs(prev - high)
  if d > tr then tr = d end
  d = abs(prev - low)
  if d > tr then tr = d end
  local p = self.period
  local v = self.value
  if v ~= nil then
    v = v * (p - 1)
    v = v + tr
    v = v / p
    self.value = v
    return v
  end
  local count = self.count + 1
  self.count = count
  local total = self.sum + tr
  self.sum = total
  if count < p then return nil end
  v = total / p
  self.value = v
  return v
end
function ta.atr(p)
  if p == nil then p = 14 end
  p = period_arg("atr", p)
  return setmetatable({ period = p, count = 0, sum = 0.0 }, ATR_MT)
end

-- HIGHEST / LOWEST: a monotonic deque in a ring of `period` slots, amortised O(1).
local function extreme_update(self, x, highest)
  local p = self.period
  local values, indexes = self.values, self.indexes
  local n = self.count + 1
  self.count = n
  local head, size = self.head, self.size
  if size > 0 and indexes[head] <= n - p then
    head = head + 1
    if head > p then head = 1 end
    size = size - 1
  end
  while size > 0 do
    local back = head + size - 1
    if back > p then back = back - p end
    local b = values[back]
    local drop
    if highest then drop = b <= x else drop = b >= x end
    if drop then size = size - 1 else break end
  end
  local back = head + size
  if back > p then back = back - p end
  values[back] = x
  indexes[back] = n
  self.head, self.size = head, size + 1
  if n < p then return nil end
  local v = values[head]
  self.value = v
  return v
end
local HIGHEST, LOWEST = {}, {}
local HIGHEST_MT = indicator("highest", HIGHEST)
local LOWEST_MT = indicator("lowest", LOWEST)
function HIGHEST.update(self, x) return extreme_update(self, x * 1.0, true) end
function LOWEST.update(self, x) return extreme_update(self, x * 1.0, false) end
local function new_extreme(p, mt)
  return setmetatable({ period = p, count = 0, head = 1, size = 0, values = {}, indexes = {} }, mt)
end
function ta.highest(p) return new_extreme(period_arg("highest", p), HIGHEST_MT) end
function ta.lowest(p) return new_extreme(period_arg("lowest", p), LOWEST_MT) end

-- CROSSOVER / CROSSUNDER: nil on the first pair and after a pair holding nil.
local CROSSOVER, CROSSUNDER = {}, {}
local CROSSOVER_MT = indicator("crossover", CROSSOVER)
local CROSSUNDER_MT = indicator("crossunder", CROSSUNDER)
local function cross_update(self, a, b, over)
  if a == nil or b == nil then
    self.prev_a, self.prev_b, self.value = nil, nil, nil
    return nil
  end
  a, b = a * 1.0, b * 1.0
  local pa, pb = self.prev_a, self.prev_b
  self.prev_a, self.prev_b = a, b
  if pa == nil or pb == nil then
    self.value = nil
    return nil
  end
  local v
  if over then v = a > b and pa <= pb else v = a < b and pa >= pb end
  self.value = v
  return v
end
function CROSSOVER.update(self, a, b) return cross_update(self, a, b, true) end
function CROSSUNDER.update(self, a, b) return cross_update(self, a, b, false) end
function ta.crossover() return setmetatable({}, CROSSOVER_MT) end
function ta.crossunder() return setmetatable({}, CROSSUNDER_MT) end

-- ROC: (x / x[period ago] - 1) * 100, 0 when the old value is 0.
local ROC = {}
local ROC_MT = indicator("roc", ROC)
function ROC.update(self, x)
  x = x * 1.0
  local p = self.period
  local buf = self.buf
  local pos = self.pos
  local old = buf[pos]
  buf[pos] = x
  pos = pos + 1
  if pos > p then pos = 1 end
  self.pos = pos
  if self.count < p then
    self.count = self.count + 1
    return nil
  end
  local v = 0.0
  if old ~= 0.0 then v = (x / old - 1.0) * 100.0 end
  self.value = v
  return v
end
function ta.roc(p)
  if p == nil then p = 10 end
  p = period_arg("roc", p)
  return setmetatable({ period = p, pos = 1, count = 0, buf = {} }, ROC_MT)
end

-- STOCH: TA-Lib's slow stochastic with simple averages; returns k, d.
local STOCH = {}
local STOCH_MT = indicator("stoch", STOCH)
function STOCH.update(self, high, low, close)
  local hi = extreme_update(self.high, high * 1.0, true)
  local lo = extreme_update(self.low, low * 1.0, false)
  if hi == nil or lo == nil then return nil end
  local diff = (hi - lo) / 100.0
  local fast = 0.0
  if diff ~= 0.0 then fast = (close * 1.0 - lo) / diff end
  local k = SMA.update(self.kma, fast)
  if k == nil then return nil end
  local d = SMA.update(self.dma, k)
  if d == nil then return nil end
  self.value, self.k = k, k
  self.d = d
  return k, d
end
function ta.stoch(fastk, slowk, slowd)
  if fastk == nil then fastk = 5 end
  if slowk == nil then slowk = 3 end
  if slowd == nil then slowd = 3 end
  fastk = period_arg("stoch", fastk, 1, "fastk")
  slowk = period_arg("stoch", slowk, 1, "slowk")
  slowd = period_arg("stoch", slowd, 1, "slowd")
  return setmetatable({
    high = new_extreme(fastk, HIGHEST_MT), low = new_extreme(fastk, LOWEST_MT),
    kma = new_sma(slowk), dma = new_sma(slowd),
  }, STOCH_MT)
end

-- OBV: starts at the first volume; adds it on a rise, subtracts it on a fall.
local OBV = {}
local OBV_MT = indicator("obv", OBV)
function OBV.update(self, close, volume)
  close, volume = close * 1.0, volume * 1.0
  local prev = self.prev
  self.prev = close
  local v = self.value
  if v == nil or prev == nil then
    v = volume
  elseif close > prev then
    v = v + volume
  elseif close < prev then
    v = v - volume
  end
  self.value = v
  return v
end
function ta.obv() return setmetatable({}, OBV_MT) end

-- VWAP: of the typical price (h + l + c) / 3, anchored (no period) or over `period` candles.
local VWAP = {}
local VWAP_MT = indicator("vwap", VWAP)
function VWAP.update(self, high, low, close, volume)
  local tp = (high * 1.0 + low * 1.0 + close * 1.0) / 3.0
  volume = volume * 1.0
  local pv = tp * volume
  local total_pv = self.pv + pv
  local total_v = self.vol + volume
  local p = self.period
  if p == nil then
    self.pv, self.vol = total_pv, total_v
  else
    local pos = self.pos
    self.buf_pv[pos] = pv
    self.buf_v[pos] = volume
    pos = pos + 1
    if pos > p then pos = 1 end
    self.pos = pos
    if self.count < p then
      local count = self.count + 1
      self.count = count
      if count < p then
        self.pv, self.vol = total_pv, total_v
        return nil
      end
    end
    self.pv = total_pv - self.buf_pv[pos]
    self.vol = total_v - self.buf_v[pos]
  end
  local v = tp
  if total_v ~= 0.0 then v = total_pv / total_v end
  self.value = v
  return v
end
function ta.vwap(p)
  if p ~= nil then p = period_arg("vwap", p) end
  return setmetatable(
    { period = p, pos = 1, count = 0, pv = 0.0, vol = 0.0, buf_pv = {}, buf_v = {} }, VWAP_MT)
end

env.ta = ta

-- the candle history window -----------------------------------------------------------------

local CAP = HISTORY + (HISTORY > 256 and HISTORY or 256)
local WT, WO, WH, WL, WC, WV = {}, {}, {}, {}, {}, {}
local view = { n = 0, time = WT, open = WO, high = WH, low = WL, close = WC, volume = WV }
local wn = 0

local function compact()
  -- keep the newest HISTORY candles at 1..HISTORY; amortised O(1) per candle
  local from = wn - HISTORY + 1
  for _, col in next, { WT, WO, WH, WL, WC, WV } do
    t_move(col, from, wn, 1)
    for i = HISTORY + 1, wn do col[i] = nil end
  end
  wn = HISTORY
end

local ctx = { params = {}, state = {}, assignment = "" }

-- decisions ---------------------------------------------------------------------------------

local bad_result = nil   -- message when on_candle returned something that is not a decision
local BAD_RESULT = {}    -- private error object for it
-- explicit orders of the current call or batch, one entry per order
local OI, OS, OT, OA, OP, OX, OG, on = {}, {}, {}, {}, {}, {}, {}, 0

local function reject(message)
  bad_result = message
  error(BAD_RESULT, 0)
end

local function number_field(o, name, j)
  local v = rawget(o, name)
  if v ~= nil and (type(v) ~= "number" or v ~= v or v <= 0 or v == huge) then
    reject("order " .. j .. ": " .. name .. " must be a finite number above zero")
  end
  return v
end

local function collect_orders(r, i)
  -- r: one order table ({side = ...}) or an array of them; returns how many were added
  local list = r
  if rawget(r, "side") ~= nil then list = { r } end
  local count = 0
  for j = 1, MAX_ORDERS + 1 do
    local o = rawget(list, j)
    if o == nil then break end
    if j > MAX_ORDERS then reject("more than " .. MAX_ORDERS .. " orders in one decision") end
    if type(o) ~= "table" then reject("order " .. j .. " is a " .. type(o) .. ", not a table") end
    local side = rawget(o, "side")
    if side ~= "buy" and side ~= "sell" then reject("order " .. j .. ': side must be "buy" or "sell"') end
    local kind = rawget(o, "type")
    if kind == nil then kind = "market" end
    if kind ~= "market" and kind ~= "limit" and kind ~= "stop" then
      reject("order " .. j .. ': type must be "market", "limit" or "stop"')
    end
    local amount = number_field(o, "amount", j)
    if amount == nil then reject("order " .. j .. ": amount is missing") end
    local price = number_field(o, "price", j)
    local stop = number_field(o, "stop_price", j)
    if stop == nil then stop = number_field(o, "stop", j) end
    if kind == "limit" and price == nil then reject("order " .. j .. ": a limit order needs a price") end
    if kind == "stop" and stop == nil then reject("order " .. j .. ": a stop order needs stop_price") end
    local tag = rawget(o, "tag")
    if tag ~= nil and type(tag) ~= "string" then reject("order " .. j .. ": tag must be a string") end
    on = on + 1
    OI[on], OS[on], OT[on], OA[on] = i, side, kind, amount
    OP[on], OX[on], OG[on] = price or false, stop or false, tag or ""
    count = count + 1
  end
  return count
end

local function decide_slow(r, i)
  -- the uncommon results: orders, or something that is no decision at all
  local t = type(r)
  if t == "number" then
    if r ~= r then reject("on_candle returned nan; a target position must be within [-1, 1]") end
    reject("on_candle returned " .. tostring(r) .. "; a target position must be within [-1, 1]")
  elseif t == "table" then
    local count = collect_orders(r, i)
    if count == 0 then return 0, 0 end
    return 2, count
  end
  reject("on_candle returned a " .. t .. "; return a number in [-1, 1], a table of orders or nil")
end

local function reset_orders()
  OI, OS, OT, OA, OP, OX, OG, on = {}, {}, {}, {}, {}, {}, {}, 0
end

-- operations, run on the worker thread ------------------------------------------------------

local op = {}
local current_row = 0   -- the row of the batch being decided on, for errors

function op.chunk(fn)
  seq = seq + 1
  fn()
end

function op.init()
  seq = seq + 1
  local init = rawget(env, "init")
  if init ~= nil then
    if type(init) ~= "function" then
      bad_result = "init is a " .. type(init) .. ", not a function(ctx)"
      error(BAD_RESULT, 0)
    end
    init(ctx)
  end
end

function op.params()
  -- the raw declarations: {name, default, min, max, step, description}, nil where absent
  seq = seq + 1
  local decl = rawget(env, "params")
  local out, problems = {}, {}
  if decl == nil then return out, problems end
  if type(decl) ~= "table" then
    problems[1] = "params must be a table"
    return out, problems
  end
  for name, spec in next, decl do
    if type(name) ~= "string" then
      problems[#problems + 1] = "params keys must be names (strings)"
    else
      local entry = { name }
      local ts = type(spec)
      if ts == "number" or ts == "string" or ts == "boolean" then
        entry[2] = spec
      elseif ts == "table" then
        local unknown = {}
        for key in next, spec do
          if key ~= "default" and key ~= "min" and key ~= "max" and key ~= "step"
              and key ~= "description" then
            unknown[#unknown + 1] = tostring(key)
          end
        end
        if #unknown > 0 then
          t_sort(unknown)
          problems[#problems + 1] = "params." .. name .. " has unknown fields "
            .. t_concat(unknown, ", ")
        end
        for slot, field in next, { "default", "min", "max", "step", "description" } do
          local v = rawget(spec, field)
          local tv = type(v)
          if v ~= nil and tv ~= "number" and tv ~= "string" and tv ~= "boolean" then
            problems[#problems + 1] = "params." .. name .. "." .. field .. " is a " .. tv
          elseif v ~= nil then
            entry[slot + 1] = v
          end
        end
      else
        problems[#problems + 1] = "params." .. name .. " is a " .. ts
      end
      out[#out + 1] = entry
    end
  end
  return out, problems
end

function op.batch(rows, warm, st, so, sh, sl, sc, sv)
  -- Append rows 1..rows of the staged columns to the history window; call on_candle for each
  -- row after the first `warm`. Returns the decision changes (row, kind, value) and the number
  -- of explicit orders recorded; kind 0 = hold, 1 = target, 2 = orders (value = how many).
  reset_orders()
  local on_candle = rawget(env, "on_candle")
  if rows > warm and type(on_candle) ~= "function" then
    bad_result = "the strategy defines no function on_candle(ctx, candles)"
    error(BAD_RESULT, 0)
  end
  local c = ctx
  local ci, ck, cv, nch = {}, {}, {}, 0
  local lastk, lastv = -1, 0
  local budget0 = budget_limit
  for i = 1, rows do
    local n = wn
    if n >= CAP then compact(); n = wn end
    n = n + 1
    wn = n
    WT[n], WO[n], WH[n], WL[n], WC[n], WV[n] = st[i], so[i], sh[i], sl[i], sc[i], sv[i]
    view.n = n
    if i > warm then
      current_row = i
      seq = seq + 1
      budget = budget0
      local r = on_candle(c, view)
      local k, v
      if r == nil then
        k, v = 0, 0
      elseif type(r) == "number" and r >= -1 and r <= 1 then
        k, v = 1, r
      else
        k, v = decide_slow(r, i)
      end
      if k ~= lastk or v ~= lastv then
        nch = nch + 1
        ci[nch], ck[nch], cv[nch] = i, k, v
        lastk, lastv = k, v
      end
      if k == 2 then lastk = -1 end
    end
  end
  return ci, ck, cv, nch, on
end

function op.step(t, o, h, l, c, v)
  -- one candle: returns kind, value, number of orders
  local _, ck, cv, _, count = op.batch(1, 0, { t }, { o }, { h }, { l }, { c }, { v })
  return ck[1], cv[1], count
end

-- the control table Python drives (main thread, no hook) ------------------------------------

local TOKEN = {}
-- The operation and its arguments travel through upvalues rather than as resume arguments, so
-- the suspended worker keeps no reference to them (staged candles are freed between batches).
local cf, c1, c2, c3, c4, c5, c6, c7, c8
local function run()
  local f, a1, a2, a3, a4, a5, a6, a7, a8 = cf, c1, c2, c3, c4, c5, c6, c7, c8
  cf, c1, c2, c3, c4, c5, c6, c7, c8 = nil, nil, nil, nil, nil, nil, nil, nil, nil
  return f(a1, a2, a3, a4, a5, a6, a7, a8)
end
local function serve()
  co_yield(TOKEN, run())
  return serve()
end
local worker = nil

local function finish(co, ok, tok, ...)
  if tripped then return "limit", tripped, trip_line end
  if ok then
    if rawequal(tok, TOKEN) then return "ok", ... end
    -- strategy code yielded the worker itself: drop it
    worker = nil
    local line = user_line(co, 0)
    if co_close then pcall(co_close, co) end
    return "error", "attempt to yield from outside a coroutine", line
  end
  worker = nil
  if rawequal(tok, BAD_RESULT) then
    return "result", bad_result, false
  end
  local line = user_line(co, 0)
  local t = type(tok)
  if t == "string" then
    if tok == MEMERR then
      tripped, trip_line = "memory", line
      return "limit", tripped, line
    end
    return "error", tok, line
  elseif t == "number" then
    return "error", tostring(tok), line
  end
  return "error", "error object is a " .. t .. " value", line
end

local ctl = {}

local function call(f, ...)
  if tripped then return "limit", tripped, trip_line end
  if worker == nil or co_status(worker) ~= "suspended" then worker = new_thread(serve) end
  budget = budget_limit
  -- every operation advances seq once before strategy code runs (a batch: once per candle), so
  -- the wall clock of the first candle starts here rather than at the hook's first run
  seen_seq = seq + 1
  started = timed
  if timed then wall_at, cpu_at = clock(), cpu_clock() end
  local co = worker
  cf = f
  c1, c2, c3, c4, c5, c6, c7, c8 = ...
  return finish(co, co_resume(co))
end

function ctl.set_limits(instructions, wall, cpu)
  budget_limit = instructions or huge
  wall_limit = wall or huge
  cpu_limit = cpu or huge
  timed = HOOKS and (wall ~= nil or cpu ~= nil)
end

function ctl.load(source, filename)
  user_source = "@" .. filename
  local fn, err = raw_load(source, user_source, "t", env)
  if not fn then return "syntax", err end
  local info = d_getinfo(fn, "S")
  local status, a, b = call(op.chunk, fn)
  if status ~= "ok" then return status, a, b end
  return "ok", info.short_src
end

function ctl.params() return call(op.params) end
function ctl.init() return call(op.init) end
function ctl.step(t, o, h, l, c, v) return call(op.step, t, o, h, l, c, v) end
function ctl.batch(rows, warm, st, so, sh, sl, sc, sv)
  return call(op.batch, rows, warm, st, so, sh, sl, sc, sv)
end

function ctl.orders()
  return OI, OS, OT, OA, OP, OX, OG, on
end

function ctl.set_params(p) rawset(ctx, "params", p) end
function ctl.set_assignment(a) rawset(ctx, "assignment", a) end
function ctl.state() return rawget(ctx, "state") end
function ctl.set_state(s) rawset(ctx, "state", s) end
function ctl.table_kind(t)
  -- nil: a plain table; a kind name: a ta indicator; false: some other metatable
  local mt = d_getmetatable(t)
  if mt == nil then return nil end
  local kind = KIND_OF[mt]
  if kind then return kind end
  return false
end
function ctl.attach(t, kind)
  local mt = META[kind]
  if mt == nil then return false end
  setmetatable(t, mt)
  return true
end
function ctl.logs()
  local out, dropped = log, log_dropped
  log, log_n, log_dropped = {}, 0, 0
  return out, dropped
end
function ctl.tripped() return tripped end
function ctl.row() return current_row end

return ctl
