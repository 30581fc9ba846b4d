"""The auth signature check meshadmin runs on REST and on the websocket: only the key's holder,
over this challenge, with the auth context, passes."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric import mldsa

from nodeagent.protocol.auth import (
    BadAuthSignature,
    agent_login_message,
    sign_agent_login,
    verify_agent_login,
    verify_auth_signature,
)
from nodeagent.protocol.constants import CONTEXT_AGENT_AUTH, CONTEXT_AUTH, CONTEXT_HANDSHAKE

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


# --- the websocket login (context shadowmesh/agent-auth/v1, bound to purpose and CA)

CA = mldsa.MLDSA87PrivateKey.generate().public_key().public_bytes_raw()
OTHER_CA = mldsa.MLDSA87PrivateKey.generate().public_key().public_bytes_raw()


def test_the_websocket_login_verifies_only_for_its_ca_and_nonce(key):
    signature = sign_agent_login(key, CA, CHALLENGE)
    verify_agent_login(_public(key), CA, CHALLENGE, signature)
    for ca, nonce in ((OTHER_CA, CHALLENGE), (CA, CHALLENGE[::-1])):
        with pytest.raises(BadAuthSignature, match=r"^bad signature$"):
            verify_agent_login(_public(key), ca, nonce, signature)


def test_the_login_message_names_purpose_ca_and_nonce():
    message = agent_login_message(CA, CHALLENGE)
    assert message == b"shadowmesh agent websocket login\x00" + hashlib.sha256(CA).digest() + CHALLENGE
    with pytest.raises(ValueError):
        agent_login_message(CA, CHALLENGE[:31])


def test_neither_login_is_accepted_as_the_other(key):
    """Attack 18: an impersonated server that relays an HTTP challenge as its websocket nonce gets a
    signature /api/auth/verify refuses; an HTTP login signature does not open the websocket."""
    with pytest.raises(BadAuthSignature):
        verify_auth_signature(_public(key), CHALLENGE, sign_agent_login(key, CA, CHALLENGE))
    with pytest.raises(BadAuthSignature):
        verify_agent_login(_public(key), CA, CHALLENGE, key.sign(CHALLENGE, CONTEXT_AUTH))
    # even the HTTP context over the exact login bytes is not a login
    with pytest.raises(BadAuthSignature):
        http_signed = key.sign(agent_login_message(CA, CHALLENGE), CONTEXT_AUTH)
        verify_agent_login(_public(key), CA, CHALLENGE, http_signed)
    assert CONTEXT_AGENT_AUTH != CONTEXT_AUTH
