"""cryptography ↔ pqcrypto interop for ML-KEM-1024 and ML-DSA-87 (20 rounds each way).

Return orders differ: cryptography's encapsulate() gives (shared_secret, ciphertext), pqcrypto's
encaps() gives (ciphertext, shared_secret); cryptography's verify() returns None or raises
InvalidSignature, pqcrypto's verify() returns None or raises. Private keys differ in format (seed
vs expanded), so keys cross only as public keys, signatures and ciphertexts.
"""

from __future__ import annotations

import os

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import mldsa, mlkem
from pqcrypto import InvalidSignatureError
from pqcrypto.kem import ml_kem_1024
from pqcrypto.sign import ml_dsa_87

from nodeagent.protocol.constants import (
    CONTEXT_HANDSHAKE,
    MLDSA87_PUBLIC_KEY_SIZE,
    MLDSA87_SIGNATURE_SIZE,
    MLKEM1024_CIPHERTEXT_SIZE,
    MLKEM1024_PUBLIC_KEY_SIZE,
)

ROUNDS = range(20)


@pytest.mark.parametrize("round_", ROUNDS)
def test_cryptography_encapsulates_and_pqcrypto_decapsulates(round_):
    pk, sk = ml_kem_1024.keygen()
    assert len(pk) == MLKEM1024_PUBLIC_KEY_SIZE
    ss, ct = mlkem.MLKEM1024PublicKey.from_public_bytes(pk).encapsulate()
    assert len(ct) == MLKEM1024_CIPHERTEXT_SIZE
    assert ml_kem_1024.decaps(sk, ct) == ss


@pytest.mark.parametrize("round_", ROUNDS)
def test_pqcrypto_encapsulates_and_cryptography_decapsulates(round_):
    sk = mlkem.MLKEM1024PrivateKey.generate()
    ct, ss = ml_kem_1024.encaps(sk.public_key().public_bytes_raw())
    assert sk.decapsulate(ct) == ss


@pytest.mark.parametrize("round_", ROUNDS)
def test_cryptography_signs_and_pqcrypto_verifies(round_):
    key = mldsa.MLDSA87PrivateKey.generate()
    msg = os.urandom(64)
    sig = key.sign(msg, CONTEXT_HANDSHAKE)
    assert len(sig) == MLDSA87_SIGNATURE_SIZE
    pk = key.public_key().public_bytes_raw()
    assert len(pk) == MLDSA87_PUBLIC_KEY_SIZE
    assert ml_dsa_87.verify(pk, msg, sig, context=CONTEXT_HANDSHAKE) is None
    with pytest.raises(InvalidSignatureError):
        ml_dsa_87.verify(pk, msg + b"x", sig, context=CONTEXT_HANDSHAKE)
    with pytest.raises(InvalidSignatureError):
        ml_dsa_87.verify(pk, msg, sig, context=b"shadowmesh/dht/v1")


@pytest.mark.parametrize("round_", ROUNDS)
def test_pqcrypto_signs_and_cryptography_verifies(round_):
    pk, sk = ml_dsa_87.keygen()
    msg = os.urandom(64)
    sig = ml_dsa_87.sign(sk, msg, context=CONTEXT_HANDSHAKE)
    vk = mldsa.MLDSA87PublicKey.from_public_bytes(pk)
    assert vk.verify(sig, msg, CONTEXT_HANDSHAKE) is None
    with pytest.raises(InvalidSignature):
        vk.verify(sig, msg, b"shadowmesh/cert/v1")


def test_tampered_ciphertext_decapsulates_to_a_different_secret_without_error():
    sk = mlkem.MLKEM1024PrivateKey.generate()
    ss, ct = sk.public_key().encapsulate()
    bad = bytearray(ct)
    bad[100] ^= 1
    assert sk.decapsulate(bytes(bad)) != ss
