"""`python -m lab clean [PATH]`: remove what killed lab runs left behind (records whose owner is gone).

PATH is a record file or a folder of them (default /run/shadowmesh-lab). Runs still going are left
alone.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from lab.record import RECORDS, sweep


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m lab", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    clean = sub.add_parser("clean", help="undo the records of killed runs")
    clean.add_argument("path", nargs="?", type=Path, default=RECORDS)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("lab: needs root (it deletes network namespaces)", file=sys.stderr)
        return 4
    for line in sweep(args.path) or [f"{args.path}: nothing to clean"]:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
