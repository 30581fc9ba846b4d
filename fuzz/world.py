"""A small fixed mesh for the harnesses: a CA and two nodes whose keys come from fixed seeds.

The keys are the same in every run, so the seed corpora (fuzz/corpus/, made by
fuzz/make_corpus.py) hold messages these keys really signed: a harness fed such a seed reaches
past every signature check, and a mutation of it exercises each check behind the parse.
Certificates are issued afresh at import (ML-DSA signatures are randomized) but verify against
the same CA key. `NOW` is the wall clock every harness uses.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import mldsa

from nodeagent.protocol.cert import CertFlags, issue_certificate
from nodeagent.protocol.identity import peer_id

NOW = 1_800_000_000  # unix seconds (2027-01-15)
NETWORK = "fuzz"


def seed(tag: str) -> bytes:
    return hashlib.sha256(b"shadowmesh fuzz world " + tag.encode()).digest()


def key(tag: str) -> mldsa.MLDSA87PrivateKey:
    return mldsa.MLDSA87PrivateKey.from_seed_bytes(seed(tag))


CA = key("ca")
CA_PUBLIC = CA.public_key().public_bytes_raw()


@dataclass(frozen=True)
class Node:
    name: str
    key: mldsa.MLDSA87PrivateKey
    public_key: bytes
    peer_id: str
    overlay_ip: str
    cert: bytes


def _node(name: str, overlay_ip: str, flags: CertFlags) -> Node:
    k = key(name)
    pk = k.public_key().public_bytes_raw()
    cert = issue_certificate(CA, public_key=pk, name=name, network=NETWORK, overlay_ip=overlay_ip,
                             prefix_len=24, flags=flags, not_before=NOW - 3600, not_after=NOW + 86400)
    return Node(name, k, pk, peer_id(pk), overlay_ip, cert)


A = _node("alpha", "10.10.10.3", CertFlags.PUBLIC | CertFlags.RELAY)
B = _node("bravo", "10.10.10.5", CertFlags.NONE)
