"""The overlay MTU (tunnel/tun.py docstring) fits what the frame codec really builds: an inner
packet of exactly the overlay MTU becomes one underlay packet of exactly the underlay MTU, direct
and relayed, IPv4 and IPv6 — so nothing is fragmented and no byte of the path is wasted. And it
fits the narrowest route the node sends on (`fitting_mtu`, `route_mtus`)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from nodeagent.protocol.frames import FRAME_OVERHEAD, RELAY_OVERHEAD, FrameType, seal, wrap_relay
from nodeagent.tunnel.mark import UNDERLAY_MARK
from nodeagent.tunnel.tun import EXIT_RULE_PREF, EXIT_TABLE, UNDERLAY_MTU, fitting_mtu, overlay_mtu

ROOT = Path(__file__).resolve().parents[2]

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


@pytest.mark.parametrize(("routes", "overlay_version", "expected"), [
    ({}, 4, 1436),  # no route known: a 1,500-byte underlay
    ({"198.18.0.1": 1500, "default4": 1500}, 4, 1436),
    ({"198.18.0.1": 9000}, 4, 1436),  # a jumbo LAN does not raise it: the Internet carries 1,500
    ({"198.18.0.1": 1500, "default4": 1400}, 4, 1336),  # the narrowest route wins
    ({"198.18.0.1": 1280}, 4, 1216),
    ({"198.18.0.1": 1280}, 6, 1280),  # an IPv6 overlay needs 1,280; the kernel fragments the rest
    ({"198.18.0.1": 600}, 4, 576),  # and IPv4 576
])
def test_the_overlay_mtu_fits_the_narrowest_route(routes, overlay_version, expected):
    assert fitting_mtu(4, FRAME_OVERHEAD, routes, overlay_version) == expected


def test_a_fitted_overlay_packet_fills_one_underlay_packet_of_the_narrow_route():
    mtu = fitting_mtu(4, RELAY_OVERHEAD, {"198.18.0.1": 1400}, 4)
    assert len(_relayed(bytes(mtu))) + IP_AND_UDP[4] == 1400


ROUTE_MTUS = r"""
import json
from nodeagent.tunnel.tun import route_mtus
print(json.dumps(route_mtus(["198.18.5.9", "198.18.6.9", "198.18.7.9", "198.18.8.9", "default4", "default6",
                             "not-an-ip"])))
"""


@pytest.mark.privileged
def test_route_mtus_reads_the_kernels_routes():
    """For real, in a network namespace of its own: a veth device of 1,280 bytes carries
    198.18.5.0/24 and the default route; 198.18.6.0/24 has a route of its own with an `mtu` of
    1,300 on it; 198.18.7.9 and IPv6 have no route; a host name is not looked up. An exit node's
    routing is up too (tun.py: unmarked traffic to a table whose default route is a 1,200-byte
    device): the agent's marked sockets do not take it, so neither does the lookup."""
    script = ("ip link add d0 type veth peer name d1 && ip link set d1 up && ip link set d0 mtu 1280 up"
              " && ip addr add 198.18.5.1/24 dev d0"
              " && ip route add default dev d0 && ip route add 198.18.6.0/24 dev d0 mtu 1300"
              " && ip route add unreachable 198.18.7.0/24"
              " && ip link add d2 type veth peer name d3 && ip link set d3 up && ip link set d2 mtu 1200 up"
              f" && ip route add default dev d2 table {EXIT_TABLE}"
              f" && ip rule add not fwmark {UNDERLAY_MARK} lookup {EXIT_TABLE} pref {EXIT_RULE_PREF + 1}"
              f" && exec {sys.executable} -c '{ROUTE_MTUS}'")
    done = subprocess.run(["unshare", "--net", "sh", "-c", script], capture_output=True, text=True,
                          timeout=60, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"198.18.5.9": 1280, "198.18.6.9": 1300, "198.18.8.9": 1280,
                                       "default4": 1280}
