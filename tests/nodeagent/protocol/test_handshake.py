"""Hybrid handshake between two in-memory parties: success in both trust modes, every tampered
field fails, downgrades fail, cheap checks come first, HELLO replay and clock jumps.

Timing (not asserted; run by hand):
    .venv/bin/python -m pytest -p no:django -q tests/nodeagent/protocol/test_handshake.py -k timing -s
"""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nodeagent.protocol import handshake as hs
from nodeagent.protocol.frames import FrameType, open_frame, parse_header, seal
from nodeagent.protocol.handshake import CONFIRM_SIZE, HELLO_FIXED_SIZE, Initiator, Responder
from nodeagent.protocol.handshake_errors import (
    BadCredential,
    BadShare,
    BadSignature,
    HandshakeError,
    HandshakeFlood,
    HandshakeStateError,
    KeyConfirmationFailed,
    MalformedHandshake,
    ReplayedHello,
    RevokedPeer,
    UnknownPeer,
    VersionMismatch,
    WrongAddress,
    WrongPeer,
)
from nodeagent.protocol.hello_guard import HelloGuard
from nodeagent.protocol.opcount import COUNTS, OPERATIONS
from nodeagent.protocol.trust import LocalIdentity, MeshCA, PinnedKeys

NOW = 1_800_000_000  # same fixed "now" as conftest.py


@pytest.fixture
def pinned(belgium, starlink):
    """belgium (initiator) and starlink (responder) in serverless mode, pinning each other."""
    ini = LocalIdentity.pinned(belgium.key)
    res = LocalIdentity.pinned(starlink.key)
    return ini, PinnedKeys({starlink.peer_id: starlink.public_key}), res, PinnedKeys([belgium.public_key])


@pytest.fixture
def enrolled(belgium, starlink, ca_public):
    ini = LocalIdentity(belgium.key, belgium.cert)
    res = LocalIdentity(starlink.key, starlink.cert)
    return ini, MeshCA(ca_public), res, MeshCA(ca_public)


def run(parties, now=NOW, expected=None, guard=None, tamper=None):
    """Drive HELLO → CHALLENGE → CONFIRM; `tamper(stage, message) -> message` plays a MITM."""
    ini_local, ini_trust, res_local, res_trust = parties
    ini = Initiator(ini_local, ini_trust, res_local.peer_id if expected is None else expected, now)
    res = Responder(res_local, res_trust, now, guard=guard)
    tamper = tamper or (lambda stage, m: m)
    res.consume_hello(tamper("hello", ini.create_hello()), now)
    ini.consume_challenge(tamper("challenge", res.create_challenge()), now)
    result_r = res.consume_confirm(tamper("confirm", ini.create_confirm()), now)
    return ini.result, result_r


def assert_matching(ri, rr):
    ki, kr = ri.keypair, rr.keypair
    assert ki.key_bytes() == tuple(reversed(kr.key_bytes()))
    assert ki.key_bytes()[0] != ki.key_bytes()[1]
    assert (ki.local_index, ki.remote_index) == (kr.remote_index, kr.local_index)
    assert ki.initiator and not kr.initiator
    assert ri.control.send == rr.control.recv and ri.control.recv == rr.control.send
    assert ri.control.send not in ki.key_bytes()
    assert ri.transcript_hash == rr.transcript_hash
    d = seal(ki.send, FrameType.DATA, ki.remote_index, ki.next_counter(), 0, b"hello starlink")
    assert open_frame(kr.recv, parse_header(d), d) == b"hello starlink"
    d = seal(kr.send, FrameType.DATA, kr.remote_index, kr.next_counter(), 0, b"hello belgium")
    assert open_frame(ki.recv, parse_header(d), d) == b"hello belgium"


def test_pinned_keys_handshake_gives_both_sides_matching_keys(pinned, belgium, starlink):
    ri, rr = run(pinned, expected=starlink.peer_id)
    assert_matching(ri, rr)
    assert ri.peer.peer_id == starlink.peer_id and rr.peer.peer_id == belgium.peer_id
    assert ri.peer.overlay_ip is None and rr.peer.public_key == belgium.public_key


def test_certificate_handshake_reports_the_peers_certified_identity(enrolled, belgium, starlink):
    ri, rr = run(enrolled)
    assert_matching(ri, rr)
    assert (ri.peer.name, str(ri.peer.overlay_ip)) == ("starlink", "10.10.10.6")
    assert (rr.peer.name, str(rr.peer.overlay_ip)) == ("belgium", "10.10.10.5")


def test_relay_flags_come_from_the_certificate(uk, belgium, ca_public):
    ri, _ = run((LocalIdentity(belgium.key, belgium.cert), MeshCA(ca_public), LocalIdentity(uk.key, uk.cert),
                 MeshCA(ca_public)))
    assert ri.peer.is_public and ri.peer.is_relay


def test_two_handshakes_give_fresh_keys(pinned):
    a, _ = run(pinned, now=NOW)
    b, _ = run(pinned, now=NOW + 1)
    assert a.keypair.key_bytes() != b.keypair.key_bytes()
    assert a.transcript_hash != b.transcript_hash


def test_hello_is_its_fixed_part_and_the_credential_and_the_peer_ids_come_first(pinned, belgium, starlink):
    ini = Initiator(pinned[0], pinned[1], starlink.peer_id, NOW)
    hello = ini.create_hello()
    assert len(hello) == HELLO_FIXED_SIZE + len(belgium.public_key) == 8876
    assert hello[:3] == bytes([1, 2, 1])  # HELLO, version 2, suite 1
    assert hello[3:23].hex() == belgium.peer_id and hello[23:43].hex() == starlink.peer_id
    res = Responder(pinned[2], pinned[3], NOW)
    res.consume_hello(hello, NOW)
    ini.consume_challenge(res.create_challenge(), NOW)
    assert len(ini.create_confirm()) == CONFIRM_SIZE == 4660


# --- tampering --------------------------------------------------------------------------------

# (message, region name, start, end) in each message; ends are exclusive, negative = from the end
REGIONS = {
    "hello": [
        ("type", 0, 1), ("version", 1, 2), ("suite", 2, 3), ("initiator id", 3, 23),
        ("responder id", 23, 43), ("index", 43, 47), ("timestamp", 47, 55),
        ("x25519 share", 55, 87), ("ML-KEM key", 87, 1655), ("credential length", 1655, 1657),
        ("credential", 1657, -4627), ("signature", -4627, None),
    ],
    "challenge": [
        ("type", 0, 1), ("index", 1, 5), ("x25519 share", 5, 37), ("ML-KEM ciphertext", 37, 1605),
        ("credential length", 1605, 1607), ("credential", 1607, -4659),
        ("signature", -4659, -32), ("MAC", -32, None),
    ],
    "confirm": [
        ("type", 0, 1), ("signature", 1, -32), ("MAC", -32, None),
    ],
}
CASES = [
    (stage, name, start, end, where)
    for stage, regions in REGIONS.items()
    for name, start, end in regions
    for where in ("first", "last")
]


def flip(message, start, end, where):
    idx = list(range(len(message)))[start:end]
    i = idx[0] if where == "first" else idx[-1]
    out = bytearray(message)
    out[i] ^= 0x01
    return bytes(out)


@pytest.mark.parametrize("mode", ["pinned", "enrolled"])
@pytest.mark.parametrize(("stage", "name", "start", "end", "where"), CASES,
                         ids=[f"{c[0]}-{c[1]}-{c[4]}" for c in CASES])
def test_every_tampered_field_makes_the_handshake_fail(request, mode, stage, name, start, end, where):
    parties = request.getfixturevalue(mode)
    results = []

    def tamper(s, m):
        return flip(m, start, end, where) if s == stage else m

    with pytest.raises(HandshakeError):
        results.append(run(parties, tamper=tamper))
    assert results == []


def test_tampered_ml_kem_ciphertext_fails_at_key_confirmation(pinned):
    with pytest.raises(KeyConfirmationFailed):
        run(pinned, tamper=lambda s, m: flip(m, 37, 1605, "last") if s == "challenge" else m)


def test_tampered_ml_kem_key_in_hello_fails_at_the_hellos_signature(pinned):
    # flip a low bit of the last coefficient: still a valid key, just another one
    with pytest.raises(BadSignature):
        run(pinned, tamper=lambda s, m: flip(m, 87, 1600, "first") if s == "hello" else m)


@pytest.mark.parametrize(("offset", "value"), [(1, 0), (1, 1), (1, 3), (2, 0), (2, 2), (2, 255)])
def test_rewritten_version_or_suite_is_refused(pinned, offset, value):
    def downgrade(stage, m):
        if stage != "hello":
            return m
        out = bytearray(m)
        out[offset] = value
        return bytes(out)

    with pytest.raises(VersionMismatch):
        run(pinned, tamper=downgrade)


def test_hello_without_the_ml_kem_key_is_refused(pinned):
    with pytest.raises(MalformedHandshake):
        run(pinned, tamper=lambda s, m: m[:87] if s == "hello" else m)


def test_classical_only_hello_of_any_length_is_refused(pinned):
    """A HELLO that offers only X25519 (no ML-KEM), even relabelled as another suite."""
    res = Responder(pinned[2], pinned[3], NOW)
    ini = Initiator(pinned[0], pinned[1], pinned[2].peer_id, NOW)
    classical = bytearray(ini.create_hello()[:87])
    classical[2] = 0
    with pytest.raises(VersionMismatch):
        res.consume_hello(bytes(classical), NOW)


def test_mitm_substituting_its_own_ephemerals_cannot_finish(pinned, belgium, starlink):
    """A MITM replaces e_i and ek with its own. The HELLO's signature covers them: refused. Even a
    MITM that could sign as the initiator (here: the initiator's own key, the same head) cannot
    finish: the responder's signature then covers the MITM's values, which the initiator's
    transcript does not contain."""
    mitm = Initiator(pinned[0], pinned[1], starlink.peer_id, NOW)
    mitm_hello = mitm.create_hello()

    def swap(stage, m):
        return m[:55] + mitm_hello[55:1655] + m[1655:] if stage == "hello" else m

    with pytest.raises(BadSignature):
        run(pinned, tamper=swap)

    ini = Initiator(pinned[0], pinned[1], starlink.peer_id, NOW, local_index=5)
    resigned = Initiator(pinned[0], pinned[1], starlink.peer_id, NOW, local_index=5).create_hello()
    res = Responder(pinned[2], pinned[3], NOW)
    ini.create_hello()
    res.consume_hello(resigned, NOW)
    with pytest.raises(KeyConfirmationFailed):
        ini.consume_challenge(res.create_challenge(), NOW)


# --- identity checks --------------------------------------------------------------------------


def test_unknown_peer_is_refused_before_any_asymmetric_operation(pinned, uk, monkeypatch):
    class Exploding:
        def __getattr__(self, name):
            raise AssertionError(f"asymmetric operation {name} before the peer was known")

    stranger = Initiator(LocalIdentity.pinned(uk.key), pinned[1], pinned[2].peer_id, NOW)
    hello = stranger.create_hello()
    res = Responder(pinned[2], pinned[3], NOW)
    for module in ("mlkem", "mldsa", "x25519"):
        monkeypatch.setattr(hs, module, Exploding())
    with pytest.raises(UnknownPeer):
        res.consume_hello(hello, NOW)


def test_responder_that_is_not_the_expected_peer_is_refused(enrolled, uk):
    with pytest.raises(WrongPeer):
        run(enrolled, expected=uk.peer_id)


def test_hello_addressed_to_another_peer_is_refused(enrolled, uk):
    ini_local, ini_trust, res_local, res_trust = enrolled
    hello = Initiator(ini_local, ini_trust, uk.peer_id, NOW).create_hello()
    with pytest.raises(WrongPeer):
        Responder(res_local, res_trust, NOW).consume_hello(hello, NOW)


def test_hello_from_ourselves_is_refused(enrolled):
    _, _, res_local, res_trust = enrolled
    hello = Initiator(res_local, res_trust, res_local.peer_id, NOW).create_hello()
    with pytest.raises(WrongPeer):
        Responder(res_local, res_trust, NOW).consume_hello(hello, NOW)


def test_credential_of_someone_else_than_the_hello_claimed_is_refused(enrolled, uk, belgium):
    """A node (uk) that knows its own key sends a HELLO claiming belgium's id with its own certificate."""
    _, ini_trust, res_local, res_trust = enrolled
    liar = LocalIdentity(uk.key, uk.cert)
    hello = bytearray(Initiator(liar, ini_trust, res_local.peer_id, NOW).create_hello())
    hello[3:23] = bytes.fromhex(belgium.peer_id)
    res = Responder(res_local, res_trust, NOW)
    before = COUNTS.snapshot()
    with pytest.raises(WrongPeer):
        res.consume_hello(bytes(hello), NOW)
    assert COUNTS.since(before)["signatures"] == 0


def test_signature_by_another_key_than_the_credential_is_refused(pinned, starlink, uk):
    """The responder presents starlink's pinned key but signs with uk's key."""
    ini_local, ini_trust, _, res_trust = pinned
    impostor = LocalIdentity.pinned(uk.key)
    impostor.credential = starlink.public_key
    impostor.peer_id = starlink.peer_id
    with pytest.raises(BadSignature):
        run((ini_local, ini_trust, impostor, res_trust))


def test_initiator_signature_by_another_key_is_refused(pinned, belgium, uk):
    _, ini_trust, res_local, res_trust = pinned
    impostor = LocalIdentity.pinned(uk.key)
    impostor.credential = belgium.public_key
    impostor.public_key = belgium.public_key
    impostor.peer_id = belgium.peer_id
    with pytest.raises(BadSignature):
        run((impostor, ini_trust, res_local, res_trust))


def test_revoked_peer_is_refused_at_hello(enrolled, belgium, ca_public):
    ini_local, ini_trust, res_local, _ = enrolled
    trust = MeshCA(ca_public, revoked_peer_ids=[belgium.peer_id])
    with pytest.raises(UnknownPeer):
        run((ini_local, ini_trust, res_local, trust))


def test_peer_revoked_during_the_handshake_is_refused(enrolled, starlink):
    ini_local, ini_trust, res_local, res_trust = enrolled
    ini = Initiator(ini_local, ini_trust, res_local.peer_id, NOW)
    res = Responder(res_local, res_trust, NOW)
    res.consume_hello(ini.create_hello(), NOW)
    challenge = res.create_challenge()
    ini_trust.revoke(starlink.peer_id)
    with pytest.raises(RevokedPeer):
        ini.consume_challenge(challenge, NOW)


def test_peer_outside_the_known_list_is_refused(enrolled, ca_public, uk):
    ini_local, ini_trust, res_local, _ = enrolled
    with pytest.raises(UnknownPeer):
        run((ini_local, ini_trust, res_local, MeshCA(ca_public, known_peer_ids=[uk.peer_id])))


def test_certificate_from_another_ca_is_refused(belgium, starlink, ca_public, issue):
    from cryptography.hazmat.primitives.asymmetric import mldsa

    rogue = mldsa.MLDSA87PrivateKey.generate()
    fake = issue(rogue, starlink.public_key, "starlink", "10.10.10.6")
    parties = (LocalIdentity(belgium.key, belgium.cert), MeshCA(ca_public), LocalIdentity(starlink.key, fake),
               MeshCA(ca_public))
    with pytest.raises(BadCredential):
        run(parties)


def test_expired_certificate_is_refused(belgium, starlink, ca, ca_public, issue):
    old = issue(ca, starlink.public_key, "starlink", "10.10.10.6", not_before=NOW - 100, not_after=NOW - 1)
    parties = (LocalIdentity(belgium.key, belgium.cert), MeshCA(ca_public), LocalIdentity(starlink.key, old),
               MeshCA(ca_public))
    with pytest.raises(BadCredential):
        run(parties)


def test_certificate_in_pinned_mode_and_bare_key_in_ca_mode_are_refused(belgium, starlink, ca_public):
    with pytest.raises(BadCredential):
        run((LocalIdentity.pinned(belgium.key), PinnedKeys([starlink.public_key]),
             LocalIdentity(starlink.key, starlink.cert), PinnedKeys([belgium.public_key])))
    with pytest.raises(BadCredential):
        run((LocalIdentity(belgium.key, belgium.cert), MeshCA(ca_public),
             LocalIdentity.pinned(starlink.key), MeshCA(ca_public)))


# --- X25519 shares ----------------------------------------------------------------------------

LOW_ORDER = sorted(hs._LOW_ORDER)


@pytest.mark.parametrize("share", LOW_ORDER + [s[:31] + bytes([s[31] | 0x80]) for s in LOW_ORDER])
def test_low_order_x25519_share_in_hello_is_refused(pinned, share):
    def bad(stage, m):
        return m[:55] + share + m[87:] if stage == "hello" else m

    with pytest.raises(BadShare):
        run(pinned, tamper=bad)


@pytest.mark.parametrize("share", LOW_ORDER[:3])
def test_low_order_x25519_share_in_challenge_is_refused(pinned, share):
    def bad(stage, m):
        return m[:5] + share + m[37:] if stage == "challenge" else m

    with pytest.raises(BadShare):
        run(pinned, tamper=bad)


# --- replay, flood and clock jumps -------------------------------------------------------------


def test_replayed_hello_after_a_completed_handshake_is_refused(pinned):
    guard = HelloGuard()
    ini = Initiator(pinned[0], pinned[1], pinned[2].peer_id, NOW)
    hello = ini.create_hello()
    res = Responder(pinned[2], pinned[3], NOW, guard=guard)
    res.consume_hello(hello, NOW)
    ini.consume_challenge(res.create_challenge(), NOW)
    res.consume_confirm(ini.create_confirm(), NOW)
    with pytest.raises(ReplayedHello):
        Responder(pinned[2], pinned[3], NOW + 1, guard=guard).consume_hello(hello, NOW + 1)


def test_hello_older_than_the_last_completed_one_is_refused(pinned):
    guard = HelloGuard()
    run(pinned, now=NOW, guard=guard)
    old = Initiator(pinned[0], pinned[1], pinned[2].peer_id, NOW - 5).create_hello()
    with pytest.raises(ReplayedHello):
        Responder(pinned[2], pinned[3], NOW + 1, guard=guard).consume_hello(old, NOW + 1)


def test_forged_hello_does_not_poison_the_replay_record(pinned, belgium, uk):
    """A HELLO claiming belgium with a timestamp 100 s ahead, signed by another key: refused, and it
    records nothing, so belgium's own HELLOs still pass."""
    guard = HelloGuard()
    liar = impostor_of(belgium, uk.key)
    liar.credential = belgium.public_key
    future = Initiator(liar, pinned[1], pinned[2].peer_id, NOW + 100).create_hello()
    with pytest.raises(BadSignature):
        Responder(pinned[2], pinned[3], NOW, guard=guard).consume_hello(future, NOW)
    assert len(guard) == 0
    run(pinned, now=NOW + 1, guard=guard)


def test_hellos_closer_than_20_ms_are_a_flood(pinned):
    guard = HelloGuard()
    first = Initiator(pinned[0], pinned[1], pinned[2].peer_id, NOW).create_hello()
    second = Initiator(pinned[0], pinned[1], pinned[2].peer_id, NOW + 0.01).create_hello()
    Responder(pinned[2], pinned[3], NOW, guard=guard).consume_hello(first, NOW)
    with pytest.raises(HandshakeFlood):
        Responder(pinned[2], pinned[3], NOW, guard=guard).consume_hello(second, NOW + 0.01)
    run(pinned, now=NOW + 0.03, guard=guard)


def test_initiator_clock_a_year_ahead_is_refused_and_leaves_no_lockout(pinned):
    guard = HelloGuard()
    year = 365 * 86400
    with pytest.raises(ReplayedHello):
        ini = Initiator(pinned[0], pinned[1], pinned[2].peer_id, NOW + year)
        Responder(pinned[2], pinned[3], NOW, guard=guard).consume_hello(ini.create_hello(), NOW)
    run(pinned, now=NOW + 1, guard=guard)  # clock back: works at once


def test_initiator_clock_slightly_ahead_then_back_recovers_within_a_rekey_period(pinned):
    guard = HelloGuard()
    ini_local, ini_trust, res_local, res_trust = pinned

    def attempt(ini_clock, res_clock):
        ini = Initiator(ini_local, ini_trust, res_local.peer_id, ini_clock)
        res = Responder(res_local, res_trust, res_clock, guard=guard)
        res.consume_hello(ini.create_hello(), res_clock)
        ini.consume_challenge(res.create_challenge(), ini_clock)
        res.consume_confirm(ini.create_confirm(), res_clock)

    attempt(NOW + 100, NOW)  # 100 s ahead: inside the allowed skew, recorded
    with pytest.raises(ReplayedHello):
        attempt(NOW + 10, NOW + 10)  # clock fixed: briefly refused
    attempt(NOW + 120, NOW + 120)  # within one rekey period (120 s) it works again


def test_record_from_before_our_own_clock_went_back_is_treated_as_stale(pinned):
    guard = HelloGuard()
    year = 365 * 86400
    run(pinned, now=NOW + year, guard=guard)
    run(pinned, now=NOW, guard=guard)  # the whole mesh's clock was corrected


# --- state machine ----------------------------------------------------------------------------


def test_methods_out_of_order_raise_state_errors(pinned):
    ini = Initiator(pinned[0], pinned[1], pinned[2].peer_id, NOW)
    with pytest.raises(HandshakeStateError):
        ini.create_confirm()
    with pytest.raises(HandshakeStateError):
        _ = ini.result
    res = Responder(pinned[2], pinned[3], NOW)
    with pytest.raises(HandshakeStateError):
        res.create_challenge()
    with pytest.raises(HandshakeStateError):
        res.consume_confirm(b"\x03", NOW)
    hello = ini.create_hello()
    with pytest.raises(HandshakeStateError):
        ini.create_hello()
    res.consume_hello(hello, NOW)
    with pytest.raises(HandshakeStateError):
        res.consume_hello(hello, NOW)


def test_a_failed_party_cannot_be_reused(pinned):
    ini = Initiator(pinned[0], pinned[1], pinned[2].peer_id, NOW)
    ini.create_hello()
    with pytest.raises(MalformedHandshake):
        ini.consume_challenge(b"\x02garbage", NOW)
    assert ini.failed
    with pytest.raises(HandshakeStateError):
        ini.consume_challenge(b"\x02garbage", NOW)


def test_explicit_session_indices_are_used(pinned):
    ini = Initiator(pinned[0], pinned[1], pinned[2].peer_id, NOW, local_index=7)
    res = Responder(pinned[2], pinned[3], NOW, local_index=9)
    res.consume_hello(ini.create_hello(), NOW)
    ini.consume_challenge(res.create_challenge(), NOW)
    rr = res.consume_confirm(ini.create_confirm(), NOW)
    assert (ini.result.keypair.local_index, ini.result.keypair.remote_index) == (7, 9)
    assert (rr.keypair.local_index, rr.keypair.remote_index) == (9, 7)
    with pytest.raises(HandshakeError):
        Initiator(pinned[0], pinned[1], pinned[2].peer_id, NOW, local_index=2**32)
    for bad in ("abc", "AB" * 20, "zz" * 20, 7):
        with pytest.raises(HandshakeError):
            Initiator(pinned[0], pinned[1], bad, NOW)


@pytest.mark.parametrize("junk", [b"", b"\x00", b"\x04", b"\xff", "text", None])
def test_message_type_of_junk_is_malformed(junk):
    with pytest.raises(MalformedHandshake):
        hs.message_type(junk)


@pytest.mark.parametrize("junk", [b"\x01", b"\x01\x02\x01", b"\x02", "text", None, b"\x01\x02\x01" * 3000])
def test_junk_hello_is_malformed(pinned, junk):
    with pytest.raises(MalformedHandshake):
        Responder(pinned[2], pinned[3], NOW).consume_hello(junk, NOW)


# --- fuzzing: only HandshakeError escapes -------------------------------------------------------

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(data=st.binary(max_size=2000))
def test_random_hello_only_raises_handshake_errors(pinned, data):
    try:
        Responder(pinned[2], pinned[3], NOW).consume_hello(data, NOW)
    except HandshakeError:
        pass


@FUZZ
@given(data=st.binary(max_size=9000))
def test_random_challenge_only_raises_handshake_errors(pinned, data):
    ini = Initiator(pinned[0], pinned[1], pinned[2].peer_id, NOW)
    ini.create_hello()
    with pytest.raises(HandshakeError):
        ini.consume_challenge(data, NOW)


@pytest.fixture(scope="module")
def recorded(belgium, starlink):
    """One real pinned-mode exchange, for mutation fuzzing."""
    parties = (LocalIdentity.pinned(belgium.key), PinnedKeys([starlink.public_key]),
               LocalIdentity.pinned(starlink.key), PinnedKeys([belgium.public_key]))
    return parties


@FUZZ
@given(
    pos=st.integers(0, 20_000),
    value=st.integers(0, 255),
    stage=st.sampled_from(["hello", "challenge", "confirm"]),
    cut=st.booleans(),
)
def test_mutated_messages_only_raise_handshake_errors(recorded, pos, value, stage, cut):
    def mutate(s, m):
        if s != stage:
            return m
        if cut:
            return m[: pos % (len(m) + 1)]
        out = bytearray(m)
        out[pos % len(m)] = value
        return bytes(out)

    try:
        ri, rr = run(recorded, tamper=mutate)
    except HandshakeError:
        return
    # only an unchanged message may succeed
    assert ri.transcript_hash == rr.transcript_hash


@FUZZ
@given(data=st.binary(max_size=9000))
def test_random_confirm_only_raises_handshake_errors(recorded, data):
    ini_local, ini_trust, res_local, res_trust = recorded
    ini = Initiator(ini_local, ini_trust, res_local.peer_id, NOW)
    res = Responder(res_local, res_trust, NOW)
    res.consume_hello(ini.create_hello(), NOW)
    res.create_challenge()
    with pytest.raises(HandshakeError):
        res.consume_confirm(data, NOW)


def test_timed_handshakes_each_complete_with_matching_fresh_keys(pinned, enrolled):
    """Prints the cost (no timing asserts); every timed handshake must have completed properly."""
    for name, parties in (("pinned", pinned), ("enrolled", enrolled)):
        rounds = 20
        start = time.perf_counter()
        results = [run(parties, now=NOW + k) for k in range(rounds)]
        per = (time.perf_counter() - start) / rounds
        print(f"full handshake ({name}): {per * 1e3:.2f} ms")
        for ri, rr in results:  # every timed handshake really completed with matching keys
            assert_matching(ri, rr)
        assert len({ri.keypair.key_bytes() for ri, _ in results}) == rounds


def test_finished_parties_hold_no_ephemeral_secrets(pinned):
    """Forward-secrecy hygiene: once done (or failed), the X25519/ML-KEM private keys and the
    derived handshake keys are dropped from the handshake objects."""
    ini = Initiator(pinned[0], pinned[1], pinned[2].peer_id, NOW)
    res = Responder(pinned[2], pinned[3], NOW)
    res.consume_hello(ini.create_hello(), NOW)
    assert ini._x is not None and ini._kem is not None
    ini.consume_challenge(res.create_challenge(), NOW)
    assert ini._x is None and ini._kem is None
    res.consume_confirm(ini.create_confirm(), NOW)
    assert ini._keys is None and res._keys is None

    failed = Initiator(pinned[0], pinned[1], pinned[2].peer_id, NOW)
    failed.create_hello()
    with pytest.raises(MalformedHandshake):
        failed.consume_challenge(b"\x02", NOW)
    assert failed._x is None and failed._kem is None


def test_keys_depend_on_the_ephemeral_secrets_not_only_on_the_transcript(pinned):
    """Two handshakes whose public transcript fields are replayed byte for byte cannot agree on
    keys without the ephemeral secrets: a responder answering a recorded HELLO derives keys the
    recorder cannot reproduce (its CHALLENGE fails key confirmation at anyone but the original)."""
    ini = Initiator(pinned[0], pinned[1], pinned[2].peer_id, NOW)
    hello = ini.create_hello()
    res1 = Responder(pinned[2], pinned[3], NOW)
    res1.consume_hello(hello, NOW)
    challenge1 = res1.create_challenge()
    res2 = Responder(pinned[2], pinned[3], NOW + 1)
    res2.consume_hello(hello, NOW + 1)
    challenge2 = res2.create_challenge()
    assert challenge1[5:37] != challenge2[5:37]  # fresh responder ephemerals each time
    ini.consume_challenge(challenge2, NOW)
    with pytest.raises(KeyConfirmationFailed):
        res1.consume_confirm(ini.create_confirm(), NOW)


# --- issue 9: what an unauthenticated HELLO costs, replays, revoked identities -------------------


def impostor_of(node, key):
    """A stranger holding `key` who presents `node`'s public key (or certificate) and peer id."""
    liar = LocalIdentity.pinned(key)
    liar.public_key = node.public_key
    liar.peer_id = node.peer_id
    return liar


@pytest.mark.parametrize("mode", ["pinned", "enrolled"])
def test_a_hello_claiming_a_known_peer_but_not_made_by_it_costs_no_signing_or_encapsulation(
        request, mode, belgium, starlink, uk):
    """Attack 12: peer ids and public keys (and certificates) are public; a HELLO that claims
    belgium but was made with another key is refused before the responder signs or encapsulates."""
    ini_local, ini_trust, res_local, res_trust = request.getfixturevalue(mode)
    liar = impostor_of(belgium, uk.key)
    liar.credential = ini_local.credential  # belgium's public key, or its certificate
    hello = Initiator(liar, ini_trust, starlink.peer_id, NOW).create_hello()
    res = Responder(res_local, res_trust, NOW)
    before = COUNTS.snapshot()
    with pytest.raises(HandshakeError):
        res.consume_hello(hello, NOW)
        res.create_challenge()
    spent = COUNTS.since(before)
    assert spent["signatures"] == 0 and spent["encapsulations"] == 0


def test_a_hello_replayed_before_its_handshake_completes_is_refused_before_any_work(pinned, starlink):
    """Attack 9: the genuine HELLO is being answered (CHALLENGE sent, no CONFIRM yet) when a copy
    of it arrives again: refused, with no signature, encapsulation or verification spent."""
    guard = HelloGuard()
    ini = Initiator(pinned[0], pinned[1], starlink.peer_id, NOW)
    hello = ini.create_hello()
    genuine = Responder(pinned[2], pinned[3], NOW, guard=guard)
    genuine.consume_hello(hello, NOW)
    challenge = genuine.create_challenge()
    before = COUNTS.snapshot()
    with pytest.raises(ReplayedHello):
        Responder(pinned[2], pinned[3], NOW + 1, guard=guard).consume_hello(hello, NOW + 1)
    assert COUNTS.since(before) == dict.fromkeys(OPERATIONS, 0)
    ini.consume_challenge(challenge, NOW)  # the genuine handshake is not disturbed
    genuine.consume_confirm(ini.create_confirm(), NOW)


def test_a_resigned_certificate_of_a_revoked_peer_is_refused_at_the_handshake(
        belgium, starlink, ca, ca_public, issue):
    """Attack 22: ML-DSA signatures are randomized, so a re-signed copy of belgium's certificate has
    other bytes (and another hash of its bytes) but the same peer id: still refused."""
    from nodeagent.protocol.cert import parse_certificate

    fresh = issue(ca, belgium.public_key, "belgium", "10.10.10.5")
    assert fresh != belgium.cert
    assert parse_certificate(fresh).fingerprint == parse_certificate(belgium.cert).fingerprint
    revoked = MeshCA(ca_public, revoked_peer_ids=[belgium.peer_id])
    with pytest.raises((UnknownPeer, RevokedPeer)):
        run((LocalIdentity(belgium.key, fresh), MeshCA(ca_public), LocalIdentity(starlink.key, starlink.cert),
             revoked), expected=starlink.peer_id)
    # revoked while its handshake runs: the CONFIRM is refused
    res_trust = MeshCA(ca_public)
    ini = Initiator(LocalIdentity(belgium.key, fresh), MeshCA(ca_public), starlink.peer_id, NOW)
    res = Responder(LocalIdentity(starlink.key, starlink.cert), res_trust, NOW)
    res.consume_hello(ini.create_hello(), NOW)
    ini.consume_challenge(res.create_challenge(), NOW)
    res_trust.revoke(belgium.peer_id)
    with pytest.raises(RevokedPeer):
        res.consume_confirm(ini.create_confirm(), NOW)


def test_a_certificate_for_another_overlay_address_than_the_netmaps_is_refused_in_both_roles(
        belgium, starlink, ca_public):
    """Issue 9, item 9: each side's trust knows the address its netmap gives the other. belgium is
    certified at 10.10.10.5 and starlink at 10.10.10.6."""
    import ipaddress

    def trust(**placed):
        table = {p.peer_id: ipaddress.ip_address(ip) for p, ip in placed.values()}
        return MeshCA(ca_public, overlay_of=table.get)

    ini_local = LocalIdentity(belgium.key, belgium.cert)
    res_local = LocalIdentity(starlink.key, starlink.cert)
    right = trust(s=(starlink, "10.10.10.6"), b=(belgium, "10.10.10.5"))
    run((ini_local, right, res_local, right))
    with pytest.raises(WrongAddress):  # the responder's netmap places belgium elsewhere
        run((ini_local, right, res_local, trust(b=(belgium, "10.10.10.7"))))
    with pytest.raises(WrongAddress):  # the initiator's netmap places starlink elsewhere
        run((ini_local, trust(s=(starlink, "10.10.10.8")), res_local, right))
