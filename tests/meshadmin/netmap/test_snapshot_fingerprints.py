"""Snapshots reuse the fingerprint of an unchanged certificate, and never that of a replaced one."""

from __future__ import annotations

import pytest

from meshadmin.mesh.models import Node
from meshadmin.netmap import snapshot
from nodeagent.protocol.cert import parse_certificate

pytestmark = pytest.mark.django_db


def _fingerprints(network) -> dict[str, str]:
    return {r.name: r.fingerprint for r in snapshot.load(network).nodes}


def test_a_reissued_certificate_shows_its_own_fingerprint_in_the_next_snapshot(network, uk, belgium):
    before = _fingerprints(network)
    other = bytes(Node.objects.get(peer_id=belgium[0].peer_id).certificate)
    Node.objects.filter(peer_id=uk[0].peer_id).update(certificate=other)
    after = _fingerprints(network)
    assert after["uk"] == parse_certificate(other).fingerprint != before["uk"]
    assert after["belgium"] == before["belgium"]


def test_a_certificate_replaced_by_garbage_loses_its_fingerprint(network, uk):
    assert _fingerprints(network)["uk"] != ""
    Node.objects.filter(peer_id=uk[0].peer_id).update(certificate=b"not a certificate")
    assert _fingerprints(network)["uk"] == ""


def test_an_unchanged_certificate_is_parsed_once_across_snapshots(network, uk, belgium, monkeypatch):
    snapshot.load(network)
    parsed = []
    real = snapshot.fingerprint
    monkeypatch.setattr(snapshot, "fingerprint", lambda cert: parsed.append(1) or real(cert))
    again = snapshot.load(network)
    assert parsed == [] and all(r.fingerprint for r in again.nodes)
