// Charts of the operator UI, drawn with uPlot from JSON the page embeds (json_script).
"use strict";
(function () {
  const colors = ["#0b5cad", "#c0262d", "#e08a00", "#1a7f37"];

  function width(el) { return Math.max(el.clientWidth, 260); }

  function draw(el, series, data, unit) {
    if (!data[0].length) {
      el.innerHTML = '<p class="empty">No data in this period.</p>';
      return;
    }
    const opts = {
      width: width(el), height: 220,
      scales: { x: { time: true } },
      axes: [{}, { label: unit || "", size: 60 }],
      series: [{}].concat(series.map((s, i) => Object.assign({ stroke: colors[i % colors.length], width: 1.5, spanGaps: true }, s))),
    };
    const plot = new uPlot(opts, data, el);
    el.dataset.drawn = String(data[0].length);
    new ResizeObserver(() => plot.setSize({ width: width(el), height: 220 })).observe(el);
  }

  function rateCharts() {
    const source = document.getElementById("rate-data");
    if (!source) return;
    const charts = JSON.parse(source.textContent);
    document.querySelectorAll("[data-rates]").forEach((el) => {
      const chart = charts[el.dataset.rates];
      const tables = ["received", "sent"].map((k) => [chart[k].map((p) => p[0]), chart[k].map((p) => p[1])]);
      const data = tables[0][0].length || tables[1][0].length ? uPlot.join(tables) : [[], [], []];
      draw(el, [{ label: "received" }, { label: "sent" }], data, el.dataset.unit);
    });
  }

  function metricCharts() {
    const source = document.getElementById("metric-data");
    if (!source) return;
    const charts = JSON.parse(source.textContent);
    document.querySelectorAll("[data-metric]").forEach((el) => {
      const m = charts.metrics[el.dataset.metric];
      draw(el, [
        { label: "average" },
        { label: "moving avg " + charts.windows[0], width: 2 },
        { label: "moving avg " + charts.windows[1], width: 2, dash: [6, 4] },
      ], [m.t, m.avg, m.ma[0], m.ma[1]]);
    });
  }

  rateCharts();
  metricCharts();
})();
