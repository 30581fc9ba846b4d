"""The agent's metrics listener (metrics/http.py) on loopback: what a scraper gets, and what anything
else gets (wrong path or method, a malformed or oversized request head, too many connections)."""

from __future__ import annotations

import asyncio
import socket

import pytest
from prometheus_client.parser import text_string_to_metric_families

from nodeagent.metrics.http import MAX_CONNECTIONS, MAX_HEAD, MetricsServer, bind_metrics
from nodeagent.tunnel.udp import PortInUse

DOC = {
    "node": {"peer_id": "ab" * 20, "name": "uk", "drops": {"replay": 2}},
    "peers": [{"peer_id": "cd" * 20, "rx_bytes": 1234, "name": "be", "path": "direct"}],
}


@pytest.fixture
async def server():
    calls = []

    def status() -> dict:
        calls.append(1)
        return DOC

    srv = MetricsServer(bind_metrics("127.0.0.1", 0), status)
    await srv.start()
    srv.calls = calls
    yield srv
    srv.close()
    srv.sock.close()


async def exchange(srv: MetricsServer, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(*srv.sock.getsockname()[:2])
    writer.write(request)
    writer.write_eof()
    try:
        data = await asyncio.wait_for(reader.read(), 10)
    except ConnectionResetError:  # closed unanswered while our request was unread
        data = b""
    writer.close()
    return data


async def test_get_metrics_answers_prometheus_text_built_from_one_status_document(server):
    answer = await exchange(server, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert b"Content-Type: text/plain; version=" in head and b"Connection: close" in head
    assert int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0]) == len(body)
    fams = {m.name: m for m in text_string_to_metric_families(body.decode())}
    (rx,) = [s for s in fams["shadowmesh_peer_rx_bytes"].samples if s.name.endswith("_total")]
    assert rx.labels == {"peer": "cd" * 20} and rx.value == 1234
    assert server.calls == [1] and server.scrapes == 1


async def test_head_gives_the_head_only_and_a_query_string_is_ignored(server):
    answer = await exchange(server, b"HEAD /metrics?x=1 HTTP/1.1\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and body == b""


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET / HTTP/1.1\r\n\r\n", b"404"),
        (b"GET /metricsx HTTP/1.1\r\n\r\n", b"404"),
        (b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n", b"405"),
        (b"GET /metrics\r\n\r\n", b"400"),
        (b"hello there you\r\n\r\n", b"400"),
        (b"GET /metrics HTTP/1.1\r\nX-Big: " + b"a" * MAX_HEAD + b"\r\n\r\n", b"431"),
    ],
)
async def test_anything_but_a_scrape_gets_a_clear_status_and_no_status_document(
    server, request_bytes, status
):
    answer = await exchange(server, request_bytes)
    assert answer.split(b" ")[1] == status
    assert server.calls == []


async def test_a_half_request_is_dropped_without_an_answer(server):
    assert await exchange(server, b"GET /metr") == b""  # the client closed its side: nothing to answer


async def test_connections_over_the_limit_are_closed_unanswered(server):
    held = [await asyncio.open_connection(*server.sock.getsockname()[:2]) for _ in range(MAX_CONNECTIONS)]
    await asyncio.sleep(0.2)
    assert server.open == MAX_CONNECTIONS
    assert await exchange(server, b"GET /metrics HTTP/1.1\r\n\r\n") == b""
    for _, writer in held:
        writer.close()
    await asyncio.sleep(0.2)
    assert (await exchange(server, b"GET /metrics HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 200")


def test_a_taken_port_is_port_in_use():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(PortInUse, match="metrics port"):
            bind_metrics("127.0.0.1", taken.getsockname()[1])
