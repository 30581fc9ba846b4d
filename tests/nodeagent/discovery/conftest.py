"""Personas for the DHT tests: a network CA, a foreign CA, and enrolled nodes with certificates,
keys made once per session (ML-DSA-87 signing is ~1 ms, so records are built per test)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from cryptography.hazmat.primitives.asymmetric import mldsa

from nodeagent.discovery.records import KIND_OBSERVED, KIND_REPORTED, Candidate, build_node_record
from nodeagent.protocol.cert import CertFlags, issue_certificate
from nodeagent.protocol.identity import peer_id
from nodeagent.protocol.netmap import Endpoint

NOW = 1_800_000_000  # a fixed wall-clock "now" (2027-01-15), unix seconds


@dataclass
class Node:
    name: str
    key: mldsa.MLDSA87PrivateKey
    public_key: bytes
    peer_id: str
    cert: bytes
    overlay_ip: str

    @property
    def node_id(self) -> bytes:
        return bytes.fromhex(self.peer_id)


def make_cert(ca, public_key, name, ip, flags=CertFlags.NONE, not_before=NOW - 3600,
              not_after=NOW + 30 * 86400):
    return issue_certificate(
        ca, public_key=public_key, name=name, network="lab", overlay_ip=ip, prefix_len=24,
        flags=flags, not_before=not_before, not_after=not_after,
    )


def make_node(ca, name, ip, flags=CertFlags.NONE, key=None, **cert_kw) -> Node:
    key = key or mldsa.MLDSA87PrivateKey.generate()
    pk = key.public_key().public_bytes_raw()
    return Node(name, key, pk, peer_id(pk), make_cert(ca, pk, name, ip, flags, **cert_kw), ip)


def endpoint(ip="198.18.0.5", control=8443, udp=9443, kind=KIND_REPORTED) -> Candidate:
    return Candidate(Endpoint(ip, control, udp, "observed" if kind == KIND_OBSERVED else "reported"), kind)


def make_record(node: Node, seq=1, issued=NOW - 60, expires=NOW + 3600, candidates=None, public=False,
                cert=None, allow_loopback=False) -> bytes:
    return build_node_record(
        node.key.sign,
        certificate=cert or node.cert,
        sequence=seq,
        issued=issued,
        expires=expires,
        candidates=candidates or [endpoint()],
        public=public,
        allow_loopback=allow_loopback,
    )


@pytest.fixture(scope="session")
def ca():
    return mldsa.MLDSA87PrivateKey.generate()


@pytest.fixture(scope="session")
def ca_public(ca):
    return ca.public_key().public_bytes_raw()


@pytest.fixture(scope="session")
def other_ca():
    return mldsa.MLDSA87PrivateKey.generate()


@pytest.fixture(scope="session")
def hub(ca):
    return make_node(ca, "uk", "10.10.10.3", CertFlags.PUBLIC | CertFlags.RELAY)


@pytest.fixture(scope="session")
def alice(ca):
    return make_node(ca, "belgium", "10.10.10.5")


@pytest.fixture(scope="session")
def bob(ca):
    return make_node(ca, "starlink", "10.10.10.6")
