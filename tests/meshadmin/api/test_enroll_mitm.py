"""A man in the middle of a plain-http enrollment (attack 18, issue 9 item 3a), against the real server.

The agent pins the CA by the fingerprint inside the token, so a proxy that hands it another CA is
refused and nothing is saved. What the proxy still learns is the token itself (it travels in
clear): the last test pins that residual risk, documented in docs/threat-model.md (attack 18).
"""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cryptography.hazmat.primitives.asymmetric import mldsa

from meshadmin.mesh.models import EnrollmentToken, Node
from nodeagent import enroll as en
from nodeagent.protocol.cert import issue_certificate

pytestmark = pytest.mark.django_db(transaction=True)


class Mitm:
    """Forwards /api/enroll to the real server and swaps the CA in the answer for its own."""

    def __init__(self, upstream: str, forward: bool = True):
        self.upstream, self.forward = upstream, forward
        self.key = mldsa.MLDSA87PrivateKey.generate()
        self.seen_tokens: list[str] = []

    def answer(self, body: dict) -> dict:
        self.seen_tokens.append(body["token"])
        real = {"overlay_ip": "10.10.10.9", "network": "default"}
        if self.forward:
            req = urllib.request.Request(self.upstream + "/api/enroll", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"}, method="POST")
            with urllib.request.urlopen(req, timeout=10) as resp:
                real = json.loads(resp.read())
        now = int(time.time())
        cert = issue_certificate(self.key, public_key=base64.b64decode(body["public_key"]), name=body["name"],
                                 network=real["network"], overlay_ip=real["overlay_ip"], prefix_len=24,
                                 flags=0, not_before=now - 5, not_after=now + 3600)
        return {**real, "peer_id": None, "certificate": base64.b64encode(cert).decode(),
                "ca_public_key": base64.b64encode(self.key.public_key().public_bytes_raw()).decode()}


@pytest.fixture
def mitm(live_server):
    made = []

    def start(forward: bool = True) -> tuple[str, Mitm]:
        m = Mitm(live_server.url, forward)

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                out = json.dumps(m.answer(body)).encode()
                self.send_response(201)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

        httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        made.append(httpd)
        return f"http://127.0.0.1:{httpd.server_address[1]}", m

    yield start
    for httpd in made:
        httpd.shutdown()
        httpd.server_close()


def test_a_proxy_that_substitutes_its_own_ca_is_refused_and_nothing_is_saved(mitm, make_token, tmp_path):
    url, _proxy = mitm(forward=True)
    token = make_token()
    with pytest.raises(en.EnrollError, match="does not match the token's CA fingerprint"):
        en.enroll(url, token, "belgium", tmp_path / "st")
    for name in ("node.crt", "ca.pub", "server.json"):
        assert not (tmp_path / "st" / name).exists(), name
    # the forwarded request did reach the server: the token is spent, for the agent's own key
    node = Node.objects.get()
    assert bytes(node.public_key) == (tmp_path / "st" / "node.pub").read_bytes()
    assert EnrollmentToken.objects.get().uses_left == 0


def test_the_same_enrollment_without_the_proxy_succeeds(live_server, make_token, tmp_path):
    result = en.enroll(live_server.url, make_token(), "belgium", tmp_path / "st")
    assert Node.objects.get().peer_id == result.peer_id
    assert (tmp_path / "st" / "ca.pub").read_bytes() == bytes(Node.objects.get().network.ca_public_key)


def test_what_the_proxy_learns_is_the_token(mitm, make_token, tmp_path, identity_factory):
    """Residual risk over plain http (docs/threat-model.md, attack 18): the token travels in clear,
    so a proxy that does not forward can spend it for a key of its own. The agent's refusal tells
    the operator; https (or a token sent out of band and used at once) closes it."""
    url, m = mitm(forward=False)
    with pytest.raises(en.EnrollError, match="revoke it"):
        en.enroll(url, make_token(), "belgium", tmp_path / "st")
    assert not Node.objects.exists()  # nothing reached the server
    from django.test import Client

    stolen = m.seen_tokens[0]
    thief = identity_factory()
    body = {"token": stolen, "name": "thief", "public_key": base64.b64encode(thief.public_key).decode()}
    response = Client().post("/api/enroll", json.dumps(body), content_type="application/json")
    assert response.status_code == 201  # the open part of attack 18: one-time tokens limit it to one node
