"""Handshake messages (nodeagent/protocol/handshake.py, version 2): HELLO, CHALLENGE, CONFIRM as
the parties consume them, with real certificates under the world's CA (fuzz/world.py).

Declared error: HandshakeError (every kind in handshake_errors.py). At start the harness runs one
real handshake alpha -> bravo and keeps each party just before it consumes a message (copies are
cheap and independent), so every input is consumed by a party in the right state. Input: a mode
byte, then
  0/1  a HELLO for bravo's responder: raw, or the live HELLO with the fuzzer's edits;
  2/3  a CHALLENGE for alpha's initiator: raw, or the live CHALLENGE edited;
  4/5  a CONFIRM for bravo's responder: raw, or the live CONFIRM edited.
Whatever a party accepts must be alpha's (HELLO, CONFIRM) or bravo's (CHALLENGE): only they hold
the keys, so what is accepted must be a message they made, byte for byte: the live CHALLENGE and
CONFIRM (bound to this handshake), the live HELLO or one of the seed corpus's (alpha made them
too, in fuzz/make_corpus.py). An accepted edit would be a forgery or a malleable encoding, and a
HELLO alpha did not make never reaches the responder's signing and encapsulation
(`create_challenge`).
"""

from __future__ import annotations

import copy
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["nodeagent"]):
    from fuzz import world
    from nodeagent.protocol import handshake
    from nodeagent.protocol.handshake_errors import HandshakeError
    from nodeagent.protocol.hello_guard import HelloGuard
    from nodeagent.protocol.trust import LocalIdentity, MeshCA

from fuzz.harness import edit

NOW = world.NOW
ALPHA = LocalIdentity(world.A.key, world.A.cert)
BRAVO = LocalIdentity(world.B.key, world.B.cert)
TRUST_A = MeshCA(world.CA_PUBLIC)
TRUST_B = MeshCA(world.CA_PUBLIC)


def live_handshake():
    """(initiator waiting for CHALLENGE, responder waiting for CONFIRM, HELLO, CHALLENGE, CONFIRM)"""
    initiator = handshake.Initiator(ALPHA, TRUST_A, world.B.peer_id, NOW, local_index=1,
                                    timestamp_ms=NOW * 1000)
    hello = initiator.create_hello()
    waiting_initiator = copy.copy(initiator)
    responder = handshake.Responder(BRAVO, TRUST_B, NOW, guard=HelloGuard(), local_index=2)
    responder.consume_hello(hello, NOW)
    challenge = responder.create_challenge()
    waiting_responder = copy.copy(responder)
    initiator.consume_challenge(challenge, NOW)
    confirm = initiator.create_confirm()
    result = responder.consume_confirm(confirm, NOW)
    assert result.peer.peer_id == world.A.peer_id and initiator.result.peer.peer_id == world.B.peer_id
    return waiting_initiator, waiting_responder, hello, challenge, confirm


INITIATOR, RESPONDER, HELLO, CHALLENGE, CONFIRM = live_handshake()


def _alpha_hellos() -> frozenset[bytes]:
    """The HELLOs alpha made: this run's, and the raw HELLO seeds of the committed corpus."""
    folder = Path(__file__).resolve().parent / "corpus" / "handshake"
    seeds = [p.read_bytes() for p in folder.iterdir()] if folder.is_dir() else []
    return frozenset([HELLO, *(s[1:] for s in seeds if s and s[0] % 6 == 0)])


ALPHA_HELLOS = _alpha_hellos()


def _hello(message: bytes) -> None:
    responder = handshake.Responder(BRAVO, TRUST_B, NOW, guard=HelloGuard(), local_index=3)
    pid = responder.consume_hello(message, NOW)
    assert pid == world.A.peer_id and message in ALPHA_HELLOS, "a HELLO alpha did not make was accepted"
    assert responder.create_challenge()


def _challenge(message: bytes) -> None:
    initiator = copy.copy(INITIATOR)
    initiator.consume_challenge(message, NOW)
    assert message == CHALLENGE, "a CHALLENGE bravo did not make was accepted"
    assert initiator.create_confirm()
    assert initiator.result.peer.peer_id == world.B.peer_id


def _confirm(message: bytes) -> None:
    responder = copy.copy(RESPONDER)
    assert responder.consume_confirm(message, NOW).peer.peer_id == world.A.peer_id
    assert message == CONFIRM, "a CONFIRM alpha did not make was accepted"


def one_input(data: bytes) -> None:
    if not data:
        return
    mode = data[0] % 6
    target, live = [(_hello, HELLO), (_challenge, CHALLENGE), (_confirm, CONFIRM)][mode // 2]
    message = data[1:] if mode % 2 == 0 else edit(live, atheris.FuzzedDataProvider(data[1:]))
    try:
        handshake.message_type(message)
    except HandshakeError:
        pass
    try:
        target(message)
    except HandshakeError:
        return


if __name__ == "__main__":
    from fuzz.harness import run

    run(one_input)
