"""Log lines of both programs as one JSON object per line (`up --log-format json`, and meshadmin's
SHADOWMESH_LOG_FORMAT=json through settings.LOGGING). The human format is untouched: call sites
keep using the standard `logging` module, and what they add for machines rides in `extra=`,
which the human format does not print.

Every line has `timestamp` (UTC, ISO 8601 with milliseconds), `level`, `logger`, `message` and
`event` (a stable name for what happened, such as `peer.path_changed`; null on lines that name
none: read `message` there). Lines about a peer or a node add the fields the call site knows:
`peer_id` (the peer, or on the server the agent, the line is about), `node` (the agent: its own
name on every agent line; on the server the name of the node concerned), `reason`, and others
listed in docs/operations.md#log-format. An exception adds `exception` (the traceback text).

Only plain values (text, numbers, booleans, null) of `extra` are written: an object a library
attaches to its records (Django's `request`) is left out rather than turned into text that could
carry a query string or a header.
"""

from __future__ import annotations

import json
import logging
import math
from datetime import UTC, datetime

__all__ = ["FORMATS", "TEXT_FORMAT", "JsonFormatter"]

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"  # the agent's human format

# attributes every LogRecord has (and what Formatter.format adds): not extra fields
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}
_PLAIN = (str, int, float, bool, type(None))


class JsonFormatter(logging.Formatter):
    """One JSON object per record. `static` fields (the agent's `node`) are added to every line
    unless the record sets them itself."""

    def __init__(self, static: dict[str, str] | None = None) -> None:
        super().__init__()
        self.static = dict(static or {})

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "event": None,
        }
        out.update(self.static)
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_") and isinstance(value, _PLAIN):
                out[key] = None if isinstance(value, float) and not math.isfinite(value) else value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, ensure_ascii=False, default=str)
