"""Prometheus metrics of meshadmin, served at `/metrics` (docs/operations.md#server-metrics).

    events.py    counters and histograms of things that happen in a server process (sockets,
                 pushes, enrollments, refusals, reports), bumped where they happen
    state.py     gauges read at scrape time from what all processes share (the database, Redis)
    endpoint.py  the ASGI endpoint: who may scrape (loopback, or the bearer token), and the text
"""
