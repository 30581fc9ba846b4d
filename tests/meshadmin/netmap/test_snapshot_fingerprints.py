"""A node's certificate fingerprint is kept beside its certificate, and snapshots read the
fingerprint, never the certificates (about 7 KB each, a thousand per load of a large network)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from meshadmin.mesh.models import Node
from meshadmin.mesh.models.nodes import certificate_fields, certificate_fingerprint
from meshadmin.mesh.services.certificates import renew_certificate
from meshadmin.netmap import snapshot
from nodeagent.protocol.cert import parse_certificate

pytestmark = pytest.mark.django_db


def _fingerprints(network) -> dict[str, str]:
    return {r.name: r.fingerprint for r in snapshot.load(network).nodes}


def test_enrollment_stores_the_fingerprint_of_the_certificate_it_issued(network, uk, belgium):
    for node in Node.objects.all():
        assert node.certificate_fingerprint == parse_certificate(bytes(node.certificate)).fingerprint
    assert _fingerprints(network) == {n.name: n.certificate_fingerprint for n in Node.objects.all()}


def test_a_renewed_certificate_shows_its_own_fingerprint_in_the_next_snapshot(network, uk, belgium):
    before = _fingerprints(network)
    node = Node.objects.get(peer_id=uk[0].peer_id)
    renewal = renew_certificate(node, now=timezone.now() + timedelta(days=3650))
    assert renewal.renewed
    after = _fingerprints(network)
    assert after["uk"] == parse_certificate(renewal.certificate).fingerprint != before["uk"]
    assert after["belgium"] == before["belgium"]


def test_saving_a_node_with_another_certificate_keeps_the_fingerprint_with_it(network, uk, belgium):
    node = Node.objects.get(peer_id=uk[0].peer_id)
    other = bytes(Node.objects.get(peer_id=belgium[0].peer_id).certificate)
    node.certificate = other
    node.save(update_fields=["certificate"])  # the fingerprint is added to the fields written
    assert _fingerprints(network)["uk"] == parse_certificate(other).fingerprint
    node.certificate = b"not a certificate"
    node.save()
    assert _fingerprints(network)["uk"] == ""
    Node.objects.filter(pk=node.pk).update(**certificate_fields(other))
    assert _fingerprints(network)["uk"] == certificate_fingerprint(other)


def test_a_snapshot_does_not_read_the_certificates(network, uk, belgium):
    with CaptureQueriesContext(connection) as queries:
        snapshot.load(network)
    node_queries = [q["sql"] for q in queries if 'FROM "mesh_node"' in q["sql"]]
    assert node_queries and all('"mesh_node"."certificate_fingerprint"' in q for q in node_queries)
    certificate = ('"mesh_node"."certificate",', '"mesh_node"."certificate" ')
    assert not any(c in q for q in node_queries for c in certificate)
