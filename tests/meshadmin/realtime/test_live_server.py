"""End to end on loopback: a real Daphne serving meshadmin, real agents' enroll() and ServerLink.

No namespaces or TUN: this checks the control link only — enrollment over HTTP, the signed
websocket login, the full map on connect, deltas after changes made through the server (an
endpoint report, a new enrollment), the persisted map, and reconnection after a server restart.
"""

from __future__ import annotations

import asyncio
import stat

import pytest

from nodeagent.enroll import enroll
from nodeagent.protocol import netmap as nm
from nodeagent.server_link import ServerLink
from tests.meshadmin.realtime.live_helpers import Server, peer_names, until


@pytest.fixture
def server(tmp_path):
    srv = Server(tmp_path)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


async def test_agents_enroll_get_maps_and_follow_changes_through_a_real_server(server, tmp_path):
    uk_dir, be_dir = tmp_path / "uk", tmp_path / "belgium"
    uk = await asyncio.to_thread(enroll, server.url, server.token(public=True), "uk", uk_dir, None, True)
    await asyncio.to_thread(enroll, server.url, server.token(), "belgium", be_dir)
    maps: dict[str, list[nm.NetMap]] = {"uk": [], "belgium": []}
    # reconnect attempts at most 0.2 s apart: the backoff schedule itself is tested as a pure function
    quick = lambda d: asyncio.sleep(min(d, 0.2))  # noqa: E731
    uk_link = ServerLink(uk_dir, maps["uk"].append, endpoints=(nm.Endpoint("198.18.0.3", 18443, 19443),),
                         stats_interval=0.5, sleep=quick)
    be_link = ServerLink(be_dir, maps["belgium"].append, stats_interval=0.5, sleep=quick)
    tasks = [asyncio.create_task(uk_link.run()), asyncio.create_task(be_link.run())]
    try:
        # 1. full maps on connect, 2. uk's endpoint report reaches belgium as a change
        await until(lambda: peer_names(maps["belgium"]) == {"uk"}, "belgium sees uk")

        def uk_endpoint():
            hub = maps["belgium"][-1].peer(uk.peer_id)
            return hub is not None and nm.Endpoint("198.18.0.3", 18443, 19443) in hub.endpoints

        await until(uk_endpoint, "belgium learns uk's endpoint")
        assert maps["belgium"][-1].relays == (uk.peer_id,)
        # 3. a third node enrolling through the server reaches both running agents
        await asyncio.to_thread(enroll, server.url, server.token(), "mac", tmp_path / "mac")
        await until(lambda: "mac" in peer_names(maps["uk"]) and "mac" in peer_names(maps["belgium"]),
                     "both agents see mac")
        persisted = be_dir / "netmap.json"
        assert stat.S_IMODE(persisted.stat().st_mode) == 0o600
        # 4. the server restarts: agents keep their map, reconnect, and follow the next change
        server.stop()
        await until(lambda: not be_link.connected.is_set(), "belgium notices the server is gone")
        applied_before = maps["belgium"][-1]
        server.start()
        # a generous failure deadline: Daphne's restart is slow on a loaded 2-core machine
        await until(lambda: be_link.connected.is_set() and uk_link.connected.is_set(), "both reconnect",
                    timeout=60.0)
        assert maps["belgium"][-1].serial >= applied_before.serial
        await asyncio.to_thread(enroll, server.url, server.token(), "starlink", tmp_path / "starlink")
        await until(lambda: "starlink" in peer_names(maps["belgium"]), "belgium sees starlink")
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
