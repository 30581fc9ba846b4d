"""Read side of telemetry: current per-link figures and per-link time series (API and dashboard)."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.utils import timezone

from .ingest import link_figures
from .models import Presence, Resolution, Sample

__all__ = ["CURRENT_WINDOW", "current_links", "link_series", "online_nodes"]

CURRENT_WINDOW = timedelta(seconds=10)  # a link's figures are "current" for a few report intervals


def current_links(network_id: int, now: datetime | None = None) -> list[dict]:
    """The newest raw sample of every (reporter, peer) link of the network seen in CURRENT_WINDOW."""
    now = now or timezone.now()
    rows = (Sample.objects.filter(network_id=network_id, resolution=Resolution.RAW,
                                  ts__gte=now - CURRENT_WINDOW)
            .select_related("node").order_by("node_id", "peer_id", "-ts"))
    out, seen = [], set()
    for s in rows:
        key = (s.node_id, s.peer_id)
        if key in seen:
            continue
        seen.add(key)
        out.append({"reporter": s.node.peer_id, "at": s.ts.isoformat(), **link_figures(s)})
    return out


def link_series(node_pk: int, peer_id: str, window: timedelta, now: datetime | None = None) -> dict:
    """Points of one link, oldest first: raw samples for windows up to 1 h, minute rows beyond."""
    now = now or timezone.now()
    resolution = Resolution.RAW if window <= timedelta(hours=1) else Resolution.MINUTE
    rows = Sample.objects.filter(node_id=node_pk, peer_id=peer_id, resolution=resolution,
                                 ts__gte=now - window).order_by("ts")
    return {"resolution": "raw" if resolution == Resolution.RAW else "1m",
            "points": [{"at": s.ts.isoformat(), **link_figures(s)} for s in rows]}


def online_nodes(node_pks: list[int]) -> dict[int, bool]:
    return dict(Presence.objects.filter(node_id__in=node_pks).values_list("node_id", "online"))
