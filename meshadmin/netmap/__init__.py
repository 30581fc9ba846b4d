"""THE netmap: what each node must know, computed in one place (gather first, then compute).

snapshot.load(network) reads the database with a fixed number of queries into frozen rows;
policy.py and compute.py are pure functions of that snapshot. Consumers, tasks and the dashboard
all use what compute.netmap_for returns (the wire type lives in nodeagent.protocol.netmap).
"""
