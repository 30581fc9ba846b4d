"""bench/body_memory.py: it runs against a Daphne of this checkout and records each answer
(loopback only, no root).

.venv/bin/pytest bench/test_body_memory.py
"""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import body_memory


def test_each_oversized_request_is_answered_and_recorded(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["body_memory", "--mib", "2", "--results", str(tmp_path)])
    assert body_memory.main() == 0
    (result,) = tmp_path.glob("body-memory-*.json")
    rows = json.loads(result.read_text())["rows"]
    assert [r["framing"] for r in rows] == ["content-length", "chunked", "websocket frame"]
    assert all(r["status"].startswith("HTTP/1.1 413") for r in rows[:2]), rows
    assert rows[2]["status"].startswith("HTTP/1.1 101"), rows
    assert all(r["rss_peak_mib"] >= r["rss_before_mib"] > 0 for r in rows)


def test_a_size_below_one_mib_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["body_memory", "--mib", "0", "--results", str(tmp_path)])
    with pytest.raises(SystemExit) as exc:
        body_memory.main()
    assert exc.value.code == 2
