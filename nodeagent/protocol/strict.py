"""Strict reading of msgpack-decoded maps, for the netmap and the agent websocket messages. Pure.

`StrictMap` is a checked view of one map: each key is read once with its type and bounds, a
missing key or a key nobody read is an error. The field checks (peer id, IP address,
fingerprint) are shared by every parser built on it. Everything here raises `Malformed`, a
`MessageError`: the base of every error the agent link's parsers raise, each carrying the
websocket close code the receiver should use (the frame-level ones live in messages.py).

Binary codecs (certificates, handshake, control channel) use wire.Reader instead: a cursor
over bytes rather than a view of a decoded map.
"""

from __future__ import annotations

import ipaddress
import math

from .constants import CloseCode
from .identity import PEER_ID_RE

__all__ = [
    "MAX_ITEMS",
    "MAX_NAME",
    "U64_MAX",
    "Malformed",
    "MessageError",
    "StrictMap",
    "check_fingerprint",
    "check_ip",
    "check_peer_id",
]

MAX_NAME = 63  # characters of a name or network (and the default bound of StrictMap.str)
MAX_ITEMS = 10_000  # items of any one list
U64_MAX = (1 << 64) - 1


class MessageError(ValueError):
    """A frame the receiver must reject; `code` is the close code to use."""

    code: CloseCode = CloseCode.MALFORMED


class Malformed(MessageError):
    code = CloseCode.MALFORMED


class StrictMap:
    """A checked view of one msgpack map: each key read once, leftovers are an error."""

    __slots__ = ("_d", "_seen", "_what")

    def __init__(self, value: object, what: str) -> None:
        if not isinstance(value, dict):
            raise Malformed(f"{what} must be a map")
        self._d, self._what, self._seen = value, what, set()

    def raw(self, key: str):
        """The value as it is, unchecked (the caller checks it); a missing key is Malformed."""
        self._seen.add(key)
        if key not in self._d:
            raise Malformed(f"{self._what}: missing {key!r}")
        return self._d[key]

    def done(self) -> None:
        extra = set(self._d) - self._seen
        if extra:
            raise Malformed(f"{self._what}: unknown key(s) {sorted(map(str, extra))}")

    def int(self, key: str, lo: int = 0, hi: int = U64_MAX) -> int:
        v = self.raw(key)
        if type(v) is not int or not lo <= v <= hi:
            raise Malformed(f"{self._what}.{key} must be an integer in {lo}..{hi}")
        return v

    def num(self, key: str, nullable: bool = False) -> float | None:
        v = self.raw(key)
        if v is None and nullable:
            return None
        if type(v) not in (int, float) or not math.isfinite(v) or v < 0:
            raise Malformed(f"{self._what}.{key} must be a finite number >= 0")
        return float(v)

    def bool(self, key: str) -> bool:
        v = self.raw(key)
        if type(v) is not bool:
            raise Malformed(f"{self._what}.{key} must be a boolean")
        return v

    def str(self, key: str, max_len: int = MAX_NAME, nullable: bool = False,
            optional: bool = False) -> str | None:
        if optional and key not in self._d:
            self._seen.add(key)
            return None
        v = self.raw(key)
        if v is None and nullable:
            return None
        if not isinstance(v, str) or not 1 <= len(v) <= max_len:
            raise Malformed(f"{self._what}.{key} must be a string of 1..{max_len} characters")
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in v):
            raise Malformed(f"{self._what}.{key} contains control characters")
        return v

    def bytes(self, key: str, lo: int, hi: int) -> bytes:
        v = self.raw(key)
        if not isinstance(v, bytes) or not lo <= len(v) <= hi:
            raise Malformed(f"{self._what}.{key} must be {lo}..{hi} bytes")
        return v

    def peer_id(self, key: str, nullable: bool = False) -> str | None:
        v = self.raw(key)
        if v is None and nullable:
            return None
        return check_peer_id(v, f"{self._what}.{key}")

    def list(self, key: str, nullable: bool = False) -> list | None:
        v = self.raw(key)
        if v is None and nullable:
            return None
        if not isinstance(v, list) or len(v) > MAX_ITEMS:
            raise Malformed(f"{self._what}.{key} must be a list of at most {MAX_ITEMS} items")
        return v

    def map(self, key: str, nullable: bool = False) -> object:
        """A nested map, unchecked: the caller parses it with its own StrictMap."""
        v = self.raw(key)
        if v is None and nullable:
            return None
        return v


def check_peer_id(v: object, what: str) -> str:
    if not isinstance(v, str) or not PEER_ID_RE.match(v):
        raise Malformed(f"{what} must be a peer id (40 lowercase hex characters)")
    return v


def check_ip(v: str, what: str) -> str:
    """The address in its canonical text form."""
    try:
        return str(ipaddress.ip_address(v))
    except ValueError:
        raise Malformed(f"{what} is not an IP address") from None


def check_fingerprint(v: str, what: str) -> str:
    if len(v) != 64 or any(c not in "0123456789abcdef" for c in v):
        raise Malformed(f"{what} must be 64 lowercase hex characters")
    return v
