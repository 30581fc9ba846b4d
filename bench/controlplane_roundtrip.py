"""Time control-plane round trips over real HTTP against a daphne on 127.0.0.1.

    .venv/bin/python bench/controlplane_roundtrip.py [--rounds 30]
    DATABASE_URL=postgres://... REDIS_URL=redis://... .venv/bin/python bench/controlplane_roundtrip.py

Starts daphne with the current environment (so DATABASE_URL/REDIS_URL select PostgreSQL/Redis;
unset = embedded SQLite in a temporary data directory), migrates, creates an N-use token in a
fresh network, then measures:
  enroll          one POST /api/enroll (key generated beforehand)
  challenge+verify  POST /api/auth/challenge, sign the challenge, POST /api/auth/verify
Prints the median and 90th percentile in milliseconds. Rate limits are switched off for the run.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import mldsa

ROOT = Path(__file__).resolve().parents[1]


def _post(base: str, path: str, body: dict) -> dict:
    request = urllib.request.Request(
        base + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="sm-bench-") as data_dir:
        env = dict(os.environ)
        env.setdefault("SHADOWMESH_DATA_DIR", data_dir)
        env.update(
            SHADOWMESH_ENROLL_RATE="0", SHADOWMESH_AUTH_RATE="0", DJANGO_SETTINGS_MODULE="meshadmin.settings"
        )
        manage = [sys.executable, "manage.py"]
        subprocess.run([*manage, "migrate", "-v0"], cwd=ROOT, env=env, check=True)
        network = f"bench-{secrets.token_hex(4)}"
        token = (
            subprocess.run(
                [*manage, "createtoken", "--network", network, "--uses", str(args.rounds), "--expires", "1h"],
                cwd=ROOT,
                env=env,
                check=True,
                capture_output=True,
                text=True,
            )
            .stdout.strip()
            .splitlines()[-1]
        )

        port = _free_port()
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "daphne",
                "-b",
                "127.0.0.1",
                "-p",
                str(port),
                "meshadmin.asgi:application",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if server.poll() is not None or time.monotonic() > deadline:
                        raise SystemExit("daphne did not start") from None
                    time.sleep(0.1)
            base = f"http://127.0.0.1:{port}"
            keys = [mldsa.MLDSA87PrivateKey.generate() for _ in range(args.rounds)]
            enroll_ms, auth_ms, peers = [], [], []
            for i, key in enumerate(keys):
                public = base64.b64encode(key.public_key().public_bytes_raw()).decode()
                start = time.perf_counter()
                enrolled = _post(
                    base, "/api/enroll", {"token": token, "name": f"bench{i}", "public_key": public}
                )
                enroll_ms.append((time.perf_counter() - start) * 1000)
                peers.append((key, enrolled["peer_id"]))
            for key, peer_id in peers:
                start = time.perf_counter()
                challenge = _post(base, "/api/auth/challenge", {"peer_id": peer_id})["challenge"]
                signature = key.sign(base64.b64decode(challenge), b"shadowmesh/auth/v1")
                _post(
                    base,
                    "/api/auth/verify",
                    {
                        "peer_id": peer_id,
                        "challenge": challenge,
                        "signature": base64.b64encode(signature).decode(),
                    },
                )
                auth_ms.append((time.perf_counter() - start) * 1000)
        finally:
            server.terminate()
            server.wait(timeout=10)

    database = "PostgreSQL" if os.environ.get("DATABASE_URL") else "SQLite"
    print(f"control plane round trips over HTTP (daphne, {database}, {args.rounds} rounds)")
    for label, values in (("enroll", enroll_ms), ("challenge+verify", auth_ms)):
        median, p90 = statistics.median(values), _percentile(values, 0.9)
        print(f"  {label:<17} median {median:7.2f} ms  p90 {p90:7.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
