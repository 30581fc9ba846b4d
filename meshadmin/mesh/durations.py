"""Lifetimes as people type them ('30m', '1h', '7d'), for the commands, the API and the dashboard."""

from __future__ import annotations

import re
from datetime import timedelta

__all__ = ["parse_duration"]

_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_DURATION = re.compile(r"^([0-9]{1,7})([smhdw])\Z")


def parse_duration(text: str) -> timedelta:
    """'30m', '1h', '7d' -> timedelta; anything else is an error."""
    match = _DURATION.match(text.strip().lower())
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"{text!r} is not a duration like 30m, 1h or 7d")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
