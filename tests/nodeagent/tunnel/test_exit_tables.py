"""tunnel/nft.py's ruleset (the text nft gets) and, as root in a namespace of its own, the exit
node's table and the client's policy rules applied and removed for real."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest

from nodeagent.tunnel import nft
from nodeagent.tunnel.mark import UNDERLAY_MARK
from nodeagent.tunnel.nft import FORWARDING_WAS_OFF, ruleset, table_name


def test_the_ruleset_masquerades_the_overlay_leaving_by_another_interface():
    text = ruleset("sm12345678", "10.10.10.0/24", forwarding_was_off=False)
    assert "table inet shadowmesh_sm12345678 {" in text
    assert 'ip saddr 10.10.10.0/24 oifname != "sm12345678" masquerade' in text
    assert "forward" not in text
    v6 = ruleset("sm12345678", "fd00:5::/64", forwarding_was_off=True)
    assert 'ip6 saddr fd00:5::/64 oifname != "sm12345678" masquerade' in v6
    assert f'iifname != "sm12345678" oifname != "sm12345678" drop comment "{FORWARDING_WAS_OFF}"' in v6


def test_names_are_safe_to_put_in_a_ruleset():
    assert table_name("a.b-c") == "shadowmesh_a_b_c"
    with pytest.raises(ValueError):
        ruleset('x" masquerade', "10.0.0.0/8", forwarding_was_off=False)


@contextlib.contextmanager
def _namespace(suffix: str) -> Iterator[str]:
    """A network namespace of the test's own, removed whatever happens; yields its name."""
    if os.geteuid() != 0:
        pytest.fail("privileged test run without root: deselect with -m 'not privileged'")
    ns = "sm" + uuid.uuid4().hex[:6] + "-" + suffix
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        yield ns
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


def _in(ns: str, *cmd: str, **kwargs) -> subprocess.CompletedProcess:
    """`cmd` run inside namespace `ns` (this checkout importable)."""
    return subprocess.run(["ip", "netns", "exec", ns, *cmd], cwd=os.getcwd(),
                          env={**os.environ, "PYTHONPATH": os.getcwd()}, **kwargs)


@pytest.mark.privileged
def test_table_and_rules_for_real_in_a_namespace():
    with _namespace("exit") as ns:
        code = f"""
from nodeagent.tunnel import nft, tun
nft.apply("smtest0001", "10.10.10.0/24", forwarding_was_off=True)
assert "masquerade" in nft.exists("smtest0001")
nft.apply("smtest0001", "10.10.10.0/24", forwarding_was_off=True)  # again: replaced, not doubled
assert nft.exists("smtest0001").count("masquerade") == 1
assert nft.FORWARDING_WAS_OFF in nft.remove("smtest0001")
assert nft.exists("smtest0001") is None and nft.remove("smtest0001") is None
import subprocess
subprocess.run(["ip", "link", "add", "smt0", "type", "veth", "peer", "name", "smt1"], check=True)
subprocess.run(["ip", "link", "set", "smt0", "up"], check=True)
tun.exit_routing_up("smt0", 4, {UNDERLAY_MARK})
rules = subprocess.run(["ip", "rule"], capture_output=True, text=True).stdout
assert "lookup main suppress_prefixlength 0" in rules
assert "not from all fwmark 0x736d0001 lookup 29549" in rules
assert "default dev smt0" in subprocess.run(["ip", "route", "show", "table", "29549"], capture_output=True,
                                            text=True).stdout
tun.exit_routing_up("smt0", 4, {UNDERLAY_MARK})  # idempotent
rules = subprocess.run(["ip", "rule"], capture_output=True, text=True).stdout
assert rules.count("suppress_prefixlength") == 1
assert tun.exit_routing_down() is True and tun.exit_routing_down() is False
assert "29549" not in subprocess.run(["ip", "rule"], capture_output=True, text=True).stdout
try:
    tun.set_routes("smt0", __import__("ipaddress").ip_interface("10.10.10.2/24"),
                   add=[__import__("ipaddress").ip_network("0.0.0.0/0")])
    raise SystemExit("a default route went on the main table")
except tun.TunError:
    pass
print("ok")
"""
        out = _in(ns, sys.executable, "-c", code, capture_output=True, text=True)
        assert out.stdout.strip() == "ok", out.stderr


@pytest.mark.privileged
def test_the_way_out_to_the_server_is_found_outside_the_exit_tunnel():
    """With the exit node's rules up, the unmarked default route leads into the tunnel: the
    source address towards an off-link server (the one the agent advertises when it listens on
    every address) must still be the underlay's, not the overlay's."""
    with _namespace("way") as ns:
        for cmd in (["ip", "link", "set", "lo", "up"],
                    ["ip", "link", "add", "smu0", "type", "veth", "peer", "name", "smu1"],
                    ["ip", "link", "set", "smu1", "up"],
                    ["ip", "addr", "add", "198.18.50.2/24", "dev", "smu0"],
                    ["ip", "link", "set", "smu0", "up"],
                    ["ip", "route", "add", "default", "via", "198.18.50.1"],
                    ["ip", "link", "add", "smo0", "type", "veth", "peer", "name", "smo1"],
                    ["ip", "link", "set", "smo1", "up"],
                    ["ip", "addr", "add", "10.10.10.3/24", "dev", "smo0"],
                    ["ip", "link", "set", "smo0", "up"]):
            _in(ns, *cmd, check=True)
        code = """
from nodeagent.enrolled import local_address_towards
from nodeagent.tunnel import tun
from nodeagent.tunnel.mark import UNDERLAY_MARK
server = "http://198.19.1.1:8000"
before = local_address_towards(server)
tun.exit_routing_up("smo0", 4, UNDERLAY_MARK)
import socket
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:  # what an unmarked socket would say
    s.connect(("198.19.1.1", 8000))
    unmarked = s.getsockname()[0]
print(before, unmarked, local_address_towards(server))
"""
        out = _in(ns, sys.executable, "-c", code, capture_output=True, text=True)
        assert out.stdout.split() == ["198.18.50.2", "10.10.10.3", "198.18.50.2"], out.stderr


def test_the_nft_command_is_looked_up_on_the_sbin_path_too(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    assert nft.exists("smnothere0") is None  # found in /usr/sbin, and the table is not there
