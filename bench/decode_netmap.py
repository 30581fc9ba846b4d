"""What an agent spends reading the server's netmap frames: decode_server_message per frame.

    .venv/bin/python bench/decode_netmap.py [--peers 1000] [--rounds 5]

Frames as the server sends them (signed by a CA key made here): the one-peer delta an enrollment
makes, and a full map of --peers peers (what a node gets at login). Each is decoded as the agent
does, with the signature checked (`netmap_key`), and without (the parse alone, which is also what
bench/controlplane_agents.py's simulated agents do for every delta they get). Median over
--rounds rounds of timeit's best-of loop; µs per frame. Prints a table and the JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import timeit
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import mldsa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nodeagent.protocol import messages
from nodeagent.protocol import netmap as nm


def _peer(i: int) -> nm.Peer:
    endpoints = (nm.Endpoint(ip="198.18.0.1", control_port=7946, udp_port=40000 + i % 1000),) if i % 2 else ()
    return nm.Peer(peer_id=f"{i:040x}", name=f"node-{i}", overlay_ip=f"10.64.{i // 250}.{i % 250 + 1}",
                   fingerprint=f"{i:064x}", endpoints=endpoints, relay=f"{1:040x}", online=bool(i % 3))


def _frames(peers: int) -> dict[str, bytes]:
    ca = mldsa.MLDSA87PrivateKey.generate()
    me = nm.SelfInfo(peer_id=f"{0:040x}", name="me", overlay_ip="10.64.0.1", prefix_len=16)
    full = nm.NetMap(network="bench0", serial=7, node=me, peers=tuple(_peer(i) for i in range(2, peers + 2)))
    delta = nm.NetMapDelta(network="bench0", base_serial=7, serial=8, upsert=(_peer(peers + 2),))
    return {"delta, 1 peer": messages.encode(messages.sign_delta(delta, ca)),
            f"full map, {peers} peers": messages.encode(messages.sign_full(full, ca)),
            "_key": ca.public_key().public_bytes_raw()}


def _time(fn, rounds: int) -> float:
    t = timeit.Timer(fn)
    n, _ = t.autorange()
    return statistics.median(min(t.repeat(3, n)) / n for _ in range(rounds)) * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    frames = _frames(args.peers)
    key = frames.pop("_key")
    out = {}
    print(f"{'frame':<22} {'bytes':>8} {'parse µs':>10} {'verify + parse µs':>18}")
    for name, frame in frames.items():
        parse = _time(lambda f=frame: messages.decode_server_message(f), args.rounds)
        both = _time(lambda f=frame: messages.decode_server_message(f, netmap_key=key), args.rounds)
        out[name] = {"bytes": len(frame), "parse_us": round(parse, 1), "verify_parse_us": round(both, 1)}
        print(f"{name:<22} {len(frame):>8} {parse:>10.1f} {both:>18.1f}")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
