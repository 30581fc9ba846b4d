"""The tunnel over an underlay narrower than 1,500 bytes (attack 35 of docs/threat-model.md):
a node whose own link is 1,280 bytes, and two nodes on 1,500-byte links with a 1,280-byte link
between their routers. Outcomes only: TCP streams cross intact both ways, nothing is counted as
lost on the sending side.

On the code before: the node on the narrow link kept the 1,436-byte overlay MTU of a 1,500-byte
link; the kernel refused each GSO send of its full-size frames (EMSGSIZE) and the agent counted
them as `queue_full`, so a TCP stream from it stalled for good (none of its bulk frames left).
Now the node fits its overlay MTU to the route (1,216 here), and a frame still too big for a path
goes out fragmented by the kernel, through GSO no longer.

A third world has the narrow link in the middle and routers that drop IP fragments, as some
middleboxes do: a frame fragmented by the kernel never arrives. The agents answer the packets too
big for the path with ICMP "fragmentation needed" into their TUN (datapath step 3b), the kernel's
TCP cuts smaller segments, and the streams cross without a fragment. On the code before (which
fragmented them) both streams stalled."""

from __future__ import annotations

import pytest

from tests.integration.agentlab import wait_for, write_config

pytestmark = pytest.mark.privileged

STREAM = 12_000_000  # bytes each way
NARROW = 1280


def _world(lab, narrow_at: str, drop_fragments: bool = False, silent: bool = False):
    """a (198.18.0.1) - r1 - r2 - b (198.18.2.2). `narrow_at`: "b" (b's own link, both ends) or
    "middle" (the r1-r2 link): NARROW bytes there, 1,500 elsewhere. `drop_fragments`: both routers
    drop every IP fragment they would forward. `silent`: the routers send no ICMP "fragmentation
    needed" (filtered on the way out, as on many networks): a packet too big for the narrow link
    that must not be fragmented vanishes without a word (an ICMP black hole)."""
    a_ns, r1, r2, b_ns = lab.netns("a"), lab.netns("r1"), lab.netns("r2"), lab.netns("b")
    lab.veth(a_ns, "198.18.0.1/24", r1, "198.18.0.254/24")
    mid = lab.veth(r1, "198.18.1.1/24", r2, "198.18.1.2/24")
    edge = lab.veth(r2, "198.18.2.254/24", b_ns, "198.18.2.2/24")
    ends, devices = ((r1, r2), mid) if narrow_at == "middle" else ((r2, b_ns), edge)
    for ns, dev in zip(ends, devices, strict=True):
        ns.run("ip", "link", "set", dev, "mtu", str(NARROW))
    for router in (r1, r2):
        router.sysctl("net.ipv4.ip_forward", "1")
        if drop_fragments:
            router.run("nft", "add table ip nofrag; add chain ip nofrag hop { type filter hook forward "
                       "priority 0; }; add rule ip nofrag hop ip frag-off & 0x3fff != 0 counter drop")
        if silent:
            router.run("nft", "add table ip hole; add chain ip hole out { type filter hook output "
                       "priority 0; }; add rule ip hole out icmp type destination-unreachable "
                       "icmp code frag-needed counter drop")
    a_ns.run("ip", "route", "add", "default", "via", "198.18.0.254")
    r1.run("ip", "route", "add", "198.18.2.0/24", "via", "198.18.1.2")
    r2.run("ip", "route", "add", "198.18.0.0/24", "via", "198.18.1.1")
    b_ns.run("ip", "route", "add", "default", "via", "198.18.2.254")
    (_, a_id), (_, b_id) = lab.keygen("a"), lab.keygen("b")
    a_cfg = write_config(lab.tmp / "a.toml",
                         {"private_key": "a/node.key", "overlay_ip": "10.10.10.1/24", "listen_ip": "0.0.0.0",
                          "interface": f"{lab.prefix}t1", "control_socket": str(lab.tmp / "a.sock")},
                         [{"public_key": "b/node.pub", "overlay_ip": "10.10.10.2", "endpoint": "198.18.2.2",
                           "name": "b"}])
    b_cfg = write_config(lab.tmp / "b.toml",
                         {"private_key": "b/node.key", "overlay_ip": "10.10.10.2/24", "listen_ip": "0.0.0.0",
                          "interface": f"{lab.prefix}t2", "control_socket": str(lab.tmp / "b.sock")},
                         [{"public_key": "a/node.pub", "overlay_ip": "10.10.10.1", "name": "a"}])
    a, b = lab.start_agent(a_ns, a_cfg), lab.start_agent(b_ns, b_cfg)
    wait_for(lambda: lab.tool(a_ns, "ping", "10.10.10.2", "--count", "1").returncode == 0, 60, "tunnel up")
    return a_ns, b_ns, a, b, a_id, b_id


def _stream(lab, src_ns, dst_ns, dst: str) -> None:
    sink = lab.tool_bg(dst_ns, "sink", "5005")
    assert sink.stdout.readline().strip() == "listening"
    source = lab.tool_bg(src_ns, "source", dst, "5005", str(STREAM))
    sent, err = source.communicate(timeout=120)
    assert source.returncode == 0, err
    assert sink.communicate(timeout=60)[0].strip() == sent.strip()  # every byte, in order


@pytest.mark.parametrize("narrow_at", ["b", "middle"])
def test_streams_cross_a_path_narrower_than_1500_bytes_both_ways(lab, narrow_at):
    a_ns, b_ns, a, b, a_id, b_id = _world(lab, narrow_at)
    if narrow_at == "middle":
        # a's kernel learns the path's 1,280 bytes from the router's ICMP only for a frame that
        # carries DF: a lone frame, such as the first full-size path MTU probe (a GSO batch
        # leaves without DF, and the router fragments it in silence). The probe's retry then
        # crosses fragmented by a's kernel, so the probes call the path ok.
        wait_for(lambda: (a.peer(b_id)["path_mtu"] or {}).get("state") == "ok", 30, "a's path probed")
    _stream(lab, a_ns, b_ns, "10.10.10.2")
    _stream(lab, b_ns, a_ns, "10.10.10.1")
    a_node, b_node = a.status()["node"], b.status()["node"]
    assert a_node["drops"]["queue_full"] == 0 and b_node["drops"]["queue_full"] == 0
    if narrow_at == "b":
        # b's frames fit its own link: 1,280 - 20 (IP) - 8 (UDP) - 36 (frame); a keeps 1,436
        assert (a_node["mtu"], b_node["mtu"]) == (1436, NARROW - 20 - 8 - 36)
    else:
        # neither node's link is narrow: both keep 1,436, and a's full-size frames to b (the
        # kernel knows the path's 1,280 bytes, so it refused their GSO sends) went out one by
        # one, fragmented by the kernel
        assert (a_node["mtu"], b_node["mtu"]) == (1436, 1436)
        assert a_node["udp"]["narrow_paths"] == 1 and a_node["udp"]["gso"] is True
    assert a.peer(b_id)["path"] == b.peer(a_id)["path"] == "direct"


def test_streams_cross_a_narrow_middle_link_whose_routers_drop_fragments(lab):
    a_ns, b_ns, a, b, a_id, b_id = _world(lab, "middle", drop_fragments=True)
    _stream(lab, a_ns, b_ns, "10.10.10.2")
    _stream(lab, b_ns, a_ns, "10.10.10.1")
    a_node, b_node = a.status()["node"], b.status()["node"]
    # a, the first sender, learned the path's 1,280 bytes and answered its TCP's big segments;
    # b's stream then needed no answer: a's kernel, which keeps the smaller path MTU for b's
    # overlay address, offered b the smaller MSS in its SYN-ACK
    assert a_node["drops"]["too_big"] > 0
    assert a_node["drops"]["queue_full"] == 0 and b_node["drops"]["queue_full"] == 0
    assert a.peer(b_id)["path"] == b.peer(a_id)["path"] == "direct"


def test_streams_cross_a_path_that_drops_big_packets_without_a_word(lab):
    """An ICMP black hole between two nodes on 1,500-byte links: a 1,280-byte link between their
    routers, which send no ICMP and drop fragments. Big packets vanish, no router says why, so
    neither kernel ever learns the path MTU. (Without the fragment filter it is a black hole for
    lone frames only: a GSO send leaves without DF, so a router fragments its big datagrams,
    while a single datagram carries DF and vanishes.) The agents find it with probes of
    their own (paths/plpmtu.py: a full-size probe, then a ladder of smaller ones) and answer the
    packets too big for it with ICMP into their TUN, as for a path the kernel knows (step 3b).
    On the code before, the tunnel never came up: the control link's TCP sent full-size
    segments too, which vanished, so the handshake never completed (the agent's TCP segments
    are 1,200 bytes now, tunnel/mss.py); with that fixed alone, both streams stalled."""
    a_ns, b_ns, a, b, a_id, b_id = _world(lab, "middle", drop_fragments=True, silent=True)
    for here, there in ((a, b_id), (b, a_id)):
        # each side measures its own way; the largest packet that fits: a 1,280-byte underlay
        # datagram less 20 + 8 + 36 bytes
        probed = wait_for(lambda here=here, there=there: here.peer(there)["path_mtu"]["state"] == "narrow"
                          and here.peer(there)["path_mtu"], 30, "the path measured")
        assert probed["fits"] == NARROW - 20 - 8 - 36
    # packets that may be fragmented (no DF: ping -M dont, and the kernel's echo replies) are
    # cut by the agents into fragments that fit, as a router would; on the code before their
    # frames vanished in the hole. (First: once an ICMP "too big" of ours taught a kernel the
    # path MTU to an overlay address, that kernel cuts such packets itself.)
    ping = a_ns.run("ping", "-M", "dont", "-s", "1372", "-c", "3", "-W", "5", "10.10.10.2", check=False)
    assert ping.returncode == 0, ping.stdout + ping.stderr
    assert a.status()["node"]["fragmented"] >= 3 and b.status()["node"]["fragmented"] >= 3
    _stream(lab, a_ns, b_ns, "10.10.10.2")
    _stream(lab, b_ns, a_ns, "10.10.10.1")
    a_node, b_node = a.status()["node"], b.status()["node"]
    assert (a_node["mtu"], b_node["mtu"]) == (1436, 1436)  # nothing narrow the kernel could see
    assert a_node["drops"]["too_big"] > 0
    assert a.peer(b_id)["path"] == b.peer(a_id)["path"] == "direct"
