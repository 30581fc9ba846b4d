"""An on-path third namespace (the router between two nodes) throws garbage, truncated,
bit-flipped and replayed frames at a node."""

import os
import random
import sys
import time
from pathlib import Path

import pytest

from tests.integration.agentlab import wait_for, write_config

pytestmark = pytest.mark.privileged

FLOOD = Path(__file__).with_name("udp_flood.py")


@pytest.fixture
def trio(lab):
    # evil is the router between a and b: every datagram of the tunnel passes through it
    a_ns, b_ns, evil = lab.netns("a"), lab.netns("b"), lab.netns("evil")
    lab.veth(a_ns, "198.18.3.1/24", evil, "198.18.3.254/24")
    lab.veth(b_ns, "198.18.4.2/24", evil, "198.18.4.254/24")
    a_ns.run("ip", "route", "add", "198.18.4.0/24", "via", "198.18.3.254")
    b_ns.run("ip", "route", "add", "198.18.3.0/24", "via", "198.18.4.254")
    evil.run("sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward")
    (_, a_id), _ = lab.keygen("a"), lab.keygen("b")
    a_cfg = write_config(lab.tmp / "a.toml",
                         {"private_key": "a/node.key", "overlay_ip": "10.10.10.1/24",
                          "interface": f"{lab.prefix}t1", "control_socket": str(lab.tmp / "a.sock")},
                         [{"public_key": "b/node.pub", "overlay_ip": "10.10.10.2", "endpoint": "198.18.4.2"}])
    b_cfg = write_config(lab.tmp / "b.toml",
                         {"private_key": "b/node.key", "overlay_ip": "10.10.10.2/24",
                          "interface": f"{lab.prefix}t2", "control_socket": str(lab.tmp / "b.sock")},
                         [{"public_key": "a/node.pub", "overlay_ip": "10.10.10.1"}])
    a, b = lab.start_agent(a_ns, a_cfg), lab.start_agent(b_ns, b_cfg)
    wait_for(lambda: lab.tool(a_ns, "ping", "10.10.10.2", "--count", "1").returncode == 0, 15, "tunnel up")
    return a_ns, b_ns, evil, a, b, a_id


def test_hostile_frames_are_all_dropped_and_counted_and_never_answered(trio, lab):
    a_ns, _b_ns, evil, _a, b, a_id = trio
    # DATA frames (>= 60 bytes), not keepalives
    sniffer = lab.tool_bg(evil, "sniff", "198.18.4.2", "9443", "6", "--min-size", "60")
    assert sniffer.stdout.readline().strip() == "ready"
    pinger = lab.tool_bg(a_ns, "ping", "10.10.10.2", "--count", "20", "--interval", "0.05")
    genuine = [bytes.fromhex(line) for line in sniffer.communicate(timeout=30)[0].split()]
    pinger.communicate(timeout=30)
    assert len(genuine) == 6

    rng = random.Random(7)
    garbage = [os.urandom(n) for n in (1, 7, 19, 64, 300, 1400)]
    truncated = [g[: rng.randrange(1, len(g) - 1)] for g in genuine]
    flipped = []
    for g in genuine:
        f = bytearray(g)
        f[rng.randrange(20, len(f))] ^= 1 << rng.randrange(8)  # anywhere after the header
        flipped.append(bytes(f))
    replayed = genuine
    before = b.status()
    frames = lab.tmp / "frames.hex"
    frames.write_text("\n".join(x.hex() for x in garbage + truncated + flipped + replayed) + "\n")
    out = lab.tool(evil, "udp-send", "198.18.4.2", "9443", str(frames), "--sport", "9443", "--listen", "2")
    assert out.stdout.strip() == f"sent {6 * 4} received 0"  # nothing was sent back

    after = b.status()
    delta = {k: after["node"]["drops"][k] - before["node"]["drops"][k] for k in after["node"]["drops"]}
    assert delta["malformed"] >= 6 + 6  # all garbage and every truncated frame (length field)
    assert delta["bad_tag"] == 6
    assert delta["replay"] == 6
    assert sum(delta.values()) == 24
    peer_a = next(p for p in after["peers"] if p["peer_id"] == a_id)
    assert peer_a["bad_frames"] >= 6 and peer_a["replayed_frames"] >= 6
    assert peer_a["endpoint"].startswith("198.18.3.1:")  # the attacker never moved the endpoint
    # and the tunnel is unaffected
    assert "received 3" in lab.tool(a_ns, "ping", "10.10.10.2", "--count", "3").stdout


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def test_maximum_size_datagrams_and_a_100k_garbage_flood_get_no_answer_and_leave_memory_bounded(trio, lab):
    """Attack 11: 200 datagrams of 65,507 bytes, then 100,000 garbage datagrams, at b's UDP port from the
    router: b's resident memory grows by at most 16 MiB, nothing is sent back, what b read is
    counted as dropped, and the tunnel is unaffected."""
    a_ns, _b_ns, evil, _a, b, _a_id = trio
    pid = b.proc.pid
    assert Path(f"/proc/{pid}/comm").read_text().strip().startswith("python")  # the agent itself
    before, rss_before = b.status(), rss_kib(pid)
    out = evil.run(sys.executable, str(FLOOD), "198.18.4.2", "9443", "100000", "--big", "200",
                   "--sport", "9443", "--listen", "2", timeout=300).stdout.strip()
    assert out == "sent 100200 received 0"
    time.sleep(1)  # let b drain what its socket still holds
    after, rss_after = b.status(), rss_kib(pid)
    drops_before, drops_after = before["node"]["drops"], after["node"]["drops"]
    dropped = sum(drops_after[k] - drops_before[k] for k in ("malformed", "unknown_session"))
    print(f"RSS {rss_before} -> {rss_after} KiB, {dropped} datagrams read and dropped")
    assert 0 < dropped <= 100200  # every datagram b read was dropped (the rest overflowed its socket)
    assert rss_after - rss_before <= 16 * 1024, (rss_before, rss_after)
    assert "received 3" in lab.tool(a_ns, "ping", "10.10.10.2", "--count", "3").stdout
