"""Ping RTT only, several agent builds or knobs against each other, interleaved (issue 11).

    A=.venv/bin/shadowmesh-agent  # as root, under the benchmark lock
    LEGS="wireguard-go ref=/other/.venv/bin/shadowmesh-agent mine=$A aio=$A|SHADOWMESH_EVENT_LOOP=asyncio" \\
    ROUNDS=3 PINGS=200 .venv/bin/python bench/ping_ab.py

A leg is a name of netbench's tunnels (bench/tunnels.py STARTERS) or `label=agent[|NAME=value,...]`:
a ShadowMesh pair run with that shadowmesh-agent executable and those extra environment variables.
Each round starts every leg in turn in the bench's two namespaces, waits 2 s, sends PINGS pings
at INTERVAL seconds (0.01, as netbench does; down to 0.001) over the idle tunnel, or with
UNDER=tcp while one iperf3 TCP stream runs from A to B (the latency under load), and stops it.
Much shorter than netbench (no TCP or UDP test), so it is for finding where the RTT goes;
figures for the record come from netbench, which also measures TCP. Prints avg / median / p99
per round and the mean of the averages.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from measure import loadavg, parse_ping  # noqa: E402
from pair import Pair  # noqa: E402
from tunnels import STARTERS, start_shadowmesh  # noqa: E402

from lab import Lab  # noqa: E402


def start(leg: str, pair: Pair, work: Path):
    if "=" not in leg:
        return STARTERS[leg](pair, work, 30)
    label, rest = leg.split("=", 1)
    agent, _, envs = rest.partition("|")
    old = os.environ.get("SM_AGENT_ENV", "")
    os.environ["SM_AGENT_ENV"] = " ".join([old, *envs.split(",")])
    try:
        return start_shadowmesh(pair, work, 30, name=f"sm-{label}", agent=Path(agent))
    finally:
        os.environ["SM_AGENT_ENV"] = old


def main() -> int:
    legs = os.environ["LEGS"].split()
    rounds = int(os.environ.get("ROUNDS", "3"))
    pings = int(os.environ.get("PINGS", "200"))
    interval = os.environ.get("INTERVAL", "0.01")
    try:
        if not 0.001 <= float(interval) <= 10:
            raise ValueError
    except ValueError:
        raise SystemExit(f"INTERVAL={interval!r}: seconds between pings, 0.001..10") from None
    under = os.environ.get("UNDER", "")
    if under not in ("", "tcp"):
        raise SystemExit(f"UNDER={under!r}: empty (an idle tunnel) or tcp (one iperf3 stream meanwhile)")
    results: dict[str, list[tuple[float, float, float]]] = {leg: [] for leg in legs}
    work = Path(tempfile.mkdtemp(prefix="pingab-"))
    print(f"load {loadavg()}", flush=True)
    try:
        with Lab() as lab:
            pair = Pair.build(lab)
            for r in range(1, rounds + 1):
                for leg in legs:
                    w = work / f"r{r}"
                    w.mkdir(exist_ok=True)
                    t = start(leg, pair, w)
                    time.sleep(2)
                    if under == "tcp":  # one TCP stream A -> B for as long as the pings take, and more
                        seconds = int(pings * float(interval) + 5)
                        lab.spawn(pair.b, "iperf3", "-s", log=w / "iperf3-server.log")
                        time.sleep(0.5)
                        lab.spawn(pair.a, "iperf3", "-c", t.target, "-t", str(seconds),
                                  log=w / "iperf3-client.log")
                        time.sleep(1.5)
                    out = pair.a.run("ping", "-c", str(pings), "-i", interval, "-W", "1", t.target,
                                     timeout=pings * (float(interval) + 0.04) + 20, check=False).stdout
                    avg, p99, ok = parse_ping(out)
                    rtts = sorted(float(x.split("=", 1)[1]) for x in out.split() if x.startswith("time="))
                    med = rtts[len(rtts) // 2] if rtts else float("nan")
                    results[leg].append((avg, med, p99))
                    print(f"round {r} {leg[:70]:70s} avg {avg:.3f} median {med:.3f} p99 {p99:.3f} ms "
                          f"({ok} replies, load {loadavg()})", flush=True)
                    lab.end_processes()
                    time.sleep(0.3)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nload at the end {loadavg()}\n")
    print("| leg | RTT avg ms (mean of rounds) | rounds: avg / median / p99 |")
    print("| --- | ---: | --- |")
    for leg, rows in results.items():
        mean = sum(x[0] for x in rows) / len(rows)
        per = ", ".join(f"{a:.3f} / {m:.3f} / {p:.3f}" for a, m, p in rows)
        print(f"| {leg.split('=', 1)[0]} | {mean:.3f} | {per} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
