"""What an oversized request body costs the server's memory (threat model, attack 26).

    .venv/bin/python bench/body_memory.py [--mib 200] [--results DIR]

Starts one Daphne of this checkout (`daphne meshadmin.asgi:application`, embedded defaults, a
fresh data directory in a temporary folder) on loopback, then POSTs `--mib` MiB to /api/enroll
twice: once with a Content-Length, once chunked; then opens the agents' websocket and sends one
frame announcing as many bytes. While each one runs, the server's VmRSS is sampled every 20 ms.
Printed and written to DIR/body-memory-<stamp>.json: the answer's status, the seconds until it
came, the RSS before and its peak.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BLOCK = b"x" * 65536


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(folder: Path) -> tuple[subprocess.Popen, int]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(SHADOWMESH_DATA_DIR=str(folder / "data"), DJANGO_SETTINGS_MODULE="meshadmin.settings")
    python = sys.executable
    subprocess.run([python, "manage.py", "migrate", "--noinput"], cwd=ROOT, env=env, check=True,
                   capture_output=True, timeout=300)
    port = free_port()
    log = (folder / "daphne.log").open("wb")
    daphne = str(Path(python).parent / "daphne")
    argv = [daphne, "-v", "0", "-b", "127.0.0.1", "-p", str(port), "meshadmin.asgi:application"]
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, port
        except OSError:
            if proc.poll() is not None:
                raise SystemExit(f"daphne exited; see {folder / 'daphne.log'}") from None
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("daphne did not listen within 60 s")


def measured(port: int, pid: int, framing: str, size: int, exchange: Callable[[socket.socket], str]) -> dict:
    """Run `exchange` on a new connection to the server while its VmRSS is sampled every 20 ms;
    the row: what `exchange` says the answer was, how long it took, the RSS before and its peak."""
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss_kib(pid))
            time.sleep(0.02)

    before = rss_kib(pid)
    sampler = threading.Thread(target=sample)
    sampler.start()
    t0 = time.monotonic()
    status = "no answer"
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:
            status = exchange(sock)
    finally:
        seconds = time.monotonic() - t0
        time.sleep(0.5)
        done.set()
        sampler.join()
    return {"framing": framing, "mib": size >> 20, "status": status, "seconds": round(seconds, 2),
            "rss_before_mib": round(before / 1024, 1), "rss_peak_mib": round(peak[0] / 1024, 1),
            "rss_after_mib": round(rss_kib(pid) / 1024, 1)}


def send_blocks(sock: socket.socket, size: int, chunked: bool = False) -> None:
    """`size` bytes in 64 KiB blocks (as chunks of a chunked body), until the server stops reading."""
    sent = 0
    try:
        while sent < size:
            sock.sendall(b"%x\r\n" % len(BLOCK) + BLOCK + b"\r\n" if chunked else BLOCK)
            sent += len(BLOCK)
        if chunked:
            sock.sendall(b"0\r\n\r\n")
    except OSError:
        pass  # the server stopped reading after its answer, or closed the connection


def post(port: int, pid: int, size: int, chunked: bool) -> dict:
    def exchange(sock: socket.socket) -> str:
        framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {size}"
        sock.sendall(f"POST /api/enroll HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     f"{framing}\r\n\r\n".encode())
        send_blocks(sock, size, chunked)
        return sock.recv(64).split(b"\r\n", 1)[0].decode(errors="replace")

    return measured(port, pid, "chunked" if chunked else "content-length", size, exchange)


def websocket_frame(port: int, pid: int, size: int) -> dict:
    """One binary frame announcing `size` bytes on the agent socket, before any login."""
    def exchange(sock: socket.socket) -> str:
        sock.sendall(f"GET /ws/agent/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(4096)
        # FIN + binary, masked, 64-bit length, a zero mask key (the payload goes as it is)
        sock.sendall(bytes([0x82, 0x80 | 127]) + size.to_bytes(8, "big") + bytes(4))
        send_blocks(sock, size)
        try:
            after = sock.recv(64)[:4] or b"closed"
        except OSError:
            after = b"reset"
        return (head.split(b"\r\n", 1)[0] + b"; then " + after).decode(errors="replace")

    return measured(port, pid, "websocket frame", size, exchange)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=200)
    ap.add_argument("--results", default=str(HERE / "results"))
    args = ap.parse_args()
    if args.mib < 1:
        ap.error("--mib must be at least 1")
    with tempfile.TemporaryDirectory(prefix="body-memory-") as tmp:
        proc, port = start_server(Path(tmp))
        try:
            rows = [post(port, proc.pid, args.mib << 20, chunked) for chunked in (False, True)]
            rows.append(websocket_frame(port, proc.pid, args.mib << 20))
        finally:
            proc.terminate()
            proc.wait(10)
    load = os.getloadavg()[0]
    print(f"load {load:.2f}; {args.mib} MiB POSTed to /api/enroll\n")
    print("| body | answer | seconds | RSS before MiB | peak MiB | after MiB |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['framing']} | {r['status']} | {r['seconds']} | {r['rss_before_mib']} "
              f"| {r['rss_peak_mib']} | {r['rss_after_mib']} |")
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (out / f"body-memory-{stamp}.json").write_text(json.dumps({"load": load, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
