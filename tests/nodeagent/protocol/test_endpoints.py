"""nodeagent/protocol/endpoints.py: the one check of an endpoint for the server and the agent.
A node must not steer its peers at loopback, unspecified, link-local (cloud metadata),
multicast or broadcast addresses, or at port 0 (issue 9, attack 5)."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nodeagent.protocol.endpoints import (
    BadEndpoint,
    check_endpoint,
    check_endpoint_ip,
    check_port,
    endpoint_text,
)

REFUSED = {
    "0.0.0.0": "unspecified",
    "0.1.2.3": "unspecified",
    "::": "unspecified",
    "::ffff:0.0.0.0": "unspecified",
    "127.0.0.1": "loopback",
    "127.255.0.9": "loopback",
    "::1": "loopback",
    "::ffff:127.0.0.1": "loopback",
    "169.254.169.254": "link-local",
    "169.254.0.1": "link-local",
    "fe80::1": "link-local",
    "fe80::1%eth0": "link-local",
    "febf::1": "link-local",
    "::ffff:169.254.169.254": "link-local",
    "224.0.0.1": "multicast",
    "239.255.255.250": "multicast",
    "ff02::1": "multicast",
    "ff0e::fb": "multicast",
    "::ffff:224.0.0.251": "multicast",
    "255.255.255.255": "broadcast",
    "::ffff:255.255.255.255": "broadcast",
}
ACCEPTED = ["198.18.0.3", "198.19.255.254", "10.0.0.1", "192.168.1.10", "172.16.0.1", "100.64.0.1",
            "1.1.1.1", "203.0.113.7", "2001:db8::7", "fd00::1", "2a00:1450::1", "::ffff:198.18.0.3",
            "1.0.0.0", "223.255.255.255", "240.0.0.1"]


@pytest.mark.parametrize(("ip", "why"), REFUSED.items())
def test_addresses_no_peer_should_be_sent_to_are_refused_saying_why(ip, why):
    with pytest.raises(BadEndpoint, match=why):
        check_endpoint_ip(ip)
    with pytest.raises(BadEndpoint, match=why):
        check_endpoint(ip, 8443, 9443)


@pytest.mark.parametrize("ip", ACCEPTED)
def test_unicast_addresses_including_private_and_benchmark_ranges_are_accepted(ip):
    assert check_endpoint_ip(ip) == ipaddress.ip_address(ip)
    assert check_endpoint(ipaddress.ip_address(ip), 1, 65535) == ipaddress.ip_address(ip)


@pytest.mark.parametrize("ip", ["127.0.0.1", "::1", "::ffff:127.0.0.1"])
def test_loopback_is_accepted_only_when_allowed(ip):
    assert check_endpoint_ip(ip, allow_loopback=True) == ipaddress.ip_address(ip)
    with pytest.raises(BadEndpoint, match="loopback"):
        check_endpoint_ip(ip)


@pytest.mark.parametrize("ip", ["0.0.0.0", "169.254.169.254", "224.0.0.1", "255.255.255.255"])
def test_allowing_loopback_allows_nothing_else(ip):
    with pytest.raises(BadEndpoint):
        check_endpoint_ip(ip, allow_loopback=True)


@pytest.mark.parametrize("value", ["", "not-an-ip", "1.2.3", "1.2.3.4.5", "::g", None, 12, b"\x7f\0\0\1"])
def test_what_is_not_an_address_is_refused(value):
    with pytest.raises(BadEndpoint, match="not an IP address"):
        check_endpoint_ip(value)


@pytest.mark.parametrize("port", [0, -1, 65536, 1 << 32, True, False, 8443.0, "8443", None])
def test_ports_are_integers_1_to_65535(port):
    with pytest.raises(BadEndpoint, match=r"1\.\.65535"):
        check_port(port)
    with pytest.raises(BadEndpoint, match="control port"):
        check_endpoint("198.18.0.3", port, 9443)
    with pytest.raises(BadEndpoint, match="UDP port"):
        check_endpoint("198.18.0.3", 8443, port)


@pytest.mark.parametrize("port", [1, 80, 8443, 65535])
def test_every_real_port_is_accepted(port):
    assert check_port(port) == port


# --- an independent twin, written from the address ranges rather than ipaddress's is_* flags
_V4_REFUSED = [ipaddress.ip_network(n) for n in ("0.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/4",
                                                  "255.255.255.255/32")]
_V6_REFUSED = [ipaddress.ip_network(n) for n in ("::/128", "::1/128", "fe80::/10", "ff00::/8")]
_MAPPED = ipaddress.ip_network("::ffff:0:0/96")


def _naive_refused(addr) -> bool:
    if addr.version == 6 and addr in _MAPPED:
        addr = ipaddress.IPv4Address(addr.packed[12:])
    return any(addr in net for net in (_V4_REFUSED if addr.version == 4 else _V6_REFUSED))


def _verdict(addr) -> bool:
    try:
        check_endpoint_ip(addr)
    except BadEndpoint:
        return True
    return False


@given(st.integers(0, 2**32 - 1))
def test_every_ipv4_address_is_judged_as_the_twin_judges_it(n):
    addr = ipaddress.IPv4Address(n)
    assert _verdict(addr) == _naive_refused(addr)
    mapped = ipaddress.IPv6Address(f"::ffff:{addr}")
    assert _verdict(mapped) == _naive_refused(mapped)


@given(st.one_of(st.integers(0, 2**128 - 1),
                 st.integers(0, 2**118 - 1).map(lambda n: (0xFE80 << 112) | n),
                 st.integers(0, 2**120 - 1).map(lambda n: (0xFF << 120) | n),
                 st.integers(0, 2**16).map(lambda n: n)))
def test_every_ipv6_address_is_judged_as_the_twin_judges_it(n):
    addr = ipaddress.IPv6Address(n)
    assert _verdict(addr) == _naive_refused(addr)


def test_an_endpoint_is_written_with_brackets_around_an_ipv6_address():
    assert endpoint_text(("198.18.0.1", 9443)) == "198.18.0.1:9443"
    assert endpoint_text(("fd00::1", 9443, 0, 0)) == "[fd00::1]:9443"  # a socket's IPv6 4-tuple
