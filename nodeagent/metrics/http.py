"""`up --metrics-listen HOST:PORT`: Prometheus text at `/metrics`, served on the agent's event loop.

A scrape builds one status document (the agent's `status()`, what `status --json` prints) and
renders `families.families(doc)` with prometheus-client's text exposition. It runs on the agent's
own loop, between two data-path callbacks, so nothing reads the counters while they change and
the data path does no extra work for metrics.

A deliberately small HTTP/1.1 server: one request per connection (the answer closes it), GET or
HEAD of `/metrics` (200), another path 404, another method 405, a request head that is malformed
(400), larger than MAX_HEAD bytes (431) or not complete within HEAD_TIMEOUT_S (closed). At most
MAX_CONNECTIONS at once; more are closed unanswered. There is no authentication: the listener is
off by default, and an address that only the scraper reaches (loopback, a management network) is
the operator's choice (docs/operations.md#agent-metrics).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import socket
from collections.abc import Callable, Iterator

from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import Metric

from ..tunnel.udp import PortInUse
from .families import COUNTER, Family, families

__all__ = ["MetricsServer", "bind_metrics", "render"]

log = logging.getLogger(__name__)

MAX_HEAD = 8192
HEAD_TIMEOUT_S = 5.0
MAX_CONNECTIONS = 8
PATH = "/metrics"


def _metric(fam: Family) -> Metric:
    base = fam.name.removesuffix("_total") if fam.kind == COUNTER else fam.name
    m = Metric(base, fam.help, fam.kind)
    for labels, value in fam.samples:
        m.add_sample(fam.name, dict(labels), value)
    return m


class _Collector:
    def __init__(self, fams: list[Family]) -> None:
        self.fams = fams

    def collect(self) -> Iterator[Metric]:
        for fam in self.fams:
            yield _metric(fam)


def render(doc: dict[str, object]) -> bytes:
    """The Prometheus text exposition of one status document."""
    return generate_latest(_Collector(families(doc)))


def bind_metrics(host: str, port: int) -> socket.socket:
    """The listening socket for `--metrics-listen` (PortInUse when taken), bound before the agent
    starts so that a bad address stops it with its exit code."""
    family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(16)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortInUse(exc.errno, f"metrics port {port} on {host} is already in use") from None
        raise
    return sock


def _response(status: str, body: bytes, content_type: str = "text/plain; charset=utf-8",
              head_only: bool = False, extra: str = "") -> bytes:
    head = (f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
            f"{extra}Connection: close\r\n\r\n")
    return head.encode("latin-1") + (b"" if head_only else body)


class MetricsServer:
    """Serves `status()` as Prometheus text on a bound socket (bind_metrics) until `close()`."""

    def __init__(self, sock: socket.socket, status: Callable[[], dict[str, object]]) -> None:
        self.sock = sock
        self.status = status
        self.server: asyncio.AbstractServer | None = None
        self.open = 0
        self.scrapes = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, sock=self.sock, limit=MAX_HEAD)
        host, port = self.sock.getsockname()[:2]
        log.info("metrics on http://%s/metrics", f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
                 extra={"event": "metrics.listening"})

    def close(self) -> None:
        if self.server is not None:
            self.server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.open >= MAX_CONNECTIONS:
            writer.close()
            return
        self.open += 1
        try:
            answer = await self._answer(reader)
            if answer:
                writer.write(answer)
                await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            self.open -= 1
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    async def _answer(self, reader: asyncio.StreamReader) -> bytes:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT_S)
        except asyncio.LimitOverrunError:
            return _response("431 Request Header Fields Too Large", b"request head too large\n")
        except asyncio.IncompleteReadError:
            return b""
        parts = head.split(b"\r\n", 1)[0].split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            return _response("400 Bad Request", b"malformed request line\n")
        method, target = parts[0], parts[1].split(b"?", 1)[0]
        if method not in (b"GET", b"HEAD"):
            return _response("405 Method Not Allowed", b"GET or HEAD only\n", extra="Allow: GET, HEAD\r\n")
        if target != PATH.encode():
            return _response("404 Not Found", b"the metrics are at /metrics\n", head_only=method == b"HEAD")
        self.scrapes += 1
        return _response("200 OK", render(self.status()), CONTENT_TYPE_LATEST, head_only=method == b"HEAD")
