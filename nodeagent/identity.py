"""Key files of a node identity: the file I/O half (the pure half is nodeagent.protocol.identity).

Contract:
- `DIR/node.key` holds the 32-byte ML-DSA-87 seed (FIPS 204 `xi`), raw bytes, mode 0600.
  The private key is re-derived from the seed on load; it never leaves the node.
- `DIR/node.pub` holds the raw FIPS 204 public key (2,592 bytes), mode 0644.
- A public key given to the agent (config `public_key`) may be such a file or a base64 string;
  a file that holds base64 text instead of raw bytes is accepted too.
- `load_private_key` refuses a key file that group or others may read, as ssh does, and every
  failure is an `IdentityFileError` whose message names the file.
"""

from __future__ import annotations

import base64
import binascii
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import mldsa

from .protocol.constants import MLDSA87_PUBLIC_KEY_SIZE
from .protocol.identity import peer_id

__all__ = [
    "SEED_SIZE",
    "IdentityFileError",
    "NodeIdentity",
    "decode_public_key",
    "generate",
    "load_private_key",
    "load_public_key",
]

SEED_SIZE = 32
KEY_FILE = "node.key"
PUB_FILE = "node.pub"


class IdentityFileError(Exception):
    """A key file is missing, unreadable, too open or has the wrong content."""


@dataclass(frozen=True)
class NodeIdentity:
    private_key: mldsa.MLDSA87PrivateKey
    public_key: bytes
    peer_id: str


def generate(out_dir: Path) -> NodeIdentity:
    """Create DIR/node.key (0600) and DIR/node.pub; refuse to overwrite an existing identity."""
    out_dir.mkdir(parents=True, exist_ok=True)
    key_path, pub_path = out_dir / KEY_FILE, out_dir / PUB_FILE
    for path in (key_path, pub_path):
        if path.exists():
            raise IdentityFileError(f"{path}: already exists; refusing to overwrite an identity")
    key = mldsa.MLDSA87PrivateKey.generate()
    seed = key.private_bytes_raw()
    public = key.public_key().public_bytes_raw()
    # O_EXCL + explicit mode: the file is never readable by others, not even for an instant.
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)  # the umask could only have narrowed it; make it exact
        os.write(fd, seed)
    finally:
        os.close(fd)
    fd = os.open(pub_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, public)
    finally:
        os.close(fd)
    return NodeIdentity(key, public, peer_id(public))


def load_private_key(path: Path) -> NodeIdentity:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise IdentityFileError(f"{path}: private key file not found (create one with "
                                f"`shadowmesh-agent keygen --out DIR`)") from None
    except OSError as exc:
        raise IdentityFileError(f"{path}: cannot read private key: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise IdentityFileError(f"{path}: private key is not a regular file")
    if st.st_mode & 0o077:
        raise IdentityFileError(
            f"{path}: private key is accessible by group or others (mode {stat.S_IMODE(st.st_mode):04o}); "
            f"run `chmod 600 {path}`")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise IdentityFileError(f"{path}: cannot read private key: {exc.strerror}") from None
    seed = data if len(data) == SEED_SIZE else _maybe_base64(data, SEED_SIZE)
    if seed is None:
        raise IdentityFileError(f"{path}: not an ML-DSA-87 key file (expected a {SEED_SIZE}-byte seed)")
    key = mldsa.MLDSA87PrivateKey.from_seed_bytes(seed)
    public = key.public_key().public_bytes_raw()
    return NodeIdentity(key, public, peer_id(public))


_MAX_PUBLIC_KEY_FILE = 8192  # base64 of a public key with line breaks is about 3.5 KB


def load_public_key(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise IdentityFileError(f"{path}: public key is not a regular file")
            data = f.read(_MAX_PUBLIC_KEY_FILE + 1)
    except FileNotFoundError:
        raise IdentityFileError(f"{path}: public key file not found") from None
    except OSError as exc:
        raise IdentityFileError(f"{path}: cannot read public key: {exc.strerror}") from None
    except ValueError:  # a NUL in the path
        raise IdentityFileError(f"{path!r}: not a usable file name") from None
    if len(data) > _MAX_PUBLIC_KEY_FILE:
        raise IdentityFileError(f"{path}: too large for a public key file")
    if len(data) == MLDSA87_PUBLIC_KEY_SIZE:
        return data
    decoded = _maybe_base64(data, MLDSA87_PUBLIC_KEY_SIZE)
    if decoded is None:
        raise IdentityFileError(
            f"{path}: not an ML-DSA-87 public key ({MLDSA87_PUBLIC_KEY_SIZE} raw bytes or base64)")
    return decoded


def decode_public_key(text: str) -> bytes | None:
    """The key if `text` is base64 of an ML-DSA-87 public key, else None."""
    return _maybe_base64(text.encode("ascii", "replace"), MLDSA87_PUBLIC_KEY_SIZE)


def _maybe_base64(data: bytes, size: int) -> bytes | None:
    try:
        decoded = base64.b64decode(b"".join(data.split()), validate=True)
    except (binascii.Error, ValueError):
        return None
    return decoded if len(decoded) == size else None
