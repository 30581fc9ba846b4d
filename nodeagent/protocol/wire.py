"""A strict cursor over bytes for the hand-written binary codecs. Pure.

Every read checks bounds and raises the caller's error type, so a parser built on it can only
fail with its own declared error, never with IndexError or struct.error.
"""

from __future__ import annotations

__all__ = ["Reader"]


class Reader:
    __slots__ = ("_data", "_error", "_pos")

    def __init__(self, data: bytes, error: type[Exception]) -> None:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise error("expected bytes")
        self._data = bytes(data)
        self._pos = 0
        self._error = error

    @property
    def position(self) -> int:
        return self._pos

    def take(self, n: int, what: str) -> bytes:
        end = self._pos + n
        if n < 0 or end > len(self._data):
            raise self._error(f"truncated: {what} needs {n} bytes at offset {self._pos}")
        out = self._data[self._pos : end]
        self._pos = end
        return out

    def u8(self, what: str) -> int:
        return int.from_bytes(self.take(1, what), "big")

    def u16(self, what: str) -> int:
        return int.from_bytes(self.take(2, what), "big")

    def u32(self, what: str) -> int:
        return int.from_bytes(self.take(4, what), "big")

    def u64(self, what: str) -> int:
        return int.from_bytes(self.take(8, what), "big")

    def prefixed8(self, what: str) -> bytes:
        return self.take(self.u8(what + " length"), what)

    def prefixed16(self, what: str) -> bytes:
        return self.take(self.u16(what + " length"), what)

    def end(self) -> None:
        if self._pos != len(self._data):
            raise self._error(f"{len(self._data) - self._pos} trailing bytes at offset {self._pos}")
