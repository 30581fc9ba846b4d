"""The tunnel over a link that delays, reorders and drops (attack 36 of docs/threat-model.md).

This kernel has no netem: lab/impair.py relays every frame between the two agents' namespaces
through a middle namespace, 40 ms later each way, holding 5 % of the frames back 15 ms (so the
frames behind overtake them) and dropping 1 %. Outcomes only, never times: the tunnel comes up
and rekeys (handshakes ride TCP across the same link, and retry on their own), a TCP stream that
runs until the keys changed under it at least once crosses intact, the receiver's replay window
takes the reordered frames (none is a replay), and its lost_frames counts what the relay dropped
of the data frames, not what it reordered.

Without the defences it checks, it fails: with a replay check that refuses any counter below the
highest one seen (no window), the reordered frames are counted as replays; with a loss counter
that does not give a gap back when its late frame arrives, lost_frames is about dropped + held.
"""

import pytest

from lab.impair import impaired_link
from tests.integration.agentlab import wait_for, write_config

pytestmark = pytest.mark.privileged

STREAM = 6_000_000  # bytes the stream carries at least
STREAM_CAP = 4_000_000_000  # bytes it would stop at (the stop file ends it long before)


def test_the_tunnel_carries_a_stream_intact_over_delay_reordering_and_loss(lab):
    a_ns, b_ns = lab.netns("a"), lab.netns("b")
    link = impaired_link(lab, a_ns, "198.18.0.1/24", b_ns, "198.18.0.2/24", delay_ms=40, reorder=0.05,
                         reorder_hold_ms=15, loss=0.01, seed=7)
    (_, a_id), (_, b_id) = lab.keygen("a"), lab.keygen("b")
    node = {"listen_ip": "0.0.0.0", "rekey_after_s": 4}
    a_cfg = write_config(lab.tmp / "a.toml",
                         {"private_key": "a/node.key", "overlay_ip": "10.10.10.1/24", **node,
                          "interface": f"{lab.prefix}t1", "control_socket": str(lab.tmp / "a.sock")},
                         [{"public_key": "b/node.pub", "overlay_ip": "10.10.10.2", "endpoint": "198.18.0.2",
                           "name": "b"}])
    b_cfg = write_config(lab.tmp / "b.toml",
                         {"private_key": "b/node.key", "overlay_ip": "10.10.10.2/24", **node,
                          "interface": f"{lab.prefix}t2", "control_socket": str(lab.tmp / "b.sock")},
                         [{"public_key": "a/node.pub", "overlay_ip": "10.10.10.1", "name": "a"}])
    a, b = lab.start_agent(a_ns, a_cfg), lab.start_agent(b_ns, b_cfg)
    wait_for(lambda: lab.tool(a_ns, "ping", "10.10.10.2", "--count", "1").returncode == 0, 60, "tunnel up")

    b_before, relay_before = b.peer(a_id), link.stats()["left_to_right"]
    sink = lab.tool_bg(b_ns, "sink", "5005")
    assert sink.stdout.readline().strip() == "listening"
    stop = lab.tmp / "stop-stream"
    source = lab.tool_bg(a_ns, "source", "10.10.10.2", "5005", str(STREAM_CAP), "--stop-file", str(stop))

    def rekeyed_under_the_stream() -> bool:
        now = b.peer(a_id)
        return now["handshakes"] > b_before["handshakes"] and now["rx_bytes"] - b_before["rx_bytes"] >= STREAM

    # the stream runs until b took a new handshake while it flowed, and carried STREAM bytes
    wait_for(rekeyed_under_the_stream, 180, "a rekey under a stream of at least 6 MB", interval=0.5)
    stop.touch()
    sent, err = source.communicate(timeout=120)
    assert source.returncode == 0, err
    assert sink.communicate(timeout=120)[0].strip() == sent.strip()  # every byte, in order

    def drained() -> bool:  # every frame the relay read a -> b was sent on or dropped
        c = link.stats()["left_to_right"]
        return c["sent"] + c["dropped"] + c["send_errors"] == c["frames"]

    wait_for(drained, 30, "the relay's held frames to land", interval=0.05)
    b_after, relay = b.peer(a_id), link.stats()["left_to_right"]

    # the link really was impaired, in the data path too (a -> b: the stream's direction)
    held = relay["data_held"] - relay_before["data_held"]
    dropped = relay["data_dropped"] - relay_before["data_dropped"]
    frames = relay["data_frames"] - relay_before["data_frames"]
    assert frames > 3000 and held > 0.02 * frames and dropped > 0, relay
    assert relay["send_errors"] == 0 and link.stats()["right_to_left"]["send_errors"] == 0
    # the receiver took every reordered frame: none counted as a replay or a bad frame
    assert b_after["replayed_frames"] == b_before["replayed_frames"] == 0
    assert b_after["bad_frames"] == b_before["bad_frames"] == 0
    # lost_frames follows what was dropped: reordered frames that arrive late are not lost (had
    # they been counted, lost would be about `held`, several times `dropped`)
    lost = b_after["lost_frames"] - b_before["lost_frames"]
    assert dropped // 2 <= lost <= dropped, (lost, dropped, held)
    # handshakes kept completing across the impaired link (a rekey every 4 s, over TCP)
    assert b_after["handshakes"] > b_before["handshakes"] and a.peer(b_id)["handshakes"] >= 2
    assert b.status()["node"]["drops"]["unknown_session"] == 0
