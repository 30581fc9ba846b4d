"""The DHT (nodeagent/discovery/messages.py, records.py): wire messages and signed records.

Declared errors: discovery.messages.MessageError for messages, records.RecordError for records.
Input: a mode byte, then
  0  a frame: its 4-byte length header, then the body; a message that decodes encodes to a
     frame that decodes to the same message;
  1  a record, raw: parse_record keeps it verbatim; RecordVerifier checks it fully;
  2  alpha's live node record with the fuzzer's edits;
  3  the CA's live revocation list with the fuzzer's edits.
A record that verifies was signed by alpha (node records) or the CA (revocation lists): only
they hold keys.
"""

from __future__ import annotations

import atheris

with atheris.instrument_imports(include=["nodeagent"]):
    from fuzz import world
    from nodeagent.discovery import messages, records
    from nodeagent.discovery.messages import MessageError
    from nodeagent.discovery.records import RecordError
    from nodeagent.protocol.netmap import Endpoint

from fuzz.harness import edit


def node_record() -> bytes:
    return records.build_node_record(
        world.A.key.sign, certificate=world.A.cert, sequence=7, issued=world.NOW - 60,
        expires=world.NOW + 3600, public=True,
        candidates=[records.Candidate(Endpoint("198.18.0.3", 8443, 9443)),
                    records.Candidate(Endpoint("2001:db8::3", 8443, 9443, "observed"),
                                      records.KIND_OBSERVED)])


def revocation_list() -> bytes:
    return records.build_revocation_list(
        world.CA.sign, ca_public_key=world.CA_PUBLIC, sequence=3, issued=world.NOW - 60,
        expires=world.NOW + 3600, revoked=["cd" * 20, "ce" * 20])


NODE_RECORD, REVOCATIONS = node_record(), revocation_list()
VERIFIER = records.RecordVerifier(world.CA_PUBLIC)
CA_ID = records.ca_id(world.CA_PUBLIC)


def _frame(data: bytes) -> None:
    messages.is_dht_frame_start(data[:5])
    try:
        n = messages.frame_length(data[:4])
    except MessageError:
        pass
    else:
        assert 1 <= n <= messages.MAX_FRAME
    try:
        msg = messages.decode(data[4:])
    except MessageError:
        return
    assert messages.decode(messages.encode(msg)[4:]) == msg


def _record(raw: bytes) -> None:
    try:
        rec = records.parse_record(raw)
    except RecordError:
        return
    assert rec.raw == raw and raw.startswith(rec.signed)
    assert rec.signature == raw[len(rec.signed) + 2 :]
    try:
        verified = VERIFIER.verify(raw, world.NOW)
    except RecordError:
        return
    assert verified == rec
    if isinstance(rec, records.NodeRecord):  # only alpha's key signed node records here
        assert rec.peer_id == rec.certificate.peer_id == world.A.peer_id
    else:
        assert rec.ca_id == CA_ID


def one_input(data: bytes) -> None:
    if not data:
        return
    mode, rest = data[0] % 4, data[1:]
    if mode == 0:
        _frame(rest)
    elif mode == 1:
        _record(rest)
    else:
        _record(edit(NODE_RECORD if mode == 2 else REVOCATIONS, atheris.FuzzedDataProvider(rest)))


if __name__ == "__main__":
    from fuzz.harness import run

    run(one_input)
