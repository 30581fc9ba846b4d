"""The tunnel under loss, under rekeys, and across an agent killed with SIGKILL."""

import signal
import time

import pytest

from tests.integration.agentlab import two_nodes, wait_for

pytestmark = pytest.mark.privileged


def drop_5_percent_of_incoming_frames(ns) -> None:
    """5 % independent random loss on the datagrams a namespace receives on UDP 9443.

    The issue asks for `tc netem loss 5%`, but this kernel is built without sch_netem (and
    netem only shapes egress); nftables' numgen gives the same Bernoulli loss at the receiver."""
    ns.run("nft", "add", "table", "inet", "smloss")
    ns.run("nft", "add", "chain", "inet", "smloss", "in", "{ type filter hook input priority 0; }")
    ns.run("nft", "add", "rule", "inet", "smloss", "in", "udp", "dport", "9443", "numgen", "random", "mod",
           "100", "<", "5", "drop")


def test_lost_frames_tracks_5_percent_random_loss(lab):
    a_ns, b_ns, a_id, _, _, _, (a, b) = two_nodes(lab)
    wait_for(lambda: lab.tool(a_ns, "ping", "10.10.10.2", "--count", "1").returncode == 0, 15, "tunnel up")
    drop_5_percent_of_incoming_frames(b_ns)
    before = a.status()
    sent_before = before["peers"][0]["tx_frames"] - before["node"]["drops"]["queue_full"]
    lost_before = b.peer(a_id)["lost_frames"]
    assert lab.tool(a_ns, "udp-blast", "10.10.10.2", "5003", "4000").returncode == 0
    time.sleep(0.5)
    after = a.status()
    # frames that left a's socket (a busy box may drop some of the blast at a's own TUN queue)
    sent = after["peers"][0]["tx_frames"] - after["node"]["drops"]["queue_full"] - sent_before
    lost = b.peer(a_id)["lost_frames"] - lost_before
    assert sent >= 2000, sent
    assert 0.02 * sent <= lost <= 0.10 * sent, (lost, sent)  # 5 % injected; a generous band


def test_rekeying_every_two_seconds_never_breaks_a_running_stream(lab):
    a_ns, b_ns, a_id, b_id, _, _, (a, b) = two_nodes(lab, {"rekey_after_s": 2})
    wait_for(lambda: lab.tool(a_ns, "ping", "10.10.10.2", "--count", "1").returncode == 0, 15, "tunnel up")
    sink = lab.tool_bg(b_ns, "sink", "5004")
    assert sink.stdout.readline().strip() == "listening"
    # ~8 s at 40 Mbit/s: several rekeys happen while the stream runs
    sent = lab.tool(a_ns, "source", "10.10.10.2", "5004", str(40_000_000), "--rate-mbit", "40", timeout=120)
    assert sent.returncode == 0, sent.stderr
    assert sink.communicate(timeout=60)[0].strip() == sent.stdout.strip()
    assert a.peer(b_id)["handshakes"] >= 4 and b.peer(a_id)["handshakes"] >= 4
    assert b.status()["node"]["drops"]["unknown_session"] == 0


def test_traffic_flows_again_after_an_agent_is_killed_and_restarted(lab):
    a_ns, b_ns, _a_id, _b_id, _a_cfg, b_cfg, (_a, b) = two_nodes(lab)
    wait_for(lambda: lab.tool(a_ns, "ping", "10.10.10.2", "--count", "1").returncode == 0, 15, "tunnel up")
    b.stop(signal.SIGKILL)
    assert lab.tool(a_ns, "ping", "10.10.10.2", "--count", "1", "--timeout", "0.3").returncode != 0
    lab.start_agent(b_ns, b_cfg)  # returns once the restarted agent serves its status socket
    wait_for(lambda: lab.tool(a_ns, "ping", "10.10.10.2", "--count", "1", "--timeout", "0.3").returncode == 0,
             5, "traffic after the restart")


def test_an_authenticated_frame_from_a_new_address_moves_the_peers_endpoint(lab):
    a_ns, _b_ns, a_id, _, _, _, (_a, b) = two_nodes(lab)
    wait_for(lambda: lab.tool(a_ns, "ping", "10.10.10.2", "--count", "1").returncode == 0, 15, "tunnel up")
    assert b.peer(a_id)["endpoint"] == "198.18.0.1:9443"
    # a "moves": its underlay traffic now leaves from a second address
    dev = next(d for d in a_ns.run("ip", "-o", "link").stdout.split() if d.startswith(lab.prefix + "v"))
    dev = dev.split("@")[0].rstrip(":")
    a_ns.run("ip", "addr", "add", "198.18.0.11/24", "dev", dev)
    a_ns.run("ip", "route", "change", "198.18.0.0/24", "dev", dev, "src", "198.18.0.11")
    assert lab.tool(a_ns, "ping", "10.10.10.2", "--count", "3").returncode == 0
    assert b.peer(a_id)["endpoint"] == "198.18.0.11:9443"
