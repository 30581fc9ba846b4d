"""Small network tools run inside a namespace by the integration tests (no iputils/socat needed).

    nettools.py ping DST [--count N] [--interval S] [--timeout S]   prints "received N"
    nettools.py sink PORT [--bind IP]            accepts one TCP stream; prints "bytes N sha256 H"
    nettools.py source DST PORT BYTES [--rate-mbit R] [--seed S]   prints "bytes N sha256 H"
    nettools.py udp-send DST PORT HEXFILE        sends each line of HEXFILE as one datagram
    nettools.py udp-listen PORT SECONDS          prints how many datagrams arrived (for "nothing sent back")
"""

from __future__ import annotations

import argparse
import hashlib
import os
import socket
import struct
import sys
import time


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def ping(args) -> int:
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    sock.settimeout(args.timeout)
    ident = os.getpid() & 0xFFFF
    received = 0
    for seq in range(args.count):
        payload = struct.pack("!d", time.time()) + b"shadowmesh-ping"
        header = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
        packet = struct.pack("!BBHHH", 8, 0, _checksum(header + payload), ident, seq) + payload
        sock.sendto(packet, (args.dst, 0))
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            try:
                data, addr = sock.recvfrom(2048)
            except TimeoutError:
                break
            ihl = (data[0] & 15) * 4
            typ, _code, _ck, rid, rseq = struct.unpack_from("!BBHHH", data, ihl)
            if typ == 0 and rid == ident and rseq == seq and addr[0] == args.dst:
                received += 1
                break
        time.sleep(args.interval)
    print(f"received {received}")
    return 0 if received else 1


def sink(args) -> int:
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((args.bind, args.port))
    srv.listen(1)
    print("listening", flush=True)
    conn, _ = srv.accept()
    h = hashlib.sha256()
    n = 0
    while True:
        chunk = conn.recv(1 << 20)
        if not chunk:
            break
        h.update(chunk)
        n += len(chunk)
    print(f"bytes {n} sha256 {h.hexdigest()}", flush=True)
    return 0


def source(args) -> int:
    sock = socket.create_connection((args.dst, args.port), timeout=30)
    sock.settimeout(60)
    h = hashlib.sha256()
    block = hashlib.sha512(args.seed.encode()).digest() * 1024  # 64 KiB pattern, varied per block
    sent = 0
    start = time.monotonic()
    i = 0
    while sent < args.bytes:
        chunk = hashlib.sha256(i.to_bytes(8, "big")).digest() + block
        chunk = chunk[: min(len(chunk), args.bytes - sent)]
        sock.sendall(chunk)
        h.update(chunk)
        sent += len(chunk)
        i += 1
        if args.rate_mbit:
            ahead = sent * 8 / (args.rate_mbit * 1e6) - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)
    sock.shutdown(socket.SHUT_WR)
    sock.recv(1)  # wait for the sink to close
    sock.close()
    print(f"bytes {sent} sha256 {h.hexdigest()}", flush=True)
    return 0


def udp_send(args) -> int:
    family = socket.AF_INET6 if ":" in args.dst else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind(("", args.sport))
    n = 0
    with open(args.hexfile) as f:
        for line in f:
            line = line.strip()
            if line:
                sock.sendto(bytes.fromhex(line), (args.dst, args.port))
                n += 1
                time.sleep(0.001)
    # anything the agent sends back to us would be an answer to unauthenticated input
    sock.settimeout(args.listen)
    back = 0
    try:
        while True:
            sock.recvfrom(65536)
            back += 1
    except TimeoutError:
        pass
    print(f"sent {n} received {back}")
    return 0


def main() -> int:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    pp = sub.add_parser("ping")
    pp.add_argument("dst")
    pp.add_argument("--count", type=int, default=3)
    pp.add_argument("--interval", type=float, default=0.05)
    pp.add_argument("--timeout", type=float, default=1.0)
    sp = sub.add_parser("sink")
    sp.add_argument("port", type=int)
    sp.add_argument("--bind", default="0.0.0.0")
    so = sub.add_parser("source")
    so.add_argument("dst")
    so.add_argument("port", type=int)
    so.add_argument("bytes", type=int)
    so.add_argument("--rate-mbit", type=float, default=0)
    so.add_argument("--seed", default="shadowmesh")
    us = sub.add_parser("udp-send")
    us.add_argument("dst")
    us.add_argument("port", type=int)
    us.add_argument("hexfile")
    us.add_argument("--sport", type=int, default=0)
    us.add_argument("--listen", type=float, default=1.0)
    args = p.parse_args()
    return {"ping": ping, "sink": sink, "source": source, "udp-send": udp_send}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
