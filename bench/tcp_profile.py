"""Where the time of a ShadowMesh TCP test goes: one iperf3 TCP stream through the two agents
of the bench's namespace pair (bench/pair.py), with the CPU of every thread in the two
namespaces (agents and iperf3; `/proc/PID/task/*/stat`) and of the whole machine over the
middle of the test, and optionally py-spy on both agents (raw collapsed stacks per node).

    .venv/bin/python bench/tcp_profile.py [--agent PATH] [--seconds 10] [--pyspy PATH] [--out DIR]

Root only (namespaces, TUN devices). py-spy is not a dependency of the project: install it
where you like (`pip install py-spy`) and give its path; `--nonblocking` is used, so the agents
are never paused. Measure on a quiet machine like every benchmark: its figures
are disturbed by any other load.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from measure import HZ, busy_pct, loadavg, machine_ticks  # noqa: E402
from pair import Pair  # noqa: E402
from tunnels import agent_binary, start_shadowmesh  # noqa: E402

from lab import Lab, comm  # noqa: E402


def _threads(pids: list[int]) -> dict[str, int]:
    out = {}
    for pid in pids:
        try:
            for tid in os.listdir(f"/proc/{pid}/task"):
                stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
                fields = stat[stat.rindex(")") + 2:].split()
                out[f"{comm(pid)} {pid}/{tid}"] = int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--agent", type=Path, default=agent_binary())
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--pyspy", type=Path, default=None)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    ap.add_argument("--out", type=Path, default=HERE / "results" / f"tcpprof-{stamp}")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("tcp_profile needs root (network namespaces, TUN devices)", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    sample_s = max(1, args.seconds - 3)
    with Lab() as lab:
        pair = Pair.build(lab)
        work = Path(tempfile.mkdtemp(prefix="tcpprof-"))
        lab.spawn(pair.b, "iperf3", "-s", log=work / "server.log")
        time.sleep(0.3)
        tunnel = start_shadowmesh(pair, work, 30, agent=args.agent)
        time.sleep(2)
        agents = {side: [p for p in lab.pids(node) if comm(p).startswith("shadowmesh")]
                  for side, node in (("a", pair.a), ("b", pair.b))}
        client = lab.spawn(pair.a, "iperf3", "-c", tunnel.target, "-t", str(args.seconds), "-O", "1", "-J",
                           log=work / "client.json")
        time.sleep(1.5)
        pids = lab.pids()
        node_of = {p: "a" if p in lab.pids(pair.a) else "b" for p in pids}
        spies = []
        if args.pyspy:
            for side, ps in agents.items():
                for p in ps:
                    spies.append(subprocess.Popen(
                        [str(args.pyspy), "record", "--nonblocking", "-r", "150", "-d", str(sample_s),
                         "-p", str(p), "-f", "raw", "-o", str(args.out / f"pyspy-{side}.txt")],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        m0, t0, w0 = machine_ticks(), _threads(pids), time.monotonic()
        time.sleep(sample_s)
        m1, t1, w1 = machine_ticks(), _threads(pids), time.monotonic()
        for spy in spies:
            spy.wait()
        client.wait()
        doc = json.loads((work / "client.json").read_text())
    mbps = doc["end"]["sum_received"]["bits_per_second"] / 1e6
    threads = sorted(((100.0 * (t1[k] - t0.get(k, 0)) / HZ / (w1 - w0), k) for k in t1), reverse=True)
    result = {"tcp_mbps": round(mbps), "machine_busy_pct": round(busy_pct(m0, m1)), "loadavg": loadavg(),
              "threads": [{"node": node_of.get(int(k.split()[1].split("/")[0]), "?"), "thread": k,
                           "cpu_pct": round(v, 1)} for v, k in threads if v >= 1]}
    (args.out / "result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
