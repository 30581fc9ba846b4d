"""Run every harness (or the ones named) for a number of inputs each:

    .venv/bin/python -m fuzz [--runs N] [--max-time S] [--seed S] [--workdir DIR] [NAME ...]

Each harness runs N inputs, or for S seconds if that comes first. Prints each harness's final
line (inputs run, coverage, corpus) and exits non-zero when one crashed; the input that crashed
it is left in DIR/NAME/crash-*.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from fuzz.harness import HARNESSES, command


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m fuzz")
    parser.add_argument("names", nargs="*", choices=[*HARNESSES, []], default=list(HARNESSES))
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--max-time", type=int, default=0, help="seconds per harness at most (0: no limit)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    root = args.workdir or Path(tempfile.mkdtemp(prefix="shadowmesh-fuzz-"))
    failed = 0
    for name in args.names or HARNESSES:
        work = root / name
        work.mkdir(parents=True, exist_ok=True)
        extra = (f"-max_total_time={args.max_time}",) if args.max_time else ()
        argv = command(sys.executable, name, args.runs, str(work), seed=args.seed, extra=extra)
        scratch = root / f"{name}.tmp"  # the harness's own files (the config harness's mesh.toml)
        scratch.mkdir(exist_ok=True)
        proc = subprocess.run(argv, cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True,
                              env={**os.environ, "TMPDIR": str(scratch)})
        shutil.rmtree(scratch, ignore_errors=True)
        (root / f"{name}.log").write_text(proc.stderr)
        done = [line for line in proc.stderr.splitlines() if "DONE" in line or "Done" in line]
        print(f"{name}: exit {proc.returncode}; {' | '.join(done[-2:]) or proc.stderr[-2000:]}", flush=True)
        failed += proc.returncode != 0
    print(f"logs and corpora in {root}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
