"""The pure overlay allocator (meshadmin/mesh/addressing.py)."""

import ipaddress

import pytest

from meshadmin.mesh.addressing import PoolExhausted, next_free_address, pool_size

# (case, prefix, used, reserved, expected)
CASES = [
    (1, "10.10.10.0/24", [], [], "10.10.10.1"),
    (2, "10.10.10.0/24", ["10.10.10.1"], [], "10.10.10.2"),
    (3, "10.10.10.0/24", ["10.10.10.1", "10.10.10.3"], [], "10.10.10.2"),
    (4, "10.10.10.0/24", [], ["10.10.10.1"], "10.10.10.2"),
    (5, "10.10.10.0/24", [f"10.10.10.{i}" for i in range(1, 254)], [], "10.10.10.254"),
    (6, "10.0.0.0/30", ["10.0.0.1"], [], "10.0.0.2"),
    (7, "10.0.0.0/31", [], [], "10.0.0.0"),
    (8, "10.0.0.7/32", [], [], "10.0.0.7"),
    (9, "fd00::/64", [], [], "fd00::1"),
    (10, "fd00::/120", ["fd00::1", "fd00::2"], [], "fd00::3"),
    (11, "10.10.10.0/24", ["192.0.2.1"], [], "10.10.10.1"),
]


@pytest.mark.parametrize(("case", "prefix", "used", "reserved", "expected"), CASES)
def test_the_lowest_free_usable_address_is_chosen(case, prefix, used, reserved, expected):
    assert next_free_address(prefix, used, reserved) == ipaddress.ip_address(expected), case


def test_network_and_broadcast_addresses_are_never_handed_out():
    used = set()
    for _ in range(pool_size("10.10.10.0/24")):
        used.add(next_free_address("10.10.10.0/24", used))
    assert ipaddress.ip_address("10.10.10.0") not in used
    assert ipaddress.ip_address("10.10.10.255") not in used
    assert len(used) == 254


def test_a_full_pool_raises_pool_exhausted():
    with pytest.raises(PoolExhausted):
        next_free_address("10.0.0.0/30", ["10.0.0.1", "10.0.0.2"])


def test_reserved_addresses_shrink_the_pool():
    assert pool_size("10.10.10.0/24") == 254
    assert pool_size("10.10.10.0/24", ["10.10.10.1", "10.10.10.0", "192.0.2.1"]) == 253


def test_a_freed_address_is_reused_first():
    used = [f"10.10.10.{i}" for i in range(1, 11) if i != 4]
    assert str(next_free_address("10.10.10.0/24", used)) == "10.10.10.4"


def test_used_addresses_in_any_form_count_as_taken():
    """Strings (the database's), address objects and the other family all count; a malformed
    string is an error, not a free address."""
    used = ["10.10.10.1", ipaddress.ip_address("10.10.10.2"), "fd00::3", "10.10.10.4"]
    assert str(next_free_address("10.10.10.0/24", used)) == "10.10.10.3"
    assert str(next_free_address("fd00::/120", ["fd00::1", "fd00:0:0::0002", "10.0.0.9"])) == "fd00::3"
    for bad in ("10.10.10.01", "10.10.10", "not an address", "10.10.10.1 "):
        with pytest.raises(ValueError):
            next_free_address("10.10.10.0/24", ["10.10.10.2", bad])


def test_the_lowest_gap_of_a_large_pool_is_found():
    import random

    rng = random.Random(7)
    net = ipaddress.ip_network("10.64.0.0/16")
    taken = set(rng.sample(range(1, 4000), 3000))
    used = [str(net.network_address + i) for i in sorted(taken)]
    expected = next(net.network_address + i for i in range(1, 65535) if i not in taken)
    assert next_free_address(net, used) == expected
