"""Certificate renewal end to end (issue 9 item 8): a real Daphne issuing 12-second certificates
(SHADOWMESH_CERT_LIFETIME_S), real agents' enroll(), ServerLink and start-up check.

A running agent renews by itself at two thirds of the lifetime and presents the new certificate; an
agent whose certificate expired while it was down renews before it starts instead of failing; with
the server gone it fails with a clear message."""

from __future__ import annotations

import asyncio
import time

import pytest

from nodeagent.enroll import enroll, load_state
from nodeagent.protocol.cert import parse_certificate, verify_certificate
from nodeagent.server_link import ServerLink
from nodeagent.startup import AgentStartError, current_certificate
from tests.meshadmin.realtime.live_helpers import Server, until

LIFETIME = 12


@pytest.fixture
def server(tmp_path):
    srv = Server(tmp_path, env={"SHADOWMESH_CERT_LIFETIME_S": str(LIFETIME)})
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


async def test_a_running_agent_renews_and_a_stopped_one_renews_at_start(server, tmp_path):
    running, stopped, orphan = tmp_path / "belgium", tmp_path / "mac", tmp_path / "starlink"
    await asyncio.to_thread(enroll, server.url, server.token(), "belgium", running)
    await asyncio.to_thread(enroll, server.url, server.token(), "mac", stopped)
    await asyncio.to_thread(enroll, server.url, server.token(), "starlink", orphan)
    first = parse_certificate(load_state(running).certificate)
    assert first.not_after - first.not_before == LIFETIME
    renewed: list[bytes] = []
    link = ServerLink(running, lambda m: None, stats_interval=0.25, on_certificate=renewed.append)
    task = asyncio.create_task(link.run())
    try:
        await until(lambda: renewed, "the running agent renews", timeout=LIFETIME + 5)
        new = parse_certificate(renewed[0])
        assert new.not_before >= first.not_before + LIFETIME * 2 // 3 - 1  # not before two thirds
        assert (new.peer_id, new.overlay_ip) == (first.peer_id, first.overlay_ip)
        assert load_state(running).certificate == renewed[0]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    # mac was not running: its certificate expires, and start-up renews it
    mac = load_state(stopped)
    expiry = parse_certificate(mac.certificate).not_after
    await asyncio.sleep(max(0.0, expiry - time.time() + 1))
    with pytest.raises(Exception, match="validity"):
        verify_certificate(mac.certificate, mac.ca_public_key, int(time.time()))
    state, cert = await asyncio.to_thread(current_certificate, mac)
    assert cert.not_after > time.time() and cert.peer_id == mac.identity.peer_id
    assert state.certificate == load_state(stopped).certificate == cert.to_bytes()

    # starlink expired too, and the server is gone: a clear failure, not a start with a dead certificate
    server.stop()
    late = load_state(orphan)
    await asyncio.sleep(max(0.0, parse_certificate(late.certificate).not_after - time.time() + 1))
    with pytest.raises(AgentStartError, match="expired and the server did not renew it") as info:
        await asyncio.to_thread(current_certificate, late)
    assert info.value.exit_code == 1
