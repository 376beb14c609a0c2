// Charts of the operator UI, drawn with uPlot from the chart set the page embeds
// (json_script "chart-data", made by web/charts.py) and kept live: on every "live-tick"
// (live.js) the page asks its data-series URL for the tail after its newest point and
// hands the new points to the same uPlot (setData), never building a chart again.
// A null in a line is a gap and stays one (spanGaps off). The x axis ends at "now".
// Each chart element carries data-points (points of its first line) and data-gaps (its
// breaks), and the uPlot itself as el.uplot, for the browser tests.
"use strict";
(function () {
  const source = document.getElementById("chart-data");
  const box = document.querySelector("[data-series]");
  if (!source || !box || typeof uPlot === "undefined") return;
  const colors = ["#0b5cad", "#c0262d", "#e08a00", "#1a7f37"];
  const HEIGHT = 220;
  const stamp = uPlot.fmtDate("{YYYY}-{MM}-{DD} {HH}:{mm}:{ss}");
  let set = JSON.parse(source.textContent);
  const shown = new Map();  // chart name -> {el, chart, plot}
  let busy = false;

  function width(el) { return Math.max(el.clientWidth, 260); }

  function number(v) {
    if (Number.isInteger(v)) return String(v);
    const digits = Math.abs(v) >= 100 ? 0 : Math.abs(v) >= 10 ? 1 : 2;
    return v.toFixed(digits);
  }

  // Without the cursor on the chart the legend shows the newest values, never "--".
  function newest(values) {
    for (let i = values.length - 1; i >= 0; i--) if (values[i] != null) return i;
    return null;
  }

  function legendValue(unit) {
    return function (u, v, sidx, idx) {
      if (idx == null) {
        const i = newest(u.data[sidx]);
        v = i == null ? null : u.data[sidx][i];
      }
      if (v == null) return "no data";
      return number(v) + (unit ? " " + unit : "");
    };
  }

  function timeValue(u, v, sidx, idx) {
    if (idx == null) {
      const i = newest(u.data[1] || []);
      return i == null ? "–" : "latest " + stamp(new Date(u.data[0][i] * 1000));
    }
    return v == null ? "–" : stamp(new Date(v * 1000));
  }

  // A dashed line and a label at the present: the right edge of every chart.
  function drawNow(u) {
    const x = u.valToPos(set.now, "x", true);
    const ctx = u.ctx;
    ctx.save();
    ctx.strokeStyle = "#5b6670";
    ctx.fillStyle = "#5b6670";
    ctx.setLineDash([3, 3]);
    ctx.lineWidth = 1;
    ctx.beginPath();
    ctx.moveTo(x, u.bbox.top);
    ctx.lineTo(x, u.bbox.top + u.bbox.height);
    ctx.stroke();
    ctx.font = 11 * uPlot.pxRatio + "px system-ui, sans-serif";
    ctx.textAlign = "right";
    ctx.fillText("now", x - 4 * uPlot.pxRatio, u.bbox.top + 12 * uPlot.pxRatio);
    ctx.restore();
  }

  function seriesOf(chart) {
    return [{ value: timeValue }].concat(chart.labels.map(function (label, i) {
      const line = {
        label: label,
        stroke: colors[i % colors.length],
        width: i ? 2 : 1.5,
        spanGaps: false,
        value: legendValue(chart.unit),
      };
      if (i === 2) line.dash = [6, 4];
      if (chart.step) line.paths = uPlot.paths.stepped({ align: 1 });
      return line;
    }));
  }

  function dataOf(chart) { return [chart.t].concat(chart.lines); }

  function mark(el, chart) {
    const first = chart.lines[0] || [];
    el.dataset.points = String(first.filter(function (v) { return v != null; }).length);
    el.dataset.gaps = String(first.filter(function (v) { return v == null; }).length);
  }

  function draw(el, chart) {
    forget(el);
    el.textContent = "";
    const opts = {
      width: width(el),
      height: HEIGHT,
      scales: { x: { time: true, range: function () { return [set.now - set.span, set.now]; } } },
      axes: [{}, { label: chart.unit || "", size: 60 }],
      series: seriesOf(chart),
      hooks: { draw: [drawNow] },
    };
    const plot = new uPlot(opts, dataOf(chart), el);
    el.uplot = plot;
    el.resizer = new ResizeObserver(function () { plot.setSize({ width: width(el), height: HEIGHT }); });
    el.resizer.observe(el);
    shown.set(el.dataset.chart, { el: el, chart: chart, plot: plot });
    mark(el, chart);
  }

  function forget(el) {
    if (el.resizer) el.resizer.disconnect();
    if (el.uplot) el.uplot.destroy();
    el.resizer = el.uplot = null;
  }

  function empty(el, name, chart) {
    forget(el);
    el.innerHTML = '<p class="empty">No data in this period.</p>';
    el.dataset.points = "0";
    shown.set(name, { el: el, chart: chart || null, plot: null });
  }

  function show(el, name, chart) {
    if (chart && chart.t.length) draw(el, chart); else empty(el, name, chart);
  }

  // A metric that first reports while the page is open gets a chart of its own.
  function grow(name, chart) {
    if (!("grow" in box.dataset)) return null;
    const placeholder = box.querySelector(".empty-charts");
    if (placeholder) placeholder.remove();
    const figure = document.createElement("figure");
    const caption = document.createElement("figcaption");
    caption.textContent = name + (chart.unit ? " (" + chart.unit + ")" : "");
    const el = document.createElement("div");
    el.className = "chart";
    el.dataset.chart = name;
    figure.append(caption, el);
    box.append(figure);
    return el;
  }

  // Points from `from` on are replaced by the tail's; those left of the window drop out.
  function merge(chart, tail, from) {
    let cut = chart.t.findIndex(function (x) { return x >= from; });
    if (cut < 0) cut = chart.t.length;
    const t = chart.t.slice(0, cut).concat(tail.t);
    const lines = chart.lines.map(function (line, i) { return line.slice(0, cut).concat(tail.lines[i]); });
    const start = t.findIndex(function (x) { return x >= set.now - set.span; });
    const keep = start < 0 ? t.length : start;
    return Object.assign({}, chart, {
      t: t.slice(keep),
      lines: lines.map(function (line) { return line.slice(keep); }),
    });
  }

  function apply(next) {
    const whole = next.from == null;
    set = Object.assign({}, set, { now: next.now, from: next.from });
    const names = new Set(Object.keys(next.charts));
    shown.forEach(function (_entry, name) { names.add(name); });
    names.forEach(function (name) {
      const entry = shown.get(name);
      let tail = next.charts[name];
      if (!entry) {
        const el = grow(name, tail);
        if (el) show(el, name, tail);
        return;
      }
      if (!tail && entry.chart) {
        // Nothing new: the old points still slide left as "now" moves.
        tail = Object.assign({}, entry.chart, { t: [], lines: entry.chart.lines.map(function () { return []; }) });
      }
      const chart = whole || !entry.chart ? tail : merge(entry.chart, tail, next.from);
      if (!entry.plot || !chart || !chart.t.length) {
        show(entry.el, name, chart);
        return;
      }
      entry.chart = chart;
      entry.plot.setData(dataOf(chart));
      entry.plot.setLegend();
      mark(entry.el, chart);
    });
  }

  function after() {
    let newestX = null;
    shown.forEach(function (entry) {
      const t = entry.chart ? entry.chart.t : [];
      if (t.length && (newestX === null || t[t.length - 1] > newestX)) newestX = t[t.length - 1];
    });
    return newestX;
  }

  function refresh() {
    if (busy) return;
    busy = true;
    const x = after();
    const url = box.dataset.series + (x === null ? "" : "&after=" + x);
    fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" })
      .then(function (response) {
        if (response.status === 401) { location.reload(); return null; }
        return response.ok ? response.json() : null;
      })
      .then(function (next) { if (next) apply(next); })
      .catch(function () { /* the next tick tries again */ })
      .finally(function () { busy = false; });
  }

  box.querySelectorAll("[data-chart]").forEach(function (el) {
    show(el, el.dataset.chart, set.charts[el.dataset.chart]);
  });
  document.body.addEventListener("live-tick", refresh);
})();
