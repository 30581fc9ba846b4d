"""The DHT node's settings and counters. Pure: plain data, no I/O.

`DhtConfig` holds the node's limits (Kademlia's k and alpha, deadlines, connection caps, request
budgets, upkeep intervals); `DhtStats` its counters (lookups, refusals by reason, requests served).
Both the node (node.py) and its open port (server.py) read them; they live here so that neither
imports the other for them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .records import MAX_RECORD_LIFETIME_S

__all__ = ["DhtConfig", "DhtStats"]


@dataclass(frozen=True, slots=True)
class DhtConfig:
    k: int = 20
    alpha: int = 3
    value_quorum: int = 3
    request_s: float = 2.0  # one request, connect included
    first_frame_s: float = 5.0  # a new connection must send a whole first frame within this
    frame_s: float = 5.0  # a frame must be complete this long after its first byte
    idle_s: float = 60.0  # server side: close a connection silent for this long
    client_idle_s: float = 30.0  # client side: close a pooled connection unused for this long
    max_connections: int = 256
    max_connections_per_source: int = 8
    request_rate: float = 50.0  # per source, requests per second
    request_burst: float = 200.0
    check_cost: float = 10.0  # tokens charged when a request carries a record we must verify
    max_pooled: int = 32
    republish_s: float = 30 * 60
    refresh_s: float = 60 * 60
    maintenance_s: float = 60.0
    record_lifetime_s: int = MAX_RECORD_LIFETIME_S
    max_pending_checks: int = 64
    subnet_cap: int | None = None
    allow_loopback: bool = False  # only for in-process simulations and tests
    advertise: bool = True  # send our record with the first request of each connection...
    advertise_s: float = 600.0  # ...unless that address got the same record this recently


@dataclass
class DhtStats:
    lookups: int = 0
    failures: int = 0  # lookups without a result: no node answered, or a node record not found
    requests_served: int = 0
    stored: int = 0
    refused: dict[str, int] = field(default_factory=dict)  # reason -> count (server side)
    hops: list[int] = field(default_factory=list)  # of the last lookups (bounded)

    def refuse(self, reason: str) -> None:
        self.refused[reason] = self.refused.get(reason, 0) + 1
