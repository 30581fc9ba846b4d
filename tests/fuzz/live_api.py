"""A real meshadmin for contract tests: daphne on 127.0.0.1 over a fresh embedded SQLite
database, with an enrolled node holding a bearer session token and a signed-in operator.

`LiveApi` is what the schemathesis test needs to call every operation as its callers do: the
base URL, a node's `Authorization: Bearer` token and an operator's session cookie."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import mldsa

from nodeagent.protocol.constants import CONTEXT_AUTH
from nodeagent.protocol.identity import peer_id

ROOT = Path(__file__).resolve().parents[2]

# generous limits: the contract test wants the operations' own answers, not 429 after a minute
# (429 is still declared and checked wherever the server can send it)
LIMITS = {"SHADOWMESH_ENROLL_RATE": "100000", "SHADOWMESH_AUTH_RATE": "100000",
          "SHADOWMESH_AUTH_PEER_RATE": "100000", "SHADOWMESH_ENDPOINT_CHANGE_RATE": "100000"}

SIGN_IN = """
import django
django.setup()
from django.contrib.auth import get_user_model
from django.test import Client
user = get_user_model().objects.create_user("operator", is_staff=True)
client = Client()
client.force_login(user)
print(client.cookies["sessionid"].value)
"""


@dataclass(frozen=True)
class LiveApi:
    base: str
    bearer: str  # an enrolled node's session token
    session_cookie: str  # a staff operator's sessionid
    peer_id: str  # the enrolled node
    api_key: str  # an operator API key, read-write (manage.py createapikey)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _manage(env: dict, *args: str) -> str:
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, check=True, capture_output=True,
                          text=True, timeout=120).stdout


def _post(base: str, path: str, body: dict) -> dict:
    request = urllib.request.Request(base + path, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@contextmanager
def live_api(data_dir: Path) -> Iterator[LiveApi]:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    env.update(SHADOWMESH_DATA_DIR=str(data_dir), DJANGO_SETTINGS_MODULE="meshadmin.settings", **LIMITS)
    _manage(env, "manage.py", "migrate", "-v0")
    token = _manage(env, "manage.py", "createtoken", "--uses", "1").strip().splitlines()[-1]
    cookie = _manage(env, "-c", SIGN_IN).strip().splitlines()[-1]
    api_key = _manage(env, "manage.py", "createapikey", "--name", "contract").strip().splitlines()[-1]
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "meshadmin.asgi:application"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
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
        base = f"http://127.0.0.1:{port}"
        key = mldsa.MLDSA87PrivateKey.generate()
        public = key.public_key().public_bytes_raw()
        _post(base, "/api/enroll", {"token": token, "name": "contract", "public_key": _b64(public)})
        pid = peer_id(public)
        challenge = base64.b64decode(_post(base, "/api/auth/challenge", {"peer_id": pid})["challenge"])
        session = _post(base, "/api/auth/verify", {"peer_id": pid, "challenge": _b64(challenge),
                                                   "signature": _b64(key.sign(challenge, CONTEXT_AUTH))})
        yield LiveApi(base, session["session_token"], cookie, pid, api_key)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
