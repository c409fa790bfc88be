/* trader backtest report: draws the embedded data into the three SVG charts (price with fills,
   equity, drawdown) on one time axis, with a hover readout. No libraries, no network.
   On success the body's data-rendered lists the charts drawn; errors go to data-error. */
(function () {
  "use strict";

  var data = JSON.parse(document.getElementById("report-data").textContent);
  var NS = document.getElementById("chart-price").namespaceURI;
  var MARGIN = { left: 76, right: 14, top: 10, bottom: 24 };
  var MINUTE = 60000, HOUR = 60 * MINUTE, DAY = 24 * HOUR;
  var TIME_STEPS = [
    MINUTE, 5 * MINUTE, 15 * MINUTE, 30 * MINUTE, HOUR, 2 * HOUR, 6 * HOUR, 12 * HOUR,
    DAY, 2 * DAY, 7 * DAY, 14 * DAY, 30 * DAY, 91 * DAY, 182 * DAY, 365 * DAY, 730 * DAY,
    1825 * DAY, 3650 * DAY
  ];
  var numberFormats = {};
  var charts = [];
  var start = data.start;
  var end = data.end > data.start ? data.end : data.start + 1;

  function el(name, attrs, parent) {
    var node = document.createElementNS(NS, name);
    for (var key in attrs) {
      if (Object.prototype.hasOwnProperty.call(attrs, key)) node.setAttribute(key, attrs[key]);
    }
    if (parent) parent.appendChild(node);
    return node;
  }

  function fixed(value, digits) {
    digits = Math.max(0, Math.min(12, digits));
    if (!numberFormats[digits]) {
      numberFormats[digits] = new Intl.NumberFormat("en-US", {
        minimumFractionDigits: digits, maximumFractionDigits: digits
      });
    }
    return numberFormats[digits].format(value);
  }

  function decimalsFor(step) {
    return step > 0 ? Math.max(0, -Math.floor(Math.log10(step) + 1e-9)) : 2;
  }

  function money(value) {
    if (value === null || !isFinite(value)) return "–";
    var size = Math.abs(value);
    return fixed(value, size >= 1 || size === 0 ? 2 : 3 - Math.floor(Math.log10(size)));
  }

  function percent(value) {
    return value === null || !isFinite(value) ? "–" : fixed(value * 100, 2) + " %";
  }

  function timeText(t, withDate) {
    var iso = new Date(t).toISOString();
    var text = iso.slice(0, 10) + " " + iso.slice(11, 16);
    if (iso.slice(17, 19) !== "00") text += iso.slice(16, 19);
    return withDate === false ? text.slice(5) : text;
  }

  function niceTicks(lo, hi, count) {
    var raw = (hi - lo) / Math.max(1, count);
    var magnitude = Math.pow(10, Math.floor(Math.log10(raw)));
    var norm = raw / magnitude;
    var step = (norm <= 1 ? 1 : norm <= 2 ? 2 : norm <= 5 ? 5 : 10) * magnitude;
    var values = [];
    for (var i = Math.ceil(lo / step); i * step <= hi + step * 1e-9; i++) values.push(i * step);
    return { values: values, step: step };
  }

  function extent(values, into) {
    for (var i = 0; i < values.length; i++) {
      var v = values[i];
      if (v === null || !isFinite(v)) continue;
      if (v < into[0]) into[0] = v;
      if (v > into[1]) into[1] = v;
    }
    return into;
  }

  // The index of the last sample at or before t (0 when t is before the first).
  function atOrBefore(times, t) {
    var lo = 0, hi = times.length - 1;
    if (hi < 0) return -1;
    while (lo < hi) {
      var mid = (lo + hi + 1) >> 1;
      if (times[mid] <= t) lo = mid; else hi = mid - 1;
    }
    return lo;
  }

  function linePath(times, values, sx, sy) {
    var parts = [];
    var pen = "M";
    for (var i = 0; i < times.length; i++) {
      var v = values[i];
      if (v === null || !isFinite(v)) { pen = "M"; continue; }
      parts.push(pen + sx(times[i]).toFixed(1) + " " + sy(v).toFixed(1));
      pen = "L";
    }
    return parts.join("");
  }

  function drawChart(name, options) {
    var svg = document.getElementById("chart-" + name);
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    var width = Math.max(320, Math.floor(svg.parentNode.getBoundingClientRect().width) || 800);
    var height = Number(svg.getAttribute("data-height")) || 200;
    svg.setAttribute("width", width);
    svg.setAttribute("height", height);
    svg.setAttribute("viewBox", "0 0 " + width + " " + height);
    var x0 = MARGIN.left, x1 = width - MARGIN.right;
    var y0 = height - MARGIN.bottom, y1 = MARGIN.top;
    var range = options.range;
    var lo = range[0], hi = range[1];
    if (!(hi >= lo)) { lo = 0; hi = 1; }
    if (hi === lo) {
      var pad = Math.abs(hi) * 0.01 || 1;
      lo -= pad; hi += pad;
    } else if (!options.exact) {
      var margin = (hi - lo) * 0.04;
      lo -= margin; hi += margin;
    }
    var sx = function (t) { return x0 + (t - start) / (end - start) * (x1 - x0); };
    var sy = function (v) { return y0 - (v - lo) / (hi - lo) * (y0 - y1); };

    var axis = el("g", { "class": "axis" }, svg);
    var yTicks = niceTicks(lo, hi, Math.max(2, Math.floor((y0 - y1) / 40)));
    var digits = decimalsFor(yTicks.step);
    yTicks.values.forEach(function (v) {
      var y = sy(v).toFixed(1);
      el("line", { "class": "grid", x1: x0, x2: x1, y1: y, y2: y }, axis);
      el("text", { x: x0 - 6, y: y, dy: "0.32em", "text-anchor": "end" }, axis).textContent =
        options.tick(v, digits);
    });
    var span = end - start;
    var step = TIME_STEPS[TIME_STEPS.length - 1];
    var most = Math.max(2, Math.floor((x1 - x0) / 120));
    for (var s = 0; s < TIME_STEPS.length; s++) {
      if (span / TIME_STEPS[s] <= most) { step = TIME_STEPS[s]; break; }
    }
    for (var t = Math.ceil(start / step) * step; t <= end; t += step) {
      var x = sx(t).toFixed(1);
      el("line", { "class": "grid", x1: x, x2: x, y1: y1, y2: y0 }, axis);
      el("text", { x: x, y: y0 + 15, "text-anchor": "middle" }, axis).textContent =
        step >= DAY ? timeText(t).slice(0, 10) : timeText(t, span > DAY ? false : true).slice(-11);
    }
    el("rect", { "class": "frame", x: x0, y: y1, width: x1 - x0, height: y0 - y1 }, svg);

    if (!options.times.length) {
      el("text", { "class": "empty", x: (x0 + x1) / 2, y: (y0 + y1) / 2,
        "text-anchor": "middle" }, svg).textContent = "no candles";
    }
    if (options.area) {
      var body = linePath(options.times, options.values, sx, sy);
      if (body) {
        var first = sx(options.times[0]).toFixed(1);
        var last = sx(options.times[options.times.length - 1]).toFixed(1);
        var zero = sy(0).toFixed(1);
        el("path", {
          "class": "drawdown-area",
          d: "M" + first + " " + zero + "L" + body.slice(1) + "L" + last + " " + zero + "Z"
        }, svg);
      }
    }
    if (options.baseline !== undefined) {
      var yb = sy(options.baseline).toFixed(1);
      el("line", { "class": "baseline", x1: x0, x2: x1, y1: yb, y2: yb }, svg);
    }
    el("path", {
      "class": "line series " + name,
      "data-points": options.times.length,
      d: linePath(options.times, options.values, sx, sy)
    }, svg);
    if (options.markers) drawMarkers(svg, sx, sy, options.markers);
    var cursor = el("line", { "class": "cursor", x1: 0, x2: 0, y1: y1, y2: y0,
      visibility: "hidden" }, svg);
    var overlay = el("rect", { "class": "overlay", x: x0, y: y1, width: x1 - x0,
      height: y0 - y1 }, svg);
    var chart = { sx: sx, x0: x0, x1: x1, cursor: cursor };
    overlay.addEventListener("mousemove", function (event) {
      var box = svg.getBoundingClientRect();
      var px = event.clientX - box.left;
      showAt(start + (px - x0) / (x1 - x0) * (end - start));
    });
    overlay.addEventListener("mouseleave", hideCursor);
    return chart;
  }

  function drawMarkers(svg, sx, sy, fills) {
    var buys = [], sells = [];
    for (var i = 0; i < fills.t.length; i++) {
      var x = sx(fills.t[i]).toFixed(1), y = sy(fills.p[i]).toFixed(1);
      if (fills.side.charAt(i) === "b") buys.push("M" + x + " " + y + "l-4.5 8h9z");
      else sells.push("M" + x + " " + y + "l-4.5 -8h9z");
    }
    el("path", { "class": "marker buy", "data-count": buys.length, d: buys.join("") }, svg)
      .appendChild(el("title", {})).textContent = buys.length + " buys";
    el("path", { "class": "marker sell", "data-count": sells.length, d: sells.join("") }, svg)
      .appendChild(el("title", {})).textContent = sells.length + " sells";
  }

  function sampleAt(series, t) {
    var i = atOrBefore(series.t, t);
    return i < 0 ? null : series.v[i];
  }

  function showAt(t) {
    if (!(t >= start && t <= end)) { hideCursor(); return; }
    if (data.timeframe > 0) t = start + Math.round((t - start) / data.timeframe) * data.timeframe;
    charts.forEach(function (chart) {
      var x = chart.sx(t).toFixed(1);
      chart.cursor.setAttribute("x1", x);
      chart.cursor.setAttribute("x2", x);
      chart.cursor.setAttribute("visibility", "visible");
    });
    var parts = [timeText(t) + " UTC"];
    var close = sampleAt(data.price, t);
    if (close !== null) parts.push("close " + money(close));
    var equity = sampleAt(data.equity, t);
    if (equity !== null) parts.push("equity " + money(equity) + " " + data.quote);
    var drawdown = sampleAt(data.drawdown, t);
    if (drawdown !== null) parts.push("drawdown " + percent(drawdown));
    var fills = data.fills;
    if (fills.t.length && charts.length) {
      var i = atOrBefore(fills.t, t);
      var best = -1, bestGap = Infinity;
      for (var k = Math.max(0, i - 1); k <= Math.min(fills.t.length - 1, i + 1); k++) {
        var gap = Math.abs(charts[0].sx(fills.t[k]) - charts[0].sx(t));
        if (gap < bestGap) { best = k; bestGap = gap; }
      }
      if (best >= 0 && bestGap <= 6) {
        parts.push((fills.side.charAt(best) === "b" ? "buy " : "sell ") + fills.a[best] + " " +
          data.base + " @ " + fills.p[best] + " (" + timeText(fills.t[best]) + ")");
      }
    }
    var readout = document.getElementById("readout");
    readout.textContent = parts.join("  ·  ");
    readout.setAttribute("data-time", String(Math.round(t)));
  }

  function hideCursor() {
    charts.forEach(function (chart) { chart.cursor.setAttribute("visibility", "hidden"); });
  }

  function priceRange() {
    var range = extent(data.price.v, [Infinity, -Infinity]);
    return extent(data.fills.p, range);
  }

  var definitions = [
    ["price", function () {
      return drawChart("price", {
        times: data.price.t, values: data.price.v, range: priceRange(), markers: data.fills,
        tick: function (v, digits) { return fixed(v, digits); }
      });
    }],
    ["equity", function () {
      var range = extent(data.equity.v, [data.initial, data.initial]);
      return drawChart("equity", {
        times: data.equity.t, values: data.equity.v, range: range, baseline: data.initial,
        tick: function (v, digits) { return fixed(v, digits); }
      });
    }],
    ["drawdown", function () {
      var worst = extent(data.drawdown.v, [0, 0])[1];
      var negative = data.drawdown.v.map(function (v) { return v === null ? null : -v; });
      return drawChart("drawdown", {
        times: data.drawdown.t, values: negative, range: [-(worst || 0.01) * 1.08, 0],
        exact: true, area: true,
        tick: function (v, digits) { return fixed(v * 100, Math.max(0, digits - 2)) + " %"; }
      });
    }]
  ];

  function render() {
    var done = [];
    charts = [];
    definitions.forEach(function (definition) {
      try {
        charts.push(definition[1]());
        done.push(definition[0]);
      } catch (error) {
        window.traderReportError(definition[0] + " chart: " + (error && error.message || error));
      }
    });
    document.body.setAttribute("data-rendered", done.join(","));
    var pinned = /^#t=(-?[0-9]+)$/.exec(window.location.hash);
    if (pinned) showAt(Number(pinned[1]));
  }

  var resizeTimer = null;
  window.addEventListener("resize", function () {
    if (resizeTimer !== null) window.clearTimeout(resizeTimer);
    resizeTimer = window.setTimeout(render, 150);
  });
  render();
})();
