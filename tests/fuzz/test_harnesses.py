"""Every fuzz harness (fuzz/, docs/fuzzing.md) runs a bounded number of inputs with atheris and
libFuzzer from its committed seed corpus, and nothing escapes but its parser's declared errors.

Iterations, not seconds: the same inputs are tried on any machine (fixed libFuzzer seed), so a
failure here reproduces with the command it prints. Longer runs: `python -m fuzz --runs N`.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fuzz.harness import HARNESSES, command

ROOT = Path(__file__).resolve().parents[2]

# inputs per harness in the suite: about 2 s each on the 2-core machine; the cryptographic ones
# (a signature verification per input that gets that far) run fewer
RUNS = {"frames": 20_000, "disco": 20_000, "handshake": 2_000, "control": 20_000, "messages": 10_000,
        "cert": 5_000, "dht": 10_000, "config": 3_000}


def test_every_harness_has_a_seed_corpus_and_a_budget():
    assert set(RUNS) == set(HARNESSES)
    for name in HARNESSES:
        seeds = list((ROOT / "fuzz" / "corpus" / name).iterdir())
        assert seeds, f"fuzz/corpus/{name} is empty (python -m fuzz.make_corpus)"
        assert sum(p.stat().st_size for p in seeds) < 64 * 1024


@pytest.mark.parametrize("name", HARNESSES)
def test_the_harness_runs_its_inputs_and_only_declared_errors_escape(name, tmp_path):
    work, scratch = tmp_path / "work", tmp_path / "scratch"  # libFuzzer's; the harness's own files
    work.mkdir()
    scratch.mkdir()
    argv = command(sys.executable, name, RUNS[name], str(work))
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=240,
                          env={**os.environ, "TMPDIR": str(scratch)})
    crashes = sorted(p.name for p in work.iterdir() if p.name.startswith(("crash-", "timeout-")))
    assert proc.returncode == 0 and not crashes, (
        f"fuzz/fuzz_{name}.py failed (exit {proc.returncode}, {crashes}); reproduce with\n  "
        f"{' '.join(argv[:3])} {' '.join(str(work / c) for c in crashes)}\n{proc.stderr[-4000:]}")
    done = re.search(r"^Done (\d+) runs", proc.stderr, re.M)
    # at least its budget: libFuzzer may run a few inputs past -runs (a control run once
    # reported 20,003 of 20,000)
    assert done and int(done.group(1)) >= RUNS[name], proc.stderr[-2000:]
    coverage = re.findall(r"cov: (\d+)", proc.stderr)
    assert coverage and int(coverage[-1]) > 20, "the harness reached almost none of its parser"
