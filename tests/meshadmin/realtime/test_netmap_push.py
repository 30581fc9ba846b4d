"""Changes reach connected agents: one push per node per burst, deltas, revocation closes the socket."""

from __future__ import annotations

import asyncio
import time

import pytest
from channels.db import database_sync_to_async

from meshadmin.mesh.models import Network, Node
from meshadmin.mesh.services.nodes import revoke_node
from meshadmin.mesh.services.routes import create_route
from meshadmin.telemetry.models import Presence
from nodeagent.protocol import messages
from nodeagent.protocol import netmap as nm
from nodeagent.protocol.constants import CloseCode
from tests.meshadmin.realtime.realtime_helpers import close_code, login, receive

pytestmark = pytest.mark.django_db(transaction=True)


async def test_a_burst_of_five_edits_gives_each_agent_at_most_two_deltas(uk, belgium, mac):
    """The first edit of a burst goes out at once; the edits committed within the debounce after
    that push are merged into one more."""
    sockets = {}
    for persona in (uk, belgium, mac):
        sockets[persona[0].peer_id] = await login(persona[0])
    gw = await Node.objects.aget(peer_id=belgium[0].peer_id)
    for i in range(5):
        await database_sync_to_async(create_route)(gw, f"192.168.{i}.0/24", approved=True)
    serial = (await Network.objects.aget(name="default")).serial
    for pid, (comm, first) in sockets.items():
        held, deltas = first, 0
        while held.serial != serial:
            msg = await receive(comm)
            assert isinstance(msg, messages.Delta)
            assert msg.delta.base_serial == held.serial
            held = nm.apply_delta(held, msg.delta)
            deltas += 1
        assert 1 <= deltas <= 2
        expected_routes = 0 if pid == belgium[0].peer_id else 5
        assert len(held.routes) == expected_routes
        assert await comm.receive_nothing(timeout=0.6)  # merged: nothing more for the burst
    for comm, _ in sockets.values():
        await comm.disconnect()


async def test_revoking_a_node_closes_its_socket_and_tells_the_others(uk, belgium, mac):
    mac_comm, _ = await login(mac[0])
    uk_comm, uk_map = await login(uk[0])
    node = await Node.objects.aget(peer_id=mac[0].peer_id)
    await database_sync_to_async(revoke_node)(node)
    assert await close_code(mac_comm) == CloseCode.REVOKED
    delta = (await receive(uk_comm)).delta
    after = nm.apply_delta(uk_map, delta)
    assert mac[0].peer_id not in {p.peer_id for p in after.peers}
    assert mac[0].peer_id in {r.peer_id for r in after.revoked}
    await uk_comm.disconnect()


async def test_the_push_of_a_revocation_carries_the_cas_list_for_the_dht(uk, belgium, mac):
    """Agents store the list in their DHT (docs/dht.md): it is the CA's, names the revoked node, and
    the maps pushed after it carry the same bytes (re-signed only when the revocations change)."""
    from nodeagent.discovery.records import verify_revocation_list

    uk_comm, uk_map = await login(uk[0])
    assert uk_map.revocation_list is None  # nothing revoked yet: no list
    node = await Node.objects.aget(peer_id=mac[0].peer_id)
    await database_sync_to_async(revoke_node)(node)
    delta = (await receive(uk_comm)).delta
    assert delta.revocation_list is not None
    rec = verify_revocation_list(delta.revocation_list, uk[0].ca_public_key, time.time())
    assert rec.revoked == {mac[0].peer_id}
    gw = await Node.objects.aget(peer_id=belgium[0].peer_id)
    await database_sync_to_async(create_route)(gw, "192.168.9.0/24", approved=True)
    later = (await receive(uk_comm)).delta
    assert later.revocation_list is None  # unchanged: not carried again
    belgium_comm, belgium_map = await login(belgium[0])
    assert belgium_map.revocation_list == delta.revocation_list  # a full map carries it
    await uk_comm.disconnect()
    await belgium_comm.disconnect()


async def test_a_resync_request_gets_the_full_map_and_acks_are_recorded(uk, belgium):
    comm, first = await login(belgium[0])
    await comm.send_to(bytes_data=messages.encode(messages.Resync(first.serial - 1)))
    again = await receive(comm)
    assert isinstance(again, messages.Full) and again.netmap == first
    await comm.send_to(bytes_data=messages.encode(messages.Ack(first.serial)))
    for _ in range(100):  # acks are stored in batches (stats_buffer.py)
        presence = await Presence.objects.aget(node__peer_id=belgium[0].peer_id)
        if presence.last_serial is not None:
            break
        await asyncio.sleep(0.05)
    assert presence.last_serial == first.serial and presence.online
    await comm.disconnect()
    presence = await Presence.objects.aget(node__peer_id=belgium[0].peer_id)
    assert not presence.online and presence.connections == 0


async def test_an_endpoint_report_updates_the_peers_netmaps(uk, belgium):
    uk_comm, _ = await login(uk[0])
    be_comm, be_map = await login(belgium[0])
    report = messages.EndpointReport((nm.Endpoint("198.18.0.1", 8443, 9443),))
    await uk_comm.send_to(bytes_data=messages.encode(report))
    delta = (await receive(be_comm)).delta
    hub = nm.apply_delta(be_map, delta).peer(uk[0].peer_id)
    assert hub.endpoints[0] == nm.Endpoint("198.18.0.1", 8443, 9443, "reported")
    for comm in (uk_comm, be_comm):
        await comm.disconnect()


async def test_the_agent_version_in_an_endpoint_report_is_kept_on_the_node(uk):
    comm, _ = await login(uk[0])
    report = messages.EndpointReport((nm.Endpoint("198.18.0.1", 8443, 9443),), "1.2.3")
    await comm.send_to(bytes_data=messages.encode(report))
    for _ in range(100):
        node = await Node.objects.aget(peer_id=uk[0].peer_id)
        if node.agent_version:
            break
        await asyncio.sleep(0.05)
    assert node.agent_version == "1.2.3"
    await comm.disconnect()


async def _until(predicate, what: str) -> None:
    for _ in range(200):
        if await predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


async def test_a_reported_endpoint_no_peer_should_be_sent_to_is_ignored_and_audited(uk, belgium):
    """Attack 5 of issue 9: a compromised node steering every peer at a cloud metadata address."""
    from meshadmin.mesh.choices import AuditAction
    from meshadmin.mesh.models import AuditEvent

    uk_comm, _ = await login(uk[0])
    be_comm, be_map = await login(belgium[0])
    serial = (await Network.objects.aget(name="default")).serial
    for bad in ("169.254.169.254", "127.0.0.1", "0.0.0.0", "224.0.0.251"):
        report = messages.EndpointReport((nm.Endpoint(bad, 80, 80),))
        await uk_comm.send_to(bytes_data=messages.encode(report))
    refused = AuditEvent.objects.filter(action=AuditAction.PEER_REGISTER_REFUSED, count=4)
    await _until(refused.aexists, "the refusals to be audited")
    assert (await Network.objects.aget(name="default")).serial == serial
    assert (await Node.objects.aget(peer_id=uk[0].peer_id)).endpoint_ip is None
    # the next thing belgium hears of uk is the good endpoint: nothing was pushed for the bad ones
    good = nm.Endpoint("198.18.0.1", 8443, 9443)
    await uk_comm.send_to(bytes_data=messages.encode(messages.EndpointReport((good,))))
    delta = (await receive(be_comm)).delta
    assert delta.base_serial == be_map.serial and delta.serial == serial + 1
    assert nm.apply_delta(be_map, delta).peer(uk[0].peer_id).endpoints[0] == good
    for comm in (uk_comm, be_comm):
        await comm.disconnect()


async def test_reported_udp_candidates_reach_the_peers_netmaps_validated(uk, belgium):
    uk_comm, _ = await login(uk[0])
    be_comm, be_map = await login(belgium[0])
    report = messages.EndpointReport((
        nm.Endpoint("198.18.0.1", 8443, 9443),
        nm.Endpoint("198.18.7.2", 8443, 9443, "local"),
        nm.Endpoint("198.19.0.10", 8443, 40123, "reflexive"),
        nm.Endpoint("198.18.0.1", 8443, 9443, "local"),  # the endpoint itself again: listed once
        nm.Endpoint("198.19.9.9", 8443, 9443, "observed"),  # only the server observes: ignored
    ))
    await uk_comm.send_to(bytes_data=messages.encode(report))
    delta = (await receive(be_comm)).delta
    hub = nm.apply_delta(be_map, delta).peer(uk[0].peer_id)
    assert [(e.source, e.ip, e.udp_port) for e in hub.endpoints] == [
        ("reported", "198.18.0.1", 9443), ("local", "198.18.7.2", 9443), ("reflexive", "198.19.0.10", 40123)]
    for comm in (uk_comm, be_comm):
        await comm.disconnect()


async def test_endpoint_changes_over_the_limit_are_ignored_on_the_socket_and_counted(settings, uk, belgium):
    from meshadmin.mesh.choices import AuditAction
    from meshadmin.mesh.models import AuditEvent

    settings.SHADOWMESH_RATE_LIMITS = {**settings.SHADOWMESH_RATE_LIMITS, "endpoint_change": 2}
    uk_comm, _ = await login(uk[0])
    serial = (await Network.objects.aget(name="default")).serial
    for port in range(9001, 9006):
        report = messages.EndpointReport((nm.Endpoint("198.18.0.1", 8443, port),))
        await uk_comm.send_to(bytes_data=messages.encode(report))
    refused = AuditEvent.objects.filter(action=AuditAction.PEER_REGISTER_REFUSED, count=3)
    await _until(refused.aexists, "three refused changes to be counted")
    assert (await Network.objects.aget(name="default")).serial == serial + 2
    assert (await Node.objects.aget(peer_id=uk[0].peer_id)).udp_port == 9002
    # the socket is still open and served
    await uk_comm.send_to(bytes_data=messages.encode(messages.Resync(0)))
    while not isinstance(msg := await receive(uk_comm), messages.Full):
        assert isinstance(msg, messages.Delta)
    await uk_comm.disconnect()


async def test_a_report_with_an_unusable_candidate_is_refused_whole_and_audited(uk):
    from meshadmin.mesh.choices import AuditAction
    from meshadmin.mesh.models import AuditEvent

    comm, _ = await login(uk[0])
    good = messages.EndpointReport((nm.Endpoint("198.18.0.1", 8443, 9443),
                                    nm.Endpoint("198.18.7.2", 8443, 9443, "local")))
    await comm.send_to(bytes_data=messages.encode(good))
    stored = Node.objects.filter(peer_id=uk[0].peer_id, candidates=[["local", "198.18.7.2", 9443]])
    await _until(stored.aexists, "the candidates to be stored")
    serial = (await Network.objects.aget(name="default")).serial
    bad = messages.EndpointReport((nm.Endpoint("198.18.0.1", 8443, 9443),
                                   nm.Endpoint("198.18.7.3", 8443, 9443, "local"),
                                   nm.Endpoint("224.0.0.1", 8443, 9443, "local")))  # multicast
    await comm.send_to(bytes_data=messages.encode(bad))
    refused = AuditEvent.objects.filter(action=AuditAction.PEER_REGISTER_REFUSED)
    await _until(refused.aexists, "the refusal to be audited")
    node = await Node.objects.aget(peer_id=uk[0].peer_id)
    assert node.candidates == [["local", "198.18.7.2", 9443]]  # nothing of the bad report kept
    assert (await Network.objects.aget(name="default")).serial == serial
    await comm.disconnect()
