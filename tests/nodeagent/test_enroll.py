"""`enroll()`: identity made locally, token traded for a certificate, files 0600, bad answers refused."""

from __future__ import annotations

import base64
import json
import stat
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cryptography.hazmat.primitives.asymmetric import mldsa

from nodeagent import enroll as en
from nodeagent.protocol.cert import issue_certificate
from nodeagent.protocol.enroll_token import fingerprint_text, make_token, parse_token

NOW = 1_800_000_000


def token_for(ca, secret: str = "tok-123") -> str:
    """A token as createtoken prints it: the secret, '.', the fingerprint of `ca`'s key."""
    return make_token(secret.ljust(43, "x"), ca.public)


class _CA:
    def __init__(self):
        self.key = mldsa.MLDSA87PrivateKey.generate()
        self.public = self.key.public_key().public_bytes_raw()
        self.requests: list[dict] = []
        self.status = 200
        self.other_key = False


@pytest.fixture
def server():
    ca = _CA()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            ca.requests.append({"path": self.path, **body})
            if ca.status != 200:
                out = json.dumps({"detail": "token already used"}).encode()
                self.send_response(ca.status)
            else:
                pk = base64.b64decode(body["public_key"])
                if ca.other_key:
                    pk = mldsa.MLDSA87PrivateKey.generate().public_key().public_bytes_raw()
                cert = issue_certificate(ca.key, public_key=pk, name=body["name"], network="default",
                                         overlay_ip="10.10.10.4", prefix_len=24, flags=0,
                                         not_before=NOW - 10, not_after=NOW + 3600)
                out = json.dumps({"peer_id": None, "overlay_ip": "10.10.10.4", "network": "default",
                                  "certificate": base64.b64encode(cert).decode(),
                                  "ca_public_key": base64.b64encode(ca.public).decode()}).encode()
                self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", ca
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_enrolling_stores_certificate_ca_key_and_server_in_private_files(server, tmp_path):
    url, ca = server
    result = en.enroll(url, token_for(ca), "belgium", tmp_path / "st", endpoint="198.18.0.2:8443", now=NOW)
    assert result.overlay_ip == "10.10.10.4" and result.network == "default" and result.name == "belgium"
    req = ca.requests[0]
    assert req["path"] == "/api/enroll" and req["token"] == token_for(ca)
    assert req["endpoint"] == "198.18.0.2:8443"
    assert "private" not in json.dumps(req) and len(base64.b64decode(req["public_key"])) == 2592
    for name in ("node.key", "node.crt", "ca.pub", "server.json"):
        assert stat.S_IMODE((tmp_path / "st" / name).stat().st_mode) == 0o600, name
    state = en.load_state(tmp_path / "st")
    assert state.identity.peer_id == result.peer_id and state.ca_public_key == ca.public
    assert state.websocket_url == url.replace("http://", "ws://") + "/ws/agent/"


def test_a_second_enroll_reuses_the_existing_identity(server, tmp_path):
    url, ca = server
    first = en.enroll(url, token_for(ca, "t1"), "mac", tmp_path, now=NOW)
    second = en.enroll(url, token_for(ca, "t2"), "mac", tmp_path, now=NOW)
    assert first.peer_id == second.peer_id


def test_a_certificate_for_another_key_is_refused_and_nothing_is_stored(server, tmp_path):
    url, ca = server
    ca.other_key = True
    with pytest.raises(en.EnrollError, match="not for this node"):
        en.enroll(url, token_for(ca), "uk", tmp_path, now=NOW)
    assert not (tmp_path / "node.crt").exists()


def test_a_refused_token_reports_the_server_detail(server, tmp_path):
    url, ca = server
    ca.status = 403
    with pytest.raises(en.EnrollError, match=r"403.*token already used"):
        en.enroll(url, token_for(ca), "uk", tmp_path, now=NOW)


def test_an_unreachable_server_is_a_clear_error(tmp_path):
    with pytest.raises(en.EnrollError, match="cannot reach"):
        token = make_token("t" * 43, b"\x01" * 2592)
        en.enroll("http://127.0.0.1:9", token, "uk", tmp_path, now=NOW, timeout=2)


def test_a_missing_state_directory_names_the_file(tmp_path):
    with pytest.raises(en.EnrollError, match=r"server\.json.*enroll"):
        en.load_state(tmp_path)


# --- the CA is pinned by the fingerprint in the token (attack 18; issue 9 item 3a)


def test_an_answer_with_a_ca_other_than_the_tokens_is_refused_and_nothing_is_stored(server, tmp_path):
    url, _impostor = server  # the fake server signs with its own CA...
    real_ca = mldsa.MLDSA87PrivateKey.generate().public_key().public_bytes_raw()
    token = make_token("s" * 43, real_ca)  # ...but the token names the real one
    with pytest.raises(en.EnrollError, match="does not match the token's CA fingerprint"):
        en.enroll(url, token, "belgium", tmp_path / "st", now=NOW)
    for name in ("node.crt", "ca.pub", "server.json"):
        assert not (tmp_path / "st" / name).exists(), name


def test_an_old_form_token_over_plain_http_is_refused_before_anything_is_sent(server, tmp_path):
    url, ca = server
    with pytest.raises(en.EnrollError, match="carries no CA fingerprint"):
        en.enroll(url, "s" * 43, "belgium", tmp_path / "st", now=NOW)
    assert ca.requests == []


def test_an_old_form_token_with_the_ca_fingerprint_given_apart_enrolls(server, tmp_path):
    url, ca = server
    fingerprint = parse_token(token_for(ca)).fingerprint
    result = en.enroll(url, "s" * 43, "belgium", tmp_path / "st", now=NOW, ca_fingerprint=fingerprint)
    assert result.warnings == () and (tmp_path / "st" / "ca.pub").read_bytes() == ca.public
    with pytest.raises(en.EnrollError, match="does not match"):
        en.enroll(url, "s" * 43, "belgium", tmp_path / "other", now=NOW, ca_fingerprint=b"\x01" * 32)


def test_a_fingerprint_given_apart_must_agree_with_the_tokens(server, tmp_path):
    url, ca = server
    with pytest.raises(en.EnrollError, match="differs"):
        en.enroll(url, token_for(ca), "belgium", tmp_path / "st", now=NOW, ca_fingerprint=b"\x01" * 32)
    assert ca.requests == []


def test_the_cli_takes_the_fingerprint_in_either_spelling(server, tmp_path, capsys, monkeypatch):
    from nodeagent import cli

    monkeypatch.setattr("time.time", lambda: NOW)  # the fake server's certificates are valid at NOW
    url, ca = server
    fp = parse_token(token_for(ca)).fingerprint
    for i, text in enumerate((fingerprint_text(fp), fp.hex())):
        code = cli.main(["enroll", "--server", url, "--token", "s" * 43, "--name", "n", "--state-dir",
                         str(tmp_path / f"s{i}"), "--ca-fingerprint", text])
        assert code == 0, capsys.readouterr().err
    assert cli.main(["enroll", "--server", url, "--token", "s" * 43, "--name", "n", "--state-dir",
                     str(tmp_path / "bad"), "--ca-fingerprint", "nope"]) == 2
