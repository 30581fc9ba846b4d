"""The auth signature check meshadmin runs on REST and on the websocket: only the key's holder,
over this challenge, with the auth context, passes."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import mldsa

from nodeagent.protocol.auth import BadAuthSignature, verify_auth_signature
from nodeagent.protocol.constants import CONTEXT_AUTH, CONTEXT_HANDSHAKE

CHALLENGE = bytes(range(32))


@pytest.fixture(scope="module")
def key():
    return mldsa.MLDSA87PrivateKey.generate()


def _public(key) -> bytes:
    return key.public_key().public_bytes_raw()


def test_a_signature_over_the_challenge_with_the_auth_context_verifies(key):
    verify_auth_signature(_public(key), CHALLENGE, key.sign(CHALLENGE, CONTEXT_AUTH))
    verify_auth_signature(memoryview(_public(key)), CHALLENGE, key.sign(CHALLENGE, CONTEXT_AUTH))


def test_another_context_challenge_or_key_is_a_bad_signature(key):
    other = mldsa.MLDSA87PrivateKey.generate()
    for public, challenge, signature in (
        (_public(key), CHALLENGE, key.sign(CHALLENGE, CONTEXT_HANDSHAKE)),
        (_public(key), CHALLENGE[::-1], key.sign(CHALLENGE, CONTEXT_AUTH)),
        (_public(other), CHALLENGE, key.sign(CHALLENGE, CONTEXT_AUTH)),
        (b"\x00" * 32, CHALLENGE, key.sign(CHALLENGE, CONTEXT_AUTH)),  # a stored key that is no key
    ):
        with pytest.raises(BadAuthSignature, match=r"^bad signature$"):
            verify_auth_signature(public, challenge, signature)


@pytest.mark.parametrize("size", [0, 1, 4626, 4628])
def test_a_signature_of_the_wrong_length_says_so(key, size):
    with pytest.raises(BadAuthSignature, match=r"^signature has the wrong length$"):
        verify_auth_signature(_public(key), CHALLENGE, b"\x01" * size)
