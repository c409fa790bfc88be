"""The HTML backtest report in a real browser: headless Chromium draws every chart.

`make test` installs Debian's `chromium` when it is missing and it can (apt-get as root or with
passwordless sudo); without a browser these tests are skipped and say why.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import zlib
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from trader.backtest import BacktestResult, BacktestSettings, Sizing, SizingMode, run_backtest
from trader.backtest.report import write_report
from trader.model import Market, SeriesKey, Timeframe
from trader.model.market import Precision, PrecisionMode
from trader.paper import FillSettings, FillTiming
from trader.synthetic import generate_candles

pytestmark = pytest.mark.slow

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
SKIP_REASON = (
    "chromium not installed: make test installs Debian's chromium when it can (apt-get as root)"
)
TIMEOUT = 120
CHARTS = ("price", "equity", "drawdown")

SMA_CROSS = """
params = {fast = {default = 10, min = 2, max = 50}, slow = {default = 30, min = 5, max = 200}}
function init(ctx)
  ctx.state.fast = ta.sma(ctx.params.fast)
  ctx.state.slow = ta.sma(ctx.params.slow)
end
function on_candle(ctx, candles)
  local close = candles.close[candles.n]
  local fast = ctx.state.fast:update(close)
  local slow = ctx.state.slow:update(close)
  if not slow then return nil end
  if fast > slow then return 1 end
  return -1
end
"""


def find_browser() -> str:
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    pytest.skip(SKIP_REASON)


@pytest.fixture(scope="module")
def backtest() -> BacktestResult:
    lua = pytest.importorskip("trader_strategy_lua")
    runtime = lua.LuaStrategyRuntime()
    strategy = runtime.load(
        SMA_CROSS, "sma_cross.lua", {"fast": 10, "slow": 30}, runtime.default_limits
    )
    data = generate_candles(Timeframe.parse("1h"), 1_704_067_200_000, 2000, seed=5, volatility=0.01)
    market = Market(
        "BTC/USD",
        Precision(PrecisionMode.DECIMALS, Decimal(2)),
        Precision(PrecisionMode.DECIMALS, Decimal(6)),
    )
    settings = BacktestSettings(
        fills=FillSettings(timing=FillTiming.NEXT_OPEN, taker_fee=Decimal("0.001")),
        sizing=Sizing(SizingMode.FRACTION_OF_EQUITY, Decimal(1)),
        assignment="sma",
    )
    result = run_backtest(strategy, data, market, settings)
    strategy.close()
    assert len(result.fills) > 20
    return result


@pytest.fixture(scope="module")
def report(backtest: BacktestResult, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("report") / "report.html"
    return write_report(
        backtest,
        path,
        title="sma_cross.lua </script><b>",
        series=SeriesKey("demo", "BTC/USD", Timeframe.parse("1h")),
        params={"fast": 10, "slow": 30},
    )


def run_browser(tmp_path: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    """Run headless Chromium with a throwaway profile that is removed afterwards."""
    profile = tmp_path / "chromium-profile"
    command = [
        find_browser(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        *arguments,
    ]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


class Dom(HTMLParser):
    """What the report's script left in the page: body attributes, chart paths, the readout."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.body: dict[str, str | None] = {}
        self.svgs: dict[str, dict[str, str | None]] = {}
        self.paths: dict[str, list[dict[str, str | None]]] = {}
        self.error_box: dict[str, str | None] | None = None
        self.readout: dict[str, str | None] = {}
        self.readout_text = ""
        self._svg: str | None = None
        self._in_readout = False
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        given = dict(attrs)
        if tag == "body":
            self.body = given
        elif tag == "svg" and str(given.get("id", "")).startswith("chart-"):
            self._svg = str(given["id"]).removeprefix("chart-")
            self.svgs[self._svg] = given
            self.paths[self._svg] = []
        elif tag == "path" and self._svg is not None:
            self.paths[self._svg].append(given)
        elif given.get("id") == "report-error":
            self.error_box = given
        elif given.get("id") == "readout":
            self.readout = given
            self._in_readout = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "svg":
            self._svg = None
        if tag == "output":
            self._in_readout = False

    def handle_data(self, data: str) -> None:
        if self._in_readout:
            self.readout_text += data


def points(d: str) -> list[tuple[float, float]]:
    """The vertices of an SVG path made of absolute M and L commands."""
    pairs = []
    for command in d.replace("M", "|").replace("L", "|").split("|"):
        if command.strip():
            x, y = command.split()[:2]
            pairs.append((float(x), float(y)))
    return pairs


def classes(path: dict[str, str | None]) -> set[str]:
    return set(str(path.get("class", "")).split())


def test_chromium_draws_every_chart_with_every_fill(
    report: Path, backtest: BacktestResult, tmp_path: Path
) -> None:
    first_fill = backtest.fills[0]
    done = run_browser(tmp_path, "--dump-dom", f"{report.as_uri()}#t={first_fill.time}")
    dom = Dom(done.stdout)

    assert dom.body.get("data-rendered") == ",".join(CHARTS)
    assert "data-error" not in dom.body, dom.body.get("data-error")
    assert dom.error_box is not None and "hidden" in dom.error_box

    for name in CHARTS:
        width = float(str(dom.svgs[name]["width"]))
        height = float(str(dom.svgs[name]["height"]))
        series = [p for p in dom.paths[name] if "series" in classes(p)]
        assert len(series) == 1, name
        drawn = points(str(series[0]["d"]))
        assert len(drawn) == int(str(series[0]["data-points"])) == len(backtest.candles) + 1
        xs = [x for x, _ in drawn]
        assert xs == sorted(xs), f"{name}: the curve runs forward in time"
        assert all(0 <= x <= width and 0 <= y <= height for x, y in drawn), name
        assert len({round(y) for _, y in drawn}) > 20, f"{name}: a flat line is not a chart"

    markers = {
        side: next(p for p in dom.paths["price"] if {"marker", side} <= classes(p))
        for side in ("buy", "sell")
    }
    buys = sum(fill.side.value == "buy" for fill in backtest.fills)
    sells = len(backtest.fills) - buys
    assert str(markers["buy"]["d"]).count("M") == int(str(markers["buy"]["data-count"])) == buys
    assert str(markers["sell"]["d"]).count("M") == int(str(markers["sell"]["data-count"])) == sells
    assert buys + sells == len(backtest.fills)

    # the pinned moment (#t=...) shows the readout the pointer would: time, values, the fill
    assert dom.readout.get("data-time") == str(first_fill.time)
    side = first_fill.side.value
    amount, price = (format(d.normalize(), "f") for d in (first_fill.amount, first_fill.price))
    assert f"{side} {amount} BTC @ {price}" in dom.readout_text
    assert "equity" in dom.readout_text and "drawdown" in dom.readout_text


def png_pixels(path: Path) -> npt.NDArray[np.uint8]:
    """Decode an 8-bit RGB or RGBA PNG (what Chromium writes) into an (h, w, channels) array."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    position, chunks = 8, b""
    width = height = channels = 0
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind = data[position + 4 : position + 8]
        body = data[position + 8 : position + 8 + length]
        position += 12 + length
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and colour in (2, 6) and interlace == 0
            channels = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            chunks += body
    raw = zlib.decompress(chunks)
    stride = width * channels
    image = np.zeros((height, stride), dtype=np.uint8)
    previous = np.zeros(stride, dtype=np.int64)
    for row in range(height):
        method = raw[row * (stride + 1)]
        line = np.frombuffer(raw, np.uint8, stride, row * (stride + 1) + 1).astype(np.int64)
        if method == 0:
            current = line
        elif method == 1:  # Sub: a running sum per channel
            current = np.cumsum(line.reshape(width, channels), axis=0).reshape(stride) % 256
        elif method == 2:  # Up
            current = (line + previous) % 256
        else:  # Average or Paeth: each byte needs the one reconstructed before it
            out = [0] * stride
            up = previous.tolist()
            values = line.tolist()
            for i in range(stride):
                left = out[i - channels] if i >= channels else 0
                if method == 3:
                    out[i] = (values[i] + (left + up[i]) // 2) % 256
                else:
                    corner = up[i - channels] if i >= channels else 0
                    guess = left + up[i] - corner
                    a, b, c = abs(guess - left), abs(guess - up[i]), abs(guess - corner)
                    near = left if a <= b and a <= c else (up[i] if b <= c else corner)
                    out[i] = (values[i] + near) % 256
            current = np.array(out, dtype=np.int64)
        image[row] = current
        previous = current
    return image.reshape(height, width, channels)


def test_the_screenshot_shows_the_charts_in_colour(report: Path, tmp_path: Path) -> None:
    shot = tmp_path / "report.png"
    run_browser(tmp_path, f"--screenshot={shot}", "--window-size=1100,1300", report.as_uri())
    pixels = png_pixels(shot)[:, :, :3]
    colours = {tuple(int(c) for c in p) for p in pixels.reshape(-1, 3)[::7]}
    assert len(colours) > 50, "the page looks blank"
    present = {tuple(int(c) for c in p) for p in pixels.reshape(-1, 3)}
    buy, sell, equity = (15, 138, 75), (200, 50, 45), (37, 99, 184)
    assert buy in present and sell in present, "no buy or sell markers painted"
    assert equity in present, "no equity curve painted"
