"""Ephemeral nodes: a node enrolled with an ephemeral token (a CI runner, a container) is deleted
once the server has not heard from it for SHADOWMESH_EPHEMERAL_AFTER_S (30 minutes by default).

"Heard from" is its presence's last activity (its websocket: connections, counter reports, at
least every 90 s while connected), or its enrollment when it never connected. A node that is
online is never due: its activity is fresh. Deleting is `nodes.delete_node`: audited (reason
"ephemeral"), pushed, its overlay address freed. It is not a revocation: the certificate stays
valid until it expires, and its key could enroll again with a token.

Who runs it: the Celery beat job `meshadmin.mesh.tasks.reap_ephemeral_nodes` every minute, and,
on the embedded default without beat, each server process at most once a minute after it stores
counter reports (`reap_if_due`, from telemetry/ingest.py), so it runs whenever any agent is
connected."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from time import monotonic

from django.conf import settings
from django.db.models import F
from django.db.models.functions import Coalesce
from django.utils import timezone

from ..choices import NodeStatus
from ..models import Node
from .errors import Conflict
from .nodes import delete_node
from .throttle import AtMostEvery

__all__ = ["REAP_INTERVAL_S", "due", "reap_ephemeral_nodes", "reap_if_due", "reset_reap_clock",
           "silent_after"]

log = logging.getLogger(__name__)

REAP_INTERVAL_S = 60.0
_reap_clock = AtMostEvery(REAP_INTERVAL_S)  # when this process last reaped


def silent_after() -> timedelta:
    return timedelta(seconds=settings.SHADOWMESH_EPHEMERAL_AFTER_S)


def due(now: datetime | None = None) -> list[Node]:
    """The active ephemeral nodes last heard from before now - silent_after()."""
    cutoff = (now or timezone.now()) - silent_after()
    return list(Node.objects.filter(ephemeral=True, status=NodeStatus.ACTIVE)
                .annotate(heard=Coalesce(F("presence__last_seen"), F("enrolled_at")))
                .filter(heard__lt=cutoff).order_by("pk"))


def reap_ephemeral_nodes(now: datetime | None = None) -> list[str]:
    """Delete the ephemeral nodes that are due; returns their peer ids."""
    gone = []
    for node in due(now):
        try:
            delete_node(node, actor="system", reason=f"ephemeral: silent for {silent_after()}")
        except Conflict:  # revoked meanwhile: the row stays, as for every revoked node
            continue
        gone.append(node.peer_id)
        log.info("deleted ephemeral node %s (%s): silent for %s", node.name, node.peer_id, silent_after(),
                 extra={"event": "node.ephemeral_deleted", "peer_id": node.peer_id, "node": node.name})
    return gone


def reap_if_due() -> None:
    """One reap, if this process has not reaped for REAP_INTERVAL_S. A failure is logged and
    never reaches the caller."""
    if not _reap_clock.due(monotonic()):
        return
    try:
        reap_ephemeral_nodes()
    except Exception:
        log.exception("ephemeral nodes: reaping failed")


def reset_reap_clock() -> None:
    """Forget when this process last reaped (tests)."""
    _reap_clock.reset()
