"""bench/cold_ops.py and bench/lone_packet.py --idle-ms: they run, record what they measured and
refuse bad arguments (no network beyond loopback, no root).

.venv/bin/pytest bench/test_idle_steps.py
"""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cold_ops
import lone_packet


def _run(module, monkeypatch, *args: str) -> int:
    monkeypatch.setattr(sys, "argv", [module.__name__, *args])
    return module.main()


def _only_result(folder: Path, prefix: str) -> dict:
    files = list(folder.glob(f"{prefix}-*.json"))
    assert len(files) == 1, files
    return json.loads(files[0].read_text())


def test_cold_ops_times_every_step_both_ways(tmp_path, monkeypatch, capsys):
    assert _run(cold_ops, monkeypatch, "--count", "3", "--idle-ms", "1", "--results", str(tmp_path)) == 0
    data = _only_result(tmp_path, "cold-ops")
    assert data["idle_ms"] == 1 and data["count"] == 3
    assert len(data["rows"]) == 7
    out = capsys.readouterr().out
    for name, row in data["rows"].items():
        assert row["warm_us"] > 0 and row["after_idle_us"] > 0, name
        assert f"| {name} |" in out


@pytest.mark.parametrize("args", [["--idle-ms", "0"], ["--idle-ms", "-5"], ["--count", "0"]])
def test_cold_ops_refuses_what_it_cannot_measure(tmp_path, monkeypatch, args):
    with pytest.raises(SystemExit) as exc:
        _run(cold_ops, monkeypatch, *args, "--results", str(tmp_path))
    assert exc.value.code == 2
    assert not list(tmp_path.iterdir())


def test_lone_packet_after_idling_records_the_idle_time(tmp_path, monkeypatch, capsys):
    assert _run(lone_packet, monkeypatch, "--count", "5", "--idle-ms", "1", "--results", str(tmp_path)) == 0
    data = _only_result(tmp_path, "lone-packet")
    assert data["idle_ms"] == 1
    assert data["rows"]["on_tun: read, route, seal, sendto (one packet)"]["n"] == 5
    assert "1 ms idle before each" in capsys.readouterr().out


@pytest.mark.parametrize("args", [["--idle-ms", "-1"], ["--count", "0"]])
def test_lone_packet_refuses_bad_arguments(tmp_path, monkeypatch, args):
    with pytest.raises(SystemExit) as exc:
        _run(lone_packet, monkeypatch, *args, "--results", str(tmp_path))
    assert exc.value.code == 2
    assert not list(tmp_path.iterdir())
