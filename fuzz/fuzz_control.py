"""The peer control channel (nodeagent/protocol/control.py): sealed control messages and the TCP
stream that carries them.

Declared error: ControlError (BadControlTag is one). Input: a mode byte, then
  0  one message body: decode_message; encode_message gives the same bytes back, and decoding
     those gives the same message (round trip both ways);
  1  a raw byte stream cut into fuzzer-chosen reads and fed to a ControlChannel (keys installed
     after the first handshake frame, as the agent does);
  2  a sequence of message bodies: the valid ones are sent as the agent sends them (a clear
     handshake frame, then sealed messages), the stream is cut into fuzzer-chosen reads, and the
     receiving channel must give back exactly the messages sent, in order.
"""

from __future__ import annotations

import atheris

with atheris.instrument_imports(include=["nodeagent"]):
    from nodeagent.protocol import control
    from nodeagent.protocol.control import ControlChannel, ControlCipher, ControlError

K1, K2 = bytes(range(32)), bytes(range(32, 64))


def _message(body: bytes) -> None:
    try:
        msg = control.decode_message(body)
    except ControlError:
        return
    again = control.encode_message(msg)
    assert again == body, (again, body)
    assert control.decode_message(again) == msg


def _chunks(fdp, stream: bytes) -> list[bytes]:
    out, at = [], 0
    while at < len(stream):
        n = fdp.ConsumeIntInRange(1, max(1, len(stream) - at)) if fdp.remaining_bytes() else len(stream) - at
        out.append(stream[at : at + n])
        at += n
    return out


def _feed_all(channel: ControlChannel, chunks: list[bytes]) -> list:
    got = []
    for chunk in chunks:
        items = channel.feed(chunk)
        while items:
            got.extend(items)
            if isinstance(items[-1], bytes) and not channel.secured:
                channel.install(K2, K1)  # the handshake finished: keys, then what was held back
                items = channel.feed(b"")
            else:
                items = []
    return got


def _raw_stream(fdp) -> None:
    stream = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 4096))
    try:
        control.frame_length(stream[:4])
    except ControlError:
        pass
    try:
        _feed_all(ControlChannel(), _chunks(fdp, stream))
    except ControlError:
        return


def _sealed_stream(fdp) -> None:
    hello = fdp.ConsumeBytes(fdp.ConsumeIntInRange(1, 64)) or b"\x01"
    sent = []
    for _ in range(fdp.ConsumeIntInRange(0, 8)):
        try:
            sent.append(control.decode_message(fdp.ConsumeBytes(fdp.ConsumeIntInRange(1, 300))))
        except ControlError:
            pass
    sender = ControlCipher(K1, K2)
    stream = control.frame_clear_handshake(hello) + b"".join(sender.seal(m) for m in sent)
    got = _feed_all(ControlChannel(), _chunks(fdp, stream))
    assert got == [hello, *sent], (got, sent)


def one_input(data: bytes) -> None:
    if not data:
        return
    mode = data[0] % 3
    if mode == 0:
        _message(data[1:])
    elif mode == 1:
        _raw_stream(atheris.FuzzedDataProvider(data[1:]))
    else:
        _sealed_stream(atheris.FuzzedDataProvider(data[1:]))


if __name__ == "__main__":
    from fuzz.harness import run

    run(one_input)
