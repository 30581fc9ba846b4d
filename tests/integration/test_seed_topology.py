"""The demo's 4-node mesh (docs/operations.md#the-demo): `uk` public hub, `belgium`, `starlink`, `mac`.

Underlay: two L2 segments. Segment 1 holds uk, belgium and mac; segment 2 holds uk, starlink
and mac. Namespaces do not forward, so belgium and starlink have no underlay path to each
other at all: their traffic must go through uk, which relays sealed frames it cannot open.
"""

import itertools

import pytest

from tests.integration.agentlab import wait_for, write_config

pytestmark = pytest.mark.privileged

OVERLAY = {"uk": "10.10.10.3", "belgium": "10.10.10.5", "starlink": "10.10.10.6", "mac": "10.10.10.8"}


@pytest.fixture
def seed(lab):
    ns = {name: lab.netns(name[:4]) for name in OVERLAY}
    segments = {"sw1": {"uk": "198.18.1.1/24", "belgium": "198.18.1.2/24", "mac": "198.18.1.4/24"},
                "sw2": {"uk": "198.18.2.1/24", "starlink": "198.18.2.3/24", "mac": "198.18.2.4/24"}}
    for role, members in segments.items():
        segment = lab.switch(role)
        for name, addr in members.items():
            segment.join(ns[name], addr)
    ids = {name: lab.keygen(name)[1] for name in OVERLAY}
    endpoints = {  # how each node reaches the others directly (None: only through uk)
        "uk": {"belgium": "198.18.1.2", "starlink": "198.18.2.3", "mac": "198.18.1.4"},
        "belgium": {"uk": "198.18.1.1", "mac": "198.18.1.4", "starlink": None},
        "starlink": {"uk": "198.18.2.1", "mac": "198.18.2.4", "belgium": None},
        "mac": {"uk": "198.18.1.1", "belgium": "198.18.1.2", "starlink": "198.18.2.3"},
    }
    agents = {}
    for i, (name, others) in enumerate(endpoints.items()):
        peers = []
        for other, ep in others.items():
            p = {"public_key": f"{other}/node.pub", "overlay_ip": OVERLAY[other], "name": other}
            if ep is None:
                p["via"] = ids["uk"]
            else:
                p["endpoint"] = ep
            peers.append(p)
        node = {"private_key": f"{name}/node.key", "overlay_ip": OVERLAY[name] + "/24", "name": name,
                "interface": f"{lab.prefix}t{i}", "control_socket": str(lab.tmp / f"{name}.sock"),
                "public": name == "uk", "keepalive_s": 1}
        cfg = write_config(lab.tmp / f"{name}.toml", node, peers)
        agents[name] = lab.start_agent(ns[name], cfg)
    return ns, ids, agents


def test_belgium_and_starlink_cannot_reach_each_other_on_the_underlay(seed, lab):
    ns, _ids, _agents = seed
    assert lab.tool(ns["belgium"], "ping", "198.18.2.3", "--count", "1", "--timeout", "0.5").returncode != 0


def test_every_pair_pings_and_belgium_starlink_goes_through_uk_unread(seed, lab):
    ns, ids, agents = seed
    for a, b in itertools.permutations(OVERLAY, 2):
        wait_for(lambda a=a, b=b: lab.tool(ns[a], "ping", OVERLAY[b], "--count", "1").returncode == 0,
                 20, f"{a} -> {b} ping")
    assert agents["belgium"].peer(ids["starlink"])["path"] == f"relay:{ids['uk']}"
    assert agents["starlink"].peer(ids["belgium"])["path"] == f"relay:{ids['uk']}"
    assert agents["mac"].peer(ids["starlink"])["path"] == "direct"
    # keepalive echoes measure the RTT end to end, also across the hub
    wait_for(lambda: agents["belgium"].peer(ids["starlink"])["rtt_ms"] is not None, 10, "relayed rtt")

    uk_before = agents["uk"].status()
    sink = lab.tool_bg(ns["starlink"], "sink", "5002")
    assert sink.stdout.readline().strip() == "listening"
    sent = lab.tool(ns["belgium"], "source", OVERLAY["starlink"], "5002", str(2_000_000))
    assert sent.returncode == 0, sent.stderr
    assert sink.communicate(timeout=60)[0].strip() == sent.stdout.strip()

    uk = agents["uk"].status()
    forwarded = uk["node"]["relay"]["forwarded_bytes"] - uk_before["node"]["relay"]["forwarded_bytes"]
    assert forwarded > 2_000_000  # every byte of the stream crossed the hub...
    by_id = {p["peer_id"]: p for p in uk["peers"]}
    before = {p["peer_id"]: p for p in uk_before["peers"]}
    for who in ("belgium", "starlink"):
        decrypted = by_id[ids[who]]["rx_bytes"] - before[ids[who]]["rx_bytes"]
        assert decrypted < 50_000  # ...but the hub decrypted only keepalives addressed to itself
    assert by_id[ids["belgium"]]["relayed_frames"] > 1000
