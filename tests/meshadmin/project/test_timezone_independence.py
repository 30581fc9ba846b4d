"""Times do not depend on the server's local time zone (threat model attack 23:
docs/threat-model.md#23-expiry-time-zones-and-ephemeral-nodes): with the process in
TZ=Asia/Kolkata (UTC+05:30), certificates, challenges and peer records still carry UTC instants,
so nothing is born 5.5 hours expired or lives 5.5 hours too long."""

import base64
import os
import time
from datetime import UTC, datetime, timedelta

import pytest

from nodeagent.protocol.cert import parse_certificate, verify_certificate

pytestmark = pytest.mark.django_db

RECORD = {"ip": "198.18.0.3", "port": 8443, "udp_port": 9443, "is_public": True}


@pytest.fixture(autouse=True)
def kolkata():
    old = os.environ.get("TZ")
    os.environ["TZ"] = "Asia/Kolkata"
    time.tzset()
    try:
        # the zone really is in effect (a missing tzdata would leave UTC and prove nothing)
        assert time.localtime().tm_gmtoff == 5 * 3600 + 30 * 60
        yield
    finally:
        if old is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = old
        time.tzset()


def _near_now(instant: datetime, offset: timedelta) -> bool:
    return abs(instant - (datetime.now(UTC) + offset)) < timedelta(seconds=10)


def test_an_enrollment_certificate_is_valid_from_the_utc_now(api, uk):
    _, body = uk
    cert = parse_certificate(base64.b64decode(body["certificate"]))
    assert abs(cert.not_before - time.time()) < 10
    verify_certificate(base64.b64decode(body["certificate"]), base64.b64decode(body["ca_public_key"]),
                       int(time.time()))


def test_a_challenge_expires_a_minute_after_the_utc_now(api, uk):
    ident, _ = uk
    response = api.post("/api/auth/challenge", {"peer_id": ident.peer_id})
    assert response.status_code == 200
    expires = datetime.fromisoformat(response.json()["expires_at"].replace("Z", "+00:00"))
    assert _near_now(expires, timedelta(seconds=60))
    api.login(ident)  # and a fresh one verifies: not born expired


def test_a_registered_record_is_served_and_lives_24_hours(api, uk):
    ident, _ = uk
    api.login(ident)
    assert api.post("/api/peers/register", RECORD).status_code == 200
    response = api.get(f"/api/peers/{ident.peer_id}")
    assert response.status_code == 200, response.content
    expires = datetime.fromisoformat(response.json()["expires_at"].replace("Z", "+00:00"))
    assert _near_now(expires, timedelta(hours=24))
