"""Netmap signatures (attack 18): the agent takes a netmap or delta only if its network's CA signed
those exact bytes, for that kind of message, under the netmap context; the check comes first."""

from __future__ import annotations

import json

import msgpack
import pytest
from cryptography.hazmat.primitives.asymmetric import mldsa
from hypothesis import given, settings
from hypothesis import strategies as st

from nodeagent.protocol import messages, netmap_sign
from nodeagent.protocol import netmap as nm
from nodeagent.protocol.constants import CONTEXT_CERT, CONTEXT_NETMAP, PROTOCOL_VERSION, CloseCode
from nodeagent.protocol.strict import Malformed

A, B = "a" * 40, "b" * 40
CA = mldsa.MLDSA87PrivateKey.generate()
CA_PUBLIC = CA.public_key().public_bytes_raw()
MALLORY = mldsa.MLDSA87PrivateKey.generate()


def _map(serial: int = 3, peers=(B,)) -> nm.NetMap:
    return nm.NetMap(network="default", serial=serial,
                     node=nm.SelfInfo(peer_id=A, name="uk", overlay_ip="10.10.10.1", prefix_len=24),
                     peers=tuple(nm.Peer(peer_id=p, name="p", overlay_ip="10.10.10.2", fingerprint="f" * 64)
                                 for p in peers))


def _frame(t: str, body: bytes, sig: bytes) -> bytes:
    return msgpack.packb({"v": PROTOCOL_VERSION, "t": t, t: body, "sig": sig}, use_bin_type=True)


def test_a_map_and_a_delta_signed_by_the_ca_are_accepted():
    full = messages.sign_full(_map(), CA)
    assert messages.decode_server_message(messages.encode(full), netmap_key=CA_PUBLIC) == full
    delta = messages.sign_delta(nm.diff(_map(), _map(4, ())), CA)
    assert messages.decode_server_message(messages.encode(delta), netmap_key=CA_PUBLIC) == delta


@pytest.mark.parametrize("key", [MALLORY, CA], ids=["another key", "the CA, other bytes"])
def test_a_map_not_signed_by_the_ca_over_these_bytes_is_refused(key):
    full = messages.sign_full(_map(), key)
    body = full.body if key is MALLORY else full.body.replace(b"10.10.10.2", b"10.10.10.9")
    with pytest.raises(netmap_sign.BadNetmapSignature) as info:
        messages.decode_server_message(_frame("netmap", body, full.signature), netmap_key=CA_PUBLIC)
    assert info.value.code == CloseCode.BAD_SIGNATURE


def test_every_flipped_byte_of_the_signature_is_refused():
    full = messages.sign_full(_map(), CA)
    for i in range(0, len(full.signature), 397):
        sig = bytearray(full.signature)
        sig[i] ^= 0x01
        with pytest.raises(netmap_sign.BadNetmapSignature):
            messages.decode_server_message(_frame("netmap", full.body, bytes(sig)), netmap_key=CA_PUBLIC)


def test_a_deltas_signature_does_not_pass_for_a_full_map_nor_the_reverse():
    full = messages.sign_full(_map(), CA)
    body = full.body
    as_delta = netmap_sign.sign(CA, netmap_sign.LABEL_DELTA, body)
    with pytest.raises(netmap_sign.BadNetmapSignature):
        messages.decode_server_message(_frame("netmap", body, as_delta), netmap_key=CA_PUBLIC)
    with pytest.raises(netmap_sign.BadNetmapSignature):
        messages.decode_server_message(_frame("delta", body, full.signature), netmap_key=CA_PUBLIC)


def test_the_signature_is_under_the_netmap_context_only():
    body = messages.sign_full(_map(), CA).body
    message = netmap_sign.signed_message(netmap_sign.LABEL_FULL, body)
    assert message == b"netmap\x00" + body
    for context in (CONTEXT_CERT, b""):
        with pytest.raises(netmap_sign.BadNetmapSignature):
            netmap_sign.verify(CA_PUBLIC, netmap_sign.LABEL_FULL, body, CA.sign(message, context))
    netmap_sign.verify(CA_PUBLIC, netmap_sign.LABEL_FULL, body, CA.sign(message, CONTEXT_NETMAP))


def test_the_signature_is_checked_before_the_body_is_parsed():
    garbage = b"\xc1 not msgpack"
    with pytest.raises(netmap_sign.BadNetmapSignature):
        messages.decode_server_message(_frame("netmap", garbage, b"s" * 4627), netmap_key=CA_PUBLIC)
    with pytest.raises(Malformed):  # without a key (server-side tools) the body is parsed unchecked
        messages.decode_server_message(_frame("netmap", garbage, b"s" * 4627))


def test_an_unsigned_map_is_not_even_a_frame():
    with pytest.raises(Malformed):
        messages.decode_server_message(_frame("netmap", messages.sign_full(_map(), CA).body, b""))
    with pytest.raises(TypeError):
        messages.encode(messages.Full(_map()))


# --- the persisted chain


def _chain(deltas: int = 2) -> netmap_sign.SignedChain:
    full = messages.sign_full(_map(3), CA)
    parts = [netmap_sign.SignedPart(netmap_sign.LABEL_FULL, full.body, full.signature)]
    m = _map(3)
    for serial in range(4, 4 + deltas):
        new = _map(serial, (B, f"{serial:040x}"))
        d = messages.sign_delta(nm.diff(m, new), CA)
        parts.append(netmap_sign.SignedPart(netmap_sign.LABEL_DELTA, d.body, d.signature))
        m = new
    return netmap_sign.SignedChain(parts[0], tuple(parts[1:]))


def test_a_chain_survives_json_and_verifies():
    chain = _chain()
    again = netmap_sign.chain_from_dict(json.loads(json.dumps(netmap_sign.chain_to_dict(chain))))
    assert again == chain
    again.verify(CA_PUBLIC)


def test_a_chain_with_one_altered_delta_is_refused():
    chain = _chain()
    bad = netmap_sign.SignedPart(netmap_sign.LABEL_DELTA, chain.deltas[1].body + b"\x00",
                                 chain.deltas[1].signature)
    with pytest.raises(netmap_sign.BadNetmapSignature):
        netmap_sign.SignedChain(chain.full, (chain.deltas[0], bad)).verify(CA_PUBLIC)
    with pytest.raises(netmap_sign.BadNetmapSignature):
        chain.verify(MALLORY.public_key().public_bytes_raw())


def test_an_unsigned_map_of_an_older_agent_is_not_a_chain():
    with pytest.raises(ValueError, match="unsigned"):
        netmap_sign.chain_from_dict(nm.netmap_to_dict(_map()))


@settings(max_examples=200, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=12),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                 max_size=4), max_leaves=12))
def test_any_json_document_is_a_chain_or_a_value_error(value):
    for doc in (value, {"format": netmap_sign.CHAIN_FORMAT, "netmap": value, "deltas": [value]}):
        try:
            netmap_sign.chain_from_dict(doc)
        except ValueError:
            pass
