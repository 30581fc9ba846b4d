"""Certificate renewal over /ws/agent/ (issue 9 item 8): `renew` gets a new certificate for the same
key, peer id and overlay address once the current one is half-way through its life (with short
lifetimes here: SHADOWMESH_CERT_LIFETIME_S in seconds), audited and announced to the peers."""

from __future__ import annotations

import asyncio
import base64
import time

import pytest
from channels.db import database_sync_to_async

from meshadmin.mesh.choices import AuditAction
from meshadmin.mesh.models import AuditEvent, Network, Node
from nodeagent.protocol import messages
from nodeagent.protocol.cert import parse_certificate, verify_certificate
from nodeagent.protocol.constants import CloseCode
from tests.meshadmin.realtime.realtime_helpers import close_code, login, open_socket, receive

pytestmark = pytest.mark.django_db(transaction=True)


async def _certificate(comm) -> bytes:
    while True:
        msg = messages.decode_server_message(await comm.receive_from(5))
        if isinstance(msg, messages.CertificateIssued):
            return msg.certificate


async def test_a_young_certificate_is_not_reissued(belgium):
    comm, _ = await login(belgium[0])
    await comm.send_to(bytes_data=messages.encode(messages.Renew()))
    assert await _certificate(comm) == base64.b64decode(belgium[1]["certificate"])
    assert not await AuditEvent.objects.filter(action=AuditAction.NODE_CERT_RENEWED).aexists()
    await comm.disconnect()


async def test_a_certificate_past_half_its_life_is_renewed_for_the_same_key_and_address(
        settings, enrolled, uk):
    settings.SHADOWMESH_CERT_LIFETIME_S = 2
    ident, answer = await database_sync_to_async(enrolled)("belgium")
    old = parse_certificate(base64.b64decode(answer["certificate"]))
    assert old.not_after - old.not_before == 2
    await asyncio.sleep(1.1)
    settings.SHADOWMESH_CERT_LIFETIME_S = 3600
    watcher, before = await login(uk[0])  # a peer: its map lists belgium's fingerprint
    comm, _ = await login(ident)
    serial = (await Network.objects.aget(name="default")).serial
    await comm.send_to(bytes_data=messages.encode(messages.Renew()))
    data = await _certificate(comm)
    new = verify_certificate(data, ident.ca_public_key, int(time.time()))
    assert (new.peer_id, new.public_key, new.overlay_ip, new.prefix_len) == \
        (old.peer_id, old.public_key, old.overlay_ip, old.prefix_len)
    assert new.not_after - new.not_before == 3600 and new.fingerprint != old.fingerprint
    node = await Node.objects.aget(peer_id=ident.peer_id)
    assert bytes(node.certificate) == data
    audit = await AuditEvent.objects.aget(action=AuditAction.NODE_CERT_RENEWED)
    assert audit.actor == f"node:{ident.peer_id}" and audit.details["peer_id"] == ident.peer_id
    assert (await Network.objects.aget(name="default")).serial == serial + 1
    # the peers learn the new fingerprint
    assert before.peer(ident.peer_id).fingerprint == old.fingerprint
    while True:
        msg = await receive(watcher)
        if isinstance(msg, messages.Delta) and any(p.peer_id == ident.peer_id for p in msg.delta.upsert):
            break
    assert next(p for p in msg.delta.upsert if p.peer_id == ident.peer_id).fingerprint == new.fingerprint
    await comm.disconnect()
    await watcher.disconnect()


async def test_an_expired_node_logs_in_with_its_key_and_renews(settings, enrolled):
    settings.SHADOWMESH_CERT_LIFETIME_S = 1
    ident, answer = await database_sync_to_async(enrolled)("belgium")
    await asyncio.sleep(1.2)
    with pytest.raises(Exception, match="validity"):
        verify_certificate(base64.b64decode(answer["certificate"]), ident.ca_public_key, int(time.time()))
    settings.SHADOWMESH_CERT_LIFETIME_S = 60
    comm, _ = await login(ident)
    await comm.send_to(bytes_data=messages.encode(messages.Renew()))
    verify_certificate(await _certificate(comm), ident.ca_public_key, int(time.time()))
    await comm.disconnect()


async def test_renew_requests_faster_than_once_a_second_are_ignored(belgium):
    comm, _ = await login(belgium[0])
    for _ in range(3):
        await comm.send_to(bytes_data=messages.encode(messages.Renew()))
    await _certificate(comm)
    with pytest.raises(asyncio.TimeoutError):
        await _certificate_within(comm, 0.5)
    await comm.disconnect()


async def _certificate_within(comm, timeout: float) -> bytes:
    return await asyncio.wait_for(_certificate(comm), timeout)


async def test_renew_before_login_is_refused(belgium):
    comm = await open_socket()
    await receive(comm)
    await comm.send_to(bytes_data=messages.encode(messages.Renew()))
    assert await close_code(comm) == CloseCode.AUTH_FAILED
