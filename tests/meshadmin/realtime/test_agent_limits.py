"""Attack 25 on /ws/agent/, the server's unauthenticated websocket door (docs/threat-model.md):
new sockets are limited per client address (closed with 4429 before any other work), a socket
that logs in gives its place back (the budget bounds failed and unfinished logins, so a NAT full
of honest agents is not throttled), each node's logins are limited on their own, a forged
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
from meshadmin.mesh.services import ratelimit
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


async def outcome(comm: WebsocketCommunicator, ca_public_key: bytes | None = None):
    """The next frame: a challenge, the peer id a full map names, or (code, reason) of a close."""
    out = await comm.receive_output(5)
    if out["type"] == "websocket.close":
        return out.get("code"), out.get("reason", "")
    frame = messages.decode_server_message(out["bytes"], netmap_key=ca_public_key)
    if isinstance(frame, messages.Full):
        return frame.netmap.node.peer_id
    assert isinstance(frame, messages.Challenge), frame
    return frame


async def answer(comm: WebsocketCommunicator, challenge: messages.Challenge, ident, signer=None):
    """Answer `challenge` as `ident` (signed by `signer`'s key if given): what the server does then."""
    signature = (signer or ident).sign_login(challenge.nonce)
    await comm.send_to(bytes_data=messages.encode(messages.Auth(ident.peer_id, signature)))
    return await outcome(comm, ident.ca_public_key)


async def login_from(ip: str, ident) -> tuple[WebsocketCommunicator, object]:
    """Open a socket from `ip` and log in as `ident`: the socket, and the peer id its first map
    names, or (code, reason) if the server closed it instead."""
    comm = await open_from(ip)
    first = await outcome(comm)
    if not isinstance(first, messages.Challenge):
        return comm, first
    return comm, await answer(comm, first, ident)


def _limits(settings, connect: int, login: int | None = None) -> None:
    extra = {} if login is None else {"agent_login": login}
    settings.SHADOWMESH_RATE_LIMITS = {**settings.SHADOWMESH_RATE_LIMITS, "agent_connect": connect, **extra}


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


@pytest.fixture
def office(enrolled):
    """Six enrolled nodes: agents behind one NAT address."""
    return [enrolled(f"desk{i}")[0] for i in range(6)]


@pytest.fixture
def patient(settings):
    """Sockets wait for their `auth` as long as a test needs (the realtime tests' deadline is 0.2 s)."""
    settings.SHADOWMESH_AGENT_AUTH_TIMEOUT_S = 60


TOO_MANY = CloseCode.RATE_LIMITED, "too many connections from this address; wait a minute"


async def test_more_agents_than_the_connect_limit_behind_one_address_all_log_in(settings, office):
    """The connect budget is for failed and unfinished logins: honest agents behind one NAT get
    their map however many there are (main refused the fourth socket here with 4429)."""
    _limits(settings, 3)
    done = [await login_from("198.18.9.1", ident) for ident in office]
    assert [result for _, result in done] == [ident.peer_id for ident in office]
    for comm, _ in done:
        await comm.disconnect()


async def test_a_storm_behind_one_address_is_let_in_as_the_logins_finish(settings, office, patient):
    """After a restart the whole office comes at once: the limit is how many may be logging in
    at a time; the ones refused (not charged) come back and get in within the same minute."""
    _limits(settings, 3)
    socks = [await open_from("198.18.9.2") for _ in office]  # their charges race (threads, Redis)
    firsts = [await outcome(comm) for comm in socks]
    admitted = [(comm, f) for comm, f in zip(socks, firsts, strict=True) if isinstance(f, messages.Challenge)]
    assert len(admitted) == 3
    assert [f for f in firsts if not isinstance(f, messages.Challenge)] == [TOO_MANY] * 3
    for (comm, challenge), ident in zip(admitted, office[:3], strict=True):
        assert await answer(comm, challenge, ident) == ident.peer_id
    again = [await login_from("198.18.9.2", ident) for ident in office[3:]]  # the refused ones retry
    assert [result for _, result in again] == [ident.peer_id for ident in office[3:]]
    for comm in [comm for comm, _ in admitted] + [comm for comm, _ in again]:
        await comm.disconnect()


async def test_failed_and_unanswered_logins_use_up_the_budget(settings, office, identity_factory):
    """A flood of bad signatures and of sockets that never answer is still refused after the
    limit, at once, audited once; an honest agent sharing that address waits for the next minute."""
    _limits(settings, 4)
    stranger = identity_factory()
    stranger.ca_public_key = office[0].ca_public_key
    for _ in range(2):  # office[0]'s peer id, signed with another key
        comm = await open_from("198.18.9.3")
        assert await answer(comm, await outcome(comm), office[0], signer=stranger) == (
            CloseCode.AUTH_FAILED, "signature does not verify")
    for _ in range(2):  # never answers: closed at the (test's short) deadline
        comm = await open_from("198.18.9.3")
        assert isinstance(await outcome(comm), messages.Challenge)
        assert await close_code(comm) == CloseCode.AUTH_TIMEOUT
    refused = [await outcome(await open_from("198.18.9.3")) for _ in range(5)]
    assert refused == [TOO_MANY] * 5
    _, honest = await login_from("198.18.9.3", office[1])
    assert honest == TOO_MANY
    audited = await database_sync_to_async(_events)(AuditAction.AUTH_RATE_LIMITED)
    assert [(e.source_ip, e.count, e.details["reason"]) for e in audited] == [
        ("198.18.9.3", 1, "too many connections")]


async def test_logins_in_progress_count_until_they_finish(settings, office, patient):
    _limits(settings, 3)
    socks = [await open_from("198.18.9.4") for _ in range(3)]
    challenges = [await outcome(comm) for comm in socks]
    assert all(isinstance(c, messages.Challenge) for c in challenges)
    assert await outcome(await open_from("198.18.9.4")) == TOO_MANY  # three are logging in
    assert await answer(socks[0], challenges[0], office[0]) == office[0].peer_id
    fifth = await open_from("198.18.9.4")  # the login that finished gave its place back
    assert isinstance(await outcome(fifth), messages.Challenge)
    stranger = office[5]  # signs as office[1]: fails, and keeps its place used
    assert (await answer(socks[1], challenges[1], office[1], signer=stranger))[0] == CloseCode.AUTH_FAILED
    assert await outcome(await open_from("198.18.9.4")) == TOO_MANY
    for comm in (socks[0], socks[2], fifth):
        await comm.disconnect()


async def test_a_login_gives_its_place_back_to_the_minute_it_was_charged_in(settings, office, patient,
                                                                             monkeypatch):
    """A socket charged in one minute that logs in the next gives nothing to the new minute."""
    _limits(settings, 2)
    window = 1_800_000_000 // ratelimit.WINDOW_S * ratelimit.WINDOW_S
    now = [window + 59.0]
    monkeypatch.setattr(ratelimit, "clock", lambda: now[0])
    early = await open_from("198.18.9.5")
    early_challenge = await outcome(early)
    now[0] = window + 61.0  # the next minute
    late = [await open_from("198.18.9.5") for _ in range(2)]
    assert all(isinstance(c, messages.Challenge) for c in [await outcome(comm) for comm in late])
    assert await answer(early, early_challenge, office[0]) == office[0].peer_id
    assert await outcome(await open_from("198.18.9.5")) == TOO_MANY  # still two in this minute
    for comm in [early, *late]:
        await comm.disconnect()


async def test_a_node_that_logs_in_too_often_is_refused_with_4429(settings, belgium, mac):
    """An honest but broken agent, reconnecting in a loop: its node's logins are limited, the
    refusals audited once for the minute, and they stay charged to the address."""
    _limits(settings, 2, login=2)
    results = []
    for _ in range(4):
        comm, result = await login_from("198.18.9.6", belgium[0])
        results.append(result)
        await comm.disconnect()
    refused = (CloseCode.RATE_LIMITED,
               f"too many logins of node {belgium[0].peer_id} this minute; wait a minute")
    assert results == [belgium[0].peer_id] * 2 + [refused] * 2
    audited = await database_sync_to_async(_events)(AuditAction.AUTH_RATE_LIMITED)
    assert [(e.source_ip, e.count, e.actor, e.object_id, e.details["reason"], e.details["limit_per_minute"])
            for e in audited] == [("198.18.9.6", 1, f"node:{belgium[0].peer_id}", belgium[0].peer_id,
                                   "too many logins", 2)]
    # the two refused logins still hold the address's budget; another node has its own logins
    assert (await login_from("198.18.9.6", mac[0]))[1] == TOO_MANY
    comm, result = await login_from("198.18.9.7", mac[0])
    assert result == mac[0].peer_id
    await comm.disconnect()


async def test_a_login_with_a_session_token_gives_its_place_back_too(settings, belgium, api):
    _limits(settings, 1)
    token = await database_sync_to_async(api.login)(belgium[0])
    socks = []
    for _ in range(3):
        comm = await open_from("198.18.9.8", headers=[(b"authorization", f"Bearer {token}".encode())])
        assert await outcome(comm, belgium[0].ca_public_key) == belgium[0].peer_id
        socks.append(comm)
    for comm in socks:
        await comm.disconnect()


async def test_unlimited_costs_no_cache_work(settings, belgium, monkeypatch):
    _limits(settings, 0, login=0)

    def no_cache():
        raise AssertionError("an unlimited budget touched the cache")

    monkeypatch.setattr(ratelimit, "shared_cache", no_cache)
    for _ in range(3):
        comm, result = await login_from("198.18.9.9", belgium[0])
        assert result == belgium[0].peer_id
        await comm.disconnect()
