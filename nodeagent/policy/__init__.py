"""Access policy on the agent: the netmap's (or the configuration's) rules enforced on inbound
packets. Pure: no sockets, no event loop, no clock.

    packet.py   the fields of a packet the policy looks at (protocol, addresses, ports)
    index.py    the rules compiled into a two-level longest-prefix lookup (RuleIndex)
    filter.py   the stateful filter the data path asks per packet (PacketFilter): flows, replies
    peers.py    whether a peer the agent did not get from the server may become one

The wire form of a policy is nodeagent/protocol/policy.py; the server computes each node's
(meshadmin/netmap/policy.py).
"""
