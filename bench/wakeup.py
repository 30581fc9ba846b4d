"""Which wake-up answers a lone small packet fastest? (issue 11: ping RTT)

    .venv/bin/python bench/wakeup.py [--count 400] [--interval-ms 10] [--results DIR]

An echo process answers UDP datagrams on loopback, woken in one of these ways:

- `asyncio add_reader`: the agent's way today, a raw reader callback on the default event loop;
- `uvloop add_reader`: the same callback on uvloop's loop (only if uvloop is installed);
- `blocking thread`: a dedicated thread blocked in recv() beside an idle asyncio loop (the loop
  keeps a 100 ms housekeeping timer, as the agent does); the thread answers itself.

A client process sends one 100-byte datagram every `interval` ms (like ping: the echo side is
idle in between, so each answer includes a wake-up from sleep) and takes the round trip with
perf_counter. Modes are interleaved in rounds so that background load hits each alike. Prints
median / p90 / p99 in microseconds and writes DIR/wakeup-<stamp>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import socket
import statistics
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _echo_loop(sock: socket.socket, ready, use_uvloop: bool) -> None:
    sock.setblocking(False)

    def on_readable() -> None:
        while True:
            try:
                data, addr = sock.recvfrom(2048)
            except BlockingIOError:
                return
            sock.sendto(data, addr)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.add_reader(sock.fileno(), on_readable)
        ready.set()
        while True:
            await asyncio.sleep(0.1)  # the agent's housekeeping tick

    if use_uvloop:
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())


def _echo_thread(sock: socket.socket, ready) -> None:
    def reader() -> None:
        while True:
            data, addr = sock.recvfrom(2048)
            sock.sendto(data, addr)

    threading.Thread(target=reader, daemon=True).start()

    async def main() -> None:
        ready.set()
        while True:
            await asyncio.sleep(0.1)

    asyncio.run(main())


def echo(mode: str, port_q, ready) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    port_q.put(sock.getsockname()[1])
    if mode == "blocking thread":
        _echo_thread(sock, ready)
    else:
        _echo_loop(sock, ready, mode.startswith("uvloop"))


def client(port: int, count: int, interval: float) -> list[float]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(1.0)
    payload = bytes(100)
    out = []
    for _ in range(count):
        t0 = time.perf_counter()
        sock.sendto(payload, ("127.0.0.1", port))
        try:
            sock.recv(2048)
        except TimeoutError:
            continue
        out.append((time.perf_counter() - t0) * 1e6)
        time.sleep(interval)
    sock.close()
    return out


def modes() -> list[str]:
    found = ["asyncio add_reader", "blocking thread"]
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return found
    return [*found, "uvloop add_reader"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--interval-ms", type=float, default=10.0)
    ap.add_argument("--results", type=Path, default=HERE / "results")
    args = ap.parse_args()
    samples: dict[str, list[float]] = {m: [] for m in modes()}
    load_start = os.getloadavg()[0]
    for _ in range(args.rounds):
        for mode in samples:
            port_q, ready = mp.Queue(), mp.Event()
            proc = mp.Process(target=echo, args=(mode, port_q, ready), daemon=True)
            proc.start()
            try:
                port = port_q.get(timeout=10)
                ready.wait(10)
                time.sleep(0.2)
                samples[mode] += client(port, args.count // args.rounds, args.interval_ms / 1000)
            finally:
                proc.terminate()
                proc.join()
    doc = {"stamp": time.strftime("%Y%m%d-%H%M%S"), "loadavg_start": load_start,
           "loadavg_end": os.getloadavg()[0], "python": sys.version.split()[0], "results": {}}
    lines = ["| echo side woken by | n | median µs | p90 µs | p99 µs |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for mode, xs in samples.items():
        xs.sort()
        r = {"n": len(xs), "median_us": statistics.median(xs), "p90_us": xs[int(0.9 * (len(xs) - 1))],
             "p99_us": xs[int(0.99 * (len(xs) - 1))]}
        doc["results"][mode] = r
        lines.append(f"| {mode} | {r['n']} | {r['median_us']:.0f} | {r['p90_us']:.0f} | {r['p99_us']:.0f} |")
    doc["markdown"] = "\n".join(lines)
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / f"wakeup-{doc['stamp']}.json").write_text(json.dumps(doc, indent=2))
    print(f"python {doc['python']}, load average {load_start:.2f} -> {doc['loadavg_end']:.2f}\n")
    print(doc["markdown"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
