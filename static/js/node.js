// Node page: charts of the last hour (uPlot), refreshed on live events.
//
// The series come from data-series-url as aligned arrays:
//   {t: [unix s], rx_bytes_per_s: [...], tx_bytes_per_s: [...],
//    peers: [{peer_id, name, rtt_ms: [...], loss_pct: [...]}]}
// with null where a bucket has no sample. Peer names are only used as uPlot series labels,
// which uPlot writes with textContent.
(function () {
  "use strict";

  const box = document.getElementById("charts");
  if (!box || !window.uPlot) return;
  const empty = document.getElementById("charts-empty");
  const url = box.dataset.seriesUrl;
  const charts = {};
  const MIN_REFRESH_MS = 5000;

  function colours() {
    const css = getComputedStyle(document.documentElement);
    const v = (n) => css.getPropertyValue(n).trim();
    return { text: v("--muted"), grid: v("--border"), rx: v("--accent"), tx: v("--ok"),
      palette: [v("--accent"), v("--ok"), v("--warn"), v("--relay"), v("--bad"), v("--muted")] };
  }

  function bits(bytesPerS) {
    if (bytesPerS === null || bytesPerS === undefined) return "–";
    let n = bytesPerS * 8, i = 0;
    const u = ["bit/s", "kbit/s", "Mbit/s", "Gbit/s"];
    while (n >= 1000 && i < u.length - 1) { n /= 1000; i += 1; }
    return n.toFixed(n >= 100 || i === 0 ? 0 : 1) + " " + u[i];
  }

  function axes(c, fmt) {
    const common = { stroke: c.text, grid: { stroke: c.grid, width: 1 }, ticks: { stroke: c.grid, width: 1 } };
    return [Object.assign({}, common), Object.assign({}, common, {
      size: 86, values: (u, vals) => vals.map(fmt),
    })];
  }

  function width(el) { return Math.max(260, el.clientWidth || 400); }

  function draw(id, series, data, fmt) {
    const el = document.getElementById(id);
    const c = colours();
    if (charts[id] && charts[id].series.length === series.length + 1) {
      charts[id].setData(data);
      return;
    }
    if (charts[id]) charts[id].destroy();
    charts[id] = new window.uPlot({
      width: width(el), height: 200,
      scales: { x: { time: true } },
      axes: axes(c, fmt),
      series: [{}].concat(series.map((s, i) => ({
        label: s.label, stroke: s.stroke || c.palette[i % c.palette.length], width: 1.5,
        value: (u, v) => fmt(v), spanGaps: false, points: { show: data[0].length <= 60, size: 4 },
      }))),
      legend: { live: true },
    }, data, el);
  }

  function render(d) {
    const c = colours();
    const has = d.t && d.t.length > 0;
    if (empty) empty.hidden = has;
    if (!has) return;
    draw("chart-rate", [{ label: "rx", stroke: c.rx }, { label: "tx", stroke: c.tx }],
      [d.t, d.rx_bytes_per_s, d.tx_bytes_per_s], bits);
    draw("chart-rtt", d.peers.map((p) => ({ label: p.name })), [d.t].concat(d.peers.map((p) => p.rtt_ms)),
      (v) => (v === null || v === undefined ? "–" : v.toFixed(v < 10 ? 1 : 0) + " ms"));
    draw("chart-loss", d.peers.map((p) => ({ label: p.name })), [d.t].concat(d.peers.map((p) => p.loss_pct)),
      (v) => (v === null || v === undefined ? "–" : v.toFixed(1) + " %"));
  }

  let last = 0, timer = null;
  function load() {
    last = Date.now();
    fetch(url, { headers: { "Accept": "application/json" }, credentials: "same-origin" })
      .then((r) => (r.ok ? r.json() : Promise.reject(r.status)))
      .then(render)
      .catch(() => {});
  }
  function schedule() {
    if (timer) return;
    timer = setTimeout(() => { timer = null; load(); }, Math.max(0, MIN_REFRESH_MS - (Date.now() - last)));
  }

  document.body.addEventListener("mesh-changed", schedule);
  if (window.ResizeObserver) {
    new ResizeObserver(() => {
      Object.keys(charts).forEach((id) => {
        const el = document.getElementById(id);
        charts[id].setSize({ width: width(el), height: 200 });
      });
    }).observe(box);
  }
  load();
})();
