"""Channels app: the agent websocket (/ws/agent/), netmap pushes after commit, dashboard fan-out."""
