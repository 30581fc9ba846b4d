"""Who gets a netmap on /ws/agent/: a signed fresh challenge or a session token in a header."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import mldsa

from meshadmin.mesh.models import AuditEvent, Node
from meshadmin.mesh.services.nodes import revoke_node
from nodeagent.protocol import messages
from nodeagent.protocol.auth import sign_agent_login
from nodeagent.protocol.constants import CONTEXT_CERT, CloseCode
from tests.meshadmin.realtime.realtime_helpers import close_code, login, open_socket, receive

pytestmark = pytest.mark.django_db(transaction=True)


async def test_a_node_that_signs_the_challenge_gets_its_full_netmap(uk, belgium, mac):
    comm, netmap = await login(belgium[0])
    assert netmap.node.peer_id == belgium[0].peer_id
    assert {p.name for p in netmap.peers} == {"uk", "mac"}
    assert netmap.relays == (uk[0].peer_id,)
    await comm.disconnect()


async def test_each_socket_gets_a_fresh_challenge(belgium):
    a, b = await open_socket(), await open_socket()
    assert (await receive(a)).nonce != (await receive(b)).nonce
    await a.disconnect()
    await b.disconnect()


async def test_a_signature_by_another_key_is_refused(belgium):
    comm = await open_socket()
    nonce = (await receive(comm)).nonce
    other = mldsa.MLDSA87PrivateKey.generate()
    await comm.send_to(
        bytes_data=messages.encode(
            messages.Auth(belgium[0].peer_id, other.sign(nonce, b"shadowmesh/auth/v1")))
    )
    assert await close_code(comm) == CloseCode.AUTH_FAILED
    assert await AuditEvent.objects.filter(action="auth.failed", details__reason="bad signature").aexists()


async def test_a_signature_of_the_wrong_length_is_audited_as_a_bad_signature(belgium):
    comm = await open_socket()
    await receive(comm)
    await comm.send_to(bytes_data=messages.encode(messages.Auth(belgium[0].peer_id, b"\x01" * 100)))
    assert await close_code(comm) == CloseCode.AUTH_FAILED
    assert await AuditEvent.objects.filter(action="auth.failed", details__reason="bad signature",
                                           details__channel="websocket").aexists()


async def test_a_signature_made_for_another_purpose_is_refused(belgium):
    comm = await open_socket()
    nonce = (await receive(comm)).nonce
    sig = belgium[0].key.sign(nonce, CONTEXT_CERT)
    await comm.send_to(bytes_data=messages.encode(messages.Auth(belgium[0].peer_id, sig)))
    assert await close_code(comm) == CloseCode.AUTH_FAILED


async def test_the_http_login_signature_is_refused_on_the_websocket(belgium):
    """Attack 18: the two logins sign different contexts, so neither answer is worth anything to the
    other (a websocket answer at /api/auth/verify: tests/meshadmin/api/test_server_impersonation.py)."""
    comm = await open_socket()
    nonce = (await receive(comm)).nonce
    http_login = belgium[0].sign_auth(nonce)
    await comm.send_to(bytes_data=messages.encode(messages.Auth(belgium[0].peer_id, http_login)))
    assert await close_code(comm) == CloseCode.AUTH_FAILED


async def test_a_login_signed_for_the_server_of_another_ca_is_refused(belgium):
    """What the agent signs names its network's CA: a login it made for another server (another
    network's, or an impersonator with its own CA) does not open this one."""
    comm = await open_socket()
    nonce = (await receive(comm)).nonce
    other_ca = mldsa.MLDSA87PrivateKey.generate().public_key().public_bytes_raw()
    sig = sign_agent_login(belgium[0].key, other_ca, nonce)
    await comm.send_to(bytes_data=messages.encode(messages.Auth(belgium[0].peer_id, sig)))
    assert await close_code(comm) == CloseCode.AUTH_FAILED


async def test_an_unknown_peer_is_refused(identity_factory, network):
    stranger = identity_factory()
    stranger.ca_public_key = bytes(network.ca_public_key)
    comm = await open_socket()
    nonce = (await receive(comm)).nonce
    auth = messages.Auth(stranger.peer_id, stranger.sign_login(nonce))
    await comm.send_to(bytes_data=messages.encode(auth))
    assert await close_code(comm) == CloseCode.AUTH_FAILED


async def test_a_revoked_node_cannot_authenticate(belgium):
    node = await Node.objects.aget(peer_id=belgium[0].peer_id)
    from channels.db import database_sync_to_async

    await database_sync_to_async(revoke_node)(node)
    comm = await open_socket()
    nonce = (await receive(comm)).nonce
    auth = messages.Auth(belgium[0].peer_id, belgium[0].sign_login(nonce))
    await comm.send_to(bytes_data=messages.encode(auth))
    assert await close_code(comm) == CloseCode.REVOKED


async def test_a_socket_without_auth_is_closed_after_the_deadline(belgium):
    comm = await open_socket()
    assert isinstance(await receive(comm), messages.Challenge)
    assert await close_code(comm) == CloseCode.AUTH_TIMEOUT


async def test_any_other_message_before_auth_is_refused(belgium):
    comm = await open_socket()
    await receive(comm)
    await comm.send_to(bytes_data=messages.encode(messages.Ack(1)))
    assert await close_code(comm) == CloseCode.AUTH_FAILED


async def test_a_session_token_in_the_authorization_header_skips_the_challenge(api, belgium, uk):
    from channels.db import database_sync_to_async

    token = await database_sync_to_async(api.login)(belgium[0])
    comm = await open_socket(headers=[(b"authorization", f"Bearer {token}".encode())])
    first = await receive(comm)
    assert isinstance(first, messages.Full) and first.netmap.node.peer_id == belgium[0].peer_id
    await comm.disconnect()


async def test_a_session_token_in_the_query_string_is_ignored(api, belgium):
    from channels.db import database_sync_to_async

    token = await database_sync_to_async(api.login)(belgium[0])
    comm = await open_socket(path=f"/ws/agent/?token={token}")
    assert isinstance(await receive(comm), messages.Challenge)
    await comm.disconnect()


async def test_a_bad_session_token_closes_the_socket(belgium):
    comm = await open_socket(headers=[(b"authorization", b"Bearer not-a-real-token")])
    assert await close_code(comm) == CloseCode.AUTH_FAILED


async def test_an_answer_that_came_in_time_is_checked_however_long_the_check_takes(belgium, monkeypatch,
                                                                                  settings):
    """The login deadline is for the agent's answer: under a reconnect storm the server's checks
    queue up, and a socket whose answer had arrived must not be closed 4408 while it waits."""
    import asyncio
    import time

    from meshadmin.realtime import auth

    slow = auth.authenticate_signatures
    deadline = settings.SHADOWMESH_AGENT_AUTH_TIMEOUT_S

    def queued(requests):
        time.sleep(3 * deadline)  # the check starts (or ends) well past the deadline
        return slow(requests)

    monkeypatch.setattr(auth, "authenticate_signatures", queued)
    comm = await open_socket()
    nonce = (await receive(comm)).nonce
    await comm.send_to(bytes_data=messages.encode(
        messages.Auth(belgium[0].peer_id, belgium[0].sign_login(nonce))))
    full = await receive(comm, timeout=10, ca_public_key=belgium[0].ca_public_key)
    assert isinstance(full, messages.Full) and full.netmap.node.peer_id == belgium[0].peer_id
    await asyncio.sleep(deadline)  # and the deadline does not fire later either
    assert await comm.receive_nothing(timeout=deadline)
    await comm.disconnect()



@pytest.mark.django_db
def test_the_login_check_reads_neither_the_certificate_nor_the_sealed_ca_key(belgium, uk):
    """Every login reads its node: only what the check and the identity need (a node's certificate
    is ~7 KB; the network row holds the sealed CA key), also when the login is refused."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from meshadmin.realtime import auth

    ident = belgium[0]
    nonce = b"n" * 32
    with CaptureQueriesContext(connection) as queries:
        agent = auth.authenticate_signature(ident.peer_id, nonce, ident.sign_login(nonce), "127.0.0.1")
    assert agent.peer_id == ident.peer_id and agent.name == "belgium" and not agent.is_public
    sql = " ".join(q["sql"] for q in queries)
    assert '"mesh_node"."public_key"' in sql
    assert '"mesh_node"."certificate"' not in sql and "ca_private_sealed" not in sql
    with pytest.raises(auth.AuthRefused):  # refused: audited with the node and its network
        auth.authenticate_signature(ident.peer_id, nonce, uk[0].sign_login(nonce), "127.0.0.1")
    event = AuditEvent.objects.order_by("-id").first()
    assert event is not None and event.network_id == Node.objects.get(peer_id=ident.peer_id).network_id


@pytest.fixture
def eight(enrolled):
    """Eight enrolled nodes; the last one revoked."""
    nodes = [enrolled(f"n{i}")[0] for i in range(8)]
    revoke_node(Node.objects.get(peer_id=nodes[7].peer_id))
    return nodes


async def test_logins_that_come_together_are_checked_together_and_each_gets_its_own_answer(
        eight, monkeypatch):
    """A reconnect storm: the checks of the logins that arrive while one check runs go to the
    database in one hop (realtime/batches.py), and each socket still gets its own answer: a
    full map for a good signature, 4401 for a bad one, 4403 for a revoked node."""
    import asyncio
    import time
    from dataclasses import replace

    from meshadmin.realtime import auth

    nodes = eight
    hops: list[int] = []
    real = auth.authenticate_signatures

    def slowed(requests):
        hops.append(len(requests))
        time.sleep(0.3)  # the database is busy: the next logins queue meanwhile
        return real(requests)

    monkeypatch.setattr(auth, "authenticate_signatures", slowed)
    socks = [await open_socket() for _ in nodes]
    nonces = [(await receive(comm)).nonce for comm in socks]
    for i, (comm, nonce) in enumerate(zip(socks, nonces, strict=True)):
        signer = replace(nodes[i], key=mldsa.MLDSA87PrivateKey.generate()) if i == 6 else nodes[i]
        await comm.send_to(bytes_data=messages.encode(  # node 6 answers with another key
            messages.Auth(nodes[i].peer_id, signer.sign_login(nonce))))
    answers = await asyncio.gather(*(receive(c, timeout=10, ca_public_key=nodes[0].ca_public_key)
                                     for c in socks[:6]))
    assert [a.netmap.node.peer_id for a in answers] == [n.peer_id for n in nodes[:6]]
    assert await close_code(socks[6]) == CloseCode.AUTH_FAILED
    assert await close_code(socks[7]) == CloseCode.REVOKED
    assert sum(hops) == 8 and len(hops) < 8 and max(hops) > 1, hops
    for comm in socks[:6]:
        await comm.disconnect()


@pytest.mark.django_db
def test_many_checks_are_one_query_and_each_result_is_what_it_would_be_alone(belgium, mac, uk):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from meshadmin.realtime import auth

    revoke_node(Node.objects.get(peer_id=mac[0].peer_id))
    nonce = b"m" * 32
    requests = [
        (belgium[0].peer_id, nonce, belgium[0].sign_login(nonce), "127.0.0.1"),  # good
        ("ab" * 16, nonce, belgium[0].sign_login(nonce), "127.0.0.2"),  # unknown peer
        (mac[0].peer_id, nonce, mac[0].sign_login(nonce), "127.0.0.3"),  # revoked
        (uk[0].peer_id, nonce, belgium[0].sign_login(nonce), "127.0.0.4"),  # another node's key
        (uk[0].peer_id, nonce, uk[0].sign_login(nonce), "127.0.0.5"),  # good
    ]
    audited = AuditEvent.objects.count()
    with CaptureQueriesContext(connection) as queries:
        results = auth.authenticate_signatures(requests)
    node_reads = [q for q in queries if q["sql"].startswith("SELECT") and 'FROM "mesh_node"' in q["sql"]]
    assert len(node_reads) == 1  # one query for the five nodes (refusals read their audit's own)
    assert [type(r).__name__ for r in results] == [
        "AgentIdentity", "AuthRefused", "AuthRefused", "AuthRefused", "AgentIdentity"]
    assert results[0].peer_id == belgium[0].peer_id and results[4].peer_id == uk[0].peer_id
    assert [str(r) for r in results[1:4]] == ["unknown peer", "this node has been revoked",
                                              "signature does not verify"]
    assert results[2].revoked and not results[1].revoked and not results[3].revoked
    for request, result in zip(requests, results, strict=True):  # each as it would be alone
        try:
            alone = auth.authenticate_signature(*request)
        except auth.AuthRefused as exc:
            alone = exc
        assert type(alone) is type(result) and str(alone) == str(result)
    assert AuditEvent.objects.count() > audited  # the refusals were audited
