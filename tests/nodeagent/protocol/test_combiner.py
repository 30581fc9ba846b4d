"""Known-answer tests for the hybrid key combiner (handshake.derive_keys)."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from nodeagent.protocol.handshake import SessionKeys, derive_keys
from nodeagent.protocol.handshake_errors import HandshakeError

SS_MLKEM = bytes(range(32))
SS_X25519 = bytes(range(32, 64))
E_I = b"\x09" * 32
E_R = b"\x0a" * 32
CT = bytes(i % 251 for i in range(1568))
TH = bytes(range(100, 132))  # not all zero: HMAC would treat a zero key like an empty salt
INPUTS = (SS_MLKEM, SS_X25519, E_I, E_R, CT, TH)

# recorded once from this implementation; any change to the construction changes them
KAT = SessionKeys(
    i2r_data=bytes.fromhex("a41a59017221d44ab76cd67e62929b22ed138124996003d10d16d2d2823bbc75"),
    r2i_data=bytes.fromhex("8e777c8e07cebd1b642fb436f865d4263863c70f89ecb2f54bb187d1d5fd60df"),
    i2r_control=bytes.fromhex("d79ed05b374f04b8ae5479b27c5d97f3d944b03eb4e32786d43bfce721fef549"),
    r2i_control=bytes.fromhex("8c40fa8fde557c512204763b3924c2a8ac30d3123d4427ead73f5f0a6483174a"),
    confirm_responder=bytes.fromhex("7d2dfc9ca113c1e31a525351de1646dba8b0240e07301710fe48611c052744f6"),
    confirm_initiator=bytes.fromhex("5314612a870ff8a8cd74bdc870bd2cadec97e6c720aa74bad3350927e2e16514"),
)


def rfc5869(salt: bytes, ikm: bytes, info: bytes) -> bytes:
    """HKDF-SHA256 with L = 32 written out from RFC 5869, independent of the module."""
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    return hmac.new(prk, info + b"\x01", hashlib.sha256).digest()


def documented(ss_mlkem, ss_x25519, e_i, e_r, ct, th, name):
    """The construction as the handshake module docstring states it."""
    return rfc5869(th, ss_mlkem + ss_x25519 + e_i + e_r + ct, b"shadowmesh/handshake/v1 " + name)


def test_fixed_inputs_give_the_recorded_keys():
    assert derive_keys(*INPUTS) == KAT


def test_recorded_keys_follow_the_documented_construction():
    names = [b"i2r data", b"r2i data", b"i2r control", b"r2i control"]
    names += [b"confirm responder", b"confirm initiator"]
    assert [documented(*INPUTS, n) for n in names] == list(KAT)


def test_all_six_keys_differ():
    assert len(set(KAT)) == 6


def test_swapping_the_two_shared_secrets_changes_every_key():
    swapped = derive_keys(SS_X25519, SS_MLKEM, E_I, E_R, CT, TH)
    assert all(a != b for a, b in zip(swapped, KAT, strict=True))


def test_swapping_the_two_shares_changes_every_key():
    swapped = derive_keys(SS_MLKEM, SS_X25519, E_R, E_I, CT, TH)
    assert all(a != b for a, b in zip(swapped, KAT, strict=True))


@pytest.mark.parametrize("dropped", range(5))
def test_dropping_any_ikm_field_changes_the_key(dropped):
    parts = [SS_MLKEM, SS_X25519, E_I, E_R, CT]
    ikm = b"".join(p for k, p in enumerate(parts) if k != dropped)
    assert rfc5869(TH, ikm, b"shadowmesh/handshake/v1 i2r data") != KAT.i2r_data


def test_dropping_the_transcript_salt_changes_the_key():
    ikm = SS_MLKEM + SS_X25519 + E_I + E_R + CT
    assert rfc5869(b"", ikm, b"shadowmesh/handshake/v1 i2r data") != KAT.i2r_data


@pytest.mark.parametrize("position", range(6))
def test_one_bit_in_any_input_changes_every_key(position):
    inputs = list(INPUTS)
    changed = bytearray(inputs[position])
    changed[-1] ^= 1
    inputs[position] = bytes(changed)
    out = derive_keys(*inputs)
    assert all(a != b for a, b in zip(out, KAT, strict=True))


def test_all_zero_inputs_still_derive_distinct_keys():
    out = derive_keys(bytes(32), bytes(32), bytes(32), bytes(32), bytes(1568), bytes(32))
    assert len(set(out)) == 6 and out != KAT


@pytest.mark.parametrize("position", range(6))
def test_wrong_length_inputs_are_refused(position):
    inputs = list(INPUTS)
    inputs[position] = inputs[position][:-1]
    with pytest.raises(HandshakeError):
        derive_keys(*inputs)
