"""Telemetry endpoints under /api/telemetry/ (dashboard users: staff or the viewer group).

GET /api/telemetry/links?network=NAME                      current per-link figures
GET /api/telemetry/links/<reporter>/<peer>?window=1h       time series of one link (window: 1m..7d)

A link's figures: reporter (current links only), at, peer, path, rtt_ms, tx_bytes_per_s,
rx_bytes_per_s, tx_frames_per_s, rx_frames_per_s, loss_pct, last_handshake_s (queries.LinkFigures).
"""

from __future__ import annotations

import re
from dataclasses import asdict
from datetime import timedelta

from django.http import HttpRequest
from ninja import Path, Query, Router
from ninja.errors import HttpError
from ninja.security import django_auth

from meshadmin.api.schemas import PEER_ID_PATTERN, ErrorOut, LinkSeriesOut, LinksOut
from meshadmin.mesh.models import Network, Node
from meshadmin.mesh.permissions import can_view
from nodeagent.protocol.identity import PEER_ID_RE

from . import queries

__all__ = ["router"]

router = Router(tags=["telemetry"])

_WINDOW = re.compile(r"^([0-9]{1,4})([mhd])\Z")  # ASCII digits, no final newline (the schema's rule)
# the windows _window accepts (1m..7d, up to four digits), as the schema states them
WINDOW_PATTERN = (r"^(?:(?:0{0,3}[1-9]|0{0,2}[1-9][0-9]|0?[1-9][0-9]{2}|[1-9][0-9]{3})m"
                  r"|(?:0{0,3}[1-9]|0{0,2}[1-9][0-9]|0?1[0-5][0-9]|0?16[0-8])h|0{0,3}[1-7]d)$")
_ERRORS = {400: ErrorOut, 401: ErrorOut, 403: ErrorOut, 404: ErrorOut}
_UNITS = {"m": timedelta(minutes=1), "h": timedelta(hours=1), "d": timedelta(days=1)}


def _viewer(request: HttpRequest) -> None:
    if not can_view(request.user):
        raise HttpError(403, "you may not view telemetry")


def _plain(f: queries.LinkFigures, *, reporter: bool = True) -> dict[str, object]:
    head = {"reporter": f.reporter} if reporter else {}
    return {**head, "at": f.at.isoformat(), "peer": f.peer, "path": f.path, "rtt_ms": f.rtt_ms,
            **asdict(f.rates), "last_handshake_s": f.last_handshake_s}


def _window(text: str) -> timedelta:
    m = _WINDOW.match(text or "")
    if not m:
        raise HttpError(400, "window: like 5m, 1h or 7d")
    value = int(m.group(1)) * _UNITS[m.group(2)]
    if not timedelta(minutes=1) <= value <= timedelta(days=7):
        raise HttpError(400, "window: between 1m and 7d")
    return value


@router.get("/links", auth=django_auth, response={200: LinksOut, **_ERRORS})
def current_links(request: HttpRequest,
                  network: str = Query("default", description="network name")) -> dict[str, object]:
    _viewer(request)
    net = Network.objects.filter(name=network).first()
    if net is None:
        raise HttpError(404, "no such network")
    return {"network": net.name, "links": [_plain(f) for f in queries.current_links(net.pk)]}


@router.get("/links/{reporter}/{peer}", auth=django_auth, response={200: LinkSeriesOut, **_ERRORS})
def link_series(request: HttpRequest, reporter: str = Path(..., pattern=PEER_ID_PATTERN),
                peer: str = Path(..., pattern=PEER_ID_PATTERN),
                window: str = Query("1h", pattern=WINDOW_PATTERN,
                                    description="1m..7d: minutes (m), hours (h) or days (d)"),
                ) -> dict[str, object]:
    _viewer(request)
    if not PEER_ID_RE.match(reporter) or not PEER_ID_RE.match(peer):
        raise HttpError(400, "reporter and peer are peer ids (40 lowercase hex characters)")
    node = Node.objects.filter(peer_id=reporter).first()
    if node is None:
        raise HttpError(404, "no such node")
    resolution, points = queries.link_series(node, peer, _window(window))
    return {"reporter": reporter, "peer": peer, "window": window, "resolution": resolution,
            "points": [_plain(f, reporter=False) for f in points]}
