"""A NAT box asked for with bad arguments is refused by name before anything is built (no root)."""

import pytest

from lab.nat import ruleset


def test_an_unknown_kind_is_refused_naming_the_kinds():
    with pytest.raises(ValueError, match="easy, hard, firewall"):
        ruleset("smtest", "symmetric")


def test_a_bare_firewall_is_refused():
    with pytest.raises(ValueError, match="bare firewall"):
        ruleset("smtest", "firewall", bare=True)
