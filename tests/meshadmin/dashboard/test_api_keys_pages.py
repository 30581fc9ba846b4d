"""The dashboard's API keys: made by staff and shown once, listed with scope and last use (never
the key), revoked after a confirmation; every step audited with the user as the actor."""

from __future__ import annotations

import re

import pytest

from meshadmin.mesh.choices import AuditAction
from meshadmin.mesh.models import ApiKey, AuditEvent
from meshadmin.mesh.services.apikeys import create_api_key
from tests.meshadmin.api.operator_client import OperatorClient

pytestmark = pytest.mark.django_db


def _shown_key(html: str) -> str:
    match = re.search(r'data-testid="api-key">([^<]+)<', html)
    assert match, "the created page shows the key"
    return match.group(1)


def test_an_admin_makes_a_read_only_key_that_is_shown_once_and_works(admin, csrf_post, network):
    response = csrf_post(admin, "/apikeys/new", {"name": "grafana", "read_only": "on", "expires": "30d"})
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    key = _shown_key(response.content.decode())
    row = ApiKey.objects.get()
    assert (row.name, row.read_only, row.created_by) == ("grafana", True, "user:alice")
    assert OperatorClient(key).get("/api/nodes").status_code == 200
    assert OperatorClient(key).post("/api/tokens", {}).status_code == 403
    listing = admin.get("/apikeys/").content.decode()
    assert row.prefix in listing and "read-only" in listing and key not in listing
    assert key[len(row.prefix) + 1:] not in listing
    event = AuditEvent.objects.get(action=AuditAction.APIKEY_CREATED)
    assert event.actor == "user:alice" and key not in str(event.details)


def test_the_list_shows_when_and_from_where_a_key_was_last_used(admin, network):
    key, plaintext = create_api_key("ci")
    assert "never" in admin.get("/apikeys/").content.decode()
    OperatorClient(plaintext, remote_addr="198.18.0.30").get("/api/networks")
    key.refresh_from_db()
    page = admin.get("/apikeys/").content.decode()
    assert f"{key.last_used_at:%Y-%m-%d %H:%M}" in page and "from 198.18.0.30" in page


def test_a_bad_form_is_a_400_and_makes_nothing(admin, csrf_post):
    for data in ({"name": "", "expires": "30d"}, {"name": "ok", "expires": "forever"},
                 {"name": "x" * 64, "expires": "30d"}, {"name": "bell\u0007", "expires": "30d"}):
        assert csrf_post(admin, "/apikeys/new", data).status_code == 400, data
    assert not ApiKey.objects.exists()


def test_a_key_made_for_some_addresses_is_listed_with_them_and_works_only_there(admin, csrf_post, network):
    response = csrf_post(admin, "/apikeys/new", {"name": "ci", "expires": "30d",
                                                 "allowed_from": "198.18.0.0/24, 2001:db8::/32"})
    assert response.status_code == 200
    key = _shown_key(response.content.decode())
    assert ApiKey.objects.get().allowed_from == ["198.18.0.0/24", "2001:db8::/32"]
    assert OperatorClient(key, remote_addr="198.18.0.30").get("/api/nodes").status_code == 200
    assert OperatorClient(key, remote_addr="198.18.1.30").get("/api/nodes").status_code == 401
    listing = admin.get("/apikeys/").content.decode()
    assert re.search(r'data-testid="allowed-from">from 198.18.0.0/24, 2001:db8::/32<', listing)
    bad = csrf_post(admin, "/apikeys/new", {"name": "ci2", "expires": "30d", "allowed_from": "198.18.0.1/24"})
    assert bad.status_code == 400 and ApiKey.objects.count() == 1
    page = bad.content.decode()  # the refusal stands next to its field
    assert re.search(r'id="id_allowed_from".*?<ul class="errors"><li>.*?host bits zero', page, re.S)


def test_a_key_made_for_one_network_is_listed_with_it(admin, csrf_post, network):
    response = csrf_post(admin, "/apikeys/new", {"name": "ci", "expires": "30d", "network": "default"})
    assert response.status_code == 200
    assert ApiKey.objects.get().network == network
    assert 'data-testid="key-network">network default<' in admin.get("/apikeys/").content.decode()
    bad = csrf_post(admin, "/apikeys/new", {"name": "ci2", "expires": "30d", "network": "nowhere"})
    assert bad.status_code == 400 and ApiKey.objects.count() == 1


def test_revoking_asks_first_then_the_key_stops_working(admin, csrf_post, network):
    key, plaintext = create_api_key("old")
    page = admin.get(f"/apikeys/{key.pk}/revoke")
    assert page.status_code == 200 and key.prefix in page.content.decode()
    assert ApiKey.objects.get().revoked_at is None
    response = csrf_post(admin, f"/apikeys/{key.pk}/revoke")
    assert response.status_code == 302 and response["Location"].endswith("/apikeys/")
    assert OperatorClient(plaintext).get("/api/nodes").status_code == 401
    assert AuditEvent.objects.get(action=AuditAction.APIKEY_REVOKED).actor == "user:alice"
    csrf_post(admin, f"/apikeys/{key.pk}/revoke")  # again: told so, nothing written
    assert AuditEvent.objects.filter(action=AuditAction.APIKEY_REVOKED).count() == 1
    assert admin.get("/apikeys/999999/revoke").status_code == 404


def test_viewers_see_the_list_without_controls(viewer, network):
    key, _ = create_api_key("ci")
    page = viewer.get("/apikeys/").content.decode()
    assert key.prefix in page
    assert "New API key" not in page and f"/apikeys/{key.pk}/revoke" not in page
