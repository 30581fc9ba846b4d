"""The vendored front-end files are exactly the pinned npm files recorded in MANIFEST.json."""

import importlib.util
import json
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def _vendor_module():
    spec = importlib.util.spec_from_file_location("vendor_script", ROOT / "scripts" / "vendor.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_vendor_files_match_their_manifest_sha256():
    assert _vendor_module().verify(ROOT / "static" / "vendor") == []


def test_manifest_versions_are_the_exact_pins_of_package_json_and_lock():
    manifest = json.loads((ROOT / "static/vendor/MANIFEST.json").read_text())
    pins = json.loads((ROOT / "frontend/package.json").read_text())["dependencies"]
    lock = json.loads((ROOT / "frontend/package-lock.json").read_text())["packages"]
    assert {p["name"]: p["version"] for p in manifest["packages"]} == pins
    for pkg in manifest["packages"]:
        assert pkg["integrity"] == lock[f"node_modules/{pkg['name']}"]["integrity"]
        assert pkg["version"][0].isdigit(), "pins are exact versions, not ranges"
        assert any(name.endswith("/LICENSE") for name in pkg["files"]), f"{pkg['name']} ships its licence"


def test_a_modified_vendored_file_is_reported(tmp_path):
    vendor = tmp_path / "vendor"
    shutil.copytree(ROOT / "static" / "vendor", vendor)
    target = next(vendor.glob("htmx-*/htmx.min.js"))
    target.write_bytes(target.read_bytes() + b"\n// tampered")
    (vendor / "stray.js").write_text("x")
    problems = _vendor_module().verify(vendor)
    assert any("htmx.min.js: sha256 differs" in p for p in problems)
    assert any("stray.js: not listed" in p for p in problems)
