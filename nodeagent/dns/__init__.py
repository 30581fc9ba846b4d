"""DNS names of the mesh on the agent: `names.py` (pure: which name is whose, what to answer),
`resolv.py` (pure: the resolv.conf format), `server.py` (the sockets on the overlay address, port
53) and `system.py` (pointing the node's resolver at the agent and back)."""
