"""Ephemeral nodes (meshadmin/mesh/services/ephemeral.py): enrolled with an ephemeral token, deleted
once silent for SHADOWMESH_EPHEMERAL_AFTER_S; never while online, never a node of an ordinary
token, never a revoked one. Through the beat job, and without beat after counter reports."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings
from django.core.management import call_command
from django.utils import timezone

from meshadmin.mesh import tasks
from meshadmin.mesh.choices import AuditAction
from meshadmin.mesh.models import AuditEvent, EnrollmentToken, Node
from meshadmin.mesh.services import ephemeral
from meshadmin.mesh.services.nodes import revoke_node
from meshadmin.mesh.services.tokens import create_token
from meshadmin.netmap import compute, snapshot
from meshadmin.telemetry import ingest
from meshadmin.telemetry.models import Presence
from nodeagent.protocol import messages
from nodeagent.protocol.counters import PeerCounters
from tests.meshadmin.api.operator_client import OperatorClient

pytestmark = pytest.mark.django_db


@pytest.fixture
def enroll(api, network, identity_factory):
    """enroll(name, ephemeral=True) -> Node, enrolled through the API with a new token."""

    def make(name: str, ephemeral_token: bool = True) -> Node:
        _, plaintext = create_token(network, ephemeral=ephemeral_token)
        response = api.enroll(plaintext, identity_factory(), name)
        assert response.status_code == 201, response.content
        return Node.objects.get(peer_id=response.json()["peer_id"])

    return make


def _heard(node: Node, ago: timedelta, *, online: bool) -> None:
    at = timezone.now() - ago
    Presence.objects.update_or_create(node=node, defaults={"last_seen": at, "online": online,
                                                           "connections": int(online)})


def test_a_node_of_an_ephemeral_token_is_ephemeral_and_one_of_an_ordinary_token_is_not(enroll):
    assert enroll("ci-1").ephemeral
    assert not enroll("server", ephemeral_token=False).ephemeral
    enrolled = AuditEvent.objects.filter(action=AuditAction.NODE_ENROLLED).order_by("pk")
    assert [e.details["ephemeral"] for e in enrolled] == [True, False]
    assert AuditEvent.objects.filter(action=AuditAction.TOKEN_CREATED, details__ephemeral=True).count() == 1


def test_only_silent_ephemeral_nodes_are_deleted_and_their_peers_forget_them(enroll, network):
    after = ephemeral.silent_after()
    silent = enroll("ci-silent")
    _heard(silent, after + timedelta(minutes=1), online=False)
    never = enroll("ci-never")  # enrolled long ago, never connected
    Node.objects.filter(pk=never.pk).update(enrolled_at=timezone.now() - after - timedelta(seconds=5))
    online = enroll("ci-online")
    _heard(online, timedelta(seconds=20), online=True)
    recent = enroll("ci-recent")
    _heard(recent, after - timedelta(minutes=1), online=False)
    enroll("ci-young")  # enrolled just now, never connected
    server = enroll("server", ephemeral_token=False)
    _heard(server, after * 10, online=False)
    revoked = enroll("ci-revoked")
    _heard(revoked, after * 2, online=False)
    revoke_node(revoked)

    gone = ephemeral.reap_ephemeral_nodes()

    assert sorted(gone) == sorted([silent.peer_id, never.peer_id])
    left = set(Node.objects.values_list("name", flat=True))
    assert left == {"ci-online", "ci-recent", "ci-young", "server", "ci-revoked"}
    deleted = AuditEvent.objects.filter(action=AuditAction.NODE_DELETED).order_by("pk")
    assert [e.details["name"] for e in deleted] == ["ci-silent", "ci-never"]
    assert all(e.actor == "system" and e.details["reason"].startswith("ephemeral: silent for")
               for e in deleted)
    peers = {p.name for p in compute.netmap_for(snapshot.load(network.pk), server.peer_id).peers}
    assert "ci-silent" not in peers and "ci-never" not in peers and "ci-online" in peers
    assert ephemeral.reap_ephemeral_nodes() == []  # nothing more is due


def test_the_beat_job_is_scheduled_every_minute_and_reaps(enroll):
    job = settings.CELERY_BEAT_SCHEDULE["reap-ephemeral-nodes"]
    assert job == {"task": "meshadmin.mesh.tasks.reap_ephemeral_nodes", "schedule": 60.0}
    node = enroll("ci-1")
    _heard(node, ephemeral.silent_after() * 2, online=False)
    assert tasks.reap_ephemeral_nodes() == 1 and not Node.objects.filter(pk=node.pk).exists()


def test_without_beat_a_server_reaps_after_storing_reports_at_most_once_a_minute(enroll, uk):
    """The embedded default: counter reports from any connected node are what runs it."""
    reporter_node = Node.objects.get(peer_id=uk[0].peer_id)
    Presence.objects.create(node=reporter_node, online=True, connections=1, last_seen=timezone.now())
    reporter = ingest.Reporter(reporter_node.pk, reporter_node.peer_id, reporter_node.network_id)
    stats = messages.Stats(5, (PeerCounters(uk[0].peer_id, "direct"),))
    first = enroll("ci-1")
    _heard(first, ephemeral.silent_after() * 2, online=False)
    ephemeral.reset_reap_clock()
    ingest.ingest_batch([ingest.Report(reporter, stats, None, 0.0)])
    assert not Node.objects.filter(pk=first.pk).exists()
    second = enroll("ci-2")
    _heard(second, ephemeral.silent_after() * 2, online=False)
    ingest.ingest_batch([ingest.Report(reporter, stats, None, 0.0)])  # within the minute: not again
    assert Node.objects.filter(pk=second.pk).exists()
    ephemeral.reset_reap_clock()
    ingest.ingest_batch([ingest.Report(reporter, stats, None, 0.0)])
    assert not Node.objects.filter(pk=second.pk).exists()


def test_the_timeout_is_longer_than_the_presence_sweep_so_an_online_node_is_never_due():
    """An online node is heard at least every STALE_AFTER; the setting's floor (120 s, refused
    below: tests/meshadmin/project/test_settings_from_env.py) is above it, and so is the default."""
    from meshadmin.telemetry.presence import STALE_AFTER

    assert ephemeral.silent_after() == timedelta(seconds=1800)
    assert timedelta(seconds=120) > STALE_AFTER


def test_operators_make_ephemeral_tokens_by_api_and_command(network, capsys):
    from meshadmin.mesh.services.apikeys import create_api_key

    _, key = create_api_key("ci")
    made = OperatorClient(key).post("/api/tokens", {"ephemeral": True})
    assert made.status_code == 201 and made.json()["ephemeral"] is True
    assert OperatorClient(key).post("/api/tokens", {"ephemeral": "yes"}).status_code == 400
    call_command("createtoken", "--ephemeral")
    assert "; ephemeral" in capsys.readouterr().err
    assert list(EnrollmentToken.objects.order_by("pk").values_list("ephemeral", flat=True)) == [True, True]
