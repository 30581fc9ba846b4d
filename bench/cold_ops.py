"""What one step of a lone packet's path costs when it is the first thing a process does after
idling, against the same step back to back (issue 11: ping RTT).

    .venv/bin/python bench/cold_ops.py [--idle-ms 10] [--count 300] [--results DIR]

`ping` sends one packet every 10 ms, so every agent on the path wakes from an idle wait. Each
step here runs `count` times after a short warm-up call of something else (the event loop's
dispatch runs before the agent's first step, too): once right after sleeping `idle-ms`, once
back to back. Printed: the median of each in microseconds and their ratio; written to
DIR/cold-ops-<stamp>.json. No root, no namespaces; it only uses loopback.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import time
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

HERE = Path(__file__).resolve().parent


def _python_step(now: float) -> int:
    """A small pure-Python function, like the agent's ts_ms."""
    return int(now * 1000) & 0xFFFFFFFF


def steps() -> tuple[dict, list]:
    aead = ChaCha20Poly1305(os.urandom(32))
    nonce, packet = bytes(12), os.urandom(84)
    sealed = aead.encrypt(nonce, packet, None)
    r, w = os.pipe()
    os.set_blocking(r, False)
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.setblocking(False)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.setblocking(False)
    dest = rx.getsockname()
    buf = bytearray(2048)

    def read_empty() -> None:
        try:
            os.read(r, 2048)
        except BlockingIOError:
            pass

    def recv_empty() -> None:
        try:
            rx.recv_into(buf)
        except BlockingIOError:
            pass

    def send_and_take() -> None:
        tx.sendto(sealed, dest)
        rx.recv_into(buf)

    table = {
        "ChaCha20-Poly1305 seal, 84 bytes": lambda: aead.encrypt(nonce, packet, None),
        "ChaCha20-Poly1305 open, 84 bytes": lambda: aead.decrypt(nonce, sealed, None),
        "os.read on an empty pipe (EAGAIN)": read_empty,
        "recv_into on an empty UDP socket (EAGAIN)": recv_empty,
        "UDP sendto + recv_into over loopback": send_and_take,
        "time.monotonic()": time.monotonic,
        "a one-line Python function": lambda: _python_step(12.5),
    }
    return table, [r, w, rx, tx]


def median_us(op, count: int, idle_s: float) -> float:
    clock = time.perf_counter_ns
    warm_up = _python_step
    xs = []
    for _ in range(count):
        if idle_s:
            time.sleep(idle_s)
        warm_up(1.0)
        t0 = clock()
        op()
        xs.append(clock() - t0)
    return statistics.median(xs) / 1000


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--idle-ms", type=float, default=10.0)
    ap.add_argument("--count", type=int, default=300)
    ap.add_argument("--results", default=str(HERE / "results"))
    args = ap.parse_args()
    if args.idle_ms <= 0 or args.count < 1:
        ap.error("--idle-ms must be positive and --count at least 1")
    table, handles = steps()
    rows = {}
    try:
        for name, op in table.items():
            for _ in range(50):
                op()
            warm = median_us(op, args.count, 0.0)
            cold = median_us(op, args.count, args.idle_ms / 1000)
            rows[name] = {"warm_us": warm, "after_idle_us": cold}
    finally:
        for h in handles:
            if isinstance(h, int):
                os.close(h)
            else:
                h.close()
    load = os.getloadavg()[0]
    print(f"load {load:.2f}; {args.count} calls per cell; idle {args.idle_ms:g} ms before each cold call\n")
    print("| step | back to back, median µs | first after idling, median µs | ratio |")
    print("| --- | ---: | ---: | ---: |")
    for name, r in rows.items():
        warm, cold = r["warm_us"], r["after_idle_us"]
        print(f"| {name} | {warm:.1f} | {cold:.1f} | {cold / warm:.0f}x |")
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (out / f"cold-ops-{stamp}.json").write_text(json.dumps(
        {"load": load, "idle_ms": args.idle_ms, "count": args.count, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
