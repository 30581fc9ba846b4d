"""Data frames (nodeagent/protocol/frames.py): every datagram on the UDP port.

Declared error: FrameError (BadTag is one). Input: a mode byte, then
  0  a raw datagram: parse_header; pack_header gives the same 20 bytes back; open_frame and
     unwrap_relay under a key nobody used must fail with BadTag (never succeed, never crash);
  1  a payload: seal it as DATA or KEEPALIVE, parse and open it again (round trip), and
     parse_echo / pack_echo agree;
  2  a relay envelope around fuzzed inner bytes, sealed with the hop key: unwrap_relay gives
     back the peer id and the inner bytes, or refuses the inner frame with FrameError.
"""

from __future__ import annotations

import atheris

with atheris.instrument_imports(include=["nodeagent"]):
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    from nodeagent.protocol import frames
    from nodeagent.protocol.frames import BadTag, FrameError, FrameType

KEY = ChaCha20Poly1305(bytes(range(32)))
OTHER = ChaCha20Poly1305(bytes(range(1, 33)))


def _raw(data: bytes) -> None:
    try:
        h = frames.parse_header(data)
    except FrameError:
        return
    assert frames.pack_header(*h) == data[: frames.HEADER_SIZE]
    assert h.length == len(data) - frames.HEADER_SIZE
    try:
        frames.open_frame(OTHER, h, data)
    except BadTag:
        pass
    else:
        raise AssertionError("a frame nobody sealed opened")
    if h.type in (FrameType.RELAY, FrameType.RELAYED):
        try:
            frames.unwrap_relay(OTHER, h, data)
        except BadTag:
            pass
        else:
            raise AssertionError("a relay envelope nobody sealed opened")


def _sealed(fdp) -> None:
    ftype = fdp.PickValueInList([FrameType.DATA, FrameType.KEEPALIVE])
    flags = fdp.ConsumeIntInRange(0, 3)
    index, counter, ts = fdp.ConsumeInt(4) & 0xFFFFFFFF, fdp.ConsumeInt(8) & (2**64 - 1), fdp.ConsumeInt(4)
    payload = fdp.ConsumeBytes(fdp.remaining_bytes())
    try:
        datagram = frames.seal(KEY, ftype, index, counter, ts, payload, flags)
    except FrameError:
        assert not 0 <= ts < 2**32 or len(payload) > frames.MAX_PAYLOAD
        return
    h = frames.parse_header(datagram)
    assert (h.type, h.flags, h.receiver_index, h.counter, h.timestamp) == (ftype, flags, index, counter, ts)
    assert frames.open_frame(KEY, h, datagram) == payload
    try:
        echo = frames.parse_echo(payload)
    except FrameError:
        assert len(payload) not in (0, frames.ECHO_SIZE)
        return
    if echo is not None:
        assert frames.pack_echo(*echo) == payload


def _relay(fdp) -> None:
    ftype = fdp.PickValueInList([FrameType.RELAY, FrameType.RELAYED])
    peer_id = fdp.ConsumeBytes(20)
    inner = fdp.ConsumeBytes(fdp.remaining_bytes())
    try:
        envelope = frames.wrap_relay(KEY, ftype, 7, 9, 11, peer_id, inner)
    except FrameError:
        return
    h = frames.parse_header(envelope)
    try:
        got_id, inner_header, got_inner = frames.unwrap_relay(KEY, h, envelope)
    except BadTag:
        raise AssertionError("an envelope sealed with the hop key did not authenticate") from None
    except FrameError:
        return  # the inner frame is malformed or itself an envelope
    assert got_id == peer_id and bytes(got_inner) == inner
    assert inner_header.type in frames.END_TO_END_TYPES


def one_input(data: bytes) -> None:
    if not data:
        return
    mode = data[0] % 3
    if mode == 0:
        _raw(data[1:])
    else:
        fdp = atheris.FuzzedDataProvider(data[1:])
        (_sealed if mode == 1 else _relay)(fdp)


if __name__ == "__main__":
    from fuzz.harness import run

    run(one_input)
