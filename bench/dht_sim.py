"""DHT simulation: N DhtNodes in one process, over loopback TCP (no TUN, no namespaces).

Each node has its own ML-DSA-87 key and CA-issued certificate, listens on its own loopback
address (127.100.x.y, so per-source limits see distinct sources) and binds its outgoing
connections to it. Nodes join one after another (a few at a time) from three seed nodes, each
running the real bootstrap (seeds, own-id lookup, bucket refresh, publish). Then it measures,
one lookup at a time:
  - FIND_VALUE of a random node's record from a random node: hops, latency, success;
  - FIND_NODE of a random id: hops, and whether the result equals the brute-force k nearest;
and memory per contact (routing table) and per record (store) with tracemalloc.

Everything built while joining is frozen out of the garbage collector's sight (gc.freeze, see
quiet_gc): with a thousand nodes in one process a full collection took 1-4 s and landed inside
lookups; an agent holds one node. The full collections that still run during the measured
lookups are reported. Certificates are signed once per node. Every node has its own revoked set
and verifier, but they share one content-addressed cache of verified signatures
(VerifiedDigests), so a record's signatures are checked once per process rather than once per
node (what a real node pays once per record, here paid once for all).

    .venv/bin/python bench/dht_sim.py --nodes 1000 --lookups 1000
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import random
import resource
import statistics
import sys
import time
import tracemalloc
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from cryptography.hazmat.primitives.asymmetric import mldsa  # noqa: E402

from nodeagent.discovery.config import DhtConfig  # noqa: E402
from nodeagent.discovery.ids import distance  # noqa: E402
from nodeagent.discovery.node import DhtNode, Seed  # noqa: E402
from nodeagent.discovery.records import Candidate, RecordVerifier, VerifiedDigests  # noqa: E402
from nodeagent.discovery.revocations import RevokedSet  # noqa: E402
from nodeagent.discovery.store import RecordStore  # noqa: E402
from nodeagent.discovery.table import RoutingTable  # noqa: E402
from nodeagent.protocol.cert import CertFlags, issue_certificate  # noqa: E402
from nodeagent.protocol.identity import peer_id  # noqa: E402
from nodeagent.protocol.netmap import Endpoint  # noqa: E402

SIM_CONFIG = DhtConfig(allow_loopback=True, max_pooled=6, maintenance_s=3600)


def sim_ip(i: int, base: int = 100) -> str:
    return f"127.{base + i // 62_500}.{(i // 250) % 250}.{i % 250 + 1}"


@dataclass
class Member:
    index: int
    ip: str
    key: mldsa.MLDSA87PrivateKey
    cert: bytes
    node: DhtNode
    port: int = 0

    @property
    def node_id(self) -> bytes:
        return self.node.node_id


@dataclass
class Mesh:
    ca: mldsa.MLDSA87PrivateKey
    ca_public: bytes
    signatures: VerifiedDigests
    members: list[Member] = field(default_factory=list)

    def verifier(self) -> RecordVerifier:
        return RecordVerifier(self.ca_public, RevokedSet(), allow_loopback=True, cache=self.signatures)

    async def close(self) -> None:
        await asyncio.gather(*(m.node.close() for m in self.members), return_exceptions=True)


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def make_identity(ca, index: int, now: int, network: str = "sim"):
    key = mldsa.MLDSA87PrivateKey.generate()
    pk = key.public_key().public_bytes_raw()
    overlay = f"10.{100 + index // 65_000}.{(index // 250) % 256}.{index % 250 + 1}"
    cert = issue_certificate(
        ca, public_key=pk, name=f"n{index}", network=network, overlay_ip=overlay, prefix_len=8,
        flags=CertFlags.PUBLIC if index < 3 else CertFlags.NONE, not_before=now - 3600, not_after=now + 86400,
    )
    return key, cert, peer_id(pk)


async def add_member(mesh: Mesh, index: int, config: DhtConfig, ip_base: int = 100) -> Member:
    key, cert, _ = make_identity(mesh.ca, index, int(time.time()))
    ip = sim_ip(index, ip_base)
    node = DhtNode(
        sign=key.sign, certificate=cert, ca_public_key=mesh.ca_public,
        candidates=[Candidate(Endpoint(ip, 1, 1))], revoked=RevokedSet(), signature_cache=mesh.signatures,
        config=config, bind_ip=ip,
    )
    port = await node.listen(ip, 0)
    node.set_candidates([Candidate(Endpoint(ip, port, 9443))])
    member = Member(index, ip, key, cert, node, port)
    mesh.members.append(member)
    return member


async def build_mesh(n: int, *, config: DhtConfig = SIM_CONFIG, seeds: int = 3, concurrency: int = 8,
                     ip_base: int = 100, progress=None) -> Mesh:
    """n nodes, joined in order: the first `seeds` know each other, the rest bootstrap from them."""
    raise_fd_limit()
    ca = mldsa.MLDSA87PrivateKey.generate()
    ca_public = ca.public_key().public_bytes_raw()
    mesh = Mesh(ca, ca_public, VerifiedDigests(size=4 * n + 1024))
    for i in range(n):
        await add_member(mesh, i, config, ip_base)
    seed_list = [Seed(m.ip, m.port, m.node.peer_id) for m in mesh.members[:seeds]]
    for m in mesh.members[:seeds]:
        await m.node.bootstrap([s for s in seed_list if s.peer_id != m.node.peer_id])
    sem = asyncio.Semaphore(concurrency)
    done = 0

    async def join(m: Member) -> None:
        nonlocal done
        async with sem:
            await m.node.bootstrap(seed_list)
        done += 1
        if done % 100 == 0:
            quiet_gc()
            if progress:
                progress(done)

    await asyncio.gather(*(join(m) for m in mesh.members[seeds:]))
    # the seeds joined when the mesh was empty: let them publish again now that it is not
    for m in mesh.members[:seeds]:
        await m.node.publish()
    quiet_gc()
    return mesh


def quiet_gc() -> None:
    """Move everything built so far out of the collector's sight (gc.freeze). One process holding
    a thousand nodes' tables and stores makes each full collection walk millions of objects
    (1-4 s measured); an agent holds one node. Without this the simulation measures the
    interpreter's collector, not the DHT."""
    gc.collect()
    gc.freeze()


def brute_closest(mesh: Mesh, target: bytes, k: int, exclude: bytes) -> list[bytes]:
    ids = [m.node_id for m in mesh.members if m.node_id != exclude]
    return sorted(ids, key=lambda i: distance(i, target))[:k]


class GcPauses:
    """Durations of the interpreter's full (generation 2) garbage collections: with a thousand
    nodes in one process, one such pause lands inside some lookup now and then."""

    def __init__(self) -> None:
        self.pauses: list[float] = []
        self._t0 = 0.0

    def __call__(self, phase: str, info: dict) -> None:
        if info.get("generation") != 2:
            return
        if phase == "start":
            self._t0 = time.perf_counter()
        else:
            self.pauses.append((time.perf_counter() - self._t0) * 1000)

    def __enter__(self) -> GcPauses:
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc) -> None:
        gc.callbacks.remove(self)


async def measure_lookups(mesh: Mesh, count: int, seed: int = 1) -> dict:
    with GcPauses() as pauses:
        out = await _measure_lookups(mesh, count, seed)
    out["gc_full_collections_ms"] = [round(p, 1) for p in pauses.pauses]
    return out


async def _measure_lookups(mesh: Mesh, count: int, seed: int) -> dict:
    rng = random.Random(seed)
    value_hops, value_ms, found = [], [], 0
    node_hops, node_ms, exact = [], [], 0
    for _ in range(count):
        src, dst = rng.sample(mesh.members, 2)
        t0 = time.perf_counter()
        lk = await src.node.run_lookup(dst.node_id, find_value=True)
        value_ms.append((time.perf_counter() - t0) * 1000)
        best = lk.best_value
        if best is not None and best[1].node_id == dst.node_id:
            found += 1
            value_hops.append(best[3])
        target = rng.randbytes(20)
        t0 = time.perf_counter()
        lk = await src.node.run_lookup(target)
        node_ms.append((time.perf_counter() - t0) * 1000)
        node_hops.append(lk.hops)
        k = src.node.config.k
        if [f.peer_id for f in lk.result()] == brute_closest(mesh, target, k, src.node_id):
            exact += 1
    return {
        "lookups": count,
        "find_value": {"found": found, "hops": summary(value_hops), "ms": summary(value_ms)},
        "find_node": {"exact_k_nearest": exact, "hops": summary(node_hops), "ms": summary(node_ms)},
    }


def summary(values: list[float]) -> dict:
    if not values:
        return {}
    s = sorted(values)
    return {
        "mean": round(statistics.fmean(s), 2),
        "p50": round(s[len(s) // 2], 2),
        "p99": round(s[min(len(s) - 1, math.ceil(0.99 * len(s)) - 1)], 2),
        "max": round(s[-1], 2),
    }


def memory_per_contact(count: int = 20_000) -> float:
    """Bytes of Python heap per routing-table contact (tracemalloc)."""
    rng = random.Random(7)
    tracemalloc.start()
    base = tracemalloc.take_snapshot()
    table = RoutingTable(bytes(20), k=count)  # one big bucket level is fine: we count contacts
    for i in range(count):  # ids and address strings are made here: the table keeps them
        table.seen(rng.randbytes(20), f"198.18.{i // 250 % 250}.{i % 250 + 1}", 8443, float(i))
    used = sum(s.size_diff for s in tracemalloc.take_snapshot().compare_to(base, "filename"))
    tracemalloc.stop()
    assert len(table) == count
    return used / count


def memory_per_record(mesh: Mesh) -> tuple[float, int]:
    """Bytes of Python heap per stored record (each under its two keys), and the record size."""
    records = [m.node.own_record for m in mesh.members if m.node.own_record]
    verify = mesh.verifier().verify
    for raw in records:  # warm the shared verification cache outside the measurement
        verify(raw, time.time())
    tracemalloc.start()
    base = tracemalloc.take_snapshot()
    store = RecordStore(bytes(20), verify, max_records=10 * len(records))
    now = time.time()
    for original in records:
        for key in verify(original, now).keys:  # each key in its own message: its own bytes object
            store.put(key, bytes(bytearray(original)), now)
    used = sum(s.size_diff for s in tracemalloc.take_snapshot().compare_to(base, "filename"))
    tracemalloc.stop()
    assert len(store) == 2 * len(records)
    return used / len(records), len(records[0])


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--lookups", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=8, help="nodes joining at the same time")
    ap.add_argument("--json", type=Path, help="also write the figures to this file")
    args = ap.parse_args()
    load0 = Path("/proc/loadavg").read_text().split()[:3]
    t0 = time.perf_counter()
    mesh = await build_mesh(args.nodes, concurrency=args.concurrency,
                            progress=lambda d: print(f"  joined {d}", file=sys.stderr))
    join_s = time.perf_counter() - t0
    contacts = [len(m.node.table) for m in mesh.members]
    records = [len(m.node.store) for m in mesh.members]
    figures = await measure_lookups(mesh, args.lookups)
    per_record, record_size = memory_per_record(mesh)
    await mesh.close()
    load1 = Path("/proc/loadavg").read_text().split()[:3]
    bound = math.ceil(math.log2(args.nodes))
    out = {
        "nodes": args.nodes,
        "log2_bound": bound,
        "join_s": round(join_s, 1),
        "contacts_per_node": summary(contacts),
        "records_per_node": summary(records),
        **figures,
        "memory_per_contact_bytes": round(memory_per_contact()),
        "memory_per_record_bytes": round(per_record),
        "record_bytes": record_size,
        "loadavg_start": load0,
        "loadavg_end": load1,
    }
    print(json.dumps(out, indent=2))
    fv, fn = out["find_value"], out["find_node"]
    print(f"\nN = {args.nodes}, ceil(log2 N) = {bound}; load average {' '.join(load0)} -> {' '.join(load1)}")
    print(f"FIND_VALUE: found {fv['found']}/{args.lookups}; hops mean {fv['hops'].get('mean')} "
          f"max {fv['hops'].get('max')}; latency p50 {fv['ms'].get('p50')} ms p99 {fv['ms'].get('p99')} ms")
    print(f"FIND_NODE:  exact k nearest {fn['exact_k_nearest']}/{args.lookups}; "
          f"hops mean {fn['hops'].get('mean')} "
          f"max {fn['hops'].get('max')}; latency p50 {fn['ms'].get('p50')} ms p99 {fn['ms'].get('p99')} ms")
    print(f"full garbage collections during the lookups: {out['gc_full_collections_ms']} ms")
    print(f"memory: {out['memory_per_contact_bytes']} B per contact, {out['memory_per_record_bytes']} B per "
          f"record ({record_size} B signed record, stored under 2 keys)")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    hops_ok = max(fv["hops"].get("max", 0), fn["hops"].get("max", 0)) <= bound
    p99_ok = max(fv["ms"].get("p99", 1e9), fn["ms"].get("p99", 1e9)) <= 100
    print(f"targets: hops <= ceil(log2 N): {'met' if hops_ok else 'NOT met'}; "
          f"p99 <= 100 ms: {'met' if p99_ok else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
