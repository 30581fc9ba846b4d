"""The TCP control port refuses cheaply: stalled handshakes, strangers and connection floods."""

import sys
from pathlib import Path

import pytest

from tests.integration.agentlab import two_nodes, wait_for

pytestmark = pytest.mark.privileged

PROBE = str(Path(__file__).with_name("control_probe.py"))


@pytest.fixture
def node(lab):
    a_ns, *_rest = two_nodes(lab)
    wait_for(lambda: lab.tool(a_ns, "ping", "10.10.10.2", "--count", "1").returncode == 0, 15, "tunnel up")
    return a_ns


def probe(ns, *args):
    return ns.run(sys.executable, PROBE, *args, timeout=60).stdout.strip()


def test_a_silent_connection_is_cut_by_the_handshake_deadline(node):
    a_ns = node
    assert probe(a_ns, "stall", "198.18.0.2", "8443") == "closed True after 0 bytes"


def test_a_hello_from_an_unpinned_key_is_refused_without_an_answer(node):
    a_ns = node
    assert probe(a_ns, "stranger", "198.18.0.2", "8443") == "closed True after 0 bytes"


def test_a_full_connection_table_turns_away_the_next_connection_unread(node, lab):
    a_ns = node
    # b has one peer: its table holds 2 x 1 + 8 = 10 connections, one of them a's live link
    assert probe(a_ns, "flood", "198.18.0.2", "8443", "9") == "held 9 extra closed True"
    # and the tunnel is unaffected
    assert lab.tool(a_ns, "ping", "10.10.10.2", "--count", "1").returncode == 0
