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

import builtins
import ipaddress
import math
import re
from typing import Literal, overload

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
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # C0 controls and DEL: never in a name or an address
_HEX64 = re.compile(r"[0-9a-f]{64}")


class MessageError(ValueError):
    """A frame the receiver must reject; `code` is the close code to use."""

    code: CloseCode = CloseCode.MALFORMED


class Malformed(MessageError):
    code = CloseCode.MALFORMED


class StrictMap:
    """A checked view of one msgpack map: each key read once, leftovers are an error."""

    __slots__ = ("_d", "_seen", "_what")

    # the methods below are named after the types they read (int, bool, str, ...), so inside the
    # class body those names are the methods: annotations say builtins.int etc.
    def __init__(self, value: object, what: str) -> None:
        if not isinstance(value, dict):
            raise Malformed(f"{what} must be a map")
        self._d: dict[object, object] = value
        self._what = what
        self._seen: set[str] = set()

    def __contains__(self, key: object) -> builtins.bool:
        """Whether the map has `key` (for optional keys: an absent one is never an error)."""
        return key in self._d

    def raw(self, key: str) -> object:
        """The value as it is, unchecked (the caller checks it); a missing key is Malformed."""
        self._seen.add(key)
        if key not in self._d:
            raise Malformed(f"{self._what}: missing {key!r}")
        return self._d[key]

    def done(self) -> None:
        extra = set(self._d) - self._seen
        if extra:
            raise Malformed(f"{self._what}: unknown key(s) {sorted(map(str, extra))}")

    def int(self, key: str, lo: builtins.int = 0, hi: builtins.int = U64_MAX) -> builtins.int:
        v = self.raw(key)
        if type(v) is not int or not lo <= v <= hi:
            raise Malformed(f"{self._what}.{key} must be an integer in {lo}..{hi}")
        return v

    @overload
    def num(self, key: str, nullable: Literal[False] = False) -> float: ...
    @overload
    def num(self, key: str, nullable: builtins.bool) -> float | None: ...
    def num(self, key: str, nullable: builtins.bool = False) -> float | None:
        v = self.raw(key)
        if v is None and nullable:
            return None
        if (type(v) is not builtins.int and type(v) is not float) or not math.isfinite(v) or v < 0:
            raise Malformed(f"{self._what}.{key} must be a finite number >= 0")
        return float(v)

    def bool(self, key: str) -> builtins.bool:
        v = self.raw(key)
        if type(v) is not bool:
            raise Malformed(f"{self._what}.{key} must be a boolean")
        return v

    @overload
    def str(self, key: builtins.str, max_len: builtins.int = MAX_NAME, nullable: Literal[False] = False,
            optional: Literal[False] = False) -> builtins.str: ...
    @overload
    def str(self, key: builtins.str, max_len: builtins.int = MAX_NAME, nullable: builtins.bool = False,
            optional: builtins.bool = False) -> builtins.str | None: ...
    def str(self, key: builtins.str, max_len: builtins.int = MAX_NAME, nullable: builtins.bool = False,
            optional: builtins.bool = False) -> builtins.str | None:
        if optional and key not in self._d:
            self._seen.add(key)
            return None
        v = self.raw(key)
        if v is None and nullable:
            return None
        if not isinstance(v, str) or not 1 <= len(v) <= max_len:
            raise Malformed(f"{self._what}.{key} must be a string of 1..{max_len} characters")
        if _CONTROL.search(v):
            raise Malformed(f"{self._what}.{key} contains control characters")
        return v

    def bytes(self, key: builtins.str, lo: builtins.int, hi: builtins.int) -> builtins.bytes:
        v = self.raw(key)
        if not isinstance(v, bytes) or not lo <= len(v) <= hi:
            raise Malformed(f"{self._what}.{key} must be {lo}..{hi} bytes")
        return v

    @overload
    def peer_id(self, key: builtins.str, nullable: Literal[False] = False) -> builtins.str: ...
    @overload
    def peer_id(self, key: builtins.str, nullable: builtins.bool) -> builtins.str | None: ...
    def peer_id(self, key: builtins.str, nullable: builtins.bool = False) -> builtins.str | None:
        v = self.raw(key)
        if v is None and nullable:
            return None
        return check_peer_id(v, f"{self._what}.{key}")

    @overload
    def list(self, key: builtins.str, nullable: Literal[False] = False) -> builtins.list[object]: ...
    @overload
    def list(self, key: builtins.str, nullable: builtins.bool) -> builtins.list[object] | None: ...
    def list(self, key: builtins.str, nullable: builtins.bool = False) -> builtins.list[object] | None:
        v = self.raw(key)
        if v is None and nullable:
            return None
        if not isinstance(v, list) or len(v) > MAX_ITEMS:
            raise Malformed(f"{self._what}.{key} must be a list of at most {MAX_ITEMS} items")
        return v

    def map(self, key: builtins.str, nullable: builtins.bool = False,
            optional: builtins.bool = False) -> object:
        """A nested map, unchecked: the caller parses it with its own StrictMap. `optional`: an
        absent key is None."""
        if optional and key not in self._d:
            self._seen.add(key)
            return None
        v = self.raw(key)
        if v is None:
            if nullable:
                return None
            raise Malformed(f"{self._what}.{key} must be a map")
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
    if not _HEX64.fullmatch(v):
        raise Malformed(f"{what} must be 64 lowercase hex characters")
    return v
