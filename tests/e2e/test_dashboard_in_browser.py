"""The dashboard in a real browser (Chromium), against a real Daphne, with agents on the real link.

One operator story per test: log in, make a token, read the enroll command, enroll agents with it;
see them in the table and on the map without a reload, see their counters move, revoke one and see
it leave; a node named like a script tag stays text; logging out closes the other tabs' sockets.
Latencies are measured and written to artifacts/e2e-latency.txt (not asserted: timing lives in bench).
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]

XSS_NAME = "<script>alert(1)</script>"
WAIT_MS = 20_000  # generous upper bound for a live update on a loaded CI machine

MAP_STATE = """() => {
  const el = document.getElementById('map');
  if (!el || !el.cy) return null;
  return {
    nodes: el.cy.nodes().map(n => ({id: n.id(), label: n.data('label'), state: n.data('state'),
                                    hub: n.data('hub'), x: n.position('x'), y: n.position('y')})),
    edges: el.cy.edges().map(e => ({id: e.id(), path: e.data('path'), quality: e.data('quality'),
                                    rate: e.data('bytes_per_s')})),
  };
}"""


NODE_ON_SCREEN = """(id) => {
  const map = document.getElementById('map');
  const p = map.cy.getElementById(id).renderedPosition();
  const r = map.getBoundingClientRect();
  return {x: r.left + p.x, y: r.top + p.y};
}"""


EDGE_ON_SCREEN = """(id) => {
  const map = document.getElementById('map');
  const p = map.cy.getElementById(id).renderedMidpoint();
  const r = map.getBoundingClientRect();
  return {x: r.left + p.x, y: r.top + p.y};
}"""

ARRANGE = """(spots) => {
  // What an operator does by dragging: put the nodes where they like them.
  const cy = document.getElementById('map').cy;
  Object.entries(spots).forEach(([id, pos]) => cy.getElementById(id).position(pos));
  cy.fit(cy.nodes(), 60);
}"""


class PageWatch:
    """Collects what must never happen on a page: JS errors, console errors (CSP), dialogs."""

    def __init__(self, page):
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
        page.on("console", lambda msg: msg.type == "error" and self.errors.append(f"console: {msg.text}"))
        page.on("dialog", self._dialog)

    def _dialog(self, dialog) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()


def _watches(server) -> int:
    """Watches the server has heard from dashboard pages so far (its log, INFO)."""
    log = Path(server.env["SHADOWMESH_DATA_DIR"]) / "daphne.log"
    return log.read_text(errors="replace").count("a dashboard page watches network")


def watched(context):
    page = context.new_page()
    return page, PageWatch(page)


def login(page, server) -> None:
    page.goto(server.url + "/")
    assert "/login/" in page.url, "anonymous visitors are sent to the login page"
    page.fill("#id_username", server.username)
    page.fill("#id_password", server.password)
    page.click("button[type=submit]")
    page.wait_for_url(server.url + "/")


def mark_no_reload(page) -> None:
    page.evaluate("window.__sameDocument = 'still here'")


def assert_not_reloaded(page) -> None:
    assert page.evaluate("window.__sameDocument") == "still here", "the page must not have reloaded"


def wait_live(page) -> None:
    page.wait_for_selector("#live-status[data-state=open]", timeout=WAIT_MS)


def create_token(page, server, *, uses: int, public: bool, name: str = "") -> str:
    page.goto(server.url + "/tokens/new")
    page.fill("#id_uses", str(uses))
    if public:
        page.check("#id_is_public")
    if name:
        page.fill("#id_node_name", name)
    page.click("form[data-testid=token-form] button[type=submit]")
    command = page.inner_text("[data-testid=enroll-command]").strip()
    assert command.startswith("shadowmesh-agent enroll --server "), command
    assert page.locator(".qr svg").count() == 1, "the QR code of the command is on the page"
    return command


def row_state(page, peer_id: str) -> str | None:
    row = page.locator(f"tr[data-peer-id='{peer_id}']")
    return row.get_attribute("data-state") if row.count() else None


def test_operator_enrolls_agents_watches_them_live_and_revokes_one(
    server, context, agent_factory, artifacts, parse_enroll_command
):
    page, watch = watched(context)
    login(page, server)

    # --- a 3-use token for a public hub and two nodes; the command is shown once
    command = create_token(page, server, uses=3, public=True, name="uk")
    page.screenshot(path=str(artifacts / "dashboard-token-created.png"), full_page=True)
    args = parse_enroll_command(command)
    assert args["server"] == server.url and args["name"] == "uk"
    assert args["state_dir"] == "/var/lib/shadowmesh"
    assert args["public"] is True, "a public-hub token's command enrolls the node as public"
    page.goto(server.url + "/tokens/")
    assert args["token"] not in page.content(), "the token list never shows the token again"

    # --- two tabs watch: the node table and the map
    table, table_watch = watched(context)
    table.goto(server.url + "/nodes/")
    wait_live(table)
    mark_no_reload(table)
    map_page, map_watch = watched(context)
    map_page.goto(server.url + "/map/")
    wait_live(map_page)
    mark_no_reload(map_page)

    uk = agent_factory(command, "uk", public=True)
    belgium = agent_factory(command, "belgium")
    mac = agent_factory(command, "mac")
    uk.peers = {belgium.peer_id: "direct", mac.peer_id: "direct"}
    belgium.peers = {uk.peer_id: "direct", mac.peer_id: f"relay:{uk.peer_id}"}
    mac.peers = {uk.peer_id: "direct", belgium.peer_id: f"relay:{uk.peer_id}"}
    mac.lost_every, mac.rtt_ms = 20, 140.0

    # enrolled nodes appear at once (offline: no agent link yet)
    table.wait_for_selector(f"tr[data-peer-id='{mac.peer_id}']", timeout=WAIT_MS)
    assert row_state(table, uk.peer_id) == "offline"

    started = time.monotonic()
    for agent in (uk, belgium, mac):
        agent.start()

    # --- online in the table, on the map, with links, without a reload
    table.wait_for_selector(f"tr[data-peer-id='{belgium.peer_id}'][data-state=online]", timeout=WAIT_MS)
    online_after = time.monotonic() - started
    map_page.wait_for_function(
        f"() => {{ const s = ({MAP_STATE})(); return s && s.edges.length === 3 && "
        f"s.nodes.filter(n => n.state === 'online').length === 3; }}",
        timeout=WAIT_MS,
    )
    edges_seen = time.monotonic()
    # An edge needs one sample, i.e. an agent's second report (the first is only the baseline).
    second_reports = sorted(a.reports[1] for a in (uk, belgium, mac) if len(a.reports) > 1)
    state = map_page.evaluate(MAP_STATE)
    assert {n["label"] for n in state["nodes"]} == {"uk", "belgium", "mac"}
    assert [n["hub"] for n in state["nodes"] if n["label"] == "uk"] == [True]
    paths = sorted(e["path"] for e in state["edges"])
    assert paths == ["direct", "direct", "relay"]
    assert_not_reloaded(table)
    assert_not_reloaded(map_page)

    # hover an edge: the label shows rate, RTT and loss
    relay = next(e for e in state["edges"] if e["path"] == "relay")
    map_page.evaluate(ARRANGE, {uk.peer_id: {"x": 0, "y": 0}, belgium.peer_id: {"x": -220, "y": 140},
                                mac.peer_id: {"x": 220, "y": 140}})
    point = map_page.evaluate(EDGE_ON_SCREEN, relay["id"])
    map_page.bring_to_front()
    map_page.mouse.move(point["x"] - 30, point["y"] - 30)
    map_page.mouse.move(point["x"], point["y"], steps=8)
    map_page.wait_for_selector("#map-tip:not([hidden])", timeout=5000)
    tip = map_page.inner_text("#map-tip")
    assert "relayed via uk" in tip and "RTT" in tip and "loss" in tip and "bit/s" in tip
    map_page.screenshot(path=str(artifacts / "dashboard-map-hover.png"))
    map_page.mouse.move(5, 5)
    map_page.wait_for_selector("#map-tip", state="hidden", timeout=5000)

    # --- node page: links with path, RTT, loss and rates that move
    watches_before = _watches(server)
    node_page, node_watch = watched(context)
    node_page.goto(f"{server.url}/nodes/{belgium.peer_id}/")
    wait_live(node_page)
    mark_no_reload(node_page)
    links = "[data-testid=links-table]"
    node_page.wait_for_selector(f"{links} tr[data-peer-id='{mac.peer_id}']", timeout=WAIT_MS)
    row = node_page.locator(f"[data-testid=links-table] tr[data-peer-id='{uk.peer_id}']")
    first_rx = row.locator("[data-testid=rx-rate]").inner_text()
    assert re.fullmatch(r"[\d.]+ (bit|kbit|Mbit)/s", first_rx), first_rx
    node_page.wait_for_function(
        "([peer, before]) => { const c = document.querySelector("
        "`[data-testid=links-table] tr[data-peer-id='${peer}'] [data-testid=rx-rate]`);"
        " return c && c.textContent.trim() !== before; }",
        arg=[uk.peer_id, first_rx], timeout=WAIT_MS,
    )
    mac_row = node_page.locator(f"[data-testid=links-table] tr[data-peer-id='{mac.peer_id}']").inner_text()
    assert "relay via uk" in mac_row
    node_page.wait_for_selector("#chart-rate .uplot", timeout=WAIT_MS)
    assert_not_reloaded(node_page)
    # the page said which network it shows: the server asks that network's agents for 2-s reports
    # while it is open (the interval they are told is covered in test_stats_interval.py)
    deadline = time.monotonic() + WAIT_MS / 1000
    while _watches(server) <= watches_before:
        assert time.monotonic() < deadline, "the node page never told the server which network it watches"
        time.sleep(0.2)

    # --- screenshots for the record
    page.goto(server.url + "/")
    page.wait_for_function(f"() => {{ const s = ({MAP_STATE})(); return s && s.edges.length === 3; }}",
                           timeout=WAIT_MS)
    page.screenshot(path=str(artifacts / "dashboard-overview.png"), full_page=True)
    # clicking a node on the map opens its page
    page.locator("#map").scroll_into_view_if_needed()
    page.wait_for_timeout(400)  # cytoscape re-reads its container's position after a scroll settles
    spot = page.evaluate(NODE_ON_SCREEN, uk.peer_id)
    page.mouse.move(spot["x"], spot["y"], steps=4)
    page.mouse.click(spot["x"], spot["y"])
    page.wait_for_url(f"{server.url}/nodes/{uk.peer_id}/", timeout=WAIT_MS)
    assert page.inner_text("[data-testid=node-title]").startswith("uk")
    map_page.screenshot(path=str(artifacts / "dashboard-map.png"), full_page=True)
    node_page.wait_for_timeout(1500)  # let the next report land so the charts have a few points
    node_page.screenshot(path=str(artifacts / "dashboard-node.png"), full_page=True)

    # --- layout stays put: existing nodes keep their positions across updates
    before = {n["id"]: (n["x"], n["y"]) for n in map_page.evaluate(MAP_STATE)["nodes"]}
    version = map_page.evaluate("document.getElementById('map').dataset.version")
    map_page.wait_for_function(
        "(v) => document.getElementById('map').dataset.version !== v", arg=version, timeout=WAIT_MS)
    after = {n["id"]: (n["x"], n["y"]) for n in map_page.evaluate(MAP_STATE)["nodes"]}
    assert after == before

    # --- revoke mac from its page, with confirmation
    node_page.goto(f"{server.url}/nodes/{mac.peer_id}/")
    node_page.click("text=Revoke…")
    node_page.wait_for_selector("[data-testid=confirm]")
    assert row_state(table, mac.peer_id) == "online", "nothing happens before the confirmation"
    node_page.click("[data-testid=confirm]")
    node_page.wait_for_selector("[data-testid=node-state]:has-text('revoked')", timeout=WAIT_MS)
    table.wait_for_selector(f"tr[data-peer-id='{mac.peer_id}'][data-state=revoked]", timeout=WAIT_MS)
    map_page.wait_for_function(
        f"() => {{ const s = ({MAP_STATE})(); return s && !s.nodes.some(n => n.id === '{mac.peer_id}')"
        " && s.edges.length === 1; }", timeout=WAIT_MS)
    deadline = time.monotonic() + 15
    while not mac.revoked and time.monotonic() < deadline:
        time.sleep(0.1)
    assert mac.revoked, "the agent's link was closed with REVOKED"
    assert_not_reloaded(table)
    assert_not_reloaded(map_page)

    audit = page
    audit.goto(f"{server.url}/audit/?action=node.revoked")
    assert "\tadmin\t" in audit.inner_text("[data-testid=audit-table]"), "the revocation names who did it"
    audit.goto(f"{server.url}/audit/")
    audit.screenshot(path=str(artifacts / "dashboard-audit.png"), full_page=True)

    for w in (watch, table_watch, map_watch, node_watch):
        assert w.errors == [] and w.dialogs == []
    (artifacts / "e2e-latency.txt").write_text(
        f"agents started -> row online in the open table: {online_after:.2f} s (connect + auth included)\n"
        f"all three links on the open map, after the first sample-bearing report: "
        f"{edges_seen - second_reports[0]:.2f} s, "
        f"after the last agent's: {edges_seen - second_reports[-1]:.2f} s\n"
    )


def test_a_node_named_like_a_script_tag_stays_text(server, context, agent_factory, artifacts):
    page, watch = watched(context)
    login(page, server)
    command = create_token(page, server, uses=1, public=False)
    table, table_watch = watched(context)
    table.goto(server.url + "/nodes/")
    wait_live(table)
    agent = agent_factory(command, XSS_NAME)
    agent.start()
    table.wait_for_selector(f"tr[data-peer-id='{agent.peer_id}'][data-state=online]", timeout=WAIT_MS)
    assert table.locator(f"tr[data-peer-id='{agent.peer_id}'] .node-name").inner_text() == XSS_NAME
    for path in ("/", "/map/", "/nodes/", f"/nodes/{agent.peer_id}/", "/audit/"):
        page.goto(server.url + path)
        wait_live(page)
        if path != "/" and path != "/map/":  # those two draw names on the map canvas only
            assert XSS_NAME in page.inner_text("main"), path
    page.goto(server.url + "/map/")
    labels = [n["label"] for n in page.evaluate(MAP_STATE)["nodes"]]
    assert XSS_NAME in labels
    assert watch.dialogs == [] and table_watch.dialogs == [], "no script ran"
    assert watch.errors == [] and table_watch.errors == []


def test_logging_out_closes_the_live_socket_of_every_other_tab(server, context):
    page, _ = watched(context)
    login(page, server)
    other, _ = watched(context)
    other.goto(server.url + "/map/")
    wait_live(other)
    page.click("text=Log out")
    page.wait_for_url(re.compile(r".*/login/.*"))
    other.wait_for_url(re.compile(r".*/login/\?next=/map/"), timeout=WAIT_MS)


def test_narrow_window_and_dark_mode_stay_readable(server, browser, artifacts, agent_factory):
    context = browser.new_context(viewport={"width": 390, "height": 844}, color_scheme="dark")
    try:
        page, watch = watched(context)
        login(page, server)
        node = agent_factory(create_token(page, server, uses=1, public=False), "a-rather-long-node-name-01")
        pages = ("/", "/map/", "/tokens/", "/tokens/new", "/routes/", "/audit/", f"/nodes/{node.peer_id}/")
        for path in (*pages, "/nodes/"):
            page.goto(server.url + path)
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= 390, f"{path}: no sideways scrolling of the page (tables scroll in their panel)"
        background = page.evaluate("getComputedStyle(document.body).backgroundColor")
        assert background == "rgb(15, 18, 22)", "the dark palette is used"
        page.screenshot(path=str(artifacts / "dashboard-nodes-narrow-dark.png"), full_page=True)
        assert watch.errors == []
    finally:
        context.close()


def test_the_node_table_filters_as_you_type_and_keeps_the_filter_when_it_refreshes(
    server, context, agent_factory
):
    page, watch = watched(context)
    login(page, server)
    command = create_token(page, server, uses=2, public=False)
    agent_factory(command, "zulu-alpha")
    agent_factory(command, "zulu-bravo")
    page.goto(server.url + "/nodes/")
    wait_live(page)
    mark_no_reload(page)
    names = page.locator("[data-testid=nodes-table] .node-name").all_inner_texts()
    assert {"zulu-alpha", "zulu-bravo"} <= set(names), names
    target = "zulu-alpha"
    page.fill("[data-testid=node-search]", "zulu-al")
    page.wait_for_function(
        "(n) => document.querySelectorAll('[data-testid=nodes-table] .node-name').length < n",
        arg=len(names), timeout=WAIT_MS)
    assert "q=" in page.url, "the filter is in the address, so a refresh or a shared link keeps it"
    page.evaluate("window.meshLive.refresh()")  # what a live event does
    page.wait_for_timeout(800)
    shown = page.locator("[data-testid=nodes-table] .node-name").all_inner_texts()
    assert shown == [target]
    assert_not_reloaded(page)
    assert watch.errors == []


def test_the_map_is_drawn_with_the_dark_palette_in_dark_mode(server, browser, artifacts, agent_factory):
    context = browser.new_context(viewport={"width": 1280, "height": 860}, color_scheme="dark")
    try:
        page, watch = watched(context)
        login(page, server)
        agent_factory(create_token(page, server, uses=1, public=True), "dark-hub", public=True)
        page.goto(server.url + "/")
        wait_live(page)
        page.wait_for_function(f"() => {{ const s = ({MAP_STATE})(); return s && s.nodes.length > 0; }}",
                               timeout=WAIT_MS)
        node = page.evaluate(
            "() => { const n = document.getElementById('map').cy.nodes()[0];"
            " return {state: n.data('state'), colour: n.renderedStyle('color')}; }")
        dark_text, dark_muted = "rgb(230,233,238)", "rgb(154,163,178)"  # --text, --muted (dark)
        expected = dark_muted if node["state"] == "offline" else dark_text
        assert node["colour"] == expected, "node labels use the dark theme's colours"
        page.screenshot(path=str(artifacts / "dashboard-overview-dark.png"), full_page=True)
        assert watch.errors == []
    finally:
        context.close()
