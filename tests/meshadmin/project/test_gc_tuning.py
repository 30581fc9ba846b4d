"""The server process's garbage collector (meshadmin/gc_tuning.py), set when the ASGI application
loads: the start-up's objects frozen, the youngest generation collected every
SHADOWMESH_GC_THRESHOLD new objects; cycles made later are still collected. Each case runs in a
fresh interpreter: the collector's settings belong to the process."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from meshadmin import gc_tuning

ROOT = Path(__file__).resolve().parents[3]

LOAD_APP = """
import gc, json
bare = gc.get_threshold()
import meshadmin.asgi
print(json.dumps({"bare": bare, "now": gc.get_threshold(), "frozen": gc.get_freeze_count()}))
"""

# a reference cycle made after configure(), then `allocations` container objects kept alive:
# whether the collector ran on its own by then (the cycle is gone)
CYCLE = """
import gc, json, sys, weakref
from meshadmin import gc_tuning
gc_tuning.configure(int(sys.argv[1]))
class Node:
    pass
a, b = Node(), Node()
a.other, b.other = b, a
gone = weakref.ref(a)
del a, b
kept = [[] for _ in range(int(sys.argv[2]))]
collected_on_its_own = gone() is None
gc.collect()
print(json.dumps({"on_its_own": collected_on_its_own, "after_collect": gone() is None}))
"""


def _run(tmp_path, args, **env):
    base = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "DJANGO_SETTINGS_MODULE": "meshadmin.settings",
        "SHADOWMESH_DATA_DIR": str(tmp_path),
    }
    return subprocess.run([sys.executable, *args], cwd=ROOT, env={**base, **env},
                          capture_output=True, text=True, timeout=120)


def _loaded(tmp_path, **env) -> dict:
    result = _run(tmp_path, ["-c", LOAD_APP], **env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_loading_the_application_freezes_startup_and_raises_the_youngest_threshold(tmp_path):
    shown = _loaded(tmp_path)
    bare, now = shown["bare"], shown["now"]
    assert now == [gc_tuning.DEFAULT_THRESHOLD, bare[1], bare[2]]
    assert gc_tuning.DEFAULT_THRESHOLD > bare[0]
    # Django, the apps and every imported module: tens of thousands of objects out of every collection
    assert shown["frozen"] > 10_000


def test_the_threshold_comes_from_the_environment(tmp_path):
    shown = _loaded(tmp_path, SHADOWMESH_GC_THRESHOLD="12345")
    assert shown["now"][0] == 12345
    assert shown["frozen"] > 10_000


def test_zero_leaves_the_collector_as_python_sets_it(tmp_path):
    shown = _loaded(tmp_path, SHADOWMESH_GC_THRESHOLD="0")
    assert shown["now"] == shown["bare"]
    assert shown["frozen"] == 0


@pytest.mark.parametrize("value", ["lots", "-1", "1.5"])
def test_a_bad_threshold_stops_the_server_naming_the_variable(tmp_path, value):
    result = _run(tmp_path, ["-c", LOAD_APP], SHADOWMESH_GC_THRESHOLD=value)
    assert result.returncode != 0
    assert "SHADOWMESH_GC_THRESHOLD" in result.stderr
    assert repr(value) in result.stderr or ">= 0" in result.stderr


def test_cycles_are_still_collected_on_their_own_only_later(tmp_path):
    # 5,000 new objects: past a threshold of 1,000 the collector has run by itself...
    low = json.loads(_run(tmp_path, ["-c", CYCLE, "1000", "5000"]).stdout)
    assert low == {"on_its_own": True, "after_collect": True}
    # ...below one of 50,000 it has not yet; the cycle waits, and goes at the next collection
    high = json.loads(_run(tmp_path, ["-c", CYCLE, "50000", "5000"]).stdout)
    assert high == {"on_its_own": False, "after_collect": True}
    # and past 50,000 it has run by itself again
    past = json.loads(_run(tmp_path, ["-c", CYCLE, "50000", "60000"]).stdout)
    assert past == {"on_its_own": True, "after_collect": True}


def test_configure_refuses_a_negative_threshold_and_zero_changes_nothing():
    import gc

    threshold, frozen = gc.get_threshold(), gc.get_freeze_count()
    with pytest.raises(ValueError, match=">= 0"):
        gc_tuning.configure(-1)
    assert gc_tuning.configure(0) is False
    assert gc.get_threshold() == threshold
    # nothing frozen: the count never grew (it may shrink: a frozen object that dies meanwhile,
    # in this process's other threads, leaves the permanent generation; CI saw one)
    assert gc.get_freeze_count() <= frozen
