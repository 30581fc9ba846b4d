"""CPU per chunk on each side of chunk mode, without namespaces: one process drives two real
DataPaths over loopback UDP sockets, their TUNs replaced by socketpairs, chunk mode negotiated
as on a clean path; then `--chunks` 64 KB super-packets (MSS 1,360) go from A to B, two per
drain. Prints CPU time (getrusage, user + system, so the loopback kernel work is in it) per
chunk for A's `on_tun` (read, seal, send) and B's `on_udp` (receive, reassemble, open, write).

    .venv/bin/python bench/chunk_cost.py [--chunks 4000]

Run it from the repository root (it uses the data-path test helpers in tests/).
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.nodeagent.tunnel.test_chunks import Clock, granted
from tests.nodeagent.tunnel.test_datapath import Node, tcp_super_packet


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--chunks", type=int, default=4000)
    args = ap.parse_args()
    clock = Clock()
    a, b = Node("a", "10.10.10.1"), Node("b", "10.10.10.2")
    a.know(b)
    b.know(a)
    for node in (a, b):
        for s in (node.tun, node.tun_app):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    granted(a, b, clock)
    b.delivered()
    frame = tcp_super_packet(os.urandom(64000 - 40), 1400 - 40)
    send = receive = 0.0
    delivered = 0
    for _ in range(args.chunks // 2):
        for _ in range(2):
            a.tun_app.send(frame)
        c0 = _cpu()
        a.dp.on_tun()
        c1 = _cpu()
        b.dp.on_udp()
        c2 = _cpu()
        send += c1 - c0
        receive += c2 - c1
        delivered += len(b.delivered())
    n = a.dp.chunks.sent
    drops = {k: v for k, v in b.dp.drops.as_dict().items() if v}
    print(f"chunks sent {n}, opened {b.dp.chunks.received}, written {delivered}, drops {drops or 'none'}")
    print(f"send {send / n * 1e6:.1f} us/chunk, receive {receive / n * 1e6:.1f} us/chunk")
    for node in (a, b):
        node.udp.close()
        node.tun.close()
        node.tun_app.close()
    return 0 if delivered == n else 1


if __name__ == "__main__":
    sys.exit(main())
