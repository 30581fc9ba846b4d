"""POST /api/peers/register and GET /api/peers/<peer_id>: a node's own record, with a 24 h TTL."""

import base64
from datetime import timedelta

import pytest
from django.utils import timezone

from meshadmin.mesh.choices import AuditAction
from meshadmin.mesh.models import AuditEvent, Network, Node
from meshadmin.mesh.tasks import purge_expired_peer_records

pytestmark = pytest.mark.django_db

RECORD = {"ip": "198.18.0.3", "port": 8443, "udp_port": 9443, "is_public": True}


def test_a_node_registers_its_own_record_and_a_peer_reads_it(api_factory, uk, belgium):
    uk_ident, uk_enroll = uk
    be_ident, _ = belgium
    hub = api_factory("198.18.0.3")
    hub.login(uk_ident)
    response = hub.post("/api/peers/register", RECORD)
    assert response.status_code == 200
    stored = response.json()
    assert stored["peer_id"] == uk_ident.peer_id
    assert (stored["ip"], stored["port"], stored["udp_port"], stored["is_public"]) == (
        "198.18.0.3",
        8443,
        9443,
        True,
    )

    reader = api_factory("198.18.0.4")
    reader.login(be_ident)
    looked_up = reader.get(f"/api/peers/{uk_ident.peer_id}")
    assert looked_up.status_code == 200
    body = looked_up.json()
    assert {k: body[k] for k in ("peer_id", "name", "overlay_ip", "ip", "port", "udp_port", "is_public")} == {
        "peer_id": uk_ident.peer_id,
        "name": "uk",
        "overlay_ip": uk_enroll["overlay_ip"],
        "ip": "198.18.0.3",
        "port": 8443,
        "udp_port": 9443,
        "is_public": True,
    }
    assert base64.b64decode(body["public_key"]) == uk_ident.public_key
    assert body["last_seen"] is not None


def test_the_server_stores_the_source_address_it_saw(api_factory, belgium):
    ident, _ = belgium
    client = api_factory("198.18.7.7")
    client.login(ident)
    client.post("/api/peers/register", {**RECORD, "ip": "198.18.0.4", "is_public": False})
    node = Node.objects.get(peer_id=ident.peer_id)
    assert node.endpoint_ip == "198.18.0.4"
    assert node.observed_ip == "198.18.7.7"


def test_the_token_names_the_node_so_a_node_can_only_register_itself(api_factory, belgium, mac):
    be_ident, _ = belgium
    mac_ident, _ = mac
    client = api_factory()
    client.login(mac_ident)
    # there is no way to name another node: unknown fields are refused ...
    response = client.post("/api/peers/register", {**RECORD, "is_public": False, "peer_id": be_ident.peer_id})
    assert response.status_code == 400
    assert response.json()["detail"] == "peer_id: unknown field"
    # ... and a valid registration lands on the caller's own row
    client.post("/api/peers/register", {**RECORD, "is_public": False})
    assert Node.objects.get(peer_id=mac_ident.peer_id).endpoint_ip == "198.18.0.3"
    assert Node.objects.get(peer_id=be_ident.peer_id).endpoint_ip is None


def test_a_public_node_may_register_as_not_public_for_now(api_factory, uk, belgium):
    uk_ident, _ = uk
    hub = api_factory()
    hub.login(uk_ident)
    assert hub.post("/api/peers/register", {**RECORD, "is_public": False}).json()["is_public"] is False
    reader = api_factory()
    reader.login(belgium[0])
    assert reader.get(f"/api/peers/{uk_ident.peer_id}").json()["is_public"] is False
    assert hub.post("/api/peers/register", RECORD).json()["is_public"] is True
    assert reader.get(f"/api/peers/{uk_ident.peer_id}").json()["is_public"] is True


def test_a_node_not_enrolled_as_public_cannot_register_as_public(api, belgium):
    ident, _ = belgium
    api.login(ident)
    response = api.post("/api/peers/register", RECORD)
    assert response.status_code == 403
    assert response.json()["detail"].startswith("is_public:")


@pytest.mark.parametrize(
    ("field", "value"),
    [("ip", "not-an-ip"), ("port", 0), ("port", 65536), ("udp_port", -1), ("ip", "")],
)
def test_a_bad_record_is_a_400_naming_the_field(api, uk, field, value):
    ident, _ = uk
    api.login(ident)
    response = api.post("/api/peers/register", {**RECORD, field: value})
    assert response.status_code == 400
    assert response.json()["detail"].startswith(f"{field}:")


def test_a_record_past_its_ttl_is_not_served(api, uk):
    ident, _ = uk
    api.login(ident)
    api.post("/api/peers/register", RECORD)
    assert api.get(f"/api/peers/{ident.peer_id}").status_code == 200
    Node.objects.update(record_expires_at=timezone.now() - timedelta(seconds=1))
    response = api.get(f"/api/peers/{ident.peer_id}")
    assert response.status_code == 404
    assert response.json() == {"detail": "no live record for this peer"}


def test_a_record_lives_24_hours_after_registration(api, uk):
    ident, _ = uk
    api.login(ident)
    before = timezone.now()
    api.post("/api/peers/register", RECORD)
    expires = Node.objects.get(peer_id=ident.peer_id).record_expires_at
    assert timedelta(hours=24) <= expires - before < timedelta(hours=24, seconds=5)


def test_refreshing_an_unchanged_record_does_not_bump_the_serial(api, uk):
    ident, _ = uk
    api.login(ident)
    api.post("/api/peers/register", RECORD)
    serial = Network.objects.get().serial
    api.post("/api/peers/register", RECORD)
    assert Network.objects.get().serial == serial
    api.post("/api/peers/register", {**RECORD, "udp_port": 9444})
    assert Network.objects.get().serial == serial + 1
    assert AuditEvent.objects.filter(action=AuditAction.PEER_REGISTERED).count() == 2


def test_an_unknown_peer_is_a_404(api, uk, identity_factory):
    ident, _ = uk
    api.login(ident)
    assert api.get(f"/api/peers/{identity_factory().peer_id}").status_code == 404


def test_a_peer_in_another_network_is_not_visible(api_factory, uk, identity_factory):
    from meshadmin.mesh.services.networks import create_network
    from meshadmin.mesh.services.tokens import create_token

    other = create_network("other", "10.30.0.0/24")
    outsider = identity_factory()
    client = api_factory()
    assert client.enroll(create_token(other)[1], outsider, "outsider").status_code == 201
    uk_ident, _ = uk
    hub = api_factory()
    hub.login(uk_ident)
    hub.post("/api/peers/register", RECORD)
    client.login(outsider)
    assert client.get(f"/api/peers/{uk_ident.peer_id}").status_code == 404


def test_the_purge_task_clears_expired_records_and_leaves_live_ones(api_factory, uk, belgium):
    uk_ident, _ = uk
    be_ident, _ = belgium
    for ident, public in ((uk_ident, True), (be_ident, False)):
        client = api_factory()
        client.login(ident)
        assert client.post("/api/peers/register", {**RECORD, "is_public": public}).status_code == 200
    Node.objects.filter(peer_id=uk_ident.peer_id).update(
        record_expires_at=timezone.now() - timedelta(minutes=1)
    )
    serial = Network.objects.get().serial

    assert purge_expired_peer_records() == 1

    expired = Node.objects.get(peer_id=uk_ident.peer_id)
    assert (expired.endpoint_ip, expired.udp_port, expired.record_expires_at) == (None, None, None)
    assert Node.objects.get(peer_id=be_ident.peer_id).endpoint_ip == "198.18.0.3"
    assert Network.objects.get().serial == serial + 1
    assert purge_expired_peer_records() == 0


@pytest.mark.parametrize("header", [None, "Bearer ", "Bearer nope", "Basic dXNlcjpwYXNz", "bearer"])
def test_register_and_lookup_refuse_missing_or_bad_bearer_tokens(api, uk, header):
    ident, _ = uk
    headers = {"Authorization": header} if header is not None else {}
    register = api.client.post(
        "/api/peers/register", RECORD, content_type="application/json", headers=headers
    )
    lookup = api.client.get(f"/api/peers/{ident.peer_id}", headers=headers)
    for response in (register, lookup):
        assert response.status_code == 401
        assert set(response.json()) == {"detail"}


def test_an_expired_session_is_refused(api, uk):
    from meshadmin.mesh.models import SessionToken

    ident, _ = uk
    api.login(ident)
    SessionToken.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    assert api.post("/api/peers/register", RECORD).status_code == 401


# --- attack 5 of issue 9: a node steering every peer at an address that is not a peer ---------------
@pytest.mark.parametrize(
    ("ip", "why"),
    [("127.0.0.1", "loopback"), ("0.0.0.0", "unspecified"), ("169.254.169.254", "link-local"),
     ("224.0.0.1", "multicast"), ("255.255.255.255", "broadcast"), ("::1", "loopback"),
     ("fe80::1", "link-local"), ("ff02::1", "multicast"), ("::ffff:127.0.0.1", "loopback")],
)
def test_an_endpoint_no_peer_should_be_sent_to_is_refused_and_nothing_changes(api, uk, ip, why):
    ident, _ = uk
    api.login(ident)
    serial = Network.objects.get().serial
    response = api.post("/api/peers/register", {**RECORD, "ip": ip})
    assert response.status_code == 400
    assert response.json()["detail"].startswith("ip: ") and why in response.json()["detail"]
    node = Node.objects.get(peer_id=ident.peer_id)
    assert node.endpoint_ip is None and node.record_expires_at is None
    assert Network.objects.get().serial == serial
    refused = AuditEvent.objects.get(action=AuditAction.PEER_REGISTER_REFUSED)
    assert refused.details["reason"] == "endpoint refused" and why in refused.details["error"]


def test_loopback_endpoints_are_accepted_only_with_the_lab_setting(api, settings, uk):
    ident, _ = uk
    api.login(ident)
    assert api.post("/api/peers/register", {**RECORD, "ip": "127.0.0.1"}).status_code == 400
    settings.SHADOWMESH_ALLOW_LOOPBACK_ENDPOINTS = True
    assert api.post("/api/peers/register", {**RECORD, "ip": "127.0.0.1"}).status_code == 200
    # the setting allows loopback and nothing else
    assert api.post("/api/peers/register", {**RECORD, "ip": "169.254.169.254"}).status_code == 400


def test_endpoint_changes_over_the_limit_are_refused_without_a_serial_bump(api, settings, uk):
    settings.SHADOWMESH_RATE_LIMITS = {**settings.SHADOWMESH_RATE_LIMITS, "endpoint_change": 3}
    ident, _ = uk
    api.login(ident)
    serial = Network.objects.get().serial
    codes = [api.post("/api/peers/register", {**RECORD, "udp_port": 9000 + i}).status_code for i in range(5)]
    assert codes == [200, 200, 200, 429, 429]
    assert Network.objects.get().serial == serial + 3
    assert AuditEvent.objects.filter(action=AuditAction.PEER_REGISTERED).count() == 3
    assert Node.objects.get(peer_id=ident.peer_id).udp_port == 9002  # the refused ones wrote nothing
    limited = api.post("/api/peers/register", {**RECORD, "udp_port": 9999})
    assert limited["Retry-After"] == "600" and "endpoint changes" in limited.json()["detail"]
    refused = AuditEvent.objects.get(action=AuditAction.PEER_REGISTER_REFUSED)
    assert refused.count == 3 and refused.details["reason"] == "too many endpoint changes"
    # an unchanged refresh is not a change: it still keeps the record alive
    assert api.post("/api/peers/register", {**RECORD, "udp_port": 9002}).status_code == 200
    assert Network.objects.get().serial == serial + 3


def test_the_source_port_alone_is_not_a_change_peers_see(api_factory, uk):
    """Each new TCP connection has a new source port: counting it as a change bumped the serial
    and pushed a netmap to the whole mesh at every REST refresh."""
    ident, _ = uk
    client = api_factory("198.18.0.3")
    client.login(ident)
    client.post("/api/peers/register", RECORD, REMOTE_PORT="40001")
    serial = Network.objects.get().serial
    client.post("/api/peers/register", RECORD, REMOTE_PORT="40002")
    assert Network.objects.get().serial == serial
    assert Node.objects.get(peer_id=ident.peer_id).observed_port == 40002
