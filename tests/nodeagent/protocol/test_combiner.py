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

# recorded from this implementation (handshake version 2: its labels say v2); any change to the
# construction changes them
KAT = SessionKeys(
    i2r_data=bytes.fromhex("2211680b390df18e6d4f55fb9eb59a2756736d87346c06f5b131734d270a43cd"),
    r2i_data=bytes.fromhex("22dfdfac79ab31c24b5217060fc788544596176b82c7ec6fa48231c6ca0d623c"),
    i2r_control=bytes.fromhex("72448a66bbdc00f95c01bfcc857fa697fb50a84be78d2f97f7c0db8fb124c69c"),
    r2i_control=bytes.fromhex("8220a441b0058029c919f2cb0ecac1c899fda100b91d15d4c10e407131681074"),
    confirm_responder=bytes.fromhex("b8213524179ba7e998a4e094b8294c08246bda8d4fab21d1dd45aff9b782a277"),
    confirm_initiator=bytes.fromhex("d6c6b18e99247f9b2fd311e2fb23e5e7d95a06f1cebdcef19c8045ba65523860"),
)


def rfc5869(salt: bytes, ikm: bytes, info: bytes) -> bytes:
    """HKDF-SHA256 with L = 32 written out from RFC 5869, independent of the module."""
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    return hmac.new(prk, info + b"\x01", hashlib.sha256).digest()


def documented(ss_mlkem, ss_x25519, e_i, e_r, ct, th, name):
    """The construction as the handshake module docstring states it."""
    return rfc5869(th, ss_mlkem + ss_x25519 + e_i + e_r + ct, b"shadowmesh/handshake/v2 " + name)


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
    assert rfc5869(TH, ikm, b"shadowmesh/handshake/v2 i2r data") != KAT.i2r_data


def test_dropping_the_transcript_salt_changes_the_key():
    ikm = SS_MLKEM + SS_X25519 + E_I + E_R + CT
    assert rfc5869(b"", ikm, b"shadowmesh/handshake/v2 i2r data") != KAT.i2r_data


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
