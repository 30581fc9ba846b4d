"""The DHT's open port: connected streams answered under limits. asyncio.

`DhtServer.serve(reader, writer, first)` answers one connected stream; the agent mounts it on its
control port (the first five bytes tell a DHT frame from a control frame, messages.py), and
`DhtNode.listen()` opens a port of its own for simulations and tests. Every connection is bounded:
  - at most `max_connections` in all and `max_connections_per_source` per source: what the
    request budgets count as one (ratelimit.source_key: an IPv4 address or an IPv6 /64, an
    IPv4-mapped address as its IPv4 address), so the addresses of one /64 share one cap;
  - the first frame must arrive within `first_frame_s`, every frame must be complete within
    `frame_s` of its first byte (slow-loris), an idle connection is closed after `idle_s`;
  - a frame over 64 KiB is refused before it is read (the connection is closed: framing is lost);
    a malformed frame gets an Error naming the problem and is counted;
  - each source has a request budget (token bucket); over it, requests get a small "rate_limited"
    Error; checking a requester's record (signatures) costs more tokens than a plain request;
  - writes that the peer does not read within `frame_s` close the connection.

What a request is answered with is the node's (node.py, `Host.answer`): the server hands it each
request it admitted. The limits, the request budgets and the counters are the node's too (`Host`):
the server reads them from the node where it uses them, and copies none.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from typing import Protocol

from .budget import SourceBudgets, source_of
from .config import DhtConfig, DhtStats
from .messages import Error, FindNode, FindValue, MessageError, Ping, Request, Response, Store, decode, encode
from .transport import FrameStream

__all__ = ["DhtServer", "Host"]


class Host(Protocol):
    """What the server needs of the node it answers for (node.DhtNode)."""

    config: DhtConfig  # the limits: connections, deadlines, what checking a record costs
    stats: DhtStats  # refusals counted by reason, requests served
    budgets: SourceBudgets  # the request budget of each source

    def answer(self, msg: Request) -> Response:
        """The answer to a request the server admitted."""
        ...


class DhtServer:
    def __init__(self, host: Host) -> None:
        self.host = host
        self.closed = False  # the node is closing: no further frame is answered
        self._conns_total = 0
        self._conns_by_source: dict[str, int] = {}
        self._serving: set[asyncio.StreamWriter] = set()

    async def serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, first: bytes = b""
    ) -> None:
        """Answer one connected stream until it ends. `first` = bytes already read from it."""
        peer = writer.get_extra_info("peername")
        source = peer[0] if peer else "?"
        key = source_of(source)  # the connection cap's source, as the request budget's
        c = self.host.config
        if self._conns_total >= c.max_connections or self._conns_by_source.get(key, 0) >= (
            c.max_connections_per_source
        ):
            self.host.stats.refuse("connections")
            writer.close()
            return
        self._conns_total += 1
        self._conns_by_source[key] = self._conns_by_source.get(key, 0) + 1
        self._serving.add(writer)
        stream = FrameStream(reader, first)
        idle = c.first_frame_s
        try:
            while not self.closed:
                try:
                    body = await stream.frame(idle, c.frame_s)
                except TimeoutError:
                    self.host.stats.refuse("slow" if stream.buf or idle == c.first_frame_s else "idle")
                    return
                except MessageError as exc:  # over the cap: we cannot skip it, so we close
                    self.host.stats.refuse(exc.code)
                    await self._send(writer, Error(0, exc.code, str(exc)))
                    return
                if body is None:
                    return
                idle = c.idle_s
                answer = self._answer(body, source)
                body = None  # an idle connection must not keep its last frame or answer alive
                sent = await self._send(writer, answer)
                del answer
                if not sent:
                    return
        except (ConnectionError, OSError):
            pass
        finally:
            self._serving.discard(writer)
            self._conns_total -= 1
            left = self._conns_by_source[key] - 1
            if left:
                self._conns_by_source[key] = left
            else:
                del self._conns_by_source[key]
            with contextlib.suppress(Exception):
                writer.close()

    def close_connections(self) -> list[asyncio.StreamWriter]:
        """Close every connection being served (the node is closing); returns their writers, for
        `detached`."""
        serving = list(self._serving)
        for writer in serving:
            with contextlib.suppress(Exception):
                writer.close()
        return serving

    @staticmethod
    async def detached(writers: Iterable[asyncio.StreamWriter]) -> None:
        """Wait (1 s at most each) until each closed connection's transport has detached."""
        for writer in writers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    async def _send(self, writer: asyncio.StreamWriter, msg: Response) -> bool:
        try:
            writer.write(encode(msg))
            async with asyncio.timeout(self.host.config.frame_s):
                await writer.drain()
        except (TimeoutError, ConnectionError, OSError):
            self.host.stats.refuse("slow_reader")
            return False
        return True

    def _answer(self, body: bytes, source: str) -> Response:
        try:
            msg = decode(body)
        except MessageError as exc:
            self.host.stats.refuse(exc.code)
            return Error(0, exc.code, str(exc)[:200])
        if not isinstance(msg, Ping | FindNode | FindValue | Store):
            self.host.stats.refuse("not_a_request")
            return Error(msg.rid, "not_a_request")
        loop_now = asyncio.get_running_loop().time()
        me = getattr(msg, "me", None)
        cost = 1.0 + (self.host.config.check_cost if me is not None else 0.0)
        if isinstance(msg, Store):
            cost += self.host.config.check_cost
        if not self.host.budgets.take(source, loop_now, cost):
            self.host.stats.refuse("rate_limited")
            return Error(msg.rid, "rate_limited")
        self.host.stats.requests_served += 1
        return self.host.answer(msg)
