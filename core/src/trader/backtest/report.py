"""A backtest as one self-contained HTML file: header, metrics, charts and the trade list.

The page loads nothing: its CSS and scripts are inline (allowed by hash in a Content-Security-
Policy that forbids every other load), and the chart data is a JSON block the script draws into
SVG (price with a marker per fill, equity, drawdown, on one time axis, with a hover readout).
Long series are thinned to the first and last sample and the minimum and maximum of each of
:data:`CHART_BUCKETS` runs (:func:`downsample`), so a million candles still make a small file
in which spikes and drawdown troughs survive; fill markers and trades are never thinned.

Every string that comes from a user (title, parameters, symbol) is escaped for HTML, and the
JSON block escapes ``<``, ``>`` and ``&`` so no value can close the script element.

When the charts are drawn the body's ``data-rendered`` lists them (``price,equity,drawdown``);
a script error or a blocked load is shown on the page and recorded in ``data-error``.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import functools
import hashlib
import json
import math
import os
import secrets
from collections.abc import Mapping, Sequence
from decimal import Decimal
from html import escape
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

import trader
from trader.backtest.accounting import FillRow, Trade
from trader.backtest.metrics import Metrics, drawdown
from trader.backtest.result import BacktestResult
from trader.errors import TraderError
from trader.model import SeriesKey
from trader.paper import SlippageMode
from trader.timeutil import format_time

__all__ = [
    "CHART_BUCKETS",
    "ReportError",
    "downsample",
    "render_report",
    "write_report",
]

CHART_BUCKETS = 2000
"""Runs a long series is cut into for its chart: at most ``2 × CHART_BUCKETS + 2`` points."""

ParamValue = bool | int | float | str

_ASSETS = "report_assets"
_JSON_ESCAPES = {ord("<"): "\\u003c", ord(">"): "\\u003e", ord("&"): "\\u0026"}
_JSON_ESCAPES.update({0x2028: "\\u2028", 0x2029: "\\u2029"})
_DASH = "–"


class ReportError(TraderError):
    """The HTML report could not be written where it was asked for."""


def downsample(values: npt.ArrayLike, buckets: int = CHART_BUCKETS) -> npt.NDArray[np.intp]:
    """The indices of ``values`` to draw, ascending: all of them when there are at most
    ``2 × buckets``; otherwise the first, the last, and the minimum and maximum of each of
    ``buckets`` equal consecutive runs (NaN is never picked over a number). Every extreme of
    the series is kept, so a spike or a drawdown trough is drawn at its true height."""
    data = np.asarray(values, dtype=np.float64)
    size = len(data)
    if buckets < 1:
        raise ValueError("downsample needs at least one bucket")
    if size <= 2 * buckets:
        return np.arange(size, dtype=np.intp)
    run = -(-size // buckets)
    count = -(-size // run)
    nan = np.isnan(data)
    low = np.full(count * run, np.inf)
    low[:size] = np.where(nan, np.inf, data)
    high = np.full(count * run, -np.inf)
    high[:size] = np.where(nan, -np.inf, data)
    offsets = np.arange(count, dtype=np.intp) * run
    lows = offsets + np.argmin(low.reshape(count, run), axis=1)
    highs = offsets + np.argmax(high.reshape(count, run), axis=1)
    picked = np.concatenate((np.array([0, size - 1], dtype=np.intp), lows, highs))
    return np.unique(np.minimum(picked, size - 1))


def render_report(
    result: BacktestResult,
    *,
    title: str,
    series: SeriesKey | None = None,
    params: Mapping[str, ParamValue] | None = None,
) -> str:
    """The report of ``result`` as one HTML document (see the module docstring).

    ``title`` names the strategy (the page's heading), ``series`` the candles it ran on
    (default: the market's symbol) and ``params`` the parameter values it ran with.
    """
    script = _asset("report.js")
    guard = _asset("errors.js")
    style = _asset("report.css")
    policy = "; ".join(
        (
            "default-src 'none'",
            f"script-src {_hash(guard)} {_hash(script)}",
            f"style-src {_hash(style)}",
            "base-uri 'none'",
            "form-action 'none'",
        )
    )
    market = result.market
    what = str(series) if series is not None else market.symbol
    page_title = f"{title} — {what}" if title else what
    parts = [
        "<!DOCTYPE html>\n",
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n',
        f'<meta http-equiv="Content-Security-Policy" content="{policy}">\n',
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n',
        '<meta name="referrer" content="no-referrer">\n',
        f'<meta name="generator" content="trader {escape(trader.__version__)}">\n',
        f"<title>{escape(page_title)}</title>\n",
        f"<style>{style}</style>\n</head>\n<body>\n",
        f"<script>{guard}</script>\n",
        _header(result, title, series, params or {}),
        '<div id="report-error" class="error" role="alert" hidden></div>\n',
        _metrics(result),
        _charts(result),
        _trades(result.trades, market.base, market.quote),
        f"<footer>Made by trader {escape(trader.__version__)}. Times are UTC. "
        "This file loads nothing from the network.</footer>\n",
        '<script type="application/json" id="report-data">',
        _chart_data(result),
        "</script>\n",
        f"<script>{script}</script>\n</body>\n</html>\n",
    ]
    return "".join(parts)


def write_report(
    result: BacktestResult,
    path: Path,
    *,
    title: str,
    series: SeriesKey | None = None,
    params: Mapping[str, ParamValue] | None = None,
) -> Path:
    """Write :func:`render_report` to ``path`` (UTF-8; ``~`` is expanded) and return the path.

    The file appears whole or not at all: it is written to a temporary file beside ``path``
    and renamed over it. Raises :class:`ReportError` naming the path when it cannot be written.
    """
    text = render_report(result, title=title, series=series, params=params)
    target = Path(path).expanduser()
    folder = target.parent
    if not folder.is_dir():
        raise ReportError(
            f"cannot write the report to {target}: the folder {folder} does not exist; "
            "create it or choose another path"
        )
    if target.is_dir():
        raise ReportError(f"cannot write the report to {target}: it is a folder; name a file")
    temporary = folder / f".{target.name}.{secrets.token_hex(4)}.tmp"
    try:
        handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(handle, "wb") as out:
            out.write(text.encode("utf-8"))
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, target)
    except OSError as error:
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
        reason = error.strerror or str(error)
        raise ReportError(
            f"cannot write the report to {target}: {reason}; choose a writable path"
        ) from None
    return target


# -- page parts ---------------------------------------------------------------------------------


def _header(
    result: BacktestResult,
    title: str,
    series: SeriesKey | None,
    params: Mapping[str, ParamValue],
) -> str:
    candles = result.candles
    market = result.market
    settings = result.settings
    fills = settings.fills
    what = f"{series.exchange} · {series.symbol} · {series.timeframe}" if series else market.symbol
    if len(candles):
        first = int(candles.time[0])
        last = int(candles.time[-1]) + result.timeframe_ms
        span = f"{_time(first)} to {_time(last)} UTC"
    else:
        span = "no candles"
    lines = [
        "<header>\n",
        f"<h1>{escape(title or 'Backtest')}</h1>\n",
        f'<p class="subtitle" id="series">{escape(what)} · {len(candles):,} candles · '
        f"{escape(span)}</p>\n",
        '<dl class="facts">',
    ]
    sizing = settings.sizing
    slippage = (
        "none"
        if fills.slippage_mode is SlippageMode.NONE or not fills.slippage
        else f"{fills.slippage_mode.value} {_plain_decimal(fills.slippage)}"
    )
    facts = [
        ("initial cash", f"{_money(settings.initial_cash)} {market.quote}"),
        ("fills", fills.timing.value.replace("_", " ")),
        ("fees", f"maker {_rate(fills.maker_fee)}, taker {_rate(fills.taker_fee)}"),
        ("slippage", slippage),
        (
            "sizing",
            f"{sizing.mode.value.replace('_', ' ')} {_plain_decimal(sizing.value)}"
            + (", whole units" if sizing.whole_units else ""),
        ),
    ]
    if fills.volume_fraction is not None:
        facts.append(("volume cap", f"{_rate(fills.volume_fraction)} of a candle's volume"))
    lines += [f"<div><dt>{escape(k)}</dt><dd>{escape(v)}</dd></div>" for k, v in facts]
    lines.append("</dl>\n")
    if params:
        lines.append('<table class="params" id="parameters"><thead><tr><th>parameter')
        lines.append("<th>value</thead><tbody>\n")
        for name, value in params.items():
            lines.append(f"<tr><td>{escape(str(name))}<td>{escape(_param(value))}")
        lines.append("</tbody></table>\n")
    else:
        lines.append('<p id="parameters">Parameters: none (defaults).</p>\n')
    lines.append("</header>\n")
    return "".join(lines)


_PERCENT = {
    "total_return",
    "cagr",
    "max_drawdown",
    "exposure",
    "win_rate",
    "average_trade_return",
}
_MONEY = {"initial_equity", "final_equity", "average_trade", "best_trade", "worst_trade", "fees"}
_LABELS = {
    "cagr": "CAGR",
    "sharpe": "Sharpe ratio",
    "sortino": "Sortino ratio",
    "calmar": "Calmar ratio",
    "max_drawdown_candles": "max drawdown length",
    "max_drawdown_ms": "max drawdown duration",
    "trades": "closed trades",
    "fees": "fees paid",
}


def _metrics(result: BacktestResult) -> str:
    metrics = result.metrics
    quote = result.market.quote
    rows = ['<section>\n<h2>Metrics</h2>\n<dl class="metrics" id="metrics">\n']
    for field in dataclasses.fields(Metrics):
        name = field.name
        value = getattr(metrics, name)
        label = _LABELS.get(name, name.replace("_", " "))
        raw = "" if value is None else repr(value)
        rows.append(
            f'<div data-metric="{name}" data-value="{raw}"><dt>{escape(label)}</dt>'
            f"<dd>{escape(_metric_text(name, value, quote))}</dd></div>\n"
        )
    open_trades = sum(trade.open for trade in result.trades)
    rows.append(
        f'<div data-metric="exact_final_equity" data-value="{result.final_equity}">'
        f"<dt>final equity, exact</dt><dd>{escape(_plain_decimal(result.final_equity))} "
        f"{escape(quote)}</dd></div>\n"
        f'<div data-metric="open_trades" data-value="{open_trades}"><dt>open trades</dt>'
        f"<dd>{open_trades}</dd></div>\n"
    )
    rows.append("</dl>\n</section>\n")
    return "".join(rows)


def _metric_text(name: str, value: float | int | None, quote: str) -> str:
    if value is None:
        return _DASH
    number = float(value)
    if not math.isfinite(number):
        return "∞" if number > 0 else ("−∞" if number < 0 else "n/a")
    if name in _PERCENT:
        return f"{number:.2%}"
    if name in _MONEY:
        return f"{_money(number)} {quote}"
    if name == "max_drawdown_candles":
        return f"{int(value):,} candles"
    if name == "max_drawdown_ms":
        return _duration(int(value))
    if isinstance(value, int):
        return f"{value:,}"
    if name == "periods_per_year":
        return f"{number:,.6g}"
    return f"{number:,.3f}"


def _charts(result: BacktestResult) -> str:
    return (
        '<section class="charts">\n<h2>Charts</h2>\n'
        '<output id="readout">Point at a chart to read the time, close, equity, drawdown and '
        "the nearest fill. Add #t=MILLISECONDS to the address to pin a moment.</output>\n"
        '<figure><figcaption>Price (close)<span class="legend">'
        '<span class="buy">▲ buy</span> <span class="sell">▼ sell</span></span></figcaption>'
        '<svg id="chart-price" class="plot" data-height="340" role="img" '
        'aria-label="close price with buy and sell fills"></svg></figure>\n'
        f"<figure><figcaption>Equity ({escape(result.market.quote)})</figcaption>"
        '<svg id="chart-equity" class="plot" data-height="220" role="img" '
        'aria-label="equity curve"></svg></figure>\n'
        "<figure><figcaption>Drawdown from the running peak</figcaption>"
        '<svg id="chart-drawdown" class="plot" data-height="170" role="img" '
        'aria-label="drawdown curve"></svg></figure>\n'
        "<noscript><p>The charts need JavaScript; everything else is on the page.</p></noscript>\n"
        "</section>\n"
    )


def _trades(trades: Sequence[Trade], base: str, quote: str) -> str:
    base_text, quote_text = escape(base), escape(quote)
    closed = sum(not trade.open for trade in trades)
    rows = [
        "<section>\n<h2>Trades</h2>\n",
        f'<p id="trade-count">{len(trades):,} round trips ({closed:,} closed). A trade opens '
        "with a buy from a flat position and closes when it is flat again; prices are "
        "volume-weighted over its fills; P&amp;L is net of every fee paid in it.</p>\n",
        '<div class="scroll"><table class="trades" id="trades"><thead><tr>'
        "<th>#<th>entry (UTC)<th>exit (UTC)<th>side<th>fills"
        f"<th>amount ({base_text})<th>entry price<th>exit price<th>P&amp;L ({quote_text})"
        f"<th>return<th>fees ({quote_text})</thead>\n<tbody>\n",
    ]
    for number, trade in enumerate(trades, 1):
        if trade.open:
            kind, exit_time = "open", "open"
        else:
            kind = "win" if trade.pnl > 0 else "loss"
            exit_time = _time(trade.exit_time) if trade.exit_time is not None else _DASH
        exit_price = _DASH if trade.exit_price is None else _price(trade.exit_price)
        rows.append(
            f'<tr class="{kind}"><td>{number}<td>{_time(trade.entry_time)}<td>{exit_time}'
            f"<td>long<td>{trade.fills}<td>{_plain_decimal(trade.amount)}"
            f"<td>{_price(trade.entry_price)}<td>{exit_price}<td>{_money(trade.pnl)}"
            f"<td>{trade.return_:.2%}<td>{_money(trade.fees)}\n"
        )
    if not trades:
        rows.append('<tr><td colspan="11">No trades.\n')
    rows.append("</tbody></table></div>\n</section>\n")
    return "".join(rows)


def _chart_data(result: BacktestResult) -> str:
    candles = result.candles
    market = result.market
    initial = float(result.settings.initial_cash)
    count = len(candles)
    start = int(candles.time[0]) if count else 0
    end = int(candles.time[-1]) + result.timeframe_ms if count else 1
    # Close, equity and drawdown are sampled at each candle's close; each curve starts at the
    # first candle's open (its open price, the initial cash, no drawdown).
    closes = candles.time.astype(np.int64) + result.timeframe_ms
    equity = np.asarray(result.equity, dtype=np.float64)
    depth = drawdown(equity, initial)[0] if count else np.empty(0)
    first_open = float(candles.open[0]) if count else math.nan
    payload: dict[str, Any] = {
        "start": start,
        "end": end,
        "base": market.base,
        "quote": market.quote,
        "initial": initial,
        "candles": count,
        "timeframe": result.timeframe_ms,
        "price": _series(closes, candles.close, start, first_open),
        "equity": _series(closes, equity, start, initial),
        "drawdown": _series(closes, depth, start, 0.0),
    }
    text = json.dumps(payload, separators=(",", ":"), allow_nan=False)
    fills = _fills_json(result.fill_rows.rows)
    return ('{"fills":' + fills + "," + text[1:]).translate(_JSON_ESCAPES)


def _series(
    times: npt.NDArray[np.int64],
    values: npt.NDArray[np.float64] | npt.NDArray[Any],
    start: int,
    first: float,
) -> dict[str, list[Any]]:
    """A curve for the page: the thinned samples, with the value at ``start`` in front."""
    if not len(times):
        return {"t": [], "v": []}
    data = np.asarray(values, dtype=np.float64)
    keep = downsample(data)
    picked_times = [start, *times[keep].tolist()]
    picked = [first, *data[keep].tolist()]
    return {"t": picked_times, "v": [_short(v) for v in picked]}


def _short(value: float) -> float | None:
    """A float with 9 significant digits (plenty for a chart) or ``None`` when not finite."""
    if not math.isfinite(value):
        return None
    return float(f"{value:.9g}")


def _fills_json(rows: Sequence[FillRow]) -> str:
    """Every fill, exact: times, prices and amounts as JSON numbers, sides as one letter."""
    times = ",".join(str(row[0]) for row in rows)
    prices = ",".join(_plain_decimal(row[3]) for row in rows)
    amounts = ",".join(_plain_decimal(row[2]) for row in rows)
    sides = "".join("b" if row[1] else "s" for row in rows)
    return f'{{"t":[{times}],"p":[{prices}],"a":[{amounts}],"side":"{sides}"}}'


# -- formatting ---------------------------------------------------------------------------------


@functools.cache
def _asset(name: str) -> str:
    return resources.files("trader.backtest").joinpath(_ASSETS).joinpath(name).read_text("utf-8")


def _hash(source: str) -> str:
    digest = hashlib.sha256(source.encode("utf-8")).digest()
    return f"'sha256-{base64.b64encode(digest).decode('ascii')}'"


def _time(time_ms: int) -> str:
    """``2024-01-01 00:00`` (seconds only when not zero)."""
    text = format_time(time_ms)
    if not text.endswith("Z"):
        return text
    text = text[:-1].replace("T", " ")
    return text[:-3] if text.endswith(":00") and len(text) == 19 else text


def _duration(ms: int) -> str:
    if ms <= 0:
        return "0"
    minutes, rest = divmod(ms, 60_000)
    if minutes == 0:
        return f"{rest / 1000:g} s"
    days, minutes = divmod(minutes, 1440)
    hours, minutes = divmod(minutes, 60)
    parts = [
        f"{days:,}d" if days else "",
        f"{hours}h" if hours else "",
        f"{minutes}m" if minutes else "",
    ]
    return " ".join(part for part in parts if part)


def _plain_decimal(value: Decimal) -> str:
    """An exact decimal without exponent or trailing zeros (a valid JSON number)."""
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "0") else text


def _price(value: Decimal) -> str:
    """A price to 10 significant digits (averages of several fills have many more), with at
    least 2 decimals so a column lines up."""
    if not value:
        return "0.00"
    text = _plain_decimal(value.quantize(Decimal(1).scaleb(value.adjusted() - 9)))
    whole, _, fraction = text.partition(".")
    return f"{whole}.{fraction.ljust(2, '0')}"


def _money(value: Decimal | float) -> str:
    """Quote-currency amounts: 2 decimals with separators, 4 significant digits below 1."""
    if isinstance(value, float):
        if not math.isfinite(value):
            return "∞" if value > 0 else ("−∞" if value < 0 else "n/a")
        value = Decimal(repr(value))
    if not value or abs(value) >= 1:
        return f"{value:,.2f}"
    places = min(12, 3 - value.adjusted())
    return f"{value:,.{places}f}"


def _rate(value: Decimal) -> str:
    """A fraction as an exact percentage: ``0.002`` is ``0.2 %``."""
    return f"{_plain_decimal(value * 100)} %"


def _param(value: ParamValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
