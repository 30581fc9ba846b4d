"""Enrollment and the enrolled node's state directory.

`enroll()` makes (or reuses) the node's ML-DSA-87 identity in the state directory — the private
key never leaves the node — and trades a one-time token for a CA-signed certificate at
`POST <server>/api/enroll`. It checks the answer before keeping anything: the CA key must hash to
the fingerprint the token carries (protocol/enroll_token.py; or `ca_fingerprint`), so a man in the
middle cannot substitute his own CA even over plain http; the certificate must verify against that
CA key and bind *our* public key. An old-form token (no fingerprint) is accepted only over https,
where the server's TLS certificate vouches for the answer, and with a warning.

Over https the server's TLS certificate is verified against the system's CAs, or against
`server_ca` (a PEM file) which is then kept in the state directory for `up`.

State directory (every file mode 0600, written atomically):

    node.key        ML-DSA-87 seed (nodeagent.identity)          node.pub   public key
    node.crt        mesh certificate, canonical bytes (nodeagent.protocol.cert)
    ca.pub          the mesh CA's raw ML-DSA-87 public key
    server.json     {"server", "peer_id", "name", "overlay_ip", "network"}
    server-ca.pem   the CA that signs the server's TLS certificate (only with --server-ca)
    netmap.json     the last applied netmap, signed (written by server_link)
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric import mldsa

from . import identity
from .protocol.cert import CertificateError, verify_certificate
from .protocol.constants import MLDSA87_PUBLIC_KEY_SIZE
from .protocol.enroll_token import TokenFormatError, fingerprint_matches, fingerprint_text, parse_token

__all__ = [
    "EnrollError", "EnrollResult", "EnrolledState", "client_ssl_context", "enroll", "load_state",
    "write_private_file",
]

CERT_FILE = "node.crt"
CA_FILE = "ca.pub"
SERVER_FILE = "server.json"
SERVER_CA_FILE = "server-ca.pem"
NETMAP_FILE = "netmap.json"
MAX_RESPONSE = 64 * 1024
MAX_SERVER_CA = 1024 * 1024


class EnrollError(Exception):
    """Enrollment failed or the state directory is incomplete; the message says why."""


@dataclass(frozen=True)
class EnrollResult:
    peer_id: str
    name: str
    overlay_ip: str
    network: str
    server: str
    state_dir: Path
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class EnrolledState:
    """Everything `up --state-dir` needs, loaded and checked."""

    state_dir: Path
    server: str
    identity: identity.NodeIdentity
    certificate: bytes
    ca_public_key: bytes
    name: str
    overlay_ip: str
    network: str
    server_ca: Path | None = None  # PEM file the server's TLS certificate must chain to

    @property
    def websocket_url(self) -> str:
        return websocket_url(self.server)

    def ssl_context(self, url: str) -> ssl.SSLContext | None:
        """For a wss:// URL: verify the server against `server_ca`, else the system's CAs."""
        return client_ssl_context(self.server_ca) if url.startswith("wss://") else None


def client_ssl_context(cafile: Path | None) -> ssl.SSLContext:
    """Certificate and host name checked (TLS 1.2 or later); `cafile` replaces the system's CAs."""
    try:
        context = ssl.create_default_context(cafile=str(cafile) if cafile is not None else None)
    except (OSError, ssl.SSLError) as exc:
        raise EnrollError(f"{cafile}: not a PEM file of CA certificates ({exc})") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def websocket_url(server: str) -> str:
    parts = urlsplit(server)
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme)
    if scheme is None or not parts.netloc:
        raise EnrollError(f"server URL {server!r} must be http(s)://host[:port]")
    return f"{scheme}://{parts.netloc}{parts.path.rstrip('/')}/ws/agent/"


def write_private_file(path: Path, data: bytes) -> None:
    """Write `data` to `path` with mode 0600, atomically (temp file + rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _b64(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise EnrollError(f"server answer: {what} is missing or not a string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise EnrollError(f"server answer: {what} is not base64") from None


def _post_json(url: str, body: dict, timeout: float, context: ssl.SSLContext | None) -> dict:
    data = json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="POST",  # noqa: S310 (scheme checked by caller)
                                 headers={"Content-Type": "application/json", "Accept": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=context) as resp:  # noqa: S310
            raw = resp.read(MAX_RESPONSE + 1)
    except urllib.error.HTTPError as exc:
        detail = ""
        try:
            detail = json.loads(exc.read(MAX_RESPONSE)).get("detail", "")
        except (ValueError, AttributeError, OSError):
            pass
        raise EnrollError(f"enrollment refused ({exc.code}): {detail or exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise EnrollError(f"cannot reach {url}: {getattr(exc, 'reason', exc)}") from None
    if len(raw) > MAX_RESPONSE:
        raise EnrollError("server answer is too large")
    try:
        answer = json.loads(raw)
    except ValueError:
        raise EnrollError("server answer is not JSON") from None
    if not isinstance(answer, dict):
        raise EnrollError("server answer is not a JSON object")
    return answer


def _expected_fingerprint(token: str, ca_fingerprint: bytes | None, https: bool) -> tuple[bytes | None, list]:
    """The CA fingerprint to insist on, and warnings for the user."""
    try:
        parsed = parse_token(token)
    except TokenFormatError as exc:
        raise EnrollError(f"--token: {exc}") from None
    fp = parsed.fingerprint
    if fp is not None and ca_fingerprint is not None and fp != ca_fingerprint:
        raise EnrollError("--ca-fingerprint differs from the CA fingerprint inside the token")
    fp = fp if fp is not None else ca_fingerprint
    if fp is not None:
        return fp, []
    if not https:
        raise EnrollError(
            "this token carries no CA fingerprint (it predates them), and over plain http nothing "
            "vouches for the CA key the server sends: use a token made by this version (it ends in "
            "'.' and the fingerprint), pass --ca-fingerprint, or enroll over https")
    return None, ["this token carries no CA fingerprint: the network's CA key is trusted because the "
                  "server's TLS certificate verified (make a new token to pin the CA)"]


def enroll(server: str, token: str, name: str, state_dir: Path | str, endpoint: str | None = None,
           public: bool = False, *, now: int | None = None, timeout: float = 15.0,
           server_ca: Path | str | None = None, ca_fingerprint: bytes | None = None) -> EnrollResult:
    """Enroll this node with `server` using a one-time `token`; fill `state_dir`.

    `server_ca`: PEM file of the CA of the server's TLS certificate (https only; kept in the state
    dir); `ca_fingerprint`: the network CA's fingerprint when the token does not carry one."""
    import time  # only here: the rest of the module is clock-free

    state_dir = Path(state_dir)
    parts = urlsplit(server)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise EnrollError(f"server URL {server!r} must be http(s)://host[:port]")
    server = f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"
    https = parts.scheme == "https"
    expected_fp, warnings = _expected_fingerprint(token, ca_fingerprint, https)
    context = None
    server_ca_pem = None
    if server_ca is not None:
        if not https:
            raise EnrollError("--server-ca needs an https:// server URL")
        try:
            server_ca_pem = Path(server_ca).read_bytes()[:MAX_SERVER_CA + 1]
        except OSError as exc:
            raise EnrollError(f"--server-ca {server_ca}: {exc.strerror or exc}") from None
        if len(server_ca_pem) > MAX_SERVER_CA:
            raise EnrollError(f"--server-ca {server_ca}: larger than {MAX_SERVER_CA} bytes")
        context = client_ssl_context(Path(server_ca))
    elif https:
        context = client_ssl_context(None)
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    if (state_dir / identity.KEY_FILE).exists():
        ident = identity.load_private_key(state_dir / identity.KEY_FILE)
    else:
        ident = identity.generate(state_dir)

    body: dict = {"token": token, "name": name,
                  "public_key": base64.b64encode(ident.public_key).decode(), "is_public": bool(public)}
    if endpoint:
        body["endpoint"] = endpoint
    answer = _post_json(f"{server}/api/enroll", body, timeout, context)

    cert = _b64(answer.get("certificate"), "certificate")
    ca_pk = _b64(answer.get("ca_public_key"), "ca_public_key")
    if len(ca_pk) != MLDSA87_PUBLIC_KEY_SIZE:
        raise EnrollError("server answer: ca_public_key is not an ML-DSA-87 public key")
    if expected_fp is not None and not fingerprint_matches(expected_fp, ca_pk):
        raise EnrollError(
            f"the server's CA key does not match the token's CA fingerprint {fingerprint_text(expected_fp)}: "
            "someone between this machine and the server may have answered instead of it. Nothing was "
            "saved. The token was sent in clear: revoke it and check the dashboard for a node you did "
            "not enroll")
    try:
        parsed = verify_certificate(cert, ca_pk, int(time.time()) if now is None else now)
    except CertificateError as exc:
        raise EnrollError(f"server answer: certificate rejected: {exc}") from None
    if parsed.public_key != ident.public_key or parsed.peer_id != ident.peer_id:
        raise EnrollError("server answer: the certificate is not for this node's key")
    if answer.get("peer_id") not in (None, ident.peer_id):
        raise EnrollError("server answer: peer_id does not match this node's key")
    network = answer.get("network")
    if not isinstance(network, str) or not network:
        network = parsed.network

    write_private_file(state_dir / CERT_FILE, cert)
    write_private_file(state_dir / CA_FILE, ca_pk)
    if server_ca_pem is not None:
        write_private_file(state_dir / SERVER_CA_FILE, server_ca_pem)
    else:
        (state_dir / SERVER_CA_FILE).unlink(missing_ok=True)  # a former enrollment's
    meta = {"server": server, "peer_id": ident.peer_id, "name": parsed.name,
            "overlay_ip": str(parsed.overlay_ip), "network": network}
    write_private_file(state_dir / SERVER_FILE, json.dumps(meta, indent=2).encode() + b"\n")
    return EnrollResult(peer_id=ident.peer_id, name=parsed.name, overlay_ip=str(parsed.overlay_ip),
                        network=network, server=server, state_dir=state_dir, warnings=tuple(warnings))


def load_state(state_dir: Path | str) -> EnrolledState:
    """Load and check an enrolled state directory (for `up --state-dir` and `status`)."""
    state_dir = Path(state_dir)
    try:
        meta = json.loads((state_dir / SERVER_FILE).read_text())
        cert = (state_dir / CERT_FILE).read_bytes()
        ca_pk = (state_dir / CA_FILE).read_bytes()
    except FileNotFoundError as exc:
        raise EnrollError(f"{exc.filename}: missing; run `shadowmesh-agent enroll` first") from None
    except (OSError, ValueError) as exc:
        raise EnrollError(f"{state_dir}: unreadable state: {exc}") from None
    if not isinstance(meta, dict) or not all(isinstance(meta.get(k), str) for k in
                                             ("server", "name", "overlay_ip", "network")):
        raise EnrollError(f"{state_dir / SERVER_FILE}: missing fields")
    ident = identity.load_private_key(state_dir / identity.KEY_FILE)
    try:
        mldsa.MLDSA87PublicKey.from_public_bytes(ca_pk)
    except ValueError:
        raise EnrollError(f"{state_dir / CA_FILE}: not an ML-DSA-87 public key") from None
    server_ca = state_dir / SERVER_CA_FILE
    return EnrolledState(state_dir=state_dir, server=meta["server"], identity=ident, certificate=cert,
                         ca_public_key=ca_pk, name=meta["name"], overlay_ip=meta["overlay_ip"],
                         network=meta["network"], server_ca=server_ca if server_ca.exists() else None)
