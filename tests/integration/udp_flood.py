"""Garbage at an agent's UDP data port, run inside a namespace by test_hostile_input.py. Standard
library only.

    udp_flood.py DST PORT COUNT --big N --sport P --listen S --seed K

sends N datagrams of the largest size UDP over IPv4 allows (65,507 bytes), then COUNT garbage
datagrams of 1..1,472 random bytes (a third of them start like a DATA frame with a random
receiver index), from source port P; then listens S seconds on that port for anything sent back.
Prints "sent N received M".
"""

import argparse
import random
import socket
import struct
import sys

MAX_UDP4 = 65507


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("dst")
    ap.add_argument("port", type=int)
    ap.add_argument("count", type=int)
    ap.add_argument("--big", type=int, default=0)
    ap.add_argument("--sport", type=int, default=0)
    ap.add_argument("--listen", type=float, default=2.0)
    ap.add_argument("--seed", type=int, default=11)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    sock.bind(("", args.sport))
    dst = (args.dst, args.port)
    sent = 0
    for _ in range(args.big):
        sock.sendto(rng.randbytes(MAX_UDP4), dst)
        sent += 1
    pool = [rng.randbytes(1472) for _ in range(64)]
    for i in range(args.count):
        size = rng.randrange(1, 1473)
        data = pool[i % len(pool)][:size]
        if i % 3 == 0 and size >= 20:  # a DATA header with a plausible length, unknown receiver
            data = struct.pack("!BBHIQI", 1, 0, size - 20, rng.getrandbits(32), i, 0) + data[20:]
        while True:
            try:
                sock.sendto(data, dst)
                break
            except BlockingIOError:
                continue
        sent += 1
    sock.settimeout(args.listen)
    back = 0
    try:
        while True:
            sock.recvfrom(65536)
            back += 1
    except TimeoutError:
        pass
    print(f"sent {sent} received {back}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
