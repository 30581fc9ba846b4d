"""Markdown from the benchmark's JSON results: medians per tunnel and the issue's targets.

python bench/report.py [RESULTS_DIR]     # newest net-*.json, crypto-*.json, handshake-*.json there
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
NAN = float("nan")

# Targets of issue 3 ("Benchmark and targets").
TCP_X_WG = 2.0
TCP_X_NEBULA = 1.3
UDP_LOSS_MAX_PCT = 0.1
HANDSHAKE_MAX_MS = 50.0
IDLE_RSS_MAX_MB = 80.0


def median(rows: list[dict], key: str) -> float:
    vals = [float(r[key]) for r in rows if r.get(key) is not None and not math.isnan(float(r[key]))]
    return statistics.median(vals) if vals else NAN


def f(v: float, digits: int = 0) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def row_summary(r: dict) -> str:
    return (
        f"{r['tunnel']} run {r['run']}: TCP {f(r['tcp_mbps'])} Mbit/s (retr {f(r['tcp_retr'])}), "
        f"UDP {f(r['udp_sent_mbps'])}->{f(r['udp_mbps'])} Mbit/s loss {f(r['udp_loss_pct'], 3)} %, "
        f"RTT {f(r['rtt_avg_ms'], 3)}/"
        f"{f(r['rtt_p99_ms'], 3)} ms, CPU {f(r['tun_cpu_tcp'])}/{f(r['tun_cpu_udp'])} %, "
        f"load {r['loadavg1']:.2f}, other busy {f(r['idle_busy_pct'])} %"
    )


def medians(doc: dict) -> dict[str, dict]:
    by: dict[str, list[dict]] = {}
    for r in doc["rows"]:
        by.setdefault(r["tunnel"], []).append(r)
    keys = (
        "tcp_mbps",
        "tcp_retr",
        "udp_mbps",
        "udp_sent_mbps",
        "udp_loss_pct",
        "rtt_avg_ms",
        "rtt_p99_ms",
        "tun_cpu_tcp",
        "tun_cpu_udp",
        "sys_busy_pct",
        "idle_busy_pct",
        "loadavg1",
    )
    out = {}
    for name, rows in by.items():
        m = {k: median(rows, k) for k in keys}
        m["runs"] = len(rows)
        m["tcp_runs"] = [r["tcp_mbps"] for r in rows]
        out[name] = m
    return out


def net_markdown(doc: dict) -> str:
    med = medians(doc)
    wg = med.get("wireguard-go", {}).get("tcp_mbps", NAN)
    neb = med.get("nebula", {}).get("tcp_mbps", NAN)
    k = doc["knobs"]
    lines = [
        f"Run {doc['stamp']}: {k['runs']} runs each, medians. TCP: one stream, {k['dur']} s, -O 1. "
        f"UDP: {k['udp_rate']}bit/s, {k['udp_len']}-byte datagrams, {k['udp_dur']} s, "
        f"iperf3 buffers {k.get('udp_window') or 'kernel default'}. "
        f"RTT: {k['pings']} pings at 10 ms, idle tunnel. CPU: tunnel processes, both ends, 100 % = one core. "
        f"Load average {doc['loadavg_start']} at start, {doc.get('loadavg_end', '?')} at end.",
        "",
        "Versions: "
        + "; ".join(sorted({i["version"] for i in doc["tunnels"].values() if i.get("version")}))
        + ".",
        "",
        "| tunnel | overlay MTU | TCP Mbit/s | x wg-go | x nebula | TCP retr | UDP loss % "
        "| UDP sent / received Mbit/s | RTT avg / p99 ms | tunnel CPU % (TCP / UDP) "
        "| idle RSS MB (A / B) | up s | load avg | TCP runs |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for name, info in doc["tunnels"].items():
        if "skipped" in info:
            reason = info["skipped"].splitlines()[0]
            lines.append(f"| {name} | skipped: {reason} |" + " |" * 12)
            continue
        m = med.get(name)
        if not m:
            continue
        rss = info.get("rss_idle_mb") or []
        rss_s = " / ".join(f(x, 1) for x in rss) if name != "veth" else "-"
        cells = [
            name,
            str(info.get("mtu", "?")),
            f(m["tcp_mbps"]),
            f(m["tcp_mbps"] / wg, 2),
            f(m["tcp_mbps"] / neb, 2),
            f(m["tcp_retr"]),
            f(m["udp_loss_pct"], 3),
            f"{f(m['udp_sent_mbps'])} / {f(m['udp_mbps'])}",
            f"{f(m['rtt_avg_ms'], 3)} / {f(m['rtt_p99_ms'], 3)}",
            f"{f(m['tun_cpu_tcp'])} / {f(m['tun_cpu_udp'])}",
            rss_s,
            f(statistics.median(info["up_s"]), 2) if info.get("up_s") else "-",
            f(m["loadavg1"], 2),
            ", ".join(f(x) for x in m["tcp_runs"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    for name, info in doc["tunnels"].items():
        for side in "ab":
            st = info.get(f"status_{side}")
            if not st:
                continue
            drops = ", ".join(f"{k} {v}" for k, v in st["node"]["drops"].items() if v) or "none"
            peers = "; ".join(
                f"tx {p['tx_frames']} rx {p['rx_frames']} frames, lost {p['lost_frames']}, "
                f"replayed {p['replayed_frames']}, bad {p['bad_frames']}"
                for p in st.get("peers", [])
            )
            lines.append(f"\n{name} node {side.upper()} after the last round: drops {drops}; peer: {peers}")
        rows = [r for r in doc["rows"] if r["tunnel"] == name]
        if name == "shadowmesh" and rows and rows[-1].get("threads_tcp"):
            top = ", ".join(rows[-1]["threads_tcp"].split(", ")[:4])
            lines.append(f"\n{name} busiest threads during the last TCP test (% of one core): {top}")
        for failure in info.get("failures", []) if "skipped" not in info else []:
            lines.append(f"\n{name} failed to come up in {failure.splitlines()[0]}")
    return "\n".join(lines)


def targets_markdown(net: dict | None, handshake: dict | None) -> str:
    """One line per target of issue 3: met / not met / not measured, with the figures used."""
    lines = ["| target | measured | verdict |", "| --- | --- | --- |"]
    med = medians(net) if net else {}
    sm = med.get("shadowmesh")
    wg, neb = med.get("wireguard-go"), med.get("nebula")
    skip = (net or {}).get("tunnels", {}).get("shadowmesh", {}).get("skipped")

    def verdict(ok: bool | None) -> str:
        return "not measured" if ok is None else ("**met**" if ok else "**not met**")

    def add(target: str, measured: str, ok: bool | None) -> None:
        lines.append(f"| {target} | {measured} | {verdict(ok)} |")

    why = f"ShadowMesh leg skipped: {skip.splitlines()[0]}" if skip else "no ShadowMesh row"
    if sm and wg and not math.isnan(sm["tcp_mbps"]):
        x = sm["tcp_mbps"] / wg["tcp_mbps"]
        add(
            f"TCP ≥ {TCP_X_WG}x wireguard-go (same run)",
            f"{f(sm['tcp_mbps'])} vs {f(wg['tcp_mbps'])} Mbit/s = {x:.2f}x",
            x >= TCP_X_WG,
        )
    else:
        add(f"TCP ≥ {TCP_X_WG}x wireguard-go (same run)", why, None)
    if sm and neb and not math.isnan(sm["tcp_mbps"]):
        x = sm["tcp_mbps"] / neb["tcp_mbps"]
        add(
            f"TCP ≥ {TCP_X_NEBULA}x nebula (same run)",
            f"{f(sm['tcp_mbps'])} vs {f(neb['tcp_mbps'])} Mbit/s = {x:.2f}x",
            x >= TCP_X_NEBULA,
        )
    else:
        add(f"TCP ≥ {TCP_X_NEBULA}x nebula (same run)", why, None)
    if sm and neb and not math.isnan(sm["rtt_avg_ms"]):
        add(
            "ping RTT no worse than nebula (average; p99 shown)",
            f"avg {f(sm['rtt_avg_ms'], 3)} vs {f(neb['rtt_avg_ms'], 3)} ms "
            f"(p99 {f(sm['rtt_p99_ms'], 3)} vs {f(neb['rtt_p99_ms'], 3)})",
            sm["rtt_avg_ms"] <= neb["rtt_avg_ms"],
        )
    else:
        add("ping RTT no worse than nebula (average; p99 shown)", why, None)
    if sm and not math.isnan(sm["udp_loss_pct"]):
        add(
            f"< {UDP_LOSS_MAX_PCT} % loss at {net['knobs']['udp_rate']}bit/s UDP",
            f"{f(sm['udp_loss_pct'], 3)} % (median of {sm['runs']})",
            sm["udp_loss_pct"] < UDP_LOSS_MAX_PCT,
        )
    else:
        add(f"< {UDP_LOSS_MAX_PCT} % loss at 300 Mbit/s UDP", why, None)
    hs = (handshake or {}).get("results", {})
    best = hs.get("loopback_tcp") or hs.get("in_process")
    if best and best.get("median_ms") is not None:
        add(
            f"full PQ handshake ≤ {HANDSHAKE_MAX_MS:.0f} ms on loopback",
            f"{best['label']}: median {best['median_ms']:.1f} ms, p99 {best['p99_ms']:.1f} ms",
            best["median_ms"] <= HANDSHAKE_MAX_MS,
        )
    else:
        reason = (handshake or {}).get("skipped", {}).get("in_process", "bench/handshake.py not run")
        add(f"full PQ handshake ≤ {HANDSHAKE_MAX_MS:.0f} ms on loopback", reason, None)
    rss = (net or {}).get("tunnels", {}).get("shadowmesh", {}).get("rss_idle_mb")
    if rss:
        add(
            f"idle agent < {IDLE_RSS_MAX_MB:.0f} MB RSS",
            f"{' / '.join(f(x, 1) for x in rss)} MB (node A / B)",
            max(rss) < IDLE_RSS_MAX_MB,
        )
    else:
        add(f"idle agent < {IDLE_RSS_MAX_MB:.0f} MB RSS", why, None)
    return "\n".join(lines)


def newest(results: Path, prefix: str) -> dict | None:
    files = sorted(results.glob(f"{prefix}-*.json"))
    return json.loads(files[-1].read_text()) if files else None


def main() -> int:
    results = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "results"
    net, hs, cr = newest(results, "net"), newest(results, "handshake"), newest(results, "crypto")
    if net:
        print("### Tunnels\n")
        print(net_markdown(net))
    if cr:
        print("\n### Crypto per operation\n")
        print(cr.get("markdown", ""))
    if hs:
        print("\n### Handshake\n")
        print(hs.get("markdown", ""))
    print("\n### Targets (issue 3)\n")
    print(targets_markdown(net, hs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
