// Live topology map (cytoscape). Used by the map page and the overview.
//
// The first graph comes in the page (json_script #graph-data); after that, every `mesh-refresh`
// event from live.js (coalesced live updates) re-fetches the graph JSON (data-graph-url) and patches the drawing in place:
// elements are added, updated or removed by id, so nodes that stay keep their position. Positions
// are remembered per network in localStorage, new nodes are placed next to their neighbours, and
// only the very first visit runs a layout (concentric: public hubs in the middle).
// Node names are only ever put into the page with textContent, never as HTML.
(function () {
  "use strict";

  const container = document.getElementById("map");
  const initial = document.getElementById("graph-data");
  if (!container || !initial || !window.cytoscape) return;

  const graphUrl = container.dataset.graphUrl;
  const nodeUrl = container.dataset.nodeUrl; // contains __id__
  const storeKey = "shadowmesh.map." + (container.dataset.network || "default");
  const tip = document.getElementById("map-tip");
  const summaryEl = document.querySelector("[data-map-summary]");

  // Colours come from the stylesheet so light and dark both work.
  function palette() {
    const css = getComputedStyle(document.documentElement);
    const v = (name) => css.getPropertyValue(name).trim();
    return {
      text: v("--text"), muted: v("--muted"), panel: v("--panel"), accent: v("--accent"),
      ok: v("--ok"), warn: v("--warn"), bad: v("--bad"), relay: v("--relay"), offline: v("--offline"),
      border: v("--border"),
    };
  }

  function styles(c) {
    return [
      { selector: "node", style: {
        "background-color": c.accent, "label": "data(label)", "color": c.text, "font-size": 12,
        "text-valign": "bottom", "text-margin-y": 6, "width": 26, "height": 26,
        "border-width": 2, "border-color": c.panel, "text-outline-color": c.panel, "text-outline-width": 2,
        "min-zoomed-font-size": 6,
      } },
      { selector: "node[?hub]", style: {
        "shape": "diamond", "width": 38, "height": 38, "background-color": c.accent,
        "border-color": c.text, "border-width": 2, "font-weight": "bold",
      } },
      { selector: "node[state = 'offline']", style: {
        "background-color": c.offline, "background-opacity": 0.55, "border-style": "dashed",
        "border-color": c.muted, "color": c.muted,
      } },
      { selector: "node:selected, node.hover", style: { "border-color": c.accent, "border-width": 4 } },
      { selector: "edge", style: {
        "width": "data(w)", "line-color": c.muted, "curve-style": "bezier", "opacity": 0.9,
      } },
      { selector: "edge[quality = 'good']", style: { "line-color": c.ok } },
      { selector: "edge[quality = 'warn']", style: { "line-color": c.warn } },
      { selector: "edge[quality = 'bad']", style: { "line-color": c.bad } },
      { selector: "edge[path = 'relay']", style: {
        // dashed and bowed, so a relayed path stays visible next to the direct links it rides on
        "line-style": "dashed", "line-dash-pattern": [7, 5], "curve-style": "unbundled-bezier",
        "control-point-distances": [36], "control-point-weights": [0.5],
      } },
      { selector: "edge.hover", style: { "width": "mapData(w, 1, 8, 4, 10)", "z-index": 10 } },
    ];
  }

  // Formatting ---------------------------------------------------------------
  function rate(bytesPerS) {
    if (bytesPerS === null || bytesPerS === undefined) return "–";
    const bits = bytesPerS * 8;
    const units = ["bit/s", "kbit/s", "Mbit/s", "Gbit/s"];
    let i = 0, n = bits;
    while (n >= 1000 && i < units.length - 1) { n /= 1000; i += 1; }
    return (n >= 100 || i === 0 ? n.toFixed(0) : n.toFixed(1)) + " " + units[i];
  }
  function ms(v) { return v === null || v === undefined ? "–" : v.toFixed(v < 10 ? 1 : 0) + " ms"; }
  function pct(v) { return v === null || v === undefined ? "–" : v.toFixed(v < 10 ? 1 : 0) + " %"; }

  function widthFor(bytesPerS) { // 1.5 .. 8 px on a log scale of bytes/s
    if (!bytesPerS || bytesPerS <= 0) return 1.5;
    return Math.max(1.5, Math.min(8, 1.5 + Math.log10(1 + bytesPerS) * 0.9));
  }

  function prepare(graph) {
    graph.edges.forEach((e) => { e.data.w = widthFor(e.data.bytes_per_s); });
    return graph;
  }

  // Positions ----------------------------------------------------------------
  function loadPositions() {
    try { return JSON.parse(localStorage.getItem(storeKey) || "{}"); } catch (e) { return {}; }
  }
  function savePositions() {
    const out = {};
    cy.nodes().forEach((n) => { out[n.id()] = n.position(); });
    try { localStorage.setItem(storeKey, JSON.stringify(out)); } catch (e) { /* private mode */ }
  }

  function placeNew(node, graph) {
    // Next to the centroid of already-placed neighbours, else on a ring just outside what is drawn.
    const id = node.data.id;
    const neighbours = graph.edges
      .filter((e) => e.data.source === id || e.data.target === id)
      .map((e) => (e.data.source === id ? e.data.target : e.data.source))
      .map((nid) => cy.getElementById(nid))
      .filter((n) => n.length && n.id() !== id);
    const jitter = () => (Math.random() - 0.5) * 40;
    if (neighbours.length) {
      const c = neighbours.reduce((acc, n) => ({ x: acc.x + n.position("x"), y: acc.y + n.position("y") }),
        { x: 0, y: 0 });
      return { x: c.x / neighbours.length + 130 + jitter(), y: c.y / neighbours.length + 90 + jitter() };
    }
    const placed = cy.nodes();
    if (placed.length === 0) return { x: 0, y: 0 };
    if (placed.length === 1) return { x: placed.position("x") + 170, y: placed.position("y") };
    // On a ring just outside what is drawn, at the angle that keeps it clearest of the nodes and
    // of the straight lines between them (so no new node lands on a line through two others).
    const cx = placed.reduce((a, n) => a + n.position("x"), 0) / placed.length;
    const cyy = placed.reduce((a, n) => a + n.position("y"), 0) / placed.length;
    const spread = placed.reduce((m, n) => Math.max(m, Math.hypot(n.position("x") - cx, n.position("y") - cyy)), 0);
    const r = Math.max(spread + 90, 150);
    const pts = placed.map((n) => n.position());
    let best = null, bestGap = -1;
    for (let k = 0; k < 24; k += 1) {
      const angle = (k / 24) * 2 * Math.PI + 0.13;
      const p = { x: cx + r * Math.cos(angle), y: cyy + r * Math.sin(angle) };
      let gap = Infinity;
      for (let i = 0; i < pts.length; i += 1) {
        gap = Math.min(gap, Math.hypot(p.x - pts[i].x, p.y - pts[i].y));
        for (let j = i + 1; j < pts.length && pts.length <= 60; j += 1) gap = Math.min(gap, 1.5 * lineGap(p, pts[i], pts[j]));
      }
      if (gap > bestGap) { bestGap = gap; best = p; }
    }
    return best;
  }

  function lineGap(p, a, b) { // distance from p to the infinite line through a and b
    const dx = b.x - a.x, dy = b.y - a.y, len = Math.hypot(dx, dy) || 1;
    return Math.abs(dy * (p.x - a.x) - dx * (p.y - a.y)) / len;
  }

  // Drawing ------------------------------------------------------------------
  const cy = window.cytoscape({
    container: container,
    style: styles(palette()),
    minZoom: 0.2, maxZoom: 3, wheelSensitivity: 0.3, boxSelectionEnabled: false,
  });
  container.cy = cy; // for tests and the console
  let userMoved = false; // once the user pans or zooms, updates no longer re-frame the view
  cy.on("scrollzoom pinchzoom dragpan", () => { userMoved = true; });
  cy.on("dragfree", "node", savePositions);

  function showSummary(summary) {
    if (!summaryEl || !summary) return;
    summaryEl.textContent = summary.online + " online · " + summary.offline + " offline · " +
      summary.links + " links (" + summary.relayed + " relayed)";
  }

  function frame() {
    if (userMoved || cy.nodes().length === 0) return;
    cy.fit(cy.nodes(), 40);
    if (cy.zoom() > 1.6) { cy.zoom(1.6); cy.center(); }
  }

  function apply(graph) {
    prepare(graph);
    const want = new Set();
    const stored = loadPositions();
    const wasEmpty = cy.nodes().length === 0;
    const added = [];
    cy.batch(() => {
      graph.nodes.forEach((n) => {
        want.add(n.data.id);
        const have = cy.getElementById(n.data.id);
        if (have.length) have.data(n.data);
        else added.push(n);
      });
      // Remembered positions first, so new nodes can be placed relative to them.
      added.filter((n) => stored[n.data.id]).forEach((n) => {
        cy.add({ group: "nodes", data: n.data, position: stored[n.data.id] });
      });
      const fresh = added.filter((n) => !stored[n.data.id]);
      if (!(wasEmpty && fresh.length === added.length)) {
        fresh.forEach((n) => cy.add({ group: "nodes", data: n.data, position: placeNew(n, graph) }));
      } else {
        fresh.forEach((n) => cy.add({ group: "nodes", data: n.data, position: { x: 0, y: 0 } }));
      }
      graph.edges.forEach((e) => {
        want.add(e.data.id);
        const have = cy.getElementById(e.data.id);
        if (have.length) have.data(e.data);
        else cy.add({ group: "edges", data: e.data });
      });
      cy.elements().forEach((el) => { if (!want.has(el.id())) cy.remove(el); });
    });
    if (wasEmpty && added.length > 1 && added.every((n) => !stored[n.data.id])) {
      // First drawing of a mesh nobody arranged yet: public hubs in the middle of a ring of the
      // others; with three or fewer others a plain circle (two around a hub would sit in a line).
      const others = cy.nodes().filter((n) => !n.data("hub")).length;
      cy.layout(others > 3 ? {
        name: "concentric", concentric: (n) => (n.data("hub") ? 2 : 1), levelWidth: () => 1,
        minNodeSpacing: 110, fit: false, animate: false,
      } : {
        name: "circle", radius: 150, startAngle: -Math.PI / 2, fit: false, animate: false,
        sort: (a, b) => Number(b.data("hub")) - Number(a.data("hub")),
      }).run();
    }
    if (added.length) {
      savePositions();
      frame();
    }
    showSummary(graph.summary);
    container.dataset.version = String(Number(container.dataset.version || "0") + 1);
  }

  apply(JSON.parse(initial.textContent));

  // Refresh on live events (coalesced: one request in flight, one queued).
  let inflight = false, queued = false;
  function refresh() {
    if (inflight) { queued = true; return; }
    inflight = true;
    fetch(graphUrl, { headers: { "Accept": "application/json" }, credentials: "same-origin" })
      .then((r) => (r.ok ? r.json() : Promise.reject(r.status)))
      .then(apply)
      .catch(() => { /* keep the last drawing; the next event retries */ })
      .finally(() => {
        inflight = false;
        if (queued) { queued = false; refresh(); }
      });
  }
  document.body.addEventListener("mesh-refresh", refresh);

  // Hover labels and click-through -----------------------------------------------
  function showTip(evt, lines) {
    if (!tip) return;
    tip.replaceChildren();
    lines.forEach((line, i) => {
      const div = document.createElement("div");
      if (i === 0) div.className = "tip-title";
      div.textContent = line;
      tip.appendChild(div);
    });
    const p = evt.renderedPosition || evt.target.renderedMidpoint?.() || { x: 0, y: 0 };
    tip.style.left = Math.min(p.x + 14, container.clientWidth - 220) + "px";
    tip.style.top = p.y + 14 + "px";
    tip.hidden = false;
  }
  function hideTip() { if (tip) tip.hidden = true; }

  cy.on("mouseover", "edge", (evt) => {
    const d = evt.target.data();
    const a = cy.getElementById(d.source).data("label");
    const b = cy.getElementById(d.target).data("label");
    evt.target.addClass("hover");
    showTip(evt, [
      a + " ⇄ " + b,
      d.path === "relay" ? "relayed via " + (d.via_name || d.via.slice(0, 12)) : "direct",
      "RTT " + ms(d.rtt_ms) + " · loss " + pct(d.loss_pct),
      a + " → " + b + ": " + rate(d.tx_bytes_per_s), // the edge's figures are its source's view
      b + " → " + a + ": " + rate(d.rx_bytes_per_s),
    ]);
  });
  cy.on("mouseover", "node", (evt) => {
    const d = evt.target.data();
    evt.target.addClass("hover");
    container.style.cursor = "pointer";
    showTip(evt, [d.label, (d.hub ? "public hub · " : "") + d.state, d.overlay_ip || "no overlay IP"]);
  });
  cy.on("mouseout", "node, edge", (evt) => {
    evt.target.removeClass("hover");
    container.style.cursor = "";
    hideTip();
  });
  container.addEventListener("mouseleave", () => { // leaving fast skips cytoscape's own mouseout
    cy.elements(".hover").removeClass("hover");
    container.style.cursor = "";
    hideTip();
  });
  cy.on("tap", "node", (evt) => {
    if (nodeUrl) window.location.assign(nodeUrl.replace("__id__", encodeURIComponent(evt.target.id())));
  });

  // Follow the OS light/dark switch without a reload.
  if (window.matchMedia) {
    window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", () => {
      cy.style(styles(palette()));
    });
  }
})();
