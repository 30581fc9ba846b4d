"""One measurement run over a tunnel that is up: iperf3 TCP, iperf3 UDP at a fixed rate, ping RTT,
tunnel CPU and machine load. Every figure is parsed from the tool's own output; a failed tool gives
NaN for its columns, never a made-up number.

Definitions (also in BENCHMARKS.md):
- tcp_mbps: iperf3 receiver goodput, one stream A -> B, DUR s, first second omitted (-O 1).
- udp_loss_pct: iperf3 -u -b UDP_RATE -l UDP_LEN for UDP_DUR s; loss % as reported by the receiver.
- rtt_avg_ms / rtt_p99_ms: PINGS pings at 10 ms over the idle tunnel; p99 by nearest rank.
- tun_cpu_tcp / tun_cpu_udp: utime+stime (all threads) of every process in the two namespaces except
  iperf3 and ping, during the TCP / UDP test; 100 % = one core, both ends summed.
- sys_busy_pct: busy share of the whole machine during the TCP test (/proc/stat; 100 % = all cores).
- idle_busy_pct: the same over one second before the run: load from other users of the machine.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from pair import Pair

from lab import LabError, comm

HZ = os.sysconf("SC_CLK_TCK")
NAN = float("nan")
NOT_TUNNEL = {"iperf3", "ping", "ip", ""}


@dataclass
class Knobs:
    dur: int = 10
    udp_dur: int = 10
    udp_rate: str = "300M"
    udp_len: int = 1200
    udp_window: str = "4M"  # iperf3 -w for the UDP test: socket buffers of the load generator itself
    pings: int = 200


def tunnel_pids(pair: Pair) -> list[int]:
    return [p for p in pair.lab.pids() if comm(p) not in NOT_TUNNEL]


def cpu_ticks(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs."""
    v = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = v[3] + v[4]
    return sum(v[:8]) - idle, sum(v[:8])


def busy_pct(before: tuple[int, int], after: tuple[int, int]) -> float:
    return 100.0 * (after[0] - before[0]) / max(1, after[1] - before[1])


def rss_mb(pids: list[int]) -> float:
    kb = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    kb += int(line.split()[1])
        except OSError:
            continue
    return kb / 1024


def loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def thread_ticks(pids: list[int]) -> dict[str, int]:
    """utime+stime per thread, keyed "pid/tid comm"."""
    out = {}
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").glob("*"):
            try:
                head, tail = (task / "stat").read_text().rsplit(")", 1)
            except OSError:
                continue
            fields = tail.split()
            out[f"{pid}/{task.name} {head.split('(', 1)[1]}"] = int(fields[11]) + int(fields[12])
    return out


class Sampler:
    """CPU of the tunnel processes (total and per thread) and of the machine over one interval."""

    def __init__(self, pair: Pair) -> None:
        self.pids = tunnel_pids(pair)
        self.threads0 = thread_ticks(self.pids)
        self.t0, self.m0, self.w0 = cpu_ticks(self.pids), machine_ticks(), time.monotonic()

    def stop(self) -> tuple[float, float]:
        t1, m1, w1 = cpu_ticks(self.pids), machine_ticks(), time.monotonic()
        self.wall = max(1e-6, w1 - self.w0)
        self.threads1 = thread_ticks(self.pids)
        tun = 100.0 * (t1 - self.t0) / HZ / self.wall if self.pids else NAN
        return tun, busy_pct(self.m0, m1)

    def busiest_threads(self, min_pct: float = 5.0) -> str:
        """ "comm pid/tid pct%" for threads that used at least `min_pct` of a core, busiest first."""
        pct = {k: 100.0 * (v - self.threads0.get(k, 0)) / HZ / self.wall for k, v in self.threads1.items()}
        top = sorted(((p, k) for k, p in pct.items() if p >= min_pct), reverse=True)
        return ", ".join(f"{k.split(' ', 1)[1]} {k.split(' ', 1)[0]} {p:.0f}%" for p, k in top)


def _iperf(pair: Pair, argv: list[str], timeout: float, log: Path) -> dict:
    try:
        proc = pair.a.run("iperf3", "--connect-timeout", "3000", "-J", *argv, timeout=timeout, check=False)
        out = proc.stdout
    except LabError:  # it did not finish in time
        out = ""
    log.write_text(out)
    try:
        return json.loads(out)
    except ValueError:
        return {}


def parse_tcp(doc: dict) -> tuple[float, float]:
    try:
        end = doc["end"]
        return end["sum_received"]["bits_per_second"] / 1e6, float(end["sum_sent"].get("retransmits", NAN))
    except (KeyError, TypeError):
        return NAN, NAN


def parse_udp(doc: dict) -> tuple[float, float, float]:
    """(sender Mbit/s, receiver goodput Mbit/s, loss %) from an iperf3 UDP client report."""
    try:
        end = doc["end"]
        if "sum_received" in end:  # iperf3 >= 3.12
            sent, got = end["sum_sent"], end["sum_received"]
            return sent["bits_per_second"] / 1e6, got["bits_per_second"] / 1e6, float(got["lost_percent"])
        s = end["sum"]  # older: sender rate and the receiver's losses
        loss = float(s["lost_percent"])
        return s["bits_per_second"] / 1e6, s["bits_per_second"] * (1 - loss / 100) / 1e6, loss
    except (KeyError, TypeError, ValueError):
        return NAN, NAN, NAN


_RTT = re.compile(r"time=([\d.]+) ms")


def parse_ping(text: str) -> tuple[float, float, int]:
    rtts = sorted(float(x) for x in _RTT.findall(text))
    if not rtts:
        return NAN, NAN, 0
    p99 = rtts[max(0, math.ceil(0.99 * len(rtts)) - 1)]
    return sum(rtts) / len(rtts), p99, len(rtts)


def measure_run(pair: Pair, tunnel: str, target: str, run: int, k: Knobs, logdir: Path) -> dict:
    row: dict = {"tunnel": tunnel, "run": run, "loadavg1": loadavg()}
    m0 = machine_ticks()
    time.sleep(1.0)
    row["idle_busy_pct"] = busy_pct(m0, machine_ticks())
    stem = logdir / f"{tunnel}-{run}"

    s = Sampler(pair)
    tcp = _iperf(pair, ["-c", target, "-t", str(k.dur), "-O", "1"], k.dur + 30, stem.with_suffix(".tcp.json"))
    row["tun_cpu_tcp"], row["sys_busy_pct"] = s.stop()
    row["threads_tcp"] = s.busiest_threads()
    row["tcp_mbps"], row["tcp_retr"] = parse_tcp(tcp)
    time.sleep(0.5)

    s = Sampler(pair)
    udp = _iperf(
        pair,
        ["-c", target, "-u", "-b", k.udp_rate, "-l", str(k.udp_len), "-t", str(k.udp_dur)]
        + (["-w", k.udp_window] if k.udp_window else []),
        k.udp_dur + 30,
        stem.with_suffix(".udp.json"),
    )
    row["tun_cpu_udp"], _ = s.stop()
    row["threads_udp"] = s.busiest_threads()
    row["udp_sent_mbps"], row["udp_mbps"], row["udp_loss_pct"] = parse_udp(udp)
    time.sleep(0.5)

    try:
        argv = ("ping", "-c", str(k.pings), "-i", "0.01", "-W", "1", target)
        ping = pair.a.run(*argv, timeout=k.pings * 0.05 + 20, check=False).stdout
    except LabError:  # it did not finish in time
        ping = ""
    (stem.with_suffix(".ping.txt")).write_text(ping)
    row["rtt_avg_ms"], row["rtt_p99_ms"], row["pings_ok"] = parse_ping(ping)
    row["loadavg1_end"] = loadavg()
    return row
