"""protocol/dnsname.py: labels, suffixes, the default suffix (pure)."""

from __future__ import annotations

import pytest

from nodeagent.protocol.dnsname import MAX_SUFFIX, default_suffix, fold, is_label, is_suffix


@pytest.mark.parametrize("name", ["uk", "belgium-2", "N0", "a" * 63, "x1-y"])
def test_labels(name):
    assert is_label(name)


@pytest.mark.parametrize("name", ["", "-a", "a-", "a_b", "a.b", "a b", "a" * 64, "ünï", "<script>", None, 5])
def test_not_labels(name):
    assert not is_label(name)


def test_suffixes():
    assert is_suffix("default.mesh") and is_suffix("corp.example.com") and is_suffix("mesh")
    assert not is_suffix("") and not is_suffix("a..b") and not is_suffix("mesh.") and not is_suffix("x.123")
    longest = "a" * 63 + "." + "b" * 63 + "." + "c" * 61
    assert is_suffix(longest) and len(longest) <= MAX_SUFFIX
    assert not is_suffix(".".join(["a" * 63] * 3) + ".b")  # over MAX_SUFFIX: no room for a name in front


def test_the_default_suffix_is_the_network_name_under_mesh_when_it_is_a_label():
    assert default_suffix("default") == "default.mesh"
    assert default_suffix("Office") == "office.mesh"
    assert default_suffix("my net") is None
    assert fold("UK.Default.Mesh.") == "uk.default.mesh"
