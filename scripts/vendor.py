"""Copy the pinned front-end files from frontend/node_modules into static/vendor/.

Run `npm ci --ignore-scripts` in frontend/ first (or `make vendor`). Each package lands in
static/vendor/<name>-<version>/ together with its LICENSE, and static/vendor/MANIFEST.json records
name, version, licence, npm integrity and the sha256 of every copied file, so tests can check the
committed files offline and an upgrade is a reviewed diff. Standard library only.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FRONTEND = ROOT / "frontend"
VENDOR = ROOT / "static" / "vendor"

# npm package -> (directory stem, files inside the package to copy)
FILES: dict[str, tuple[str, list[str]]] = {
    "htmx.org": ("htmx", ["dist/htmx.min.js", "LICENSE"]),
    "cytoscape": ("cytoscape", ["dist/cytoscape.min.js", "LICENSE"]),
    "uplot": ("uplot", ["dist/uPlot.iife.min.js", "dist/uPlot.min.css", "LICENSE"]),
}


class VendorError(Exception):
    """The npm tree does not match package.json / package-lock.json."""


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build_manifest(frontend: Path = FRONTEND, vendor: Path = VENDOR) -> dict:
    wanted = json.loads((frontend / "package.json").read_text())["dependencies"]
    lock = json.loads((frontend / "package-lock.json").read_text())["packages"]
    if set(wanted) != set(FILES):
        raise VendorError(f"package.json lists {sorted(wanted)}, vendor.py copies {sorted(FILES)}")
    packages = []
    for name, (stem, files) in sorted(FILES.items()):
        locked = lock.get(f"node_modules/{name}")
        if locked is None or locked["version"] != wanted[name]:
            have = locked and locked["version"]
            raise VendorError(f"{name}: package.json pins {wanted[name]}, package-lock.json has {have}")
        installed = json.loads((frontend / "node_modules" / name / "package.json").read_text())
        if installed["version"] != wanted[name]:
            raise VendorError(f"{name}: node_modules has {installed['version']}; run `npm ci` in frontend/")
        dest = vendor / f"{stem}-{wanted[name]}"
        dest.mkdir(parents=True, exist_ok=True)
        copied = {}
        for rel in files:
            src = frontend / "node_modules" / name / rel
            target = dest / Path(rel).name
            shutil.copyfile(src, target)
            copied[str(target.relative_to(vendor))] = sha256_file(target)
        packages.append(
            {
                "name": name,
                "version": wanted[name],
                "license": installed.get("license", ""),
                "integrity": locked["integrity"],
                "files": copied,
            }
        )
    manifest = {"generated_by": "scripts/vendor.py", "packages": packages}
    (vendor / "MANIFEST.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def verify(vendor: Path = VENDOR) -> list[str]:
    """Offline check of the committed files against MANIFEST.json; returns the problems found."""
    manifest = json.loads((vendor / "MANIFEST.json").read_text())
    problems = []
    listed = set()
    for pkg in manifest["packages"]:
        for rel, digest in pkg["files"].items():
            listed.add(rel)
            path = vendor / rel
            if not path.is_file():
                problems.append(f"{rel}: missing")
            elif sha256_file(path) != digest:
                problems.append(f"{rel}: sha256 differs from MANIFEST.json")
    for path in sorted(vendor.rglob("*")):
        rel = str(path.relative_to(vendor))
        if path.is_file() and rel != "MANIFEST.json" and rel not in listed:
            problems.append(f"{rel}: not listed in MANIFEST.json")
    return problems


def main() -> int:
    if sys.argv[1:] == ["--check"]:
        problems = verify()
        for line in problems:
            print(f"vendor: {line}", file=sys.stderr)
        return 1 if problems else 0
    try:
        manifest = build_manifest()
    except (VendorError, FileNotFoundError, KeyError) as exc:
        print(f"vendor: {exc}", file=sys.stderr)
        return 1
    for pkg in manifest["packages"]:
        print(f"{pkg['name']} {pkg['version']} ({pkg['license']}): {len(pkg['files'])} files")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
