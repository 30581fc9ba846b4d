"""A small version of bench/dht_sim.py: 64 real nodes over loopback TCP join one after another,
then lookups between random nodes. Asserts correctness and hop counts (never timings).

Hop bound: a lookup's hop count is the request round in which the farthest-down result was
asked (a node from our own table is hop 1). Each round asks nodes whose buckets toward the
target hold nodes sharing at least one more leading bit with it, so with populated buckets every
round gains at least one bit of prefix; N random ids have about log2 N distinct prefix lengths,
hence the target <= ceil(log2 N). We assert it with no slack: with k = 20 each node knows a
third of a 64-node mesh and lookups take 1-2 rounds (the 1,000-node bench measures at most 3-5
against a bound of 10), so a failure means the routing, not chance.
"""

from __future__ import annotations

import math
import random
import sys
from pathlib import Path

from nodeagent.discovery.config import DhtConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "bench"))
import dht_sim

N = 64


async def test_a_64_node_mesh_finds_every_record_within_log2_n_hops():
    config = DhtConfig(allow_loopback=True, max_pooled=8, maintenance_s=3600)
    mesh = await dht_sim.build_mesh(N, config=config, ip_base=random.Random().randrange(150, 250))
    try:
        bound = math.ceil(math.log2(N))
        for m in mesh.members:
            assert len(m.node.table) >= 20  # every node knows at least k others
        figures = await dht_sim.measure_lookups(mesh, 64, seed=5)
        value, node = figures["find_value"], figures["find_node"]
        assert value["found"] == 64  # every node's record is found from every other
        assert node["exact_k_nearest"] >= 58  # >= 90 % equal the brute-force k nearest
        assert 1 <= value["hops"]["max"] <= bound
        assert 1 <= node["hops"]["max"] <= bound
        # every record is held by several nodes besides its owner
        holders = [sum(m.node_id in other.node.store for other in mesh.members) for m in mesh.members]
        assert min(holders) >= 3
    finally:
        await mesh.close()
