// Live updates for every dashboard page.
//
// One websocket per tab to /ws/dashboard/ (session cookie, same origin). Every message means
// "something in the mesh changed". Then:
//  - `mesh-changed` (detail = the message) is dispatched on document.body at once;
//  - refreshes are coalesced, at most one per REFRESH_MS with a trailing one, so a burst of agent
//    reports costs one round of requests: every element marked `data-live-region` is re-fetched
//    from the current URL (or, on a page a form's POST sent back, from the GET address
//    `data-live-url` on <body> names) and swapped in place through htmx (the view answers with just that
//    region's template partial), and `mesh-refresh` is dispatched for page scripts (topology.js).
// A close with code 4401 (logged out) sends the tab to the login page.
// A page that shows a network's live traffic names it (`data-watch-network` on this script tag);
// on every open the socket says `{"watch": <id>}`, and the server asks that network's agents for
// their counters every 2 s while the tab stays open (instead of the longer interval it may use
// for thousands of agents nobody watches).
(function () {
  "use strict";

  const REFRESH_MS = 750; // well inside the 2 s the dashboard promises after an agent report
  const script = document.currentScript;
  const wsPath = (script && script.dataset.wsPath) || "/ws/dashboard/";
  const watchNetwork = script && script.dataset.watchNetwork ? Number(script.dataset.watchNetwork) : null;
  const status = document.getElementById("live-status");

  function setStatus(state, text) {
    if (!status) return;
    status.dataset.state = state;
    const label = status.querySelector(".live-text");
    if (label) label.textContent = text;
  }

  // Region refresh -----------------------------------------------------------
  let timer = null;
  let pending = false;
  let last = 0;

  function refreshRegions() {
    last = Date.now();
    pending = false;
    // the page's address as it stands, or, on a page a form's POST sent back, the GET address
    // it names ("" when it names none: its regions stay as they are)
    const named = document.body.dataset.liveUrl;
    const url = named === undefined ? location.pathname + location.search : named;
    document.querySelectorAll("[data-live-region]").forEach(function (el) {
      if (!url || !el.id || !window.htmx) return;
      window.htmx.ajax("GET", url, {
        target: "#" + el.id,
        swap: "innerHTML",
        headers: { "HX-Target": el.tagName.toLowerCase() + "#" + el.id },
      });
    });
    document.body.dispatchEvent(new CustomEvent("mesh-refresh"));
  }

  function scheduleRefresh() {
    const wait = REFRESH_MS - (Date.now() - last);
    if (wait <= 0 && !timer) {
      refreshRegions();
    } else if (!timer) {
      pending = true;
      timer = setTimeout(function () {
        timer = null;
        if (pending) refreshRegions();
      }, Math.max(wait, 0));
    } else {
      pending = true;
    }
  }

  // Socket -------------------------------------------------------------------
  let attempt = 0;
  let socket = null;
  let stopped = false;

  function connect() {
    const proto = location.protocol === "https:" ? "wss://" : "ws://";
    socket = new WebSocket(proto + location.host + wsPath);
    setStatus("connecting", "connecting");

    socket.addEventListener("open", function () {
      attempt = 0;
      setStatus("open", "live");
      if (Number.isInteger(watchNetwork)) socket.send(JSON.stringify({ watch: watchNetwork }));
      if (window.__meshLiveOpened) scheduleRefresh(); // catch up on what we missed while away
      window.__meshLiveOpened = true;
    });

    socket.addEventListener("message", function (evt) {
      let message;
      try {
        message = JSON.parse(evt.data);
      } catch (e) {
        return;
      }
      if (message.event === "error") { // the server refused something this script sent
        console.warn("live socket:", message.field, message.detail);
        return;
      }
      document.body.dispatchEvent(new CustomEvent("mesh-changed", { detail: message }));
      scheduleRefresh();
    });

    socket.addEventListener("close", function (evt) {
      if (evt.code === 4401 || evt.code === 4403) {
        stopped = true;
        setStatus("closed", "signed out");
        location.reload(); // the login redirect takes over
        return;
      }
      if (stopped) return;
      setStatus("closed", "reconnecting");
      attempt += 1;
      const delay = Math.min(15000, 500 * 2 ** Math.min(attempt, 5)) * (0.75 + Math.random() * 0.5);
      setTimeout(connect, delay);
    });
  }

  window.addEventListener("pagehide", function () {
    stopped = true;
    if (socket) socket.close(1000);
  });

  window.addEventListener("pageshow", function (evt) {
    if (evt.persisted) { // restored from the back/forward cache: start again
      stopped = false;
      connect();
    }
  });

  window.meshLive = { refresh: scheduleRefresh };
  connect();
})();
