"""Churn (docs/threat-model.md, attack 37): a peer goes down and comes back 50 times; the agent that
stays up must end with the file descriptors, threads and memory it had after the first cycle."""

import os
from pathlib import Path

import pytest

from tests.integration.agentlab import two_nodes, wait_for

pytestmark = pytest.mark.privileged

CYCLES = 50
RESTART_EVERY = 10  # every tenth cycle the peer's agent is stopped and started; the others cut its link


def usage(pid: int) -> dict:
    rss = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
               if line.startswith("VmRSS:"))
    return {"fds": len(os.listdir(f"/proc/{pid}/fd")), "threads": len(os.listdir(f"/proc/{pid}/task")),
            "rss_kib": rss}


def test_fifty_up_down_cycles_of_a_peer_leave_the_other_agent_at_its_baseline(lab):
    a_ns, _b_ns, a_id, _b_id, a_cfg, _b_cfg, (a, b) = two_nodes(lab)
    wait_for(lambda: lab.tool(a_ns, "ping", "10.10.10.2", "--count", "1").returncode == 0, 15, "tunnel up")
    pid = b.proc.pid

    def cycle(i: int) -> None:
        seen = b.peer(a_id)["handshakes"]
        if i % RESTART_EVERY == 0:
            a.stop()
            lab.start_agent(a_ns, a_cfg)
        else:  # cut a's control link (the kernel aborts the connection on both ends)
            a_ns.run("ss", "-K", "dst", "198.18.0.2", "dport", "=", "8443")
        wait_for(lambda: b.peer(a_id)["handshakes"] > seen and b.peer(a_id)["control"] == "up", 30,
                 f"cycle {i}: a's link and keys back at b")

    cycle(1)
    baseline = usage(pid)
    for i in range(2, CYCLES + 1):
        cycle(i)
    final = usage(pid)
    print(f"after cycle 1: {baseline}; after cycle {CYCLES}: {final}")
    assert final["fds"] <= baseline["fds"] + 2, (baseline, final)
    assert final["threads"] <= baseline["threads"] + 2, (baseline, final)
    assert final["rss_kib"] <= baseline["rss_kib"] + 16 * 1024, (baseline, final)
    assert lab.tool(a_ns, "ping", "10.10.10.2", "--count", "3").returncode == 0
