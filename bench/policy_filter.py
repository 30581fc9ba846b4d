"""What the access policy costs the data path per packet, in process (no namespaces, no root).

    .venv/bin/python bench/policy_filter.py [--rules 3,100] [--rounds 3] [--results DIR]

With the policy of the tunnel benchmark's leg `shadowmesh-policy100` (bench/tunnels.py
`policy_toml`: the three rules the measurement needs, and decoys up to the count), times the
calls the data path makes (nodeagent/policy/filter.py):
- `admit` of an inbound TCP segment of an established flow (the common case: one probe),
- `track` of an outbound TCP segment of a known flow,
- `admit` of a segment whose flow is not in the table yet (the rule lookup: once per new flow),
- `RuleIndex.allows` alone, and building the index (once per netmap change);
for several rule counts (default 3, the measurement's own rules, and 100), interleaved. Best of 5
loops and of the rounds (least disturbed by other processes). The data path calls `admit` once per
run of one flow's segments and `track` once per TUN read (a TSO super-packet), not per packet.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import math
import sys
import time
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from tunnels import policy_toml  # noqa: E402

from nodeagent.policy.filter import PacketFilter  # noqa: E402
from nodeagent.policy.index import RuleIndex  # noqa: E402
from nodeagent.protocol.policy import check_policy, check_rule, parse_ports  # noqa: E402

A, B = "10.10.10.1", "10.10.10.2"


def loop_us(fn, n: int, repeats: int = 5) -> float:
    best = math.inf
    for _ in range(repeats):
        t = time.perf_counter()
        for i in range(n):
            fn(i)
        best = min(best, time.perf_counter() - t)
    return best / n * 1e6


def new_flow_us(policy, packets: list[bytes], repeats: int = 5) -> float:
    """Mean µs to admit a connection request of a flow the table does not hold yet (each loop
    starts from an empty filter, built outside the timing)."""
    best = math.inf
    for _ in range(repeats):
        flt = PacketFilter(policy, 0.0)
        t = time.perf_counter()
        for p in packets:
            flt.admit(p)
        best = min(best, time.perf_counter() - t)
    return best / len(packets) * 1e6


def tcp4(src: str, dst: str, sport: int, dport: int, flags: int = 0x10, payload: int = 1400) -> bytes:
    h = bytearray(20)
    h[0], h[8], h[9] = 0x45, 64, 6
    h[2:4] = (40 + payload).to_bytes(2, "big")
    h[12:16] = ipaddress.IPv4Address(src).packed
    h[16:20] = ipaddress.IPv4Address(dst).packed
    t = bytearray(20)
    t[0:2], t[2:4] = sport.to_bytes(2, "big"), dport.to_bytes(2, "big")
    t[12], t[13] = 0x50, flags
    return bytes(h) + bytes(t) + bytes(payload)


def the_policy(count: int):
    doc = tomllib.loads(policy_toml(count))["policy"]
    rules = [check_rule(r["from"], r["to"], r.get("proto", "any"), parse_ports(r.get("ports", "")))
             for r in doc["rule"]]
    return check_policy(doc["default"], rules)


def measure(count: int) -> dict[str, float]:
    policy = the_policy(count)
    t = time.perf_counter()
    flt = PacketFilter(policy, 0.0)  # on b, the receiving side of the benchmark's TCP stream
    build_ms = (time.perf_counter() - t) * 1e3
    syn = tcp4(A, B, 40000, 5201, flags=0x02, payload=0)
    data = tcp4(A, B, 40000, 5201)
    ack = tcp4(B, A, 5201, 40000, payload=0)
    assert flt.admit(syn) and flt.admit(data), "the policy lets the benchmark's stream in"
    flt.track(ack)
    assert not flt.admit(tcp4(A, B, 40000, 5202, flags=0x02, payload=0)), "and not another port"
    new_flows = [tcp4(A, B, 1024 + i, 5201, flags=0x02, payload=0) for i in range(4096)]
    index = RuleIndex.build(policy.rules)
    a, b = ipaddress.ip_address(A).packed, ipaddress.ip_address(B).packed
    n = 200_000
    return {
        "rules": len(policy.rules),
        "admit_established_us": loop_us(lambda i: flt.admit(data), n),
        "track_known_us": loop_us(lambda i: flt.track(ack), n),
        "admit_new_flow_us": new_flow_us(policy, new_flows),
        "index_allows_us": loop_us(lambda i: index.allows(a, b, 6, 5201), n),
        "build_ms": build_ms,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rules", default="3,100", help="rule counts to compare (comma-separated; 3 at least)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the best of them is shown")
    ap.add_argument("--results", default="")
    args = ap.parse_args()
    counts = [int(c) for c in args.rules.split(",")]
    best: dict[int, dict[str, float]] = {}
    for _ in range(args.rounds):  # interleaved, so a change in the machine's load hits every count
        for count in counts:
            got = measure(count)
            held = best.setdefault(count, got)
            for key, value in got.items():
                held[key] = min(held[key], value)
    rows = [
        ("admit, established TCP flow (µs)", "admit_established_us", 3),
        ("track, known outbound flow (µs)", "track_known_us", 3),
        ("admit, new flow: the rule lookup (µs)", "admit_new_flow_us", 3),
        ("RuleIndex.allows alone (µs)", "index_allows_us", 3),
        ("build the filter (ms)", "build_ms", 2),
    ]
    print(f"load average {' '.join(open('/proc/loadavg').read().split()[:3])}")
    print("| step | " + " | ".join(f"{c} rules" for c in counts) + " |")
    print("| --- |" + " ---: |" * len(counts))
    for name, key, digits in rows:
        print(f"| {name} | " + " | ".join(f"{best[c][key]:.{digits}f}" for c in counts) + " |")
    if args.results:
        out = Path(args.results)
        out.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        (out / f"policy-{stamp}.json").write_text(json.dumps({str(c): best[c] for c in counts}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
