"""Two agents in two namespaces on a veth pair: real TUN devices, real handshake, real traffic."""

import sys

import pytest

from tests.integration.agentlab import two_nodes, wait_for

pytestmark = pytest.mark.privileged


def test_two_nodes_ping_and_move_100_mb_with_matching_sha256(lab):
    a_ns, b_ns, a_id, b_id, _, _, (a, b) = two_nodes(lab)
    wait_for(lambda: lab.tool(a_ns, "ping", "10.10.10.2", "--count", "1").returncode == 0, 15, "first ping")
    assert "received 5" in lab.tool(a_ns, "ping", "10.10.10.2", "--count", "5").stdout
    sink = lab.tool_bg(b_ns, "sink", "5001")
    assert sink.stdout.readline().strip() == "listening"
    sent = lab.tool(a_ns, "source", "10.10.10.2", "5001", str(100 * 1000 * 1000), timeout=240)
    assert sent.returncode == 0, sent.stderr
    received = sink.communicate(timeout=60)[0].strip()
    assert received == sent.stdout.strip()
    assert received.startswith("bytes 100000000 sha256 ")
    sa, sb = a.status(), b.status()
    assert sa["node"]["peer_id"] == a_id and sb["node"]["peer_id"] == b_id
    pa = sa["peers"][0]
    assert pa["path"] == "direct" and pa["endpoint"].startswith("198.18.0.2:")
    assert pa["tx_bytes"] > 100_000_000 and sb["peers"][0]["rx_bytes"] > 100_000_000
    assert sb["node"]["drops"]["bad_tag"] == 0 and sb["node"]["drops"]["replay"] == 0
    # on this clean veth path B asks for chunk mode and A uses it (docs/protocol.md#chunk-frames):
    # part of the 100 MB crossed as whole super-packets, one frame each, and arrived intact (above):
    # one frame per segment would take at least 100 MB / 1,400 B frames (how much goes as chunks
    # depends on when the loss policy grants them, which depends on the machine's load)
    assert "asking for chunk mode on" in b.log_text() and "chunk mode on (the peer asked)" in a.log_text()
    assert pa["tx_frames"] < 100_000_000 // 1400


def test_sigterm_removes_the_device_and_the_status_socket(lab):
    a_ns, _b_ns, *_rest, (a, _b) = two_nodes(lab)
    dev = f"{lab.prefix}t1"
    assert a_ns.run("ip", "link", "show", dev, check=False).returncode == 0
    assert a.stop() == 0
    assert a_ns.run("ip", "link", "show", dev, check=False).returncode != 0
    assert not (lab.tmp / "a.sock").exists()


def test_a_second_agent_on_the_same_ports_names_the_port_and_exits_5(lab):
    a_ns, _b_ns, *_rest, (_a, _b) = two_nodes(lab)
    (lab.tmp / "c").mkdir()
    second = lab.tmp / "c.toml"
    second.write_text((lab.tmp / "a.toml").read_text()
                      .replace(f'"{lab.prefix}t1"', f'"{lab.prefix}t9"')
                      .replace(str(lab.tmp / "a.sock"), str(lab.tmp / "c.sock")))
    out = a_ns.run(sys.executable, "-m", "nodeagent", "up", "--config", str(second), check=False)
    assert out.returncode == 5
    assert "UDP port 9443 on 0.0.0.0 is already in use" in out.stderr


NODE_KEYS = {"peer_id", "name", "overlay_ip", "uptime_s", "drops"}
DROP_KEYS = {"malformed", "unknown_session", "bad_tag", "replay", "spoofed_source", "no_route", "queue_full",
             "policy", "too_big"}
PEER_KEYS = {"peer_id", "name", "overlay_ip", "path", "endpoint", "rtt_ms", "tx_frames", "rx_frames",
             "tx_bytes", "rx_bytes", "lost_frames", "replayed_frames", "bad_frames", "last_handshake_s"}


def test_status_has_the_design_shape_and_a_human_table(lab):
    a_ns, _b_ns, _a_id, b_id, a_cfg, _, (a, _b) = two_nodes(lab)
    wait_for(lambda: lab.tool(a_ns, "ping", "10.10.10.2", "--count", "1").returncode == 0, 15, "tunnel up")
    doc = a.status()
    assert NODE_KEYS <= doc["node"].keys() and set(doc["node"]["drops"]) == DROP_KEYS
    (peer,) = doc["peers"]
    assert PEER_KEYS <= peer.keys() and peer["peer_id"] == b_id
    assert isinstance(peer["last_handshake_s"], float) and peer["rx_frames"] > 0
    human = a_ns.run(sys.executable, "-m", "nodeagent", "status", "--config", str(a_cfg))
    assert human.returncode == 0 and "10.10.10.2" in human.stdout and "direct" in human.stdout
