"""The request-body cap where the bytes arrive: in Daphne's HTTP request, before anything is kept.

Daphne (on Twisted) hands a request to the application only once its whole body has arrived: it
keeps the body (in memory, or a temporary file when it is large or of unknown length) and then
queues all of it, in 8 KiB pieces, for the application at once. BodySizeLimitMiddleware
(middleware.py) refuses a body over the limit with a 413, but only after that. A 200 MiB POST
grew the server process by about 200 MiB (BENCHMARKS.md, "Oversized request bodies"), and memory
Python has once taken is rarely given back.

`install(limit)` puts `CappedWebRequest` in place of Daphne's request class for the connections
it accepts from then on (Daphne's factory names the class when it builds each connection, so the
command line stays `daphne meshadmin.asgi:application`). A request whose Content-Length is over
the limit is answered 413 as soon as its headers are in. A body without a length (chunked) is
answered when it passes the limit. What the client still sends is read and dropped, not kept.
The answer is written at once, then the write side is closed. The connection is dropped when the
client closes, or after LINGER_S. Closing at once would reset the connection with unread bytes
in it, and the client could lose the answer. Bodies at or under the limit go on as before. The
middleware stays as the check for any other server.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from .middleware import too_large_body

log = logging.getLogger(__name__)

__all__ = ["LINGER_S", "install"]

LINGER_S = 5.0  # how long a refused client may go on sending before the connection is dropped


def _answer(limit: int) -> bytes:
    body = json.dumps(too_large_body(limit)).encode()
    head = (
        "HTTP/1.1 413 Request Entity Too Large\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    return head + body


def install(limit: int) -> bool:
    """Cap request bodies at `limit` bytes in Daphne; False when Daphne is not installed (another
    ASGI server: the middleware alone checks). Installing again only changes the limit."""
    if limit < 0:
        raise ValueError("the body limit cannot be negative")
    try:
        from daphne import http_protocol  # type: ignore[import-untyped]  # no stubs; imports no reactor
    except ImportError:
        return False
    current = http_protocol.WebRequest
    if issubclass(current, _Capped):
        current.body_cap = limit
        current.answer = _answer(limit)
        return True

    class CappedWebRequest(_Capped, current):  # type: ignore[misc,valid-type]  # Daphne has no stubs
        body_cap = limit
        answer = _answer(limit)

    http_protocol.WebRequest = CappedWebRequest
    return True


class _Capped:
    """The overrides (a mixin over Daphne's WebRequest, which is a twisted.web Request)."""

    body_cap: int
    answer: bytes
    _refused = False
    _body_seen = 0

    def gotLength(self, length: int | None) -> None:
        if length is not None and length > self.body_cap:
            self._refuse()
            return  # no content file: nothing of this body is kept
        super().gotLength(length)  # type: ignore[misc]

    def handleContentChunk(self, data: bytes) -> None:
        if self._refused:
            return
        self._body_seen += len(data)
        if self._body_seen > self.body_cap:
            self._refuse()
            return
        super().handleContentChunk(data)  # type: ignore[misc]

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if self._refused:
            return  # answered already; the application never sees it
        super().requestReceived(command, path, version)  # type: ignore[misc]

    def _refuse(self) -> None:
        self._refused = True
        content = getattr(self, "content", None)
        if content is not None:
            content.close()  # what was kept of the body so far (at most the limit)
        transport = self.channel.transport  # type: ignore[attr-defined]
        log.info("request body over %d bytes refused (413)", self.body_cap,
                 extra={"event": "http.body_refused", "reason": "body too large"})
        transport.write(self.answer)
        half_close = getattr(transport, "loseWriteConnection", None)
        if half_close is not None:
            half_close()  # the answer, then FIN; what still comes is read and dropped
        else:  # a transport that cannot half-close (TLS): close after the answer
            transport.loseConnection()
        from twisted.internet import reactor  # Daphne's, installed before it serves anything

        clock: Any = reactor  # the module stands for the installed reactor (IReactorTime)
        clock.callLater(LINGER_S, transport.abortConnection)
