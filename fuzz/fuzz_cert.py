"""Certificates (nodeagent/protocol/cert.py): the canonical bytes a peer presents in every
handshake and a node record carries in the DHT.

Declared error: CertificateError (Malformed, BadSignature, UnknownIssuer, Expired). Input: a
mode byte, then raw bytes (mode 0) or edits of alpha's live certificate (mode 1). A certificate
that parses gives its own bytes back (`to_bytes`); one that verifies was issued by the world's
CA, and only an unedited certificate can.
"""

from __future__ import annotations

import atheris

with atheris.instrument_imports(include=["nodeagent"]):
    from fuzz import world
    from nodeagent.protocol import cert
    from nodeagent.protocol.cert import CertificateError

from fuzz.harness import edit


def one_input(data: bytes) -> None:
    if not data:
        return
    raw = data[1:] if data[0] % 2 == 0 else edit(world.A.cert, atheris.FuzzedDataProvider(data[1:]))
    try:
        parsed = cert.parse_certificate(raw)
    except CertificateError:
        return
    assert parsed.to_bytes() == raw
    assert cert.parse_certificate(parsed.to_bytes()) == parsed
    assert len(parsed.peer_id) == 40 and 1 <= len(parsed.name) <= 63
    try:
        verified = cert.verify_certificate(raw, world.CA_PUBLIC, world.NOW)
    except CertificateError:
        return
    assert verified.ca_id == cert.ca_id(world.CA_PUBLIC)
    assert verified.tbs == cert.parse_certificate(world.A.cert).tbs or verified.peer_id == world.B.peer_id


if __name__ == "__main__":
    from fuzz.harness import run

    run(one_input)
