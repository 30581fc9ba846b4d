"""Prometheus metrics of the agent (`up --metrics-listen HOST:PORT`): families.py turns the status
document into metric families (pure), http.py serves them on the agent's event loop."""
