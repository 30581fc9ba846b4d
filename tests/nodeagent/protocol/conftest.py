"""Personas for the protocol tests: a mesh CA and three nodes (uk, belgium, starlink), with keys
made once per session (ML-DSA key generation is cheap, but certificates are reused a lot)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from cryptography.hazmat.primitives.asymmetric import mldsa

from nodeagent.protocol.cert import CertFlags, issue_certificate
from nodeagent.protocol.identity import peer_id

NOW = 1_800_000_000  # a fixed wall-clock "now" (2027-01-15), unix seconds


@dataclass
class Node:
    name: str
    key: mldsa.MLDSA87PrivateKey
    public_key: bytes
    peer_id: str
    cert: bytes


def make_cert(ca, public_key, name, ip, flags=CertFlags.NONE, not_before=NOW - 3600, not_after=NOW + 86400):
    return issue_certificate(
        ca,
        public_key=public_key,
        name=name,
        network="lab",
        overlay_ip=ip,
        prefix_len=24,
        flags=flags,
        not_before=not_before,
        not_after=not_after,
    )


@pytest.fixture(scope="session")
def issue():
    """make_cert(ca, public_key, name, ip, flags=..., not_before=..., not_after=...)"""
    return make_cert


@pytest.fixture(scope="session")
def ca():
    return mldsa.MLDSA87PrivateKey.generate()


@pytest.fixture(scope="session")
def ca_public(ca):
    return ca.public_key().public_bytes_raw()


def _node(ca, name, ip, flags=CertFlags.NONE):
    key = mldsa.MLDSA87PrivateKey.generate()
    pk = key.public_key().public_bytes_raw()
    return Node(name, key, pk, peer_id(pk), make_cert(ca, pk, name, ip, flags))


@pytest.fixture(scope="session")
def uk(ca):
    return _node(ca, "uk", "10.10.10.3", CertFlags.PUBLIC | CertFlags.RELAY)


@pytest.fixture(scope="session")
def belgium(ca):
    return _node(ca, "belgium", "10.10.10.5")


@pytest.fixture(scope="session")
def starlink(ca):
    return _node(ca, "starlink", "10.10.10.6")
