"""What the agent itself spends on one lone ping-sized packet (issue 11: ping RTT), in process.

    .venv/bin/python bench/lone_packet.py [--count 3000] [--idle-ms MS] [--results DIR]

Two data paths (nodeagent/tunnel/datapath.py) on loopback, with socketpairs standing in for the
TUN devices (virtio_net_hdr on, as the agent runs): a 84-byte ICMP echo (what `ping` sends) is put
on A's "TUN", then `A.on_tun()` (read, route, seal, sendto) and `B.on_udp()` (recvmsg, parse,
open, replay window, anti-spoofing, TUN write) are timed one call at each, `count` times. Also
timed: a drain that finds nothing (the EAGAIN read that ends every drain), and one round of
the event loop that dispatches a reader callback (asyncio's selector loop, and uvloop's when it
is installed) with nothing else to do. Everything here is warm (the same packet, back to back)
unless `--idle-ms` is given: then the process sleeps that long before each packet, as an agent
does between two pings (10 ms), and the same calls run from cold caches (bench/cold_ops.py
shows what that does to single steps).

Prints median / p10 / p90 in microseconds and writes DIR/lone-packet-<stamp>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import secrets
import socket
import struct
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from nodeagent.config import PeerConfig  # noqa: E402
from nodeagent.protocol.keys import Keypair  # noqa: E402
from nodeagent.tunnel.datapath import DataPath, Peer  # noqa: E402
from nodeagent.tunnel.gro import VNET_HDR_SIZE  # noqa: E402
from nodeagent.tunnel.udp import UdpSocket  # noqa: E402

PLAIN = bytes(VNET_HDR_SIZE)


def icmp_echo(src: str, dst: str) -> bytes:
    payload = b"\x08\x00" + bytes(62)  # type 8 (echo request), 64 bytes as ping sends them
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 1, 0, 64, 1, 0,
                       ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed) + payload


class Side:
    def __init__(self, overlay: str) -> None:
        self.overlay = overlay
        self.id = secrets.token_hex(20)
        self.udp = UdpSocket.open("127.0.0.1", 0)
        self.app, self.tun = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.tun.setblocking(False)
        self.app.setblocking(False)
        self.peer: Peer | None = None
        self.dp: DataPath | None = None

    def close(self) -> None:
        for s in (self.udp, self.app, self.tun):
            s.close()


def build() -> tuple[Side, Side]:
    a, b = Side("10.10.10.1"), Side("10.10.10.2")
    for me, other in ((a, b), (b, a)):
        me.peer = Peer(PeerConfig(b"", other.id, ipaddress.ip_address(other.overlay), "x"), relay_rate=1000)
        me.dp = DataPath(me.tun.fileno(), me.udp, [me.peer], is_hub=False, on_handshake_needed=lambda p: None,
                         vnet=True)
    now = time.monotonic()
    k1, k2 = os.urandom(32), os.urandom(32)
    kpa = Keypair(k1, k2, local_index=1, remote_index=2, created_at=now, initiator=True)
    kpb = Keypair(k2, k1, local_index=2, remote_index=1, created_at=now, initiator=False)
    a.peer.endpoint, b.peer.endpoint = ("127.0.0.1", b.udp.port), ("127.0.0.1", a.udp.port)
    b.dp.install(b.peer, kpb, confirmed=True)
    a.dp.install(a.peer, kpa, confirmed=True)
    return a, b


def stats(ns: list[int]) -> dict:
    xs = sorted(ns)
    n = len(xs)
    return {"n": n, "median_us": xs[n // 2] / 1000, "p10_us": xs[n // 10] / 1000,
            "p90_us": xs[9 * n // 10] / 1000}


def loop_round_us(factory, rounds: int = 100_000) -> float:
    """Microseconds per loop round that dispatches one always-ready reader callback."""
    rx, tx = socket.socketpair()
    rx.setblocking(False)
    tx.send(b"x")  # never read: the fd stays readable, the callback runs every round
    count = 0

    async def main() -> float:
        loop = asyncio.get_running_loop()
        done = asyncio.Event()

        def ready() -> None:
            nonlocal count
            count += 1
            if count >= rounds:
                loop.remove_reader(rx.fileno())
                done.set()

        t0 = time.perf_counter()
        loop.add_reader(rx.fileno(), ready)
        await done.wait()
        return time.perf_counter() - t0

    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(main()) / count * 1e6
    finally:
        rx.close()
        tx.close()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=3000)
    ap.add_argument("--results", default=str(HERE / "results"))
    ap.add_argument("--idle-ms", type=float, default=0.0,
                    help="sleep this long before each packet (an agent woken after idling: cold caches)")
    args = ap.parse_args()
    if args.idle_ms < 0 or args.count < 1:
        ap.error("--idle-ms cannot be negative and --count must be at least 1")
    a, b = build()
    packet = PLAIN + icmp_echo("10.10.10.1", "10.10.10.2")
    clock = time.perf_counter_ns
    tun, udp, empty_tun, empty_udp = [], [], [], []
    try:
        for _ in range(args.count):
            if args.idle_ms:
                time.sleep(args.idle_ms / 1000)
            a.app.send(packet)
            t0 = clock()
            a.dp.on_tun()
            t1 = clock()
            b.dp.on_udp()
            t2 = clock()
            if b.app.recv(2048) != packet:
                raise SystemExit("the packet did not cross")
            t3 = clock()
            a.dp.on_tun()
            t4 = clock()
            b.dp.on_udp()
            t5 = clock()
            tun.append(t1 - t0)
            udp.append(t2 - t1)
            empty_tun.append(t4 - t3)
            empty_udp.append(t5 - t4)
    finally:
        a.close()
        b.close()
    rows = {
        "on_tun: read, route, seal, sendto (one packet)": stats(tun),
        "on_udp: recvmsg, open, checks, TUN write (one packet)": stats(udp),
        "on_tun finding nothing (EAGAIN)": stats(empty_tun),
        "on_udp finding nothing (EAGAIN)": stats(empty_udp),
    }
    loops = {"asyncio loop round (one reader callback)": loop_round_us(asyncio.new_event_loop)}
    try:
        import uvloop

        loops["uvloop loop round (one reader callback)"] = loop_round_us(uvloop.new_event_loop)
    except ImportError:
        pass
    load = os.getloadavg()[0]
    idle = f", {args.idle_ms:g} ms idle before each" if args.idle_ms else ", back to back"
    print(f"load {load:.2f}; {args.count} packets{idle}\n")
    print("| step | median µs | p10 µs | p90 µs |\n| --- | ---: | ---: | ---: |")
    for name, s in rows.items():
        print(f"| {name} | {s['median_us']:.1f} | {s['p10_us']:.1f} | {s['p90_us']:.1f} |")
    for name, us in loops.items():
        print(f"| {name} | {us:.2f} | | |")
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    record = {"load": load, "idle_ms": args.idle_ms, "rows": rows, "loops_us": loops}
    (out / f"lone-packet-{stamp}.json").write_text(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
