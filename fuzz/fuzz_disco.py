"""Path-discovery payloads (nodeagent/protocol/disco.py): PROBE, PROBE_ACK and CALL, what a peer
sends inside frames 5-7 once their disco keys opened (a hub relays CALLs it cannot read).

Declared error: DiscoError. Input: a mode byte, then
  0  a PROBE payload: parse_probe; pack_probe gives the same bytes back;
  1  a PROBE_ACK payload: parse_ack; pack_ack gives the same bytes back, and an ACK that parses
     is never larger than the smallest probe that parses (ack_fits: no amplification);
  2  a CALL payload: parse_call; pack_call gives the same bytes back, never more than
     MAX_CANDIDATES candidates, each with a port 1..65535;
  3  edits of a live CALL (an OFFER with IPv4 and IPv6 candidates), parsed as in mode 2;
  4  a payload sealed as PROBE, PROBE_ACK or CALL under a disco key and opened again: the frame
     layer gives back exactly the payload, whatever the disco parser then says of it.
"""

from __future__ import annotations

import atheris

with atheris.instrument_imports(include=["nodeagent"]):
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    from nodeagent.protocol import disco, frames
    from nodeagent.protocol.disco import DiscoError
    from nodeagent.protocol.frames import FrameError, FrameType

from fuzz.harness import edit

KEY = ChaCha20Poly1305(bytes(range(2, 34)))
TXID = bytes(range(8))
OFFER = disco.pack_call(disco.Call(
    disco.CallKind.OFFER, TXID, disco.NatClass.EASY,
    (disco.WireCandidate(disco.CandidateKind.LOCAL, "192.168.1.20", 9443),
     disco.WireCandidate(disco.CandidateKind.REFLEXIVE, "198.18.0.7", 40001),
     disco.WireCandidate(disco.CandidateKind.CONFIGURED, "2001:db8::7", 9443))))


def _probe(raw: bytes) -> None:
    try:
        probe = disco.parse_probe(raw)
    except DiscoError:
        return
    assert probe.size == len(raw) >= disco.PROBE_MIN_PAYLOAD
    try:
        again = disco.pack_probe(probe.txid, probe.sequence, probe.size)
    except DiscoError:
        assert probe.size > 65000  # larger than a probe is ever made; parsed all the same
        return
    assert again == raw


def _ack(raw: bytes) -> None:
    try:
        ack = disco.parse_ack(raw)
    except DiscoError:
        return
    assert len(raw) <= disco.ACK_MAX_PAYLOAD < disco.PROBE_MIN_PAYLOAD
    assert disco.ack_fits(disco.PROBE_MIN_PAYLOAD, raw)
    assert disco.pack_ack(ack.txid, ack.sequence, ack.observed) == raw
    if ack.observed is not None:
        assert 1 <= ack.observed[1] <= 65535


def _call(raw: bytes) -> None:
    try:
        call = disco.parse_call(raw)
    except DiscoError:
        return
    assert len(call.candidates) <= disco.MAX_CANDIDATES
    assert all(1 <= c.port <= 65535 for c in call.candidates)
    assert disco.pack_call(call) == raw
    assert disco.parse_call(disco.pack_call(call)) == call


def _sealed(fdp) -> None:
    ftype = fdp.PickValueInList([FrameType.PROBE, FrameType.PROBE_ACK, FrameType.CALL])
    counter = fdp.ConsumeInt(8) & (2**64 - 1)
    payload = fdp.ConsumeBytes(fdp.remaining_bytes())
    try:
        datagram = frames.seal(KEY, ftype, 3, counter, 1000, payload)
    except FrameError:
        assert len(payload) > frames.MAX_PAYLOAD
        return
    header = frames.parse_header(datagram)
    assert header.type == ftype and header.counter == counter
    assert frames.open_frame(KEY, header, datagram) == payload
    {FrameType.PROBE: _probe, FrameType.PROBE_ACK: _ack, FrameType.CALL: _call}[ftype](payload)


def one_input(data: bytes) -> None:
    if not data:
        return
    mode, rest = data[0] % 5, data[1:]
    if mode == 0:
        _probe(rest)
    elif mode == 1:
        _ack(rest)
    elif mode == 2:
        _call(rest)
    elif mode == 3:
        _call(edit(OFFER, atheris.FuzzedDataProvider(rest)))
    else:
        _sealed(atheris.FuzzedDataProvider(rest))


if __name__ == "__main__":
    from fuzz.harness import run

    run(one_input)
