"""Bad arguments to the lab are refused by name before anything is built (no root needed)."""

import pytest

from lab import LabError
from lab.links import underlay
from lab.nat import ruleset


def test_an_unknown_kind_of_box_is_refused_naming_the_kinds():
    with pytest.raises(ValueError, match="easy, hard, firewall"):
        ruleset("smtest", "symmetric")


def test_a_bare_firewall_is_refused():
    with pytest.raises(ValueError, match="bare firewall"):
        ruleset("smtest", "firewall", bare=True)


@pytest.mark.parametrize("addr", ["10.0.0.1/24", "198.20.0.1/24", "198.16.0.0/12", "192.0.2.1", "fd00::1/64"])
def test_an_address_outside_198_18_0_0_15_is_refused(addr):
    with pytest.raises(LabError, match=r"must come from 198\.18\.0\.0/15"):
        underlay(addr)


def test_an_address_that_is_not_one_is_refused():
    with pytest.raises(LabError, match="not an IPv4 address"):
        underlay("eth0")


@pytest.mark.parametrize("addr", ["198.18.0.1/24", "198.19.255.254/24", "198.18.10.0/24", "198.19.0.2"])
def test_addresses_inside_198_18_0_0_15_pass(addr):
    assert underlay(addr) == addr
