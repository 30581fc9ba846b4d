"""Redis, then PostgreSQL, stopped and started again under a live Daphne with two connected agents.

Issue 4 §7: "PostgreSQL or Redis stopped -> the data plane keeps forwarding; nothing committed is
lost". The test starts its OWN PostgreSQL and Redis (`scripts/services.sh start`, then
`stop-redis`/`start-redis`/`stop-pg`/`start-pg` on the same ports and data), so the suite's shared
services are never disturbed. Real Daphne subprocess, real agents (`enroll` + `ServerLink`, no TUN),
admin changes through the dashboard as an operator makes them.

The data plane itself never talks to the server: tunnels run on the agent's last applied netmap
(ServerLink.netmap, persisted in the state directory). What is checked here is the control side of
that promise: during each outage the agents keep their last map (in memory and on disk) and the
server process stays up; afterwards the agents are back online, changes reach them again, and every
row committed before the outage is still there.

What each outage does (found by this test, asserted below):
  * Redis stopped: the channel layer is gone. The agent sockets do not receive through it (the
    server process does, once for all its sockets: realtime/fanout.py), so they stay open; new
    ones are refused until Redis is back, and the agents keep their map. An operator's change
    still commits (the dashboard needs only PostgreSQL); its push is lost with Redis. When Redis
    is back (empty), the process joins its groups again and hands the change to every socket
    behind the serial at once. A socket that dies of the layer's failure gets no disconnect(), so
    it used to stay counted in its node's presence (the node stayed online after its agent
    left); AgentConsumer counts it off.
  * PostgreSQL stopped: the sockets stay open, counter reports are dropped (logged), a change is
    refused (HTTP 500) and nothing of it commits; afterwards the connection pool recovers, acks are
    stored again and changes are pushed again.

That packets keep flowing through a tunnel while the
control plane is gone is proven in network namespaces by
`tests/integration/test_enrolled_mesh.py::test_tunnels_outlive_the_server_and_agents_reconnect_when_it_returns`
(a 60-echo ping between two nodes loses nothing while the whole server is stopped and restarted).
"""

from __future__ import annotations

import asyncio
import http.cookiejar
import re
import shutil
import subprocess
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import psycopg
import pytest

from nodeagent.enroll import enroll
from nodeagent.protocol import netmap as nm
from nodeagent.server_link import ServerLink, load_netmap
from tests.meshadmin.realtime.live_helpers import ROOT, Server, peer_names, until

pytestmark = pytest.mark.postgres

SERVICES = ROOT / "scripts" / "services.sh"


class Services:
    """This test's own PostgreSQL cluster and Redis server (scripts/services.sh)."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="sm-outage-"))
        self.dir.chmod(0o755)  # as root, PostgreSQL runs as user postgres
        try:
            out = self._run("start")
        except BaseException:
            self.close()
            raise
        urls = dict(re.findall(r"export (\w+)=(\S+)", out))
        self.database_url, self.redis_url = urls["DATABASE_URL"], urls["REDIS_URL"]

    def _run(self, cmd: str) -> str:
        return subprocess.run([str(SERVICES), cmd, str(self.dir)], check=True, capture_output=True,
                              text=True, timeout=120).stdout

    def stop_redis(self) -> None:
        self._run("stop-redis")

    def start_redis(self) -> None:
        self._run("start-redis")

    def stop_pg(self) -> None:
        self._run("stop-pg")

    def start_pg(self) -> None:
        self._run("start-pg")

    def close(self) -> None:
        try:
            self._run("stop-redis")  # waits for the exit: Redis writes its log on the way out
        except subprocess.SubprocessError:
            pass
        try:
            self._run("stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


class Admin:
    """An operator signed in to the dashboard of `server`."""

    def __init__(self, server: Server) -> None:
        self.server = server
        password = server.manage("createadmin", "--reset").strip().splitlines()[-1]
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))
        page = self.opener.open(server.url + "/login/", timeout=10).read().decode()
        self._post("/login/", {"username": "admin", "password": password}, self._csrf(page))
        assert any(c.name == "sessionid" for c in self.jar), "the admin could not sign in"

    @staticmethod
    def _csrf(page: str) -> str:
        m = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
        assert m, "no CSRF token on the page"
        return m.group(1)

    def _cookie_csrf(self) -> str:
        return next(c.value for c in self.jar if c.name == "csrftoken")

    def _post(self, path: str, fields: dict, csrf: str) -> int:
        url = self.server.url + path
        body = urllib.parse.urlencode({**fields, "csrfmiddlewaretoken": csrf}).encode()
        try:
            with self.opener.open(urllib.request.Request(url, data=body, headers={"Referer": url}),
                                  timeout=45) as resp:  # with PostgreSQL down: the pool's 30 s, then 500
                return resp.status
        except urllib.error.HTTPError as exc:
            return exc.code

    def rename(self, peer_id: str, name: str) -> int:
        """POST the rename form (no page load first: the CSRF cookie is enough); the HTTP status."""
        return self._post(f"/nodes/{peer_id}/rename", {"name": name}, self._cookie_csrf())


def committed(database_url: str) -> dict:
    """The rows an outage must not lose: nodes, the audit trail, the network serial."""
    with psycopg.connect(database_url) as conn:
        return {
            "nodes": conn.execute("SELECT peer_id, name, status FROM mesh_node ORDER BY id").fetchall(),
            "audit": conn.execute("SELECT id, action, object_id FROM mesh_auditevent ORDER BY id").fetchall(),
            "serial": conn.execute("SELECT serial FROM mesh_network").fetchone()[0],
        }


def acked_serials(database_url: str, *names: str) -> list[int | None]:
    """The netmap serial the server last stored as acknowledged by each named node's agent."""
    with psycopg.connect(database_url) as conn:
        rows = dict(conn.execute("SELECT n.name, p.last_serial FROM telemetry_presence p "
                                 "JOIN mesh_node n ON n.id = p.node_id").fetchall())
    return [rows.get(name) for name in names]


def connections(database_url: str, *names: str) -> list[int | None]:
    """How many agent sockets the server counts for each named node (its presence record)."""
    with psycopg.connect(database_url) as conn:
        rows = dict(conn.execute("SELECT n.name, p.connections FROM telemetry_presence p "
                                 "JOIN mesh_node n ON n.id = p.node_id").fetchall())
    return [rows.get(name) for name in names]


def persisted(link: ServerLink) -> nm.NetMap | None:
    return load_netmap(link.state_dir)


@pytest.fixture
def services():
    s = Services()
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def server(services, tmp_path):
    srv = Server(tmp_path, {"DATABASE_URL": services.database_url, "REDIS_URL": services.redis_url})
    try:
        srv.start()
        yield srv
    finally:
        srv.stop()


async def test_agents_keep_their_map_through_redis_and_postgresql_outages_and_nothing_committed_is_lost(
        services, server, tmp_path):
    admin = Admin(server)
    ws = server.url.replace("http://", "ws://") + "/ws/agent/"
    maps: dict[str, list[nm.NetMap]] = {"uk": [], "belgium": []}
    links: list[ServerLink] = []
    for name in maps:
        await asyncio.to_thread(enroll, server.url, server.token(public=name == "uk"), name, tmp_path / name,
                                None, name == "uk")
        links.append(ServerLink(tmp_path / name, maps[name].append, url=ws, stats_interval=0.5))
    uk, belgium = links
    tasks = [asyncio.create_task(link.run()) for link in links]

    def everyone_has(serial: int) -> bool:
        return all(link.connected.is_set() and link.netmap is not None and link.netmap.serial == serial
                   for link in links)

    try:
        # (1) both agents connected through Daphne on this PostgreSQL + Redis
        await until(lambda: peer_names(maps["uk"]) == {"belgium"} and peer_names(maps["belgium"]) == {"uk"},
                    "both agents connected, each with the other as its peer", 30)
        before = committed(services.database_url)

        # (2) Redis stops. The agent sockets lose the channel layer (the server drops them and refuses
        # new ones until Redis is back); the agents keep their last map and keep retrying.
        held = [link.netmap for link in links]
        await asyncio.to_thread(services.stop_redis)
        await asyncio.sleep(2)  # let the server notice (not a condition of the test)
        # an operator's change made now commits: the push is lost with Redis, the change is not
        status = await asyncio.to_thread(admin.rename, belgium.state.identity.peer_id, "brussels")
        assert status < 400, f"the dashboard refused a rename while Redis was down ({status})"
        during = committed(services.database_url)
        assert during["audit"][:len(before["audit"])] == before["audit"], "audit rows lost with Redis down"
        assert (belgium.state.identity.peer_id, "brussels", "active") in during["nodes"]
        assert during["serial"] > before["serial"]
        assert server.proc.poll() is None, "Daphne exited when Redis stopped"
        for link, old in zip(links, held, strict=True):
            assert link.netmap is old and persisted(link) == old, "an agent lost its map while Redis was down"

        # Redis returns (empty: no persistence). The agents get the change committed during the
        # outage (a delta on the sockets that stayed open, or a full map if one reconnected)
        await asyncio.to_thread(services.start_redis)
        await until(lambda: everyone_has(during["serial"]), "both agents at the outage's serial", 20)
        assert peer_names(maps["uk"]) == {"brussels"}
        assert persisted(uk) == uk.netmap and persisted(belgium) == belgium.netmap
        # one socket each counted (any socket Redis took down was counted off), so a later
        # disconnect shows the node offline at once
        await until(lambda: connections(services.database_url, "uk", "brussels") == [1, 1],
                    "presence counts one socket per agent after Redis", 15)

        # (3) a new change after Redis returned reaches both agents as a push
        token = await asyncio.to_thread(server.token)
        await asyncio.to_thread(enroll, server.url, token, "mac", tmp_path / "mac")
        await until(lambda: all("mac" in peer_names(maps[n]) for n in maps), "mac reaches both agents", 15)

        # (4) PostgreSQL stops. Daphne keeps running; the agents keep their map; a change is refused
        # (nothing can commit) rather than half-applied
        before = committed(services.database_url)
        await until(lambda: everyone_has(before["serial"]), "both agents at the last committed serial", 15)
        held = [link.netmap for link in links]
        await asyncio.to_thread(services.stop_pg)
        await asyncio.sleep(2)  # agents keep reporting counters into a server without a database
        status = await asyncio.to_thread(admin.rename, uk.state.identity.peer_id, "london")
        assert status >= 500, f"a rename with PostgreSQL down answered {status}"
        assert server.proc.poll() is None, "Daphne exited when PostgreSQL stopped"
        for link, old in zip(links, held, strict=True):
            assert link.netmap is old and persisted(link) == old, "an agent lost its map with PostgreSQL down"

        # (5) PostgreSQL returns: every committed row is still there, nothing of the refused change
        await asyncio.to_thread(services.start_pg)
        after = committed(services.database_url)
        assert after == before, "rows changed across the PostgreSQL outage"
        status = await asyncio.to_thread(admin.rename, uk.state.identity.peer_id, "london")
        assert status < 400, f"the dashboard refused a rename after PostgreSQL returned ({status})"
        serial = committed(services.database_url)["serial"]
        await until(lambda: everyone_has(serial) and "london" in peer_names(maps["belgium"]),
                    "the rename after PostgreSQL reaches both agents", 15)
        # the agents are online again: the server has stored both acknowledgements of the new map
        await until(lambda: acked_serials(services.database_url, "london", "brussels") == [serial, serial],
                    "the server stores both agents' acks after PostgreSQL returned", 15)
        assert connections(services.database_url, "london", "brussels") == [1, 1]
        final = committed(services.database_url)
        assert final["audit"][:len(before["audit"])] == before["audit"]
        assert {row[0] for row in before["nodes"]} <= {row[0] for row in final["nodes"]}
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
