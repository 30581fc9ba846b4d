"""Attack 25 on /ws/agent/, the server's unauthenticated websocket door (docs/threat-model.md):
new sockets are limited per client address (closed with 4429 before any other work), a forged
X-Forwarded-For does not buy a fresh budget, and refused authentications are folded into one
audit event with a count instead of a row each (issue 9: 200 sockets with a bogus bearer token
wrote 200 rows)."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from meshadmin.client_address import parse_trusted_proxies
from meshadmin.mesh.choices import AuditAction
from meshadmin.mesh.models import AuditEvent
from nodeagent.protocol import messages
from nodeagent.protocol.constants import CloseCode
from tests.meshadmin.realtime.realtime_helpers import application, close_code, receive

pytestmark = pytest.mark.django_db(transaction=True)


async def open_from(ip: str, headers=None) -> WebsocketCommunicator:
    comm = WebsocketCommunicator(application(), "/ws/agent/", headers=headers or [])
    comm.scope["client"] = (ip, 40000)
    connected, _ = await comm.connect()
    assert connected
    return comm


async def first_frame_or_close(comm: WebsocketCommunicator):
    """A challenge (the socket was admitted) or the close code (it was not)."""
    out = await comm.receive_output(5)
    if out["type"] == "websocket.close":
        return out.get("code")
    challenge = messages.decode_server_message(out["bytes"])
    await comm.disconnect()
    return challenge


def _limits(settings, connect: int) -> None:
    settings.SHADOWMESH_RATE_LIMITS = {**settings.SHADOWMESH_RATE_LIMITS, "agent_connect": connect}


def _events(action, **filters):
    return list(AuditEvent.objects.filter(action=action, **filters))


async def test_a_flood_of_sockets_from_one_address_is_closed_with_4429(settings, network):
    _limits(settings, 5)
    outcomes = [await first_frame_or_close(await open_from("198.18.7.7")) for _ in range(8)]
    assert all(isinstance(o, messages.Challenge) for o in outcomes[:5])
    assert outcomes[5:] == [CloseCode.RATE_LIMITED] * 3
    # another address is not affected
    assert isinstance(await first_frame_or_close(await open_from("198.18.7.8")), messages.Challenge)
    # the refusals are audited once for the minute, not once per socket
    refused = await database_sync_to_async(_events)(AuditAction.AUTH_RATE_LIMITED)
    assert [(e.source_ip, e.count, e.details["limit_per_minute"]) for e in refused] == [("198.18.7.7", 1, 5)]


async def test_a_forged_forwarded_for_does_not_buy_a_new_budget(settings, network):
    _limits(settings, 3)
    settings.SHADOWMESH_TRUSTED_PROXIES = parse_trusted_proxies(["127.0.0.1"])  # not the caller
    outcomes = []
    for i in range(5):
        comm = await open_from("198.18.7.9", headers=[(b"x-forwarded-for", f"198.18.0.{i}".encode())])
        outcomes.append(await first_frame_or_close(comm))
    assert all(isinstance(o, messages.Challenge) for o in outcomes[:3])
    assert outcomes[3:] == [CloseCode.RATE_LIMITED] * 2


async def test_behind_a_trusted_proxy_each_agent_has_its_own_budget(settings, network):
    _limits(settings, 2)
    settings.SHADOWMESH_TRUSTED_PROXIES = parse_trusted_proxies(["198.18.7.250"])

    async def through_proxy(client: str):
        forwarded = f"203.0.113.9, {client}".encode()  # a forged entry, then what the proxy saw
        comm = await open_from("198.18.7.250", headers=[(b"x-forwarded-for", forwarded)])
        return await first_frame_or_close(comm)

    outcomes = [await through_proxy("198.18.8.1") for _ in range(3)]
    assert isinstance(outcomes[0], messages.Challenge) and outcomes[2] == CloseCode.RATE_LIMITED
    assert isinstance(await through_proxy("198.18.8.2"), messages.Challenge)


async def test_200_sockets_with_a_bogus_bearer_token_write_one_audit_event(settings, network):
    _limits(settings, 0)  # only the folding is under test here
    for _ in range(200):
        comm = await open_from("198.18.7.10", headers=[(b"authorization", b"Bearer bogus")])
        assert await close_code(comm) == CloseCode.AUTH_FAILED
    failed = await database_sync_to_async(_events)(AuditAction.AUTH_FAILED)
    assert len(failed) == 1
    event = failed[0]
    assert (event.count, event.source_ip, event.actor) == (200, "198.18.7.10", "anonymous")
    assert event.details == {"reason": "invalid or expired session token", "channel": "websocket"}
    assert event.last_at >= event.created_at


async def test_refusals_fold_per_address_and_reason_and_start_again_after_the_window(settings, belgium):
    _limits(settings, 0)
    settings.SHADOWMESH_AUDIT_FOLD_S = 3600

    async def bad_signature(ip: str) -> None:
        comm = await open_from(ip)
        assert isinstance(await receive(comm), messages.Challenge)
        await comm.send_to(bytes_data=messages.encode(messages.Auth(belgium[0].peer_id, b"\x01" * 100)))
        assert await close_code(comm) == CloseCode.AUTH_FAILED

    async def bad_token(ip: str) -> None:
        comm = await open_from(ip, headers=[(b"authorization", b"Bearer bogus")])
        assert await close_code(comm) == CloseCode.AUTH_FAILED

    for _ in range(3):
        await bad_signature("198.18.7.11")
        await bad_token("198.18.7.11")
        await bad_token("198.18.7.12")

    def rows():
        return sorted((e.source_ip, e.details["reason"], e.count) for e in _events(AuditAction.AUTH_FAILED))

    assert await database_sync_to_async(rows)() == [
        ("198.18.7.11", "bad signature", 3),
        ("198.18.7.11", "invalid or expired session token", 3),
        ("198.18.7.12", "invalid or expired session token", 3),
    ]
    # the window over (it is counted from the event's first refusal): the next one opens a new event
    settings.SHADOWMESH_AUDIT_FOLD_S = 0
    await bad_token("198.18.7.12")
    assert ("198.18.7.12", "invalid or expired session token", 1) in await database_sync_to_async(rows)()
