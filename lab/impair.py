"""An impaired link: delay, reordering and loss between two namespaces, without netem.

This kernel has no netem qdisc, so the impairment is a small userspace L2 relay: a middle
namespace holds one veth towards each side, and a process in it reads every Ethernet frame from
one (an AF_PACKET socket) and writes it to the other after a scheduled delay. Per frame, with the
given probabilities, it drops it (loss) or holds it `reorder_hold_ms` longer so that frames
behind it overtake it (reordering). Both sides share one subnet; ARP crosses like anything else.

    with Lab() as lab:
        a, b = lab.netns("a"), lab.netns("b")
        link = impaired_link(lab, a, "198.18.0.1/24", b, "198.18.0.2/24",
                             delay_ms=40, reorder=0.05, loss=0.01)
        ...
        link.stats()   # what the relay did, per direction: frames, dropped, held back; and the
                       # same for the data-port frames (UDP 9443) alone

Lab contract (lab/__init__.py): the middle namespace is `<prefix>-<role>` and the veths are named
by the lab, so teardown removes them with the namespaces; the relay is a lab process, ended at
teardown. Offloads (TSO, GSO, GRO) are switched off on all four veth ends with ethtool, so every
frame the relay reads fits the MTU of the side it writes to.

Run as a program (inside the middle namespace; `impaired_link` does this):

    python lab/impair.py --left DEV --right DEV --delay-ms 40 --reorder 0.05 --loss 0.01 \
        [--jitter-ms 0] [--reorder-hold-ms 10] [--seed 1] --stats FILE
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import random
import select
import signal
import socket
import struct
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a program: the lab is not needed, only the relay below
    Lab = Netns = None
else:
    from lab import links
    from lab.cmd import sh
    from lab.core import Lab
    from lab.netns import Netns

ETH_P_ALL = 0x0003
DATA_PORT = 9443  # the agents' UDP data port: counted on its own
_DIRECTIONS = ("left_to_right", "right_to_left")


# --------------------------------------------------------------------------- the relay (program)


def _is_data(frame: bytes) -> bool:
    """An IPv4 UDP datagram to or from the data port (fragments after the first excluded)."""
    if len(frame) < 14 + 20 + 8 or frame[12:14] != b"\x08\x00":
        return False
    ihl = (frame[14] & 0x0F) * 4
    if frame[23] != 17 or struct.unpack_from("!H", frame, 20)[0] & 0x1FFF:
        return False
    sport, dport = struct.unpack_from("!HH", frame, 14 + ihl)
    return DATA_PORT in (sport, dport)


def _counters() -> dict:
    return {"frames": 0, "dropped": 0, "held": 0, "sent": 0, "send_errors": 0,
            "data_frames": 0, "data_dropped": 0, "data_held": 0}


def relay(args: argparse.Namespace) -> None:
    rnd = random.Random(args.seed)
    socks = []
    for dev in (args.left, args.right):
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        s.bind((dev, ETH_P_ALL))
        s.setblocking(False)
        socks.append(s)
    stats = {d: _counters() for d in _DIRECTIONS}
    queue: list[tuple[float, int, int, bytes]] = []  # (due, sequence, output socket index, frame)
    seq = 0
    stop = False

    def on_term(*_):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    stats_path = Path(args.stats)
    written = 0.0

    def write_stats() -> None:
        tmp = stats_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(stats))
        os.replace(tmp, stats_path)

    write_stats()
    while not stop:
        now = time.monotonic()
        timeout = max(0.0, min(0.25, queue[0][0] - now)) if queue else 0.25
        try:
            readable, _, _ = select.select(socks, [], [], timeout)
        except InterruptedError:
            continue
        now = time.monotonic()
        for i, s in enumerate(socks):
            if s not in readable:
                continue
            while True:
                try:
                    frame, addr = s.recvfrom(65536)
                except (BlockingIOError, InterruptedError):
                    break
                if addr[2] == socket.PACKET_OUTGOING:  # our own writes to this device
                    continue
                c = stats[_DIRECTIONS[i]]
                data = _is_data(frame)
                c["frames"] += 1
                c["data_frames"] += data
                if rnd.random() < args.loss:
                    c["dropped"] += 1
                    c["data_dropped"] += data
                    continue
                due = now + (args.delay_ms + rnd.uniform(0, args.jitter_ms)) / 1000
                if rnd.random() < args.reorder:
                    due += args.reorder_hold_ms / 1000
                    c["held"] += 1
                    c["data_held"] += data
                seq += 1
                heapq.heappush(queue, (due, seq, 1 - i, frame))
        while queue and queue[0][0] <= now:
            _, _, out, frame = heapq.heappop(queue)
            c = stats[_DIRECTIONS[1 - out]]
            try:
                socks[out].send(frame)
                c["sent"] += 1
            except OSError:
                c["send_errors"] += 1
        if now - written >= 0.25:
            write_stats()
            written = now
    write_stats()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="lab/impair.py",
                                description="delay, reorder and drop frames between two devices")
    p.add_argument("--left", required=True)
    p.add_argument("--right", required=True)
    p.add_argument("--delay-ms", type=float, default=0.0)
    p.add_argument("--jitter-ms", type=float, default=0.0)
    p.add_argument("--reorder", type=float, default=0.0, help="probability a frame is held back")
    p.add_argument("--reorder-hold-ms", type=float, default=10.0)
    p.add_argument("--loss", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--stats", required=True, help="JSON file the counters are written to")
    relay(p.parse_args(argv))


# --------------------------------------------------------------------------- the lab side


@dataclass
class ImpairedLink:
    middle: Netns  # the namespace the relay runs in
    dev_a: str  # the device in a
    dev_b: str  # the device in b
    stats_file: Path

    def stats(self) -> dict:
        """The relay's counters, per direction ("left_to_right" is a to b)."""
        return json.loads(self.stats_file.read_text())


def _no_offloads(ns: Netns, dev: str) -> None:
    sh("ip", "netns", "exec", ns.name, "ethtool", "-K", dev, "tso", "off", "gso", "off", "gro", "off",
       "tx-checksumming", "off")


def impaired_link(lab: Lab, a: Netns, addr_a: str, b: Netns, addr_b: str, *, delay_ms: float = 0.0,
                  jitter_ms: float = 0.0, reorder: float = 0.0, reorder_hold_ms: float = 10.0,
                  loss: float = 0.0, seed: int = 1, role: str = "impair") -> ImpairedLink:
    """a and b on one subnet through the relay (each direction delayed, reordered and dropped
    independently), ready once the relay runs."""
    m = lab.netns(role)
    m.sysctl("net.ipv6.conf.all.disable_ipv6", "1")  # the middle sends nothing of its own
    dev_a, m_a = lab.veth(a, addr_a, m, None)
    m_b, dev_b = lab.veth(m, None, b, addr_b)
    for ns, dev in ((a, dev_a), (m, m_a), (m, m_b), (b, dev_b)):
        _no_offloads(ns, dev)
    for dev in (m_a, m_b):
        links._ip(m, "link", "set", dev, "promisc", "on")
    stats_file = Path(tempfile.gettempdir()) / f"{lab.prefix}-{role}.json"
    lab.remove_on_exit(stats_file)
    stats_file.unlink(missing_ok=True)
    lab.spawn(m, sys.executable, str(Path(__file__).resolve()), "--left", m_a, "--right", m_b,
              "--delay-ms", str(delay_ms), "--jitter-ms", str(jitter_ms), "--reorder", str(reorder),
              "--reorder-hold-ms", str(reorder_hold_ms), "--loss", str(loss), "--seed", str(seed),
              "--stats", str(stats_file))
    deadline = time.monotonic() + 10
    while not stats_file.exists():
        if time.monotonic() > deadline:
            raise RuntimeError("the impairment relay did not start")
        time.sleep(0.05)
    return ImpairedLink(m, dev_a, dev_b, stats_file)


if __name__ == "__main__":
    main()
