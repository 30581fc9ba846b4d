"""The TCP control port refuses cheaply: stalled handshakes, strangers, connection floods, and
HELLOs that claim a peer's id without being made by it (docs/threat-model.md, attacks 12, 13, 14,
25 and 35). Real agents in namespaces; the attacker is a third namespace on the same segment with
several addresses of its own."""

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.agentlab import two_nodes, wait_for, write_config

pytestmark = pytest.mark.privileged

PROBE = str(Path(__file__).with_name("control_probe.py"))
EVIL = [f"198.18.0.{i}" for i in range(11, 20)]  # nine sources


@pytest.fixture
def node(lab):
    a_ns, _b_ns, _a_id, b_id, *_rest = two_nodes(lab)
    wait_for(lambda: lab.tool(a_ns, "ping", "10.10.10.2", "--count", "1").returncode == 0, 15, "tunnel up")
    return a_ns, b_id


def probe(ns, *args):
    return ns.run(sys.executable, PROBE, *args, timeout=60).stdout.strip()


def test_a_silent_connection_is_cut_by_the_handshake_deadline(node):
    a_ns, _ = node
    assert probe(a_ns, "stall", "198.18.0.2", "8443") == "closed True after 0 bytes"


def test_a_hello_from_an_unpinned_key_is_refused_without_an_answer(node):
    a_ns, b_id = node
    assert probe(a_ns, "stranger", "198.18.0.2", "8443", b_id) == "closed True after 0 bytes"


@pytest.fixture
def trio(lab):
    """a (198.18.0.1) dials b (198.18.0.2); evil (198.18.0.11-19) shares their segment. b answers
    a's handshakes only (it has no endpoint for a), and rekeys every 2 s."""
    a_ns, b_ns, evil = lab.netns("a"), lab.netns("b"), lab.netns("evil")
    seg = lab.switch("sw")
    seg.join(a_ns, "198.18.0.1/24")
    seg.join(b_ns, "198.18.0.2/24")
    dev = seg.join(evil, EVIL[0] + "/24")
    for addr in EVIL[1:]:
        evil.run("ip", "addr", "add", addr + "/24", "dev", dev)
    (a_dir, a_id), (b_dir, _b_id) = lab.keygen("a"), lab.keygen("b")
    a_cfg = write_config(lab.tmp / "a.toml",
                         {"private_key": "a/node.key", "overlay_ip": "10.10.10.1/24", "rekey_after_s": 2,
                          "interface": f"{lab.prefix}t1", "control_socket": str(lab.tmp / "a.sock")},
                         [{"public_key": "b/node.pub", "overlay_ip": "10.10.10.2", "endpoint": "198.18.0.2",
                           "name": "b"}])
    b_cfg = write_config(lab.tmp / "b.toml",
                         {"private_key": "b/node.key", "overlay_ip": "10.10.10.2/24", "rekey_after_s": 2,
                          "interface": f"{lab.prefix}t2", "control_socket": str(lab.tmp / "b.sock")},
                         [{"public_key": "a/node.pub", "overlay_ip": "10.10.10.1", "name": "a"}])
    a, b = lab.start_agent(a_ns, a_cfg), lab.start_agent(b_ns, b_cfg)
    wait_for(lambda: lab.tool(a_ns, "ping", "10.10.10.2", "--count", "1").returncode == 0, 15, "tunnel up")
    return a_ns, b_ns, evil, a, b, a_cfg, a_dir, b_dir, a_id


def link_up(b, a_id) -> bool:
    return b.peer(a_id)["control"] == "up"


def test_idle_connections_renewed_at_once_cannot_lock_a_peer_out(trio, lab):
    """Attack 35 (and issue 9, item 4): nine sources each keep idle connections open, renewing every
    one the agent cuts; the genuine peer, restarted, is let in all the same, and one source never
    holds more than its share."""
    a_ns, _b_ns, evil, a, b, a_cfg, _a_dir, _b_dir, a_id = trio
    holder = lab.spawn(evil, sys.executable, PROBE, "hold", "198.18.0.2", "8443", "4", "25", ",".join(EVIL),
                       stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "ready"
    a.stop()
    wait_for(lambda: not link_up(b, a_id), 40, "b sees a's link go down")
    lab.start_agent(a_ns, a_cfg)
    wait_for(lambda: link_up(b, a_id), 15, "a's link back while strangers hold the door")
    assert lab.tool(a_ns, "ping", "10.10.10.2", "--count", "3").returncode == 0
    out, _ = holder.communicate(timeout=60)
    most, opened = (int(x) for x in out.split()[1::2])
    assert most <= 4 and opened > 4 * len(EVIL)  # the agent did cut and the strangers did renew


def test_a_flood_of_hellos_claiming_a_peer_gets_no_answer_and_the_peer_still_gets_in_and_rekeys(trio, lab):
    """Attacks 12, 13, 14 with real agents: nine sources send b HELLOs claiming a's peer id (its public
    key is public), stamped a minute ahead so that they are always newer than a's own (they reach
    the signature check), for 20 s. Meanwhile a restarts (a fresh handshake through the door) and the pair
    rekeys inside its link every 2 s. Nothing comes back to the strangers, and every signature and
    encapsulation b made went into a handshake b completed with a."""
    a_ns, _b_ns, evil, a, b, a_cfg, a_dir, b_dir, a_id = trio

    def snapshot() -> tuple[dict, int, int]:
        """b's crypto counters, its handshakes with a and the HELLOs its door refused for a bad
        signature, from one status document."""
        doc = b.status()
        peer = next(p for p in doc["peers"] if p["peer_id"] == a_id)
        hs = doc["node"]["handshake"]
        return hs["crypto"], peer["handshakes"], hs["door"]["refused"].get("bad_signature", 0)

    def between_handshakes() -> tuple[dict, int, int]:
        """A snapshot with no handshake in flight. b signs and encapsulates when it answers a's
        HELLO, and counts the handshake only when a's CONFIRM arrives milliseconds later: a
        snapshot inside that window has one signature more than handshakes. Rekeys come every
        2 s; a snapshot unchanged half a second later was taken between two of them."""
        def settled():
            first = snapshot()
            time.sleep(0.5)
            return first if snapshot() == first else None
        return wait_for(settled, 30, "a moment between two of b's handshakes", interval=0)

    def stop_a_between_handshakes() -> None:
        """Stop a just after a rekey completed, not while b's answer to its next HELLO is on
        the way (b would have spent on a handshake that a's exit cut short)."""
        done = snapshot()[1]
        wait_for(lambda: snapshot()[1] > done, 20, "a rekey", interval=0.05)
        a.stop()

    crypto_before, handshakes_before, forged_before = between_handshakes()
    spoofer = lab.spawn(evil, sys.executable, PROBE, "spoof", "198.18.0.2", "8443", "20",
                        str(a_dir / "node.pub"), str(b_dir / "node.pub"), ",".join(EVIL),
                        stdout=subprocess.PIPE, text=True)
    assert spoofer.stdout.readline().strip() == "ready"
    stop_a_between_handshakes()
    wait_for(lambda: not link_up(b, a_id), 40, "b sees a's link go down")
    lab.start_agent(a_ns, a_cfg)
    wait_for(lambda: link_up(b, a_id), 15, "a's link back during the flood")
    out, _ = spoofer.communicate(timeout=90)
    sent, answered = (int(x) for x in out.split()[1::2])
    crypto_after, handshakes_after, forged_after = between_handshakes()
    assert sent >= 50 and answered == 0
    assert forged_after - forged_before >= 50  # they reached the signature check, and failed it
    handshakes = handshakes_after - handshakes_before
    spent = {k: crypto_after[k] - crypto_before[k] for k in ("signatures", "encapsulations")}
    assert handshakes >= 5  # the door handshake after the restart, and rekeys every 2 s
    assert spent == {"signatures": handshakes, "encapsulations": handshakes}
    assert lab.tool(a_ns, "ping", "10.10.10.2", "--count", "3").returncode == 0

