"""NAT matrix benchmark: per cell of docs/nat.md#the-matrix, how fast a pair gets through, goes
direct, falls back when the direct path dies, and whether a TCP stream survives it all.

Run as root:
    .venv/bin/python bench/nat_matrix.py            # every cell once
    RUNS=3 CELLS="easy-easy easy-cgnat" .venv/bin/python bench/nat_matrix.py
Environment knobs: RUNS [1], CELLS [all: easy-easy easy-cgnat firewall-easy same-nat easy-hard hard-hard],
RESULTS [bench/results]. Writes RESULTS/nat-<stamp>.json and prints a markdown table.

Each cell builds a fresh world (tests/integration/natlab.py: meshadmin, two public hubs, two nodes behind
their NAT boxes). Then, on one clock (time.monotonic: the agents' clock too, so the `path_since_s` of
their status documents turns into an instant):
  start              node b's agent is started (node a and the hubs run already): from the pair's point
                     of view, the moment both exist
  first packet       both agents serve their status; node a sends a UDP datagram every 10 ms over the
                     overlay to an echo on b from then on, and a TCP stream a -> b starts
                     (4 Mbit/s, until the end of the cell)
  first reply        the first echo back, counted from the first packet (relayed, or direct if the
                     punch was faster)
  direct             the instant the pair's path became direct (a's status), counted from `start`:
                     it includes b's start-up (its netmap, its hub links, the relayed handshake);
                     "-" for relay cells
  final              the path and reason the cell ends on, 20 s after t0 or at direct
  fallback           (direct cells) the direct path is blackholed in a's NAT box at t_b: the instant
                     a's path went back to the relay minus t_b, and the longest gap between echoes
                     around it (the outage the traffic saw); then the blackhole is lifted and the
                     time until direct again is recorded
  broken streams     the TCP stream's two digests differ (or it failed)
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

CELLS = ("easy-easy", "easy-cgnat", "firewall-easy", "same-nat", "easy-hard", "hard-hard")
DIRECT_CELLS = {"easy-easy", "easy-cgnat", "firewall-easy", "same-nat"}
ECHO_PORT = 7000
INTERVAL = 0.01


def probe(dst: str, port: int, stop_file: str, out: str) -> int:
    """Inside node a's namespace: a datagram every INTERVAL to dst:port, the reply times to `out`."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setblocking(False)
    first_send = time.monotonic()
    replies: list[float] = []
    next_send = first_send
    while not os.path.exists(stop_file):
        now = time.monotonic()
        if now >= next_send:
            try:
                s.sendto(b"probe", (dst, port))
            except OSError:
                pass  # no route yet: the TUN is not up or the kernel refuses; counted as unanswered
            next_send += INTERVAL
        try:
            while True:
                s.recv(2048)
                replies.append(time.monotonic())
        except BlockingIOError:
            pass
        time.sleep(0.002)
    Path(out).write_text(json.dumps({"first_send": first_send, "replies": replies}))
    return 0


def change_at(status_peer: dict, pred) -> float | None:
    """The instant (our clock) of the newest path change in the history that matches `pred`."""
    now = time.monotonic()
    for h in reversed(status_peer["path_history"]):
        if pred(h):
            return now - h["ago_s"]
    return None


def build(world, cell: str):
    if cell == "same-nat":
        box = world.nat("home", "easy")
        return box, box, world.node("a", box, start=False), world.node("b", box, start=False), None
    kinds = {
        "easy-easy": ("easy", "easy"),
        "easy-hard": ("easy", "hard"),
        "hard-hard": ("hard", "hard"),
        "firewall-easy": ("easy", "firewall"),
        "easy-cgnat": ("easy", "cgnat"),
    }[cell]
    box_a = world.nat("boxa", kinds[0])
    if kinds[1] == "cgnat":
        cgn = world.nat("cgn", "easy")
        box_b = world.nat("home", "easy", uplink=cgn)
        b_public = cgn.wan_ip
    else:
        box_b = world.nat("boxb", kinds[1])
        b_public = box_b.wan_ip
    a, b = world.node("a", box_a, start=False), world.node("b", box_b, start=False)
    if kinds[1] == "firewall":
        b_public = b.underlay
    return box_a, box_b, a, b, b_public


def run_cell(cell: str, tmp: Path) -> dict:
    from tests.integration.agentlab import AgentLab, wait_for
    from tests.integration.natlab import NatWorld, Stream

    row: dict = {"cell": cell}
    with AgentLab(tmp) as lab:
        world = NatWorld(lab)
        box_a, _box_b, a, b, b_public = build(world, cell)
        echo = lab.tool_bg(b.ns, "udp-echo", str(ECHO_PORT))
        assert echo.stdout.readline().strip() == "ready"
        a.start()
        t_start = time.monotonic()
        b.start()
        stop_probe = tmp / f"stop-probe-{cell}"
        probe_out = tmp / f"probe-{cell}.json"
        prober = lab.spawn(
            a.ns,
            sys.executable,
            str(HERE / "nat_matrix.py"),
            "probe",
            b.overlay_ip,
            str(ECHO_PORT),
            str(stop_probe),
            str(probe_out),
        )
        t0 = time.monotonic()
        stream = None
        try:
            world.wait_ping(a, b, timeout=30)
            stream = Stream(world, a, b)
            direct = cell in DIRECT_CELLS

            def settled():
                p = world.peer(a, b)
                if p["path"] == "direct":
                    return p
                if (
                    not direct
                    and p["punch"] is not None
                    and p["punch"]["reason"] in ("both_hard", "punch_timeout")
                ):
                    return p
                return None

            try:
                p = wait_for(settled, 30, f"{cell}: a final path")
            except AssertionError:
                p = world.peer(a, b)
            row["final_path"] = "direct" if p["path"] == "direct" else "relay"
            row["how"] = p["path_how"]
            row["reason"] = p["path_reason"] if p["path"] == "direct" else (p["punch"] or {}).get("reason")
            t_direct = change_at(p, lambda h: h["path"] == "direct") if p["path"] == "direct" else None
            row["direct_s"] = None if t_direct is None else round(t_direct - t_start, 3)
            row["first_packet_after_start_s"] = round(t0 - t_start, 3)
            if direct and p["path"] == "direct" and cell != "same-nat":
                time.sleep(2)  # traffic on the direct path before it dies
                t_b = time.monotonic()
                world.blackhole(box_a, b_public)
                q = wait_for(
                    lambda: (lambda q: q if q["path"].startswith("relay:") else None)(world.peer(a, b)),
                    30,
                    f"{cell}: fallback",
                )
                t_r = change_at(q, lambda h: h["reason"] in ("direct_timeout", "direct_loss"))
                row["fallback_s"] = None if t_r is None else round(t_r - t_b, 3)
                row["fallback_window"] = (t_b, (t_r or t_b) + 1.0)
                time.sleep(2)  # traffic on the relay
                t_l = time.monotonic()
                world.lift(box_a)
                q = wait_for(
                    lambda: (lambda q: q if q["path"] == "direct" else None)(world.peer(a, b)),
                    120,
                    f"{cell}: direct again",
                )
                t_d = change_at(q, lambda h: h["path"] == "direct")
                row["direct_again_s"] = None if t_d is None else round(t_d - t_l, 3)
        finally:
            stop_probe.write_text("stop")
            prober.wait(timeout=30)
            if stream is not None:
                try:
                    sent, got = stream.stop()
                    row["broken_streams"] = int(sent != got)
                    row["stream_bytes"] = int(sent.split()[1])
                except Exception as exc:  # a stream that failed is a broken stream
                    row["broken_streams"] = 1
                    row["stream_error"] = f"{type(exc).__name__}: {exc}"
        data = json.loads(probe_out.read_text())
        replies = data["replies"]
        row["first_reply_s"] = None if not replies else round(replies[0] - data["first_send"], 3)
        row["first_send_after_t0_s"] = round(data["first_send"] - t0, 3)
        window = row.pop("fallback_window", None)
        if window is not None:
            inside = [t for t in replies if window[0] - 1 <= t <= window[1] + 1]
            gaps = [b2 - b1 for b1, b2 in itertools.pairwise(inside)]
            row["fallback_gap_s"] = round(max(gaps), 3) if gaps else None
    return row


def fmt(v) -> str:
    return "-" if v is None else (f"{v:.2f}" if isinstance(v, float) else str(v))


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "probe":
        return probe(sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5])
    if os.geteuid() != 0:
        print("nat_matrix: needs root (network namespaces)", file=sys.stderr)
        return 2
    runs = int(os.environ.get("RUNS", "1"))
    cells = os.environ.get("CELLS", " ".join(CELLS)).split()
    results = Path(os.environ.get("RESULTS", HERE / "results"))
    results.mkdir(parents=True, exist_ok=True)
    rows = []
    load = [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    for run in range(runs):
        for cell in cells:
            with tempfile.TemporaryDirectory(prefix="natbench-") as tmp:
                row = run_cell(cell, Path(tmp))
            row["run"] = run + 1
            row["load"] = float(Path("/proc/loadavg").read_text().split()[0])
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (results / f"nat-{stamp}.json").write_text(json.dumps({"loadavg_start": load, "rows": rows}, indent=1))
    print(f"load average at start: {' '.join(map(str, load))}; runs: {runs}\n")
    print(
        "| cell | final path | how / why | first reply s | direct s | fallback s | outage s | "
        "direct again s | broken streams | load |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['cell']} | {r.get('final_path', '-')} | {r.get('how') or r.get('reason') or '-'} | "
            f"{fmt(r.get('first_reply_s'))} | {fmt(r.get('direct_s'))} | {fmt(r.get('fallback_s'))} | "
            f"{fmt(r.get('fallback_gap_s'))} | {fmt(r.get('direct_again_s'))} | "
            f"{r.get('broken_streams', '-')} | {r['load']:.2f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
