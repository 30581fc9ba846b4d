"""Small network tools run inside a lab namespace (`Lab.tool`, `Lab.tool_bg`; no iputils/socat needed).
Standard library only: it runs as a script, `python lab/nettools.py ...`.

    nettools.py ping DST [--count N] [--interval S] [--timeout S]   prints "received N"
    nettools.py sink PORT [--bind IP] [--progress S]  accepts one TCP stream; prints "bytes N sha256 H"
                                                  (S: also "got N" every S seconds while it is open)
    nettools.py source DST PORT BYTES [--rate-mbit R] [--seed S] [--stop-file F]
                                                  prints "bytes N sha256 H" (F: stop early, cleanly,
                                                  once the file exists)
    nettools.py udp-send DST PORT HEXFILE        sends each line of HEXFILE as one datagram
    nettools.py sniff DST PORT COUNT [--min-size N]  prints "ready", then COUNT UDP payloads to
                                                  DST:PORT as hex lines (AF_PACKET, e.g. on a router)
    nettools.py udp-blast DST PORT COUNT [--size N] sends COUNT datagrams (through the tunnel)
    nettools.py udp-echo PORT                    prints "ready", then answers every datagram with the
                                                  source it came from, "IP:PORT" (how a NAT mapped it)
    nettools.py udp-talk PORT                    one UDP socket on PORT driven by stdin lines:
                                                  "send IP PORT" -> prints "sent"; "recv SECONDS" ->
                                                  prints "from IP:PORT TEXT" or "none"
    nettools.py dns-server PORT NAME=IP...       a DNS server with A records (NXDOMAIN for any other
                                                  name), UDP; prints "ready", then one line per query
    nettools.py dns-query SERVER NAME [--type N] [--tcp] [--timeout S]
                                                  prints "rcode R answers IP,..." or "timeout"
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
    if args.progress:
        conn.settimeout(args.progress)
    last = time.monotonic()
    while True:
        try:
            chunk = conn.recv(1 << 20)
        except TimeoutError:
            chunk = None
        if args.progress and time.monotonic() - last >= args.progress:
            print(f"got {n}", flush=True)  # also while nothing arrives: a stalled stream shows
            last = time.monotonic()
        if chunk is None:
            continue
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
    stop = args.stop_file
    while sent < args.bytes and not (stop and i % 16 == 0 and os.path.exists(stop)):
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


def sniff(args) -> int:
    eth_p_ip = 0x0800
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(eth_p_ip))
    sock.settimeout(args.timeout)
    dst = socket.inet_aton(args.dst)
    print("ready", flush=True)
    got = 0
    while got < args.count:
        data = sock.recv(65536)
        ihl = (data[0] & 15) * 4
        if data[9] != 17 or data[16:20] != dst:
            continue
        dport = struct.unpack_from("!H", data, ihl + 2)[0]
        payload = data[ihl + 8:]
        if dport == args.port and len(payload) >= args.min_size:
            print(payload.hex(), flush=True)
            got += 1
    return 0


def udp_blast(args) -> int:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    payload = b"x" * args.size
    for i in range(args.count):
        sock.sendto(payload, (args.dst, args.port))
        if i % 20 == 19:
            time.sleep(0.002)
    print(f"sent {args.count}")
    return 0


def udp_echo(args) -> int:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("0.0.0.0", args.port))
    print("ready", flush=True)
    while True:
        _data, (ip, port) = sock.recvfrom(65536)
        sock.sendto(f"{ip}:{port}".encode(), (ip, port))


def udp_talk(args) -> int:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("0.0.0.0", args.port))
    print("ready", flush=True)
    for line in sys.stdin:
        cmd, *rest = line.split()
        if cmd == "send":
            sock.sendto(b"hello", (rest[0], int(rest[1])))
            print("sent", flush=True)
        elif cmd == "recv":
            sock.settimeout(float(rest[0]))
            try:
                data, (ip, port) = sock.recvfrom(65536)
                print(f"from {ip}:{port} {data.decode(errors='replace')}", flush=True)
            except TimeoutError:
                print("none", flush=True)
    return 0


def _dns_name(name: str) -> bytes:
    return b"".join(bytes([len(label)]) + label.encode() for label in name.rstrip(".").split(".")) + b"\0"


def _skip_name(data: bytes, off: int) -> int:
    while True:
        n = data[off]
        if n & 0xC0:
            return off + 2
        if n == 0:
            return off + 1
        off += 1 + n


def _read_name(data: bytes, off: int) -> tuple[str, int]:
    labels = []
    while data[off]:
        n = data[off]
        labels.append(data[off + 1:off + 1 + n].decode())
        off += 1 + n
    return ".".join(labels), off + 1


def dns_server(args) -> int:
    records = dict(pair.split("=", 1) for pair in args.records)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("0.0.0.0", args.port))
    print("ready", flush=True)
    while True:
        data, addr = sock.recvfrom(4096)
        try:
            (ident,) = struct.unpack_from("!H", data)
            name, off = _read_name(data, 12)
            qtype, _qclass = struct.unpack_from("!HH", data, off)
        except (struct.error, IndexError, UnicodeDecodeError):
            continue
        question = data[12:off + 4]
        ip = records.get(name.lower())
        answers = b""
        if ip is not None and qtype == 1:
            answers = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + socket.inet_aton(ip)
        rcode = 0 if ip is not None else 3
        header = struct.pack("!HHHHHH", ident, 0x8180 | rcode, 1, 1 if answers else 0, 0, 0)
        sock.sendto(header + question + answers, addr)
        print(f"query {name} from {addr[0]}", flush=True)


def dns_query(args) -> int:
    ident = os.getpid() & 0xFFFF
    query = (struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + _dns_name(args.name)
             + struct.pack("!HH", args.type, 1))
    try:
        if args.tcp:
            with socket.create_connection((args.server, 53), timeout=args.timeout) as sock:
                sock.sendall(struct.pack("!H", len(query)) + query)
                size = struct.unpack("!H", sock.recv(2))[0]
                data = b""
                while len(data) < size:
                    data += sock.recv(size - len(data))
        else:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.settimeout(args.timeout)
            sock.sendto(query, (args.server, 53))
            data = sock.recvfrom(65536)[0]
    except (TimeoutError, OSError, struct.error):
        print("timeout")
        return 1
    flags, _qd, ancount = struct.unpack_from("!HHH", data, 2)
    off = _skip_name(data, 12) + 4
    answers = []
    for _ in range(ancount):
        off = _skip_name(data, off)
        rtype, _rclass, _ttl, rdlen = struct.unpack_from("!HHIH", data, off)
        off += 10
        rdata = data[off:off + rdlen]
        off += rdlen
        if rtype == 1:
            answers.append(socket.inet_ntoa(rdata))
        elif rtype == 28:
            answers.append(socket.inet_ntop(socket.AF_INET6, rdata))
    print(f"rcode {flags & 0xF} answers {','.join(answers) or '-'} tc {int(bool(flags & 0x200))}")
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
    sp.add_argument("--progress", type=float, default=0,
                    help="print 'got BYTES' every this many seconds while the stream is open")
    so = sub.add_parser("source")
    so.add_argument("dst")
    so.add_argument("port", type=int)
    so.add_argument("bytes", type=int)
    so.add_argument("--rate-mbit", type=float, default=0)
    so.add_argument("--seed", default="shadowmesh")
    so.add_argument("--stop-file", default="", help="finish (cleanly) once this file exists")
    us = sub.add_parser("udp-send")
    us.add_argument("dst")
    us.add_argument("port", type=int)
    us.add_argument("hexfile")
    us.add_argument("--sport", type=int, default=0)
    us.add_argument("--listen", type=float, default=1.0)
    sn = sub.add_parser("sniff")
    sn.add_argument("dst")
    sn.add_argument("port", type=int)
    sn.add_argument("count", type=int)
    sn.add_argument("--min-size", type=int, default=0)
    sn.add_argument("--timeout", type=float, default=20)
    ub = sub.add_parser("udp-blast")
    ub.add_argument("dst")
    ub.add_argument("port", type=int)
    ub.add_argument("count", type=int)
    ub.add_argument("--size", type=int, default=1000)
    ue = sub.add_parser("udp-echo")
    ue.add_argument("port", type=int)
    ut = sub.add_parser("udp-talk")
    ut.add_argument("port", type=int)
    ds = sub.add_parser("dns-server")
    ds.add_argument("port", type=int)
    ds.add_argument("records", nargs="*")
    dq = sub.add_parser("dns-query")
    dq.add_argument("server")
    dq.add_argument("name")
    dq.add_argument("--type", type=int, default=1)
    dq.add_argument("--tcp", action="store_true")
    dq.add_argument("--timeout", type=float, default=2.0)
    args = p.parse_args()
    return {"ping": ping, "sink": sink, "source": source, "udp-send": udp_send, "sniff": sniff,
            "udp-blast": udp_blast, "udp-echo": udp_echo, "udp-talk": udp_talk, "dns-server": dns_server,
            "dns-query": dns_query}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
