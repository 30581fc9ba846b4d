"""https/wss end to end (issue 9 item 3d): docker/nginx.conf run by a real nginx in front of a real
Daphne, with a throwaway CA made here. Agents verify the server's certificate (against
`enroll --server-ca`, kept in the state dir for `up`), the websocket upgrade and the proxy headers go
through, and Daphne believes X-Forwarded-For/-Proto only from the proxy's address."""

from __future__ import annotations

import asyncio
import base64
import datetime
import http.client
import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, mldsa
from cryptography.x509.oid import NameOID

from nodeagent.enroll import EnrollError, enroll, load_state
from nodeagent.server_link import RenewalFailed, ServerLink, renew_certificate
from tests.meshadmin.realtime.live_helpers import Server, until

ROOT = Path(__file__).resolve().parents[3]
NGINX = shutil.which("nginx", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
CLIENT_IP = "127.0.0.5"  # a client that is not the proxy (the proxy talks to Daphne from 127.0.0.1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ThrowawayCA:
    """A CA made for one test, and server certificates it signs (cryptography's x509 API)."""

    def __init__(self, name: str):
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - datetime.timedelta(minutes=5))
                     .not_valid_after(now + datetime.timedelta(days=1))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                     .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                                  key_encipherment=False, data_encipherment=False,
                                                  key_agreement=False, key_cert_sign=True, crl_sign=True,
                                                  encipher_only=False, decipher_only=False), critical=True)
                     .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()),
                                    critical=False)
                     .sign(self.key, hashes.SHA256()))

    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def server(self, directory: Path) -> None:
        """fullchain.pem and privkey.pem for 127.0.0.1 and localhost, in `directory`."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
                .issuer_name(self.cert.subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                            x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                               critical=False)
                .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                               critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                               critical=False)
                .sign(self.key, hashes.SHA256()))
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "fullchain.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM) + self.pem())
        (directory / "privkey.pem").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        (directory / "privkey.pem").chmod(0o600)


def render_nginx_conf(tmp: Path, upstream: int, tls: int, plain: int) -> Path:
    """docker/nginx.conf with loopback ports and this test's files instead of the compose ones."""
    conf = (ROOT / "docker" / "nginx.conf").read_text()
    for old, new in (("server web:8000;", f"server 127.0.0.1:{upstream};"),
                     ("listen 443 ssl;", f"listen 127.0.0.1:{tls} ssl;"),
                     ("listen 80;", f"listen 127.0.0.1:{plain};"),
                     ("/etc/nginx/certs/", f"{tmp}/certs/"),
                     ("pid /tmp/nginx.pid;", f"pid {tmp}/nginx.pid;\nuser root;"),
                     ("/tmp/nginx-", f"{tmp}/nginx-")):
        assert old in conf, f"docker/nginx.conf no longer has {old!r}: update this test"
        conf = conf.replace(old, new)
    path = tmp / "nginx.conf"
    path.write_text(conf)
    return path


@pytest.fixture
def stack(tmp_path):
    """Daphne (trusting 127.0.0.1 as its proxy, production settings) behind nginx with TLS."""
    assert NGINX, "nginx is not installed (scripts/bootstrap.sh installs nginx-light)"
    ca = ThrowawayCA("throwaway test CA")
    ca.server(tmp_path / "certs")
    (tmp_path / "ca.pem").write_bytes(ca.pem())
    tls, plain = _free_port(), _free_port()
    server = Server(tmp_path, env={
        "SHADOWMESH_PRODUCTION": "1", "SHADOWMESH_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "SHADOWMESH_TRUSTED_PROXIES": "127.0.0.1", "SHADOWMESH_TRUST_PROXY_HTTPS": "1",
        "SHADOWMESH_PUBLIC_URL": f"https://127.0.0.1:{tls}", "SHADOWMESH_ENROLL_RATE": "0",
        "SHADOWMESH_AUTH_RATE": "0"})
    server.start()
    conf = render_nginx_conf(tmp_path, server.port, tls, plain)
    check = subprocess.run([NGINX, "-t", "-c", str(conf), "-p", str(tmp_path)], capture_output=True,
                           text=True)
    assert check.returncode == 0, check.stderr
    log = (tmp_path / "nginx.log").open("wb")
    proc = subprocess.Popen([NGINX, "-c", str(conf), "-p", str(tmp_path), "-g", "daemon off;"],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", tls), timeout=0.2).close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, \
                    (tmp_path / "nginx.log").read_text()
                time.sleep(0.05)
        yield server, f"https://127.0.0.1:{tls}", f"http://127.0.0.1:{plain}", tmp_path / "ca.pem"
    finally:
        os.killpg(proc.pid, signal.SIGQUIT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
        server.stop()


def _request(url: str, method: str = "GET", path: str = "/", body: dict | None = None,
             headers: dict | None = None, cafile: Path | None = None) -> http.client.HTTPResponse:
    """One request from CLIENT_IP (so the proxy and a direct client are told apart)."""
    parts = url.split("://")[1]
    host, port = parts.rsplit(":", 1)
    if url.startswith("https"):
        conn = http.client.HTTPSConnection(host, int(port), timeout=10, source_address=(CLIENT_IP, 0),
                                           context=ssl.create_default_context(cafile=str(cafile)))
    else:
        conn = http.client.HTTPConnection(host, int(port), timeout=10, source_address=(CLIENT_IP, 0))
    data = json.dumps(body).encode() if body is not None else None
    conn.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
    response = conn.getresponse()
    response.read()
    conn.close()
    return response


def _enrolled_from(server: Server) -> list[str]:
    out = server.manage("shell", "-c", "from meshadmin.mesh.models import AuditEvent; print(list("
                        "AuditEvent.objects.filter(action='node.enrolled')"
                        ".values_list('source_ip', flat=True)))")
    return eval(out.strip().splitlines()[-1])


async def test_an_agent_enrolls_and_holds_its_websocket_over_tls_through_the_proxy(stack, tmp_path):
    server, https, _, ca_pem = stack
    state = tmp_path / "belgium"
    result = await asyncio.to_thread(enroll, https, server.token(), "belgium", state, server_ca=ca_pem)
    assert result.server == https and result.warnings == ()
    assert (state / "server-ca.pem").read_bytes() == ca_pem.read_bytes()
    assert oct((state / "server-ca.pem").stat().st_mode & 0o777) == "0o600"
    link = ServerLink(state, lambda m: None, stats_interval=0.5)
    assert link.url == f"wss://{https.split('://')[1]}/ws/agent/"
    task = asyncio.create_task(link.run())
    try:
        await until(lambda: link.connected.is_set() and link.netmap is not None, "the agent's map over wss")
        assert link.netmap.node.peer_id == result.peer_id
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_server_certificate_the_agent_does_not_trust_is_refused(stack, tmp_path):
    server, https, _, ca_pem = stack
    with pytest.raises(EnrollError, match="CERTIFICATE_VERIFY_FAILED"):  # the system's CAs do not know it
        await asyncio.to_thread(enroll, https, server.token(), "mac", tmp_path / "mac")
    other = tmp_path / "other-ca.pem"
    other.write_bytes(ThrowawayCA("another CA").pem())
    with pytest.raises(EnrollError, match="CERTIFICATE_VERIFY_FAILED"):
        await asyncio.to_thread(enroll, https, server.token(), "mac", tmp_path / "mac", server_ca=other)
    # an agent enrolled with the right CA, whose server-ca.pem is swapped for another: `up` refuses too
    state = tmp_path / "starlink"
    await asyncio.to_thread(enroll, https, server.token(), "starlink", state, server_ca=ca_pem)
    (state / "server-ca.pem").write_bytes(other.read_bytes())
    with pytest.raises(RenewalFailed, match="CERTIFICATE_VERIFY_FAILED"):
        await renew_certificate(state, timeout=10)
    assert load_state(state).server_ca == state / "server-ca.pem"


def test_an_old_form_token_is_taken_over_verified_https_with_a_warning(stack, tmp_path):
    server, https, _, ca_pem = stack
    secret = server.token().split(".")[0]
    result = enroll(https, secret, "uk", tmp_path / "uk", server_ca=ca_pem)
    assert result.warnings and "no CA fingerprint" in result.warnings[0]


def test_proxy_headers_count_from_the_proxy_only(stack, tmp_path):
    server, https, plain, ca_pem = stack
    # plain http at the proxy: sent to https
    redirect = _request(plain, path="/api/schema")
    assert redirect.status == 308 and redirect.getheader("Location").startswith("https://")
    # through the proxy, Django sees https (no redirect) and the client's own address
    assert _request(https, path="/api/schema", cafile=ca_pem).status == 200
    key = mldsa.MLDSA87PrivateKey.generate().public_key().public_bytes_raw()
    body = {"token": server.token(), "name": "via-proxy", "public_key": base64.b64encode(key).decode()}
    assert _request(https, "POST", "/api/enroll", body, cafile=ca_pem).status == 201
    # straight to Daphne from another address, forging both headers: neither is believed
    forged = {"X-Forwarded-For": "198.51.100.1", "X-Forwarded-Proto": "https"}
    direct = _request(f"http://127.0.0.1:{server.port}", path="/api/schema", headers=forged)
    assert direct.status == 301 and direct.getheader("Location").startswith("https://")
    assert _enrolled_from(server) == [CLIENT_IP]
