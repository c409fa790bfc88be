"""The HTML backtest report: contents, escaping, network isolation, thinning, writing."""

from __future__ import annotations

import base64
import dataclasses
import errno
import hashlib
import json
import os
import re
from datetime import datetime, timezone
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from trader.backtest import (
    BacktestResult,
    BacktestSettings,
    Decisions,
    Metrics,
    Sizing,
    SizingMode,
    run_decisions,
)
from trader.backtest import report as report_module
from trader.backtest.report import (
    CHART_BUCKETS,
    ReportError,
    downsample,
    render_report,
    write_report,
)
from trader.errors import TraderError
from trader.model import (
    CandleArrays,
    Market,
    OrderIntent,
    OrderSide,
    OrderType,
    SeriesKey,
    Timeframe,
)
from trader.model.market import Precision, PrecisionMode
from trader.paper import FillSettings, FillTiming
from trader.synthetic import generate_candles

D = Decimal
MARKET = Market(
    "BTC/USD", Precision(PrecisionMode.DECIMALS, D(2)), Precision(PrecisionMode.DECIMALS, D(6))
)
SERIES = SeriesKey("demo", "BTC/USD", Timeframe.parse("1h"))
START = 1_704_067_200_000  # 2024-01-01
SETTINGS = BacktestSettings(
    fills=FillSettings(timing=FillTiming.NEXT_OPEN, taker_fee=D("0.001")),
    sizing=Sizing(SizingMode.FRACTION_OF_EQUITY, D(1)),
    assignment="sma",
)


def sma_crossover(data: CandleArrays, fast: int = 10, slow: int = 30) -> Decisions:
    """The example strategy's decisions: long while SMA(fast) > SMA(slow), flat otherwise."""
    close = data.close
    kernel_fast, kernel_slow = np.ones(fast) / fast, np.ones(slow) / slow
    fast_sma = np.convolve(close, kernel_fast, mode="full")[: len(close)]
    slow_sma = np.convolve(close, kernel_slow, mode="full")[: len(close)]
    target = np.where(fast_sma > slow_sma, 1.0, -1.0)
    target[: slow - 1] = np.nan
    return Decisions(data.time, target)


def backtest(count: int = 1500, timeframe: str = "1h", seed: int = 6) -> BacktestResult:
    data = generate_candles(Timeframe.parse(timeframe), START, count, seed=seed, volatility=0.01)
    return run_decisions(sma_crossover(data), data, MARKET, SETTINGS)


@pytest.fixture(scope="module")
def result() -> BacktestResult:
    outcome = backtest()
    assert len(outcome.fills) > 40 and outcome.trades[-1].open  # closed trades and an open one
    return outcome


class Page(HTMLParser):
    """The parts of a report the tests look at, as a browser's parser would see them."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attrs: list[dict[str, str | None]] = []
        self.metrics: dict[str, tuple[str, str]] = {}
        self.scripts: list[tuple[dict[str, str | None], str]] = []
        self.style = ""
        self.h1 = ""
        self.title = ""
        self.tables: dict[str, list[list[str]]] = {}
        self._metric: str | None = None
        self._metric_text: list[str] = []
        self._in: list[str] = []
        self._script: dict[str, str | None] | None = None
        self._table: str | None = None
        self._row: list[str] | None = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        given_attrs = dict(attrs)
        self.tags.append(tag)
        self.attrs.append(given_attrs)
        if tag == "div" and "data-metric" in given_attrs:
            self._metric = given_attrs["data-metric"]
            self._metric_text = []
            self.metrics[str(self._metric)] = (str(given_attrs["data-value"]), "")
        if tag == "script":
            self._script = given_attrs
            self.scripts.append((given_attrs, ""))
        if tag == "table":
            self._table = str(given_attrs.get("id"))
            self.tables[self._table] = []
        if tag == "tr" and self._table is not None:
            self._row = []
            self.tables[self._table].append(self._row)
        if tag in ("td", "th") and self._row is not None:
            self._row.append("")
        self._in.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag == "div" and self._metric is not None:
            value = self.metrics[self._metric][0]
            self.metrics[self._metric] = (value, "".join(self._metric_text))
            self._metric = None
        if tag == "script":
            self._script = None
        if tag == "table":
            self._table = self._row = None
        if self._in and self._in[-1] == tag:
            self._in.pop()

    def handle_data(self, data: str) -> None:
        if self._script is not None:
            attrs, text = self.scripts[-1]
            self.scripts[-1] = (attrs, text + data)
        elif "style" in self._in[-1:]:
            self.style += data
        if self._metric is not None and self._in and self._in[-1] == "dd":
            self._metric_text.append(data)
        if "h1" in self._in[-1:]:
            self.h1 += data
        if "title" in self._in[-1:]:
            self.title += data
        if self._row is not None and self._row:
            self._row[-1] += data

    def data(self) -> dict[str, Any]:
        for attrs, text in self.scripts:
            if attrs.get("id") == "report-data":
                loaded: dict[str, Any] = json.loads(text)
                return loaded
        raise AssertionError("no report-data block")


def utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M")


def number(text: str) -> Decimal:
    return Decimal(text.replace(",", "").replace("%", ""))


def test_every_metric_is_shown_with_its_exact_value(result: BacktestResult) -> None:
    page = Page(render_report(result, title="sma_cross.lua", series=SERIES))
    for field in dataclasses.fields(Metrics):
        raw, shown = page.metrics[field.name]
        value = getattr(result.metrics, field.name)
        assert shown.strip(), field.name
        if value is None:
            assert raw == "" and shown == "–"
        else:
            assert float(raw) == value, field.name
    m = result.metrics
    assert page.metrics["total_return"][1] == f"{m.total_return:.2%}"
    assert page.metrics["trades"][1] == str(m.trades)
    assert page.metrics["final_equity"][1] == f"{m.final_equity:,.2f} USD"
    assert page.metrics["sharpe"][1] == f"{m.sharpe:,.3f}"
    assert Decimal(page.metrics["exact_final_equity"][0]) == result.final_equity


def test_every_trade_is_listed_with_its_figures(result: BacktestResult) -> None:
    page = Page(render_report(result, title="sma", series=SERIES))
    header, *rows = page.tables["trades"]
    assert header[:3] == ["#", "entry (UTC)", "exit (UTC)"]
    assert len(rows) == len(result.trades)
    for row, trade in zip(rows, result.trades, strict=True):
        _, entry, exit_, side, fills, amount, entry_price, exit_price, pnl, ret, fees = [
            cell.strip() for cell in row
        ]
        assert entry == utc(trade.entry_time) and side == "long"
        assert exit_ == ("open" if trade.open else utc(int(trade.exit_time or 0)))
        assert int(fills) == trade.fills and Decimal(amount) == trade.amount
        assert Decimal(entry_price) == trade.entry_price.quantize(Decimal(entry_price))
        if trade.exit_price is not None:
            assert Decimal(exit_price) == trade.exit_price.quantize(Decimal(exit_price))
        assert number(pnl) == trade.pnl.quantize(number(pnl))
        assert abs(number(pnl) - trade.pnl) <= Decimal("0.005")
        assert number(fees) == trade.fees.quantize(number(fees))
        assert abs(number(ret) / 100 - trade.return_) <= Decimal("0.00005")
    assert rows[-1][2] == "open"
    assert sum(int(row[4]) for row in rows) == len(result.fills)


def test_the_chart_data_holds_every_fill_exactly_and_the_curves(result: BacktestResult) -> None:
    page = Page(render_report(result, title="sma", series=SERIES))
    data = page.data()
    fills = result.fills
    assert data["fills"]["t"] == [fill.time for fill in fills]
    assert [Decimal(str(p)) for p in data["fills"]["p"]] == [fill.price for fill in fills]
    assert [Decimal(str(a)) for a in data["fills"]["a"]] == [fill.amount for fill in fills]
    assert data["fills"]["side"] == "".join(fill.side.value[0] for fill in fills)
    count = len(result.candles)
    for name in ("price", "equity", "drawdown"):
        assert len(data[name]["t"]) == len(data[name]["v"]) == count + 1  # short: all kept
    assert data["equity"]["v"][1:] == pytest.approx(result.equity.tolist(), rel=1e-8)
    assert data["equity"]["v"][0] == float(SETTINGS.initial_cash)
    assert data["price"]["v"][1:] == pytest.approx(result.candles.close.tolist(), rel=1e-9)
    assert max(data["drawdown"]["v"]) == pytest.approx(result.metrics.max_drawdown, rel=1e-8)
    assert data["start"] == int(result.candles.time[0])
    assert data["end"] == int(result.candles.time[-1]) + 3_600_000


def test_the_page_loads_nothing_and_its_policy_admits_only_its_own_code(
    result: BacktestResult,
) -> None:
    text = render_report(result, title="sma", series=SERIES, params={"fast": 10})
    assert (
        "http://" not in text
        and "https://" not in text
        and "//" not in re.sub(r"<script>.*?</script>|<style>.*?</style>", "", text, flags=re.S)
    )
    page = Page(text)
    assert not any(
        key in ("src", "href", "srcset", "action", "poster", "data")
        for attrs in page.attrs
        for key in attrs
    )
    assert "@import" not in page.style and "url(" not in page.style
    policy = next(
        str(attrs["content"])
        for tag, attrs in zip(page.tags, page.attrs, strict=True)
        if tag == "meta" and attrs.get("http-equiv") == "Content-Security-Policy"
    )
    directives = dict(part.strip().split(" ", 1) for part in policy.split(";"))
    assert directives["default-src"] == "'none'"

    def digest(source: str) -> str:
        return (
            "'sha256-" + base64.b64encode(hashlib.sha256(source.encode()).digest()).decode() + "'"
        )

    code = [body for attrs, body in page.scripts if attrs.get("type") is None]
    assert len(code) == 2
    assert sorted(directives["script-src"].split()) == sorted(digest(body) for body in code)
    assert directives["style-src"] == digest(page.style)
    # the policy's meta comes before anything it governs
    assert page.tags.index("meta") < page.tags.index("style") < page.tags.index("script")


NASTY = st.sampled_from(
    [
        "</script><script>alert(1)</script>",
        '"><img src=x onerror=alert(1)>',
        "' onmouseover='alert(1)",
        "<!--",
        "]]>",
        "&amp; &lt;",
        "\u2028\u2029",
        "</style><b>",
        "javascript:alert(1)",
    ]
)
TEXT = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=30)
USER_TEXT = st.one_of(NASTY, TEXT, st.builds(lambda a, b: a + b, NASTY, TEXT))


@pytest.fixture(scope="module")
def small() -> BacktestResult:
    return backtest(200, seed=2)


@given(
    title=USER_TEXT,
    params=st.dictionaries(
        USER_TEXT, st.one_of(USER_TEXT, st.integers(), st.booleans()), min_size=1, max_size=4
    ),
)
def test_user_strings_cannot_change_the_page_structure(
    small: BacktestResult, title: str, params: dict[str, str | int | bool]
) -> None:
    result = small
    plain = Page(render_report(result, title="plain", params={f"p{i}": "v" for i in params}))
    page = Page(render_report(result, title=title, params=params))
    assert page.tags == plain.tags  # no element added, removed or cut short
    assert page.h1 == (title or "Backtest")
    assert page.title == (f"{title} — BTC/USD" if title else "BTC/USD")
    shown = {row[0]: row[1] for row in page.tables["parameters"][1:]}
    expected = {
        k: ("true" if v else "false") if isinstance(v, bool) else str(v) for k, v in params.items()
    }
    assert shown == expected
    assert page.data() == plain.data()
    assert [a for a, _ in page.scripts] == [a for a, _ in plain.scripts]


def test_the_json_block_cannot_be_closed_from_inside(small: BacktestResult) -> None:
    text = render_report(small, title="</script>", params={"x": "</script><!--"})
    start = text.index('<script type="application/json" id="report-data">')
    block = text[start:].split(">", 1)[1].split("</script>", 1)[0]
    assert "<" not in block and ">" not in block and "&" not in block
    encoded = report_module._chart_data(small)
    assert json.loads(encoded) == json.loads(block)
    # the escaping itself: the characters that matter in HTML become JSON escapes
    assert "</script>&\u2028".translate(report_module._JSON_ESCAPES) == (
        "\\u003c/script\\u003e\\u0026\\u2028"
    )


@given(
    values=arrays(
        np.float64,
        st.integers(0, 400),
        elements=st.one_of(st.floats(-1e6, 1e6), st.just(float("nan"))),
    ),
    buckets=st.integers(1, 40),
)
def test_downsample_keeps_the_ends_and_the_extremes(values: Any, buckets: int) -> None:
    picked = downsample(values, buckets)
    size = len(values)
    assert np.all(np.diff(picked) > 0)
    if size <= 2 * buckets:
        assert picked.tolist() == list(range(size))
        return
    assert len(picked) <= 2 * buckets + 2
    assert picked[0] == 0 and picked[-1] == size - 1
    kept = values[picked]
    if not np.isnan(values).all():
        assert np.nanmax(kept) == np.nanmax(values)
        assert np.nanmin(kept) == np.nanmin(values)
    # every run of the partition keeps its own extremes
    run = -(-size // buckets)
    for first in range(0, size, run):
        chunk = values[first : first + run]
        if np.isnan(chunk).all():
            continue
        inside = kept[(picked >= first) & (picked < first + run)]
        assert np.nanmax(inside) == np.nanmax(chunk) and np.nanmin(inside) == np.nanmin(chunk)


def test_a_million_candles_make_a_small_report_with_spikes_and_troughs_kept(
    tmp_path: Path,
) -> None:
    data = generate_candles(Timeframe.parse("1m"), START, 1_000_000, seed=9, volatility=0.001)
    close = data.close.copy()
    close[123_457] *= 1.5  # a spike no thinning may hide
    high = np.maximum(data.high, close)
    data = CandleArrays(data.time, data.open, high, data.low, close, data.volume)
    target = np.full(len(data), np.nan)
    target[::2000] = 1.0
    target[1000::2000] = 0.0
    result = run_decisions(Decisions(data.time, target), data, MARKET, SETTINGS)
    path = write_report(result, tmp_path / "big.html", title="every 1000 minutes", series=None)
    size = path.stat().st_size
    assert size < 1_500_000, size
    page = Page(path.read_text("utf-8"))
    chart = page.data()
    for name in ("price", "equity", "drawdown"):
        assert len(chart[name]["t"]) <= 2 * CHART_BUCKETS + 3
        assert chart[name]["t"] == sorted(chart[name]["t"])
    assert max(chart["price"]["v"]) == pytest.approx(float(close.max()), rel=1e-9)
    assert min(chart["price"]["v"]) == pytest.approx(float(close.min()), rel=1e-9)
    assert max(chart["equity"]["v"]) == pytest.approx(float(result.equity.max()), rel=1e-8)
    assert min(chart["equity"]["v"]) == pytest.approx(float(result.equity.min()), rel=1e-8)
    assert max(chart["drawdown"]["v"]) == pytest.approx(result.metrics.max_drawdown, rel=1e-8)
    assert len(chart["fills"]["t"]) == len(result.fills) == 1000
    assert len(page.tables["trades"]) - 1 == len(result.trades) == 500


def test_an_empty_backtest_still_makes_a_report() -> None:
    empty = CandleArrays.empty()
    result = run_decisions(Decisions(empty.time, np.empty(0)), empty, MARKET, SETTINGS)
    page = Page(render_report(result, title="nothing"))
    data = page.data()
    assert data["price"] == {"t": [], "v": []} and data["fills"]["t"] == []
    assert page.tables["trades"][1] == ["No trades.\n"]
    assert page.metrics["trades"][1] == "0"


def test_explicit_orders_and_settings_are_described() -> None:
    data = generate_candles(Timeframe.parse("1h"), START, 50, seed=4, volatility=0.01)
    orders = {
        3: (OrderIntent(OrderSide.BUY, OrderType.MARKET, 0.1),),
        20: (OrderIntent(OrderSide.SELL, OrderType.MARKET, 0.1),),
    }
    settings = dataclasses.replace(SETTINGS, exact=True)
    result = run_decisions(
        Decisions(data.time, np.full(50, np.nan), orders), data, MARKET, settings
    )
    assert len(result.fills) == 2
    text = render_report(result, title="orders", series=SERIES, params={"live": True, "k": 1.5})
    page = Page(text)
    assert "maker 0.1 %, taker 0.1 %" in text and "fraction of equity 1" in text
    assert "demo · BTC/USD · 1h · 50 candles · 2024-01-01 00:00 to 2024-01-03 02:00 UTC" in text
    assert [row[:2] for row in page.tables["parameters"][1:]] == [
        ["live", "true"],
        ["k", "1.5"],
    ]
    trade = page.tables["trades"][1]
    assert trade[4] == "2" and trade[5] == "0.1"


def test_write_report_replaces_the_file_whole(tmp_path: Path, result: BacktestResult) -> None:
    path = tmp_path / "report.html"
    path.write_text("old report")
    written = write_report(result, path, title="sma", series=SERIES, params={"fast": 10})
    assert written == path
    assert path.read_text("utf-8") == render_report(
        result, title="sma", series=SERIES, params={"fast": 10}
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask


def test_a_failed_write_leaves_the_old_report_and_no_debris(
    tmp_path: Path, result: BacktestResult, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "report.html"
    path.write_text("old report")

    def disk_full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(ReportError, match=r"cannot write the report to .*report\.html: No space"):
        write_report(result, path, title="sma")
    assert path.read_text() == "old report"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]


def test_unwritable_paths_are_reported_clearly(tmp_path: Path, result: BacktestResult) -> None:
    with pytest.raises(ReportError, match=r"the folder .*missing does not exist"):
        write_report(result, tmp_path / "missing" / "r.html", title="sma")
    with pytest.raises(ReportError, match="it is a folder"):
        write_report(result, tmp_path, title="sma")
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(ReportError, match="Permission denied"):
            write_report(result, locked / "r.html", title="sma")
    assert issubclass(ReportError, TraderError)
