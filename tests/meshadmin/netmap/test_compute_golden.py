"""compute.netmap_for against golden JSON (inputs and expected maps side by side in golden/).

Regenerate after an intended change with SHADOWMESH_UPDATE_GOLDEN=1 and review the diff."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import mldsa

from meshadmin.netmap.compute import NodeNotInNetwork, netmap_for, netmaps_for_all
from meshadmin.netmap.snapshot import GroupRow, NodeRow, RouteRow, RuleRow, Snapshot
from nodeagent.protocol import messages
from nodeagent.protocol import netmap as nm

GOLDEN = Path(__file__).parent / "golden"
CASES = sorted(p.name.removesuffix(".input.json") for p in GOLDEN.glob("*.input.json"))
CA = mldsa.MLDSA87PrivateKey.generate()
CA_PUBLIC = CA.public_key().public_bytes_raw()


def snapshot_from(data: dict) -> Snapshot:
    return Snapshot(
        network_id=1,
        network=data["network"],
        serial=data["serial"],
        prefix_len=data["prefix_len"],
        nodes=tuple(NodeRow(**{**n, "tags": tuple(n.get("tags", ()))}) for n in data["nodes"]),
        routes=tuple(RouteRow(**r) for r in data["routes"]),
        dns_suffix=data.get("dns_suffix"),
        policy_default=data.get("policy_default", "allow"),
        groups=tuple(GroupRow(g["name"], tuple(g["members"])) for g in data.get("groups", ())),
        rules=tuple(RuleRow(pk=i + 1, position=i + 1, sources=tuple(r["sources"]),
                            destinations=tuple(r["destinations"]), protocol=r.get("protocol", "any"),
                            ports=tuple(tuple(p) for p in r.get("ports", ())))
                    for i, r in enumerate(data.get("rules", ()))),
    )


@pytest.mark.parametrize("case", CASES)
def test_netmaps_match_the_golden_file(case):
    snap = snapshot_from(json.loads((GOLDEN / f"{case}.input.json").read_text()))
    got = {pid: nm.netmap_to_dict(m) for pid, m in netmaps_for_all(snap).items()}
    expected_path = GOLDEN / f"{case}.expected.json"
    if os.environ.get("SHADOWMESH_UPDATE_GOLDEN") == "1":
        expected_path.write_text(json.dumps(got, indent=2, sort_keys=True) + "\n")
    assert got == json.loads(expected_path.read_text())


@pytest.mark.parametrize("case", CASES)
def test_every_golden_netmap_survives_the_wire(case):
    snap = snapshot_from(json.loads((GOLDEN / f"{case}.input.json").read_text()))
    for m in netmaps_for_all(snap).values():
        signed = messages.sign_full(m, CA)
        assert messages.decode_server_message(messages.encode(signed), netmap_key=CA_PUBLIC) == signed


def test_a_revoked_node_gets_no_netmap():
    snap = snapshot_from(json.loads((GOLDEN / "four_node_mesh.input.json").read_text()))
    with pytest.raises(NodeNotInNetwork):
        netmap_for(snap, "5" * 40)
    assert "5" * 40 not in netmaps_for_all(snap)


def test_computing_twice_gives_equal_maps():
    snap = snapshot_from(json.loads((GOLDEN / "four_node_mesh.input.json").read_text()))
    assert netmaps_for_all(snap) == netmaps_for_all(snap)
