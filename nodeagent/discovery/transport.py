"""DHT transport: reading frames under deadlines, and the pooled client connections. asyncio.

`FrameStream` reads one length-prefixed frame at a time from a stream: the first byte may take
`idle_s`, the rest of the frame must follow within `frame_s` (a peer that trickles bytes is cut,
which is the slow-loris defence), and the length is checked against the 64 KiB cap before any of
the body is read.

`ClientPool` keeps one TCP connection per remote address and multiplexes requests over it by
request id. Every request runs under `asyncio.timeout(request_s)`, connecting included; a
connection on which a request timed out is closed (the far side may be gone, or our own address:
a node that moved must not keep asking over a connection from its old one); at most
`max_pooled` connections are kept, the least recently used idle one closed first (one with
requests in flight is never closed for room). Outgoing connections can be bound to our own
address (`bind_ip`), so the far side sees the source it would see from a real node.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from .messages import Error, MessageError, Request, Response, decode, encode, frame_length

__all__ = ["ClientPool", "Connection", "FrameStream", "RequestFailed"]

log = logging.getLogger(__name__)

READ_CHUNK = 65536
Address = tuple[str, int]


class RequestFailed(Exception):
    """A request got no usable answer (refused, timed out, error answer, unverified responder)."""


class FrameStream:
    def __init__(self, reader: asyncio.StreamReader, first: bytes = b"") -> None:
        self.reader = reader
        self.buf = bytearray(first)

    async def _more(self) -> None:
        data = await self.reader.read(READ_CHUNK)
        if not data:
            raise ConnectionError("connection closed mid-frame")
        self.buf += data

    async def frame(self, idle_s: float | None, frame_s: float) -> bytes | None:
        """The next frame body; None at a clean end of stream. TimeoutError when the peer is idle
        too long or too slow; MessageError for a frame over the cap (nothing more is read)."""
        if not self.buf:
            async with asyncio.timeout(idle_s):
                data = await self.reader.read(READ_CHUNK)
            if not data:
                return None
            self.buf += data
        async with asyncio.timeout(frame_s):
            while len(self.buf) < 4:
                await self._more()
            n = frame_length(bytes(self.buf[:4]))
            while len(self.buf) < 4 + n:
                await self._more()
        body = bytes(self.buf[4 : 4 + n])
        del self.buf[: 4 + n]
        return body


class Connection:
    """A pooled client connection: requests multiplexed by rid, one reader task."""

    def __init__(self, pool: ClientPool, address: Address, reader, writer) -> None:
        self.pool = pool
        self.address = address
        self.writer = writer
        self.stream = FrameStream(reader)
        self.pending: dict[int, asyncio.Future] = {}
        self.me_sent = False  # our record went out on this connection (node.py decides)
        self.last_used = asyncio.get_running_loop().time()
        self.closed = False
        self.task = asyncio.get_running_loop().create_task(self._read())
        pool._readers.add(self.task)
        self.task.add_done_callback(pool._readers.discard)

    async def _read(self) -> None:
        try:
            while True:
                body = await self.stream.frame(None, self.pool.frame_s)
                if body is None:
                    break
                msg = decode(body)
                fut = self.pending.pop(msg.rid, None)
                if fut is not None and not fut.done():
                    fut.set_result(msg)
                del body, msg, fut  # an idle connection keeps no answer alive
        except (MessageError, ConnectionError, OSError, TimeoutError) as exc:
            log.debug("dht connection to %s: %s", self.address, exc)
        finally:
            self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for fut in self.pending.values():
            if not fut.done():
                fut.set_exception(RequestFailed("connection closed"))
        self.pending.clear()
        with contextlib.suppress(Exception):
            self.writer.close()  # the reader task then sees the end of the stream and returns
        self.pool._forget(self)


class ClientPool:
    def __init__(self, *, request_s: float, frame_s: float, max_pooled: int, bind_ip: str | None,
                 first_rid: int = 1) -> None:
        self.request_s = request_s
        self.frame_s = frame_s
        self.max_pooled = max_pooled
        self.bind_ip = bind_ip
        self._pool: dict[Address, Connection] = {}
        self._connecting: dict[Address, asyncio.Future] = {}
        self._readers: set[asyncio.Task] = set()
        self._rid = first_rid
        self.sent = 0
        self.failed = 0
        self.closed = False

    def __len__(self) -> int:
        return len(self._pool)

    async def request(self, address: Address, build: Callable[[int, Connection], Request]) -> Response:
        """Send the request `build(rid, connection)` to `address` and wait for its answer.
        RequestFailed on any failure, including an Error answer."""
        self.sent += 1
        conn = None
        try:
            async with asyncio.timeout(self.request_s):
                conn = await self._connection(address)
                rid = self._next_rid()
                fut = asyncio.get_running_loop().create_future()
                conn.pending[rid] = fut
                conn.last_used = asyncio.get_running_loop().time()
                try:
                    conn.writer.write(encode(build(rid, conn)))
                    await conn.writer.drain()
                    answer = await fut
                finally:
                    conn.pending.pop(rid, None)
        except (TimeoutError, OSError, ConnectionError, MessageError, RequestFailed) as exc:
            self.failed += 1
            if isinstance(exc, TimeoutError) and conn is not None:
                conn.close()  # no answer in time: the next request to that address connects afresh
            raise RequestFailed(f"{address}: {exc!r}") from None
        if isinstance(answer, Error):
            self.failed += 1
            raise RequestFailed(f"{address} answered {answer.code}")
        return answer

    def close_idle(self, idle_s: float) -> None:
        now = asyncio.get_running_loop().time()
        for conn in list(self._pool.values()):
            if not conn.pending and now - conn.last_used > idle_s:
                conn.close()

    async def close(self) -> None:
        """Close every connection and wait (briefly) for their reader tasks to end. No new
        connection is made afterwards."""
        self.closed = True
        for conn in list(self._pool.values()):
            conn.close()
        if self._readers:  # also those of connections closed just before, still reading to the end
            _, late = await asyncio.wait(set(self._readers), timeout=1.0)
            for task in late:
                task.cancel()

    def _next_rid(self) -> int:
        self._rid = self._rid % (2**32 - 1) + 1
        return self._rid

    async def _connection(self, address: Address) -> Connection:
        if self.closed:
            raise RequestFailed("the client is closed")
        conn = self._pool.get(address)
        if conn is not None and not conn.closed:
            return conn
        waiting = self._connecting.get(address)
        if waiting is not None:
            return await asyncio.shield(waiting)
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        self._connecting[address] = fut
        try:
            local = (self.bind_ip, 0) if self.bind_ip else None
            reader, writer = await asyncio.open_connection(address[0], address[1], local_addr=local)
            if self.closed:  # closed while we were connecting
                writer.close()
                raise RequestFailed("the client is closed")
            conn = Connection(self, address, reader, writer)
            self._make_room()
            self._pool[address] = conn
            fut.set_result(conn)
            return conn
        except BaseException as exc:
            fut.set_exception(RequestFailed(f"cannot connect to {address}: {exc!r}"))
            fut.exception()  # marked retrieved: waiters get it through shield
            raise
        finally:
            del self._connecting[address]

    def _make_room(self) -> None:
        while len(self._pool) >= self.max_pooled:
            idle = [c for c in self._pool.values() if not c.pending]
            if not idle:
                return
            min(idle, key=lambda c: c.last_used).close()

    def _forget(self, conn: Connection) -> None:
        if self._pool.get(conn.address) is conn:
            del self._pool[conn.address]
