"""/ws/dashboard/: same-origin logged-in pages only; it relays mesh events; logout closes it."""

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import User
from django.test import Client

from meshadmin.asgi import application
from meshadmin.realtime.groups import PRESENCE_UPDATE, TELEMETRY_UPDATE, dashboard_group

pytestmark = pytest.mark.django_db(transaction=True)


def _session_cookie(user) -> str:
    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value


async def _connect(session: str | None, origin: str = "http://testserver"):
    headers = [(b"host", b"testserver"), (b"origin", origin.encode())]
    if session:
        headers.append((b"cookie", f"sessionid={session}".encode()))
    comm = WebsocketCommunicator(application, "/ws/dashboard/", headers=headers)
    connected, code = await comm.connect()
    return comm, connected, code


@pytest.fixture
def staff(db):
    return User.objects.create_user("alice", password="x" * 20, is_staff=True)


@pytest.fixture
def outsider(db):
    return User.objects.create_user("oscar", password="x" * 20)


async def test_an_anonymous_socket_is_told_to_sign_in_and_closed():
    comm, connected, _ = await _connect(None)
    assert connected
    closed = await comm.receive_output(timeout=3)
    assert closed == {"type": "websocket.close", "code": 4401}
    await comm.disconnect()


async def test_an_account_without_dashboard_access_is_closed(outsider):
    session = await sync_to_async(_session_cookie)(outsider)
    comm, _, _ = await _connect(session)
    assert (await comm.receive_output(timeout=3))["code"] == 4401
    await comm.disconnect()


async def test_a_page_from_another_origin_is_refused(staff):
    session = await sync_to_async(_session_cookie)(staff)
    comm, connected, _ = await _connect(session, origin="http://evil.example")
    assert not connected
    await comm.disconnect()


async def test_a_socket_without_an_origin_header_is_refused(staff):
    """Browsers always send Origin; a socket without one is not a same-origin page (threat model attack 24:
    docs/threat-model.md#24-websockets-and-sessions)."""
    session = await sync_to_async(_session_cookie)(staff)
    headers = [(b"host", b"testserver"), (b"cookie", f"sessionid={session}".encode())]
    comm = WebsocketCommunicator(application, "/ws/dashboard/", headers=headers)
    connected, _ = await comm.connect()
    assert not connected
    await comm.disconnect()


async def test_agent_reports_and_presence_reach_the_page_of_that_network(staff):
    from meshadmin.mesh.services.networks import get_or_create_network

    network = await sync_to_async(get_or_create_network)("default")
    session = await sync_to_async(_session_cookie)(staff)
    comm, connected, _ = await _connect(session)
    assert connected
    assert await comm.receive_json_from(timeout=3) == {"event": "hello"}
    layer = get_channel_layer()
    await layer.group_send(dashboard_group(network.pk), {
        "type": TELEMETRY_UPDATE, "network": network.pk, "peer_id": "a" * 40, "ts": "2026-11-28T20:00:00",
        "links": [{"peer": "b" * 40, "rtt_ms": 3.0}],
    })
    message = await comm.receive_json_from(timeout=3)
    assert message == {"event": "telemetry.update", "network": network.pk, "peer_id": "a" * 40}
    await layer.group_send(dashboard_group(network.pk), {"type": PRESENCE_UPDATE, "network": network.pk,
                                                         "peer_id": "a" * 40, "online": False})
    assert (await comm.receive_json_from(timeout=3))["event"] == "presence.update"
    await layer.group_send(dashboard_group(network.pk), {"type": "something.internal", "secret": "x"})
    assert await comm.receive_nothing(timeout=0.3)
    await comm.disconnect()


async def test_an_admin_write_tells_open_pages_to_refresh(staff):
    from meshadmin.mesh.services.networks import get_or_create_network
    from meshadmin.mesh.services.tokens import create_token

    network = await sync_to_async(get_or_create_network)("default")
    session = await sync_to_async(_session_cookie)(staff)
    comm, _, _ = await _connect(session)
    await comm.receive_json_from(timeout=3)
    await sync_to_async(create_token)(network)
    message = await comm.receive_json_from(timeout=3)
    assert message["event"] == "dashboard.changed" and message["reason"] == "token.created"
    assert message["network_id"] == network.pk
    await comm.disconnect()


async def test_logging_out_closes_every_open_dashboard_socket_of_that_user(staff):
    other = await sync_to_async(User.objects.create_user)("bob", password="x" * 20, is_staff=True)
    client = Client()
    await sync_to_async(client.force_login)(staff)
    session = client.cookies["sessionid"].value
    first, _, _ = await _connect(session)
    second, _, _ = await _connect(session)
    bystander, _, _ = await _connect(await sync_to_async(_session_cookie)(other))
    for comm in (first, second, bystander):
        assert await comm.receive_json_from(timeout=3) == {"event": "hello"}

    await sync_to_async(client.post)("/logout/")

    for comm in (first, second):
        assert await comm.receive_output(timeout=3) == {"type": "websocket.close", "code": 4401}
    assert await bystander.receive_nothing(timeout=0.3)
    for comm in (first, second, bystander):
        await comm.disconnect()


async def test_a_network_created_after_the_page_opened_is_followed_too(staff):
    from meshadmin.mesh.services.networks import create_network
    from meshadmin.mesh.services.tokens import create_token

    session = await sync_to_async(_session_cookie)(staff)
    comm, _, _ = await _connect(session)
    assert await comm.receive_json_from(timeout=3) == {"event": "hello"}
    office = await sync_to_async(create_network)("office", "10.20.0.0/24")
    await sync_to_async(create_token)(office)
    assert (await comm.receive_json_from(timeout=3))["network_id"] == office.pk
    await get_channel_layer().group_send(dashboard_group(office.pk), {
        "type": TELEMETRY_UPDATE, "network": office.pk, "peer_id": "c" * 40})
    assert (await comm.receive_json_from(timeout=3))["event"] == "telemetry.update"
    await comm.disconnect()
