"""A client written only from docs/protocol.md#http-api, speaking plain HTTP (urllib) to a real daphne.

enroll -> challenge -> verify -> register -> lookup, with nothing from meshadmin imported: just
the documented JSON, base64 and the FIPS 204 context string.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import mldsa

ROOT = Path(__file__).resolve().parents[3]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    """A daphne on 127.0.0.1 over a fresh embedded SQLite database; yields (base URL, env)."""
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    env.update(SHADOWMESH_DATA_DIR=str(tmp_path), DJANGO_SETTINGS_MODULE="meshadmin.settings")
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "-v0"], cwd=ROOT, env=env, check=True, timeout=120)
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "meshadmin.asgi:application"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(proc.stderr.read().decode()[-2000:]) from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}", env
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _token(env, *args) -> str:
    out = subprocess.run(
        [sys.executable, "manage.py", "createtoken", *args],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    return out.strip().splitlines()[-1]


def call(base: str, method: str, path: str, body: dict | None = None, bearer: str | None = None):
    """One JSON request; returns (status, parsed body)."""
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if bearer:
        headers["Authorization"] = f"Bearer {bearer}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base + path, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def b64e(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_enroll_challenge_verify_register_lookup_round_trip(server):
    base, env = server
    # identity: ML-DSA-87; peer id = first 20 bytes of SHA-256(raw public key), lowercase hex
    key = mldsa.MLDSA87PrivateKey.generate()
    public = key.public_key().public_bytes_raw()
    peer_id = hashlib.sha256(public).digest()[:20].hex()

    status, enrolled = call(
        base,
        "POST",
        "/api/enroll",
        {
            "token": _token(env, "--public"),
            "name": "uk",
            "public_key": b64e(public),
            "endpoint": "198.18.0.3:8443",
            "is_public": True,
        },
    )
    assert status in (200, 201), enrolled
    assert enrolled["peer_id"] == peer_id
    assert enrolled["overlay_ip"].startswith("10.10.10.")
    assert len(base64.b64decode(enrolled["ca_public_key"])) == 2592
    assert base64.b64decode(enrolled["certificate"])

    status, challenge = call(base, "POST", "/api/auth/challenge", {"peer_id": peer_id})
    assert status == 200, challenge
    raw_challenge = base64.b64decode(challenge["challenge"])
    signature = key.sign(raw_challenge, b"shadowmesh/auth/v1")
    status, session = call(
        base,
        "POST",
        "/api/auth/verify",
        {
            "peer_id": peer_id,
            "challenge": challenge["challenge"],
            "signature": b64e(signature),
        },
    )
    assert status == 200, session
    bearer = session["session_token"]

    record = {"ip": "198.18.0.3", "port": 8443, "udp_port": 9443, "is_public": True}
    status, stored = call(base, "POST", "/api/peers/register", record, bearer=bearer)
    assert status == 200, stored
    assert {k: stored[k] for k in record} == record

    status, found = call(base, "GET", f"/api/peers/{peer_id}", bearer=bearer)
    assert status == 200, found
    assert set(found) >= {
        "peer_id",
        "name",
        "overlay_ip",
        "ip",
        "port",
        "udp_port",
        "is_public",
        "public_key",
        "last_seen",
    }
    assert (found["peer_id"], found["name"], found["overlay_ip"]) == (peer_id, "uk", enrolled["overlay_ip"])
    assert (found["ip"], found["port"], found["udp_port"], found["is_public"]) == (
        "198.18.0.3",
        8443,
        9443,
        True,
    )
    assert base64.b64decode(found["public_key"]) == public

    # and the documented refusals are JSON with a detail
    status, refused = call(base, "GET", f"/api/peers/{peer_id}")
    assert status == 401 and "detail" in refused
    status, schema = call(base, "GET", "/api/schema")
    assert status == 200 and "/api/enroll" in schema["paths"]
