"""Formatting filters for the dashboard: rates, durations, RTT, loss. Output is plain text."""

from __future__ import annotations

from datetime import datetime

from django import template
from django.utils import timezone

register = template.Library()
NONE = "\u2013"  # en dash: "not measured"

_RATE_UNITS = ("bit/s", "kbit/s", "Mbit/s", "Gbit/s", "Tbit/s")
_BYTE_UNITS = ("B", "kB", "MB", "GB", "TB", "PB")


def _scaled(value: float, units: tuple[str, ...]) -> str:
    i = 0
    while value >= 1000 and i < len(units) - 1:
        value /= 1000
        i += 1
    digits = 0 if value >= 100 or i == 0 else 1
    return f"{value:.{digits}f} {units[i]}"


@register.filter
def bitrate(bytes_per_s: float | None) -> str:
    """Bytes per second as a bit rate: 1250 -> '10.0 kbit/s'; None -> NONE (an en dash)."""
    if bytes_per_s is None:
        return NONE
    return _scaled(float(bytes_per_s) * 8, _RATE_UNITS)


@register.filter
def bytesize(n: float | None) -> str:
    if n is None:
        return NONE
    return _scaled(float(n), _BYTE_UNITS)


@register.filter
def rtt(ms: float | None) -> str:
    if ms is None:
        return NONE
    return f"{ms:.1f} ms" if ms < 10 else f"{ms:.0f} ms"


@register.filter
def loss(pct: float | None) -> str:
    if pct is None:
        return NONE
    return f"{pct:.1f} %" if pct < 10 else f"{pct:.0f} %"


@register.filter
def seconds(s: float | str | None) -> str:
    """A duration in seconds, short: 42 s, 3 min, 2 h, 5 d."""
    if s is None:
        return NONE
    t = float(s)
    if t < 90:
        return f"{t:.0f} s"
    if t < 90 * 60:
        return f"{t / 60:.0f} min"
    if t < 36 * 3600:
        return f"{t / 3600:.0f} h"
    return f"{t / 86400:.0f} d"


@register.filter
def ago(when: datetime | None) -> str:
    if when is None:
        return "never"
    delta = (timezone.now() - when).total_seconds()
    if delta < 0:
        return "in " + seconds(-delta)
    return seconds(delta) + " ago"


@register.filter
def short_id(peer_id: str) -> str:
    return (peer_id or "")[:12]
