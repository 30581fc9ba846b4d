"""GET /api/telemetry/links (current figures) and /api/telemetry/links/<reporter>/<peer> (series)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from meshadmin.mesh.models import Node
from meshadmin.telemetry.models import Resolution, Sample

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff():
    c = Client()
    c.force_login(User.objects.create_user("ops", password="x" * 20, is_staff=True))
    return c


@pytest.fixture
def samples(uk, belgium):
    node = Node.objects.get(peer_id=belgium[0].peer_id)
    now = timezone.now()
    for age, tx in ((30, 1000), (4, 4000), (2, 8000)):
        Sample.objects.create(network_id=node.network_id, node=node, peer_id=uk[0].peer_id,
                              ts=now - timedelta(seconds=age), interval_s=2.0, path="direct", rtt_ms=1.5,
                              tx_bytes=tx, rx_frames=99, lost_frames=1)
    Sample.objects.create(network_id=node.network_id, node=node, peer_id=uk[0].peer_id,
                          resolution=Resolution.MINUTE, ts=now - timedelta(hours=3), interval_s=60,
                          path="direct", tx_bytes=60_000)
    return belgium[0].peer_id, uk[0].peer_id


def test_current_links_give_the_newest_figures_per_link(staff, samples):
    reporter, peer = samples
    body = staff.get("/api/telemetry/links?network=default").json()
    assert len(body["links"]) == 1
    link = body["links"][0]
    assert (link["reporter"], link["peer"], link["tx_bytes_per_s"]) == (reporter, peer, 4000.0)
    assert link["loss_pct"] == 1.0


def test_a_series_uses_raw_points_for_an_hour_and_minutes_beyond(staff, samples):
    reporter, peer = samples
    hour = staff.get(f"/api/telemetry/links/{reporter}/{peer}?window=1h").json()
    assert hour["resolution"] == "raw" and [p["tx_bytes_per_s"] for p in hour["points"]] == [500, 2000, 4000]
    week = staff.get(f"/api/telemetry/links/{reporter}/{peer}?window=7d").json()
    assert week["resolution"] == "1m" and [p["tx_bytes_per_s"] for p in week["points"]] == [1000]


def test_telemetry_needs_a_dashboard_login(samples):
    assert Client().get("/api/telemetry/links").status_code == 401
    nobody = Client()
    nobody.force_login(User.objects.create_user("guest", password="x" * 20))
    assert nobody.get("/api/telemetry/links").status_code == 403


@pytest.mark.parametrize("window", ["forever", "0m", "8d", "1y"])
def test_a_bad_window_is_a_400_naming_it(staff, samples, window):
    reporter, peer = samples
    r = staff.get(f"/api/telemetry/links/{reporter}/{peer}?window={window}")
    assert r.status_code == 400 and "window" in r.json()["detail"]


def test_bad_peer_ids_and_unknown_networks_are_refused(staff, samples):
    assert staff.get("/api/telemetry/links/xyz/abc").status_code == 400
    assert staff.get("/api/telemetry/links?network=nope").status_code == 404
