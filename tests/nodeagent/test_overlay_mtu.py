"""The overlay MTU (tunnel/tun.py docstring) fits what the frame codec really builds: an inner
packet of exactly the overlay MTU becomes one underlay packet of exactly the underlay MTU, direct
and relayed, IPv4 and IPv6 — so nothing is fragmented and no byte of the path is wasted."""

import os

import pytest
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from nodeagent.protocol.frames import FRAME_OVERHEAD, RELAY_OVERHEAD, FrameType, seal, wrap_relay
from nodeagent.tunnel.tun import UNDERLAY_MTU, overlay_mtu

E2E = ChaCha20Poly1305(os.urandom(32))
HOP = ChaCha20Poly1305(os.urandom(32))
IP_AND_UDP = {4: 20 + 8, 6: 40 + 8}


def _direct(payload: bytes) -> bytes:
    return seal(E2E, FrameType.DATA, 7, 1, 2, payload)


def _relayed(payload: bytes) -> bytes:  # the larger of the two hops' envelopes (same size both ways)
    return wrap_relay(HOP, FrameType.RELAY, 9, 1, 2, b"\x01" * 20, _direct(payload))


@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize(("build", "overhead"), [(_direct, FRAME_OVERHEAD), (_relayed, RELAY_OVERHEAD)],
                         ids=["direct", "relayed"])
def test_a_packet_of_the_overlay_mtu_fills_one_underlay_packet_exactly(family, build, overhead):
    mtu = overlay_mtu(family, overhead)
    assert len(build(bytes(mtu))) + IP_AND_UDP[family] == UNDERLAY_MTU


def test_the_documented_figures_hold():
    assert (overlay_mtu(4, FRAME_OVERHEAD), overlay_mtu(6, FRAME_OVERHEAD)) == (1436, 1416)
    assert (overlay_mtu(4, RELAY_OVERHEAD), overlay_mtu(6, RELAY_OVERHEAD)) == (1380, 1360)
