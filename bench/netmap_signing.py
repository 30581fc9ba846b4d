"""What signing netmaps costs the server and verifying them costs an agent (issue 9 item 3b).

    .venv/bin/python bench/netmap_signing.py [--nodes 100 1000] [--samples 60]

For a synthetic full mesh of N nodes (two of them relays, one route), computed by the server's own
pure code (meshadmin/netmap/compute.py) with no database:
  full          one node's full map (N-1 peers): body size, ML-DSA-87 sign and verify, and the
                agent's whole decode (verify + parse) of the frame
  delta         the delta every member gets when one node joins: size, sign, verify
  per change    after one node joins, how many distinct deltas the N members get (the server signs
                each distinct one once: ViewCache.encoded) and the signing time that makes
  per connect   N full maps, one signature each (a reconnect storm after a server restart)
  load          an agent verifying a persisted chain of a full map and 31 deltas at start
Times are separately timed calls: median and p99 (nearest rank), ms. Prints a table and writes
bench/results/netmap-signing-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "meshadmin.settings")

import django  # noqa: E402

django.setup()  # snapshot.py imports the models (no database is touched here)

from cryptography.hazmat.primitives.asymmetric import mldsa  # noqa: E402

from meshadmin.netmap import compute  # noqa: E402
from meshadmin.netmap.snapshot import NodeRow, RouteRow, Snapshot  # noqa: E402
from nodeagent.protocol import messages, netmap_sign  # noqa: E402


def timed(fn, n: int) -> dict:
    fn()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    times.sort()
    p99 = times[max(0, math.ceil(0.99 * n) - 1)]
    return {"median_ms": round(statistics.median(times), 3), "p99_ms": round(p99, 3)}


def snapshot(n: int, serial: int, extra: int = 0) -> Snapshot:
    nodes = []
    for i in range(n + extra):
        low = f"{(i + 1) // 250}.{(i + 1) % 250 + 1}"
        nodes.append(NodeRow(pk=i + 1, peer_id=f"{i + 1:040x}", name=f"node{i}", overlay_ip=f"10.64.{low}",
                             is_public=i < 2, is_relay=i < 2, active=True, fingerprint=f"{i:064x}",
                             endpoint_ip=f"198.18.{low}", control_port=8443, udp_port=9443))
    return Snapshot(network_id=1, network="bench", serial=serial, prefix_len=16, nodes=tuple(nodes),
                    routes=(RouteRow("192.168.50.0/24", 5),))


def run(n: int, samples: int) -> dict:
    ca = mldsa.MLDSA87PrivateKey.generate()
    ca_public = ca.public_key().public_bytes_raw()
    old, new = compute.view(snapshot(n, 10)), compute.view(snapshot(n, 11, extra=1))
    me = old.members[-1].peer_id  # an ordinary member
    full = messages.sign_full(old.netmap_for(me), ca)
    frame = messages.encode(full)
    ch = compute.changes(old, new)
    deltas = {}
    for row in new.members[:n]:
        d = compute.delta_for(old, new, ch, row.peer_id) or \
            compute.nm.diff(old.netmap_for(row.peer_id), new.netmap_for(row.peer_id))
        deltas.setdefault(d, 0)
        deltas[d] += 1
    common = max(deltas, key=deltas.get)
    signed_delta = messages.sign_delta(common, ca)
    sign_delta = timed(lambda: netmap_sign.sign(ca, b"delta", signed_delta.body), samples)
    chain = netmap_sign.SignedChain(
        netmap_sign.SignedPart(b"netmap", full.body, full.signature),
        tuple(netmap_sign.SignedPart(b"delta", signed_delta.body, signed_delta.signature) for _ in range(31)))
    return {
        "nodes": n,
        "full_body_bytes": len(full.body),
        "full_sign": timed(lambda: netmap_sign.sign(ca, b"netmap", full.body), samples),
        "full_verify": timed(lambda: netmap_sign.verify(ca_public, b"netmap", full.body, full.signature),
                             samples),
        "full_agent_decode": timed(lambda: messages.decode_server_message(frame, netmap_key=ca_public),
                                   samples),
        "full_encode_unsigned": timed(lambda: messages._pack(messages.netmap_to_dict(full.netmap)), samples),
        "delta_body_bytes": len(signed_delta.body),
        "delta_sign": sign_delta,
        "delta_verify": timed(lambda: netmap_sign.verify(ca_public, b"delta", signed_delta.body,
                                                         signed_delta.signature), samples),
        "distinct_deltas_per_change": len(deltas),
        "members_sharing_the_common_delta": deltas[common],
        "change_signing_ms": round(len(deltas) * sign_delta["median_ms"], 2),
        "connect_storm_signing_s": round(n * timed(lambda: netmap_sign.sign(ca, b"netmap", full.body),
                                                   samples)["median_ms"] / 1000, 2),
        "load_chain_of_31_deltas": timed(lambda: chain.verify(ca_public), max(5, samples // 6)),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, nargs="+", default=[100, 1000])
    ap.add_argument("--samples", type=int, default=60)
    args = ap.parse_args()
    results = [run(n, args.samples) for n in args.nodes]
    out = ROOT / "bench" / "results" / f"netmap-signing-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"loadavg_1m": os.getloadavg()[0], "results": results}, indent=2) + "\n")
    for r in results:
        print(json.dumps(r))
    print(f"load average {os.getloadavg()[0]:.2f}; written {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
