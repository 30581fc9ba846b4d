"""Counters and histograms of events in this server process, bumped where the events happen.

Aggregation across server processes (docs/operations.md#server-metrics): with
PROMETHEUS_MULTIPROC_DIR set (settings.py), prometheus-client keeps these values in files in that
directory, one per process, and every process's `/metrics` adds up all of them, so a scrape of any
of the Daphne processes (or the Celery worker on the same host) sees the whole server. Without it
each process counts its own (the embedded default runs one process). Gauges of shared state are
not here: state.py reads them at scrape time, so they never need adding up.

The helpers below are the only writers; a label value from a refusal message is turned into a
stable token (`reason_label`: "unknown peer" -> "unknown_peer"). Every message passed in is a
fixed text of this project's code, so the label sets stay small.
"""

from __future__ import annotations

import re

from prometheus_client import Counter, Histogram, disable_created_metrics

__all__ = [
    "ALL",
    "agent_socket_closed",
    "agent_socket_opened",
    "auth_failed",
    "enrolled",
    "enrollment_refused",
    "netmap_frame_sent",
    "netmap_pushed",
    "push_last_agent_latency",
    "push_latency",
    "rate_limited",
    "reason_label",
    "report_dropped",
    "reports_stored",
]

disable_created_metrics()  # no `_created` series beside each counter

# change committed -> frame sent: a change within the debounce (0.3 s) after a push waits out the rest of it
PUSH_BUCKETS = (0.05, 0.1, 0.25, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)

AGENT_CONNECTIONS = Counter(
    "shadowmesh_agent_websocket_connections_total",
    "Agent websocket connections accepted (before authentication).", registry=None)
AGENT_CLOSED = Counter(
    "shadowmesh_agent_websocket_closed_total",
    "Agent websockets closed by the server, by reason (the close code's name).", ["reason"], registry=None)
NETMAP_PUSHES = Counter(
    "shadowmesh_netmap_pushes_total",
    "Netmap changes announced to a network's agent sockets (one per network per burst of changes).",
    registry=None)
NETMAP_FRAMES = Counter(
    "shadowmesh_netmap_frames_total",
    "Signed netmap frames sent to agents, by kind (full, delta, or current: the empty delta of a login "
    "that holds the current map).", ["kind"], registry=None)
PUSH_SECONDS = Histogram(
    "shadowmesh_netmap_push_seconds",
    "Seconds from a committed change to its netmap frame being sent, one observation per agent socket.",
    buckets=PUSH_BUCKETS, registry=None)
PUSH_LAST_SECONDS = Histogram(
    "shadowmesh_netmap_push_last_agent_seconds",
    "Seconds from a committed change to its frame being sent to the last agent socket that needed it, "
    "one observation per change and server process.", buckets=PUSH_BUCKETS, registry=None)
ENROLLMENTS = Counter("shadowmesh_enrollments_total", "Nodes enrolled.", registry=None)
ENROLLMENT_REFUSALS = Counter(
    "shadowmesh_enrollment_refusals_total", "Enrollment requests refused, by reason.", ["reason"],
    registry=None)
AUTH_FAILURES = Counter(
    "shadowmesh_auth_failures_total",
    "Failed authentications, by channel (http: /api/auth/*, websocket: /ws/agent/, dashboard: sign-in) "
    "and reason.", ["channel", "reason"], registry=None)
RATE_LIMITED = Counter(
    "shadowmesh_rate_limited_total",
    "Requests or sockets refused by a rate limit, by limit (enroll, auth, auth_peer, bearer, agent_connect, "
    "agent_login, endpoint_change).", ["limit"], registry=None)
REPORTS = Counter(
    "shadowmesh_telemetry_reports_total", "Agent counter reports ingested (stored in a batch).",
    registry=None)
SAMPLES = Counter("shadowmesh_telemetry_samples_total", "Per-link samples stored from those reports.",
                  registry=None)
REPORTS_DROPPED = Counter(
    "shadowmesh_telemetry_reports_dropped_total",
    "Agent counter reports dropped, by reason (too_large: over the network's size; store_failed).",
    ["reason"], registry=None)

ALL = (AGENT_CONNECTIONS, AGENT_CLOSED, NETMAP_PUSHES, NETMAP_FRAMES, PUSH_SECONDS, PUSH_LAST_SECONDS,
       ENROLLMENTS, ENROLLMENT_REFUSALS, AUTH_FAILURES, RATE_LIMITED, REPORTS, SAMPLES, REPORTS_DROPPED)

_NOT_TOKEN = re.compile(r"[^a-z0-9]+")


def reason_label(text: str) -> str:
    """A refusal message as a label value: lower case, words joined by "_", at most 64 characters."""
    return _NOT_TOKEN.sub("_", str(text).lower()).strip("_")[:64] or "unknown"


def agent_socket_opened() -> None:
    AGENT_CONNECTIONS.inc()


def agent_socket_closed(reason: str) -> None:
    AGENT_CLOSED.labels(reason_label(reason)).inc()


def netmap_pushed(groups: int = 1) -> None:
    NETMAP_PUSHES.inc(groups)


def netmap_frame_sent(kind: str) -> None:
    NETMAP_FRAMES.labels(kind).inc()


def push_latency(seconds: float) -> None:
    PUSH_SECONDS.observe(max(seconds, 0.0))


def push_last_agent_latency(seconds: float) -> None:
    PUSH_LAST_SECONDS.observe(max(seconds, 0.0))


def enrolled() -> None:
    ENROLLMENTS.inc()


def enrollment_refused(reason: str) -> None:
    ENROLLMENT_REFUSALS.labels(reason_label(reason)).inc()


def auth_failed(channel: str, reason: str) -> None:
    AUTH_FAILURES.labels(channel or "http", reason_label(reason)).inc()


def rate_limited(limit: str) -> None:
    RATE_LIMITED.labels(limit).inc()


def reports_stored(reports: int, samples: int) -> None:
    REPORTS.inc(reports)
    SAMPLES.inc(samples)


def report_dropped(reason: str) -> None:
    REPORTS_DROPPED.labels(reason).inc()
