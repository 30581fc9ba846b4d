"""Enrollment and the enrolled node's state directory.

`enroll()` makes (or reuses) the node's ML-DSA-87 identity in the state directory — the private
key never leaves the node — and trades a one-time token for a CA-signed certificate at
`POST <server>/api/enroll`. It checks the answer before keeping it: the certificate must verify
against the CA key it came with and bind *our* public key.

State directory (every file mode 0600, written atomically):

    node.key        ML-DSA-87 seed (nodeagent.identity)          node.pub   public key
    node.crt        mesh certificate, canonical bytes (nodeagent.protocol.cert)
    ca.pub          the mesh CA's raw ML-DSA-87 public key
    server.json     {"server", "peer_id", "name", "overlay_ip", "network"}
    netmap.json     the last applied netmap (written by server_link)
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric import mldsa

from . import identity
from .protocol.cert import CertificateError, verify_certificate
from .protocol.constants import MLDSA87_PUBLIC_KEY_SIZE

__all__ = ["EnrollError", "EnrollResult", "EnrolledState", "enroll", "load_state", "write_private_file"]

CERT_FILE = "node.crt"
CA_FILE = "ca.pub"
SERVER_FILE = "server.json"
NETMAP_FILE = "netmap.json"
MAX_RESPONSE = 64 * 1024


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

    @property
    def websocket_url(self) -> str:
        return websocket_url(self.server)


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


def _post_json(url: str, body: dict, timeout: float) -> dict:
    data = json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="POST",  # noqa: S310 (scheme checked by caller)
                                 headers={"Content-Type": "application/json", "Accept": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
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


def enroll(server: str, token: str, name: str, state_dir: Path | str, endpoint: str | None = None,
           public: bool = False, *, now: int | None = None, timeout: float = 15.0) -> EnrollResult:
    """Enroll this node with `server` using a one-time `token`; fill `state_dir`."""
    import time  # only here: the rest of the module is clock-free

    state_dir = Path(state_dir)
    parts = urlsplit(server)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise EnrollError(f"server URL {server!r} must be http(s)://host[:port]")
    server = f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    if (state_dir / identity.KEY_FILE).exists():
        ident = identity.load_private_key(state_dir / identity.KEY_FILE)
    else:
        ident = identity.generate(state_dir)

    body: dict = {"token": token, "name": name,
                  "public_key": base64.b64encode(ident.public_key).decode(), "is_public": bool(public)}
    if endpoint:
        body["endpoint"] = endpoint
    answer = _post_json(f"{server}/api/enroll", body, timeout)

    cert = _b64(answer.get("certificate"), "certificate")
    ca_pk = _b64(answer.get("ca_public_key"), "ca_public_key")
    if len(ca_pk) != MLDSA87_PUBLIC_KEY_SIZE:
        raise EnrollError("server answer: ca_public_key is not an ML-DSA-87 public key")
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
    meta = {"server": server, "peer_id": ident.peer_id, "name": parsed.name,
            "overlay_ip": str(parsed.overlay_ip), "network": network}
    write_private_file(state_dir / SERVER_FILE, json.dumps(meta, indent=2).encode() + b"\n")
    return EnrollResult(peer_id=ident.peer_id, name=parsed.name, overlay_ip=str(parsed.overlay_ip),
                        network=network, server=server, state_dir=state_dir)


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
    return EnrolledState(state_dir=state_dir, server=meta["server"], identity=ident, certificate=cert,
                         ca_public_key=ca_pk, name=meta["name"], overlay_ip=meta["overlay_ip"],
                         network=meta["network"])
