"""The DHT: a small Kademlia of signed peer records among the agents (docs/dht.md).

Pure modules (no sockets, event loop or clock; tests/nodeagent/test_purity.py checks them):
ids, table, lookup, records, revocations, store, messages, budget, identities, peering (what the
agent does with a verified record), config (the node's settings and counters). The asyncio edge:
node.py (the DHT node), server.py (its open port: connections, deadlines, request budgets),
transport.py (frames under deadlines, pooled client connections) and service.py (the DHT in a
running enrolled agent).
"""
