"""meshadmin/client_address.py: the address limits and audit rows are keyed on. X-Forwarded-For
counts only from a trusted proxy, read from the right, so a client cannot choose its own key."""

import pytest

from meshadmin.client_address import client_address, parse_trusted_proxies

PROXY = parse_trusted_proxies(["10.0.0.5", "fd00::/64"])
TWO_PROXIES = parse_trusted_proxies(["10.0.0.5", "10.0.0.6"])


@pytest.mark.parametrize(
    ("peer", "forwarded", "trusted", "expected"),
    [
        # no trusted proxy: the header never counts, whatever it says
        ("198.18.0.9", "203.0.113.1", (), "198.18.0.9"),
        ("198.18.0.9", None, PROXY, "198.18.0.9"),
        ("198.18.0.9", "203.0.113.1", PROXY, "198.18.0.9"),  # the caller is not our proxy
        # through our proxy: the address it appended (the rightmost entry)
        ("10.0.0.5", "198.18.0.9", PROXY, "198.18.0.9"),
        ("10.0.0.5", "203.0.113.1, 198.18.0.9", PROXY, "198.18.0.9"),  # a forged entry on the left
        ("10.0.0.5", "garbage, 198.18.0.9", PROXY, "198.18.0.9"),
        ("10.0.0.5", "198.18.0.9:51234", PROXY, "198.18.0.9"),  # with a port
        ("fd00::7", "[2001:db8::9]:443", PROXY, "2001:db8::9"),
        ("10.0.0.5", "2001:db8::9", PROXY, "2001:db8::9"),
        # the proxy sent its own request (no header), or a header it did not fill properly
        ("10.0.0.5", None, PROXY, "10.0.0.5"),
        ("10.0.0.5", "", PROXY, "10.0.0.5"),
        ("10.0.0.5", "not-an-address", PROXY, "10.0.0.5"),
        # a chain of trusted proxies: the first untrusted hop from the right
        ("10.0.0.5", "203.0.113.1, 198.18.0.9, 10.0.0.6", TWO_PROXIES, "198.18.0.9"),
        ("10.0.0.5", "10.0.0.6", TWO_PROXIES, "10.0.0.6"),  # every hop trusted: the last one left
        # IPv4-mapped IPv6 from a dual-stack listener is the IPv4 address
        ("::ffff:10.0.0.5", "198.18.0.9", PROXY, "198.18.0.9"),
        ("::ffff:198.18.0.9", None, (), "198.18.0.9"),
        # no usable peer address
        (None, "198.18.0.9", PROXY, None),
        ("", None, (), None),
        ("unix-socket", None, (), None),
    ],
)
def test_the_client_address_is_the_peer_or_what_a_trusted_proxy_saw(peer, forwarded, trusted, expected):
    assert client_address(peer, forwarded, trusted) == expected


def test_trusted_proxies_are_addresses_or_prefixes_and_a_bad_one_is_named():
    nets = parse_trusted_proxies(["127.0.0.1", " 10.1.0.0/16 ", "::1"])
    assert [str(n) for n in nets] == ["127.0.0.1/32", "10.1.0.0/16", "::1/128"]
    with pytest.raises(ValueError, match=r"'proxy\.example'"):
        parse_trusted_proxies(["127.0.0.1", "proxy.example"])

