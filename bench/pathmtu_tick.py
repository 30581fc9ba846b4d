"""What path MTU probing (nodeagent/pathmtu.py) costs a node with many direct peers, in process
(no namespaces, no root).

    .venv/bin/python bench/pathmtu_tick.py [--peers 100,10000] [--rounds 3]

A hub holds keys with every node, and each is a direct path it probes. This builds that many
peers with keys and a known endpoint (real nodeagent Peer objects and a real loopback UdpSocket;
the probes are handed to a data path that only counts them, since what is measured is the
bookkeeping, not the sending) and times `PathMtuProbes.tick` in steady state: every peer's path
already checked `ok`, which is where a hub spends nearly all of its time (a check takes one probe
per peer every 10 minutes). Also prints the probe traffic of that steady state. Best of the
rounds (least disturbed by other processes).
"""

from __future__ import annotations

import argparse
import ipaddress
import secrets
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nodeagent.config import PeerConfig
from nodeagent.pathmtu import TICK_S, PathMtuProbes
from nodeagent.paths.plpmtu import RECHECK_S
from nodeagent.tunnel.datapath import Peer
from nodeagent.tunnel.udp import UdpSocket

MTU = 1380


class CountingDataPath:
    def __init__(self) -> None:
        self.sent = 0
        self.bytes = 0

    def send_disco(self, peer, ftype, payload, *, dest=None, via=None) -> int:
        self.sent += 1
        self.bytes += len(payload) + 36 + 28  # frame header and tag, IPv4 and UDP headers
        return len(payload) + 36


class Keyed:
    current = object()


def peers(n: int) -> list[Peer]:
    out = []
    for i in range(n):
        cfg = PeerConfig(b"", secrets.token_hex(20), ipaddress.ip_address(0x0A0A0000 + i + 2), f"n{i}")
        p = Peer(cfg, relay_rate=1000)
        p.endpoint = (f"198.18.{i // 250}.{i % 250 + 1}", 9443)
        p.ring = Keyed()  # keys: what makes a peer worth probing
        out.append(p)
    return out


def measure(n: int, udp: UdpSocket) -> tuple[float, float]:
    dp = CountingDataPath()
    now = 0.0
    # a hub: every path carries relayed frames (relays() is None)
    probes = PathMtuProbes(peers(n), dp, udp, mtu=MTU, clock=lambda: now, relays=lambda: None)
    answered = 0
    while answered < n:  # first checks, STARTS_PER_TICK per tick, each answered at once: ok
        probes.tick(now)
        entries = list(probes.probed.values())
        for entry in entries[answered:]:
            for seq in list(entry.search.pending):
                entry.search.on_ack(seq, now)
        answered = len(entries)
        now += TICK_S
    assert all(e.search.result == "ok" for e in probes.probed.values())
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(20):
            now += TICK_S
            probes.tick(now)
        best = min(best, (time.perf_counter() - t0) / 20)
    dp.sent = dp.bytes = 0
    for entry in probes.probed.values():  # a whole recheck period's worth of probes
        entry.search.next_at = now
    probes.tick(now + TICK_S)
    return best, dp.bytes / RECHECK_S


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--peers", default="100,10000")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    udp = UdpSocket.open("127.0.0.1", 0)
    try:
        for n in (int(x) for x in args.peers.split(",")):
            results = [measure(n, udp) for _ in range(args.rounds)]
            tick = min(r[0] for r in results)
            print(f"{n:>6} direct peers: tick {tick * 1e3:.3f} ms every {TICK_S} s "
                  f"({tick / TICK_S * 100:.2f} % of one core); probes {results[0][1]:.0f} B/s")
    finally:
        udp.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
