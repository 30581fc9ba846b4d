"""meshadmin/body_cap.py on a real Daphne: a request body over the limit is answered 413 while it
is still arriving, and the server does not keep it. Before it, Daphne held the whole body (and
queued it for the application) before the middleware's 413; a 64 MiB POST grew the process by
more than 64 MiB (threat model, attack 26)."""

from __future__ import annotations

import json
import socket
import sys

import pytest

from meshadmin import body_cap
from tests.meshadmin.realtime.live_helpers import Server

LIMIT = 64 * 1024  # settings.DATA_UPLOAD_MAX_MEMORY_SIZE
BIG = 64 * 1024 * 1024
BLOCK = b"x" * 65536


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("body-cap"))
    srv.start()
    yield srv
    srv.stop()


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def post_head(server: Server, *, length: int | None) -> bytes:
    framing = "Transfer-Encoding: chunked" if length is None else f"Content-Length: {length}"
    return (f"POST /api/enroll HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
            f"Content-Type: application/json\r\n{framing}\r\n\r\n").encode()


def read_response(sock: socket.socket) -> tuple[int, dict]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lengths = [line.split(b":")[1] for line in head.split(b"\r\n")
               if line.lower().startswith(b"content-length")]
    assert lengths, f"no answer with a length: {data[:200]!r}"
    length = int(lengths[0])
    while len(body) < length:
        chunk = sock.recv(4096)
        if not chunk:
            break
        body += chunk
    return int(head.split()[1]), json.loads(body)


def send_body(sock: socket.socket, size: int, *, chunked: bool) -> int:
    """Send up to `size` bytes of body; stop when the server stops reading. The bytes sent."""
    sent = 0
    try:
        while sent < size:
            sock.sendall(b"%x\r\n" % len(BLOCK) + BLOCK + b"\r\n" if chunked else BLOCK)
            sent += len(BLOCK)
        if chunked:
            sock.sendall(b"0\r\n\r\n")
    except OSError:  # the server closed the connection after its answer
        pass
    return sent


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_an_oversized_body_is_refused_while_it_arrives_and_not_kept(server, chunked):
    assert server.proc is not None
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as warm:
        warm.sendall(post_head(server, length=2) + b"{}")
        assert read_response(warm)[0] in (400, 422)  # the application answers a small body
    before = rss_kib(server.proc.pid)
    with socket.create_connection(("127.0.0.1", server.port), timeout=15) as sock:
        sock.sendall(post_head(server, length=None if chunked else BIG))
        send_body(sock, 1024 * 1024, chunked=chunked)  # 1 MiB of the 64: the answer comes now
        status, body = read_response(sock)
        assert status == 413
        assert body == {"detail": f"request body is larger than {LIMIT} bytes"}
        send_body(sock, BIG, chunked=chunked)  # the rest, or as much as the server still reads
    grown = rss_kib(server.proc.pid) - before
    assert grown < 16 * 1024, f"the server grew by {grown} KiB for a refused {BIG >> 20} MiB body"
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as after:
        after.sendall(post_head(server, length=2) + b"{}")
        assert read_response(after)[0] in (400, 422), "the server serves on"


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_body_of_exactly_the_limit_reaches_the_application(server, chunked):
    body = b'"' + b"a" * (LIMIT - 2) + b'"'
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(post_head(server, length=None if chunked else LIMIT))
        sock.sendall(b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n" if chunked else body)
        status, answer = read_response(sock)
    assert status in (400, 422), answer  # refused by the API for what it says, not for its size


def test_install_changes_only_the_limit_when_repeated_and_refuses_a_negative_one():
    from daphne import http_protocol

    assert body_cap.install(LIMIT)
    capped = http_protocol.WebRequest
    assert body_cap.install(1000) and http_protocol.WebRequest is capped
    assert capped.body_cap == 1000 and b"larger than 1000 bytes" in capped.answer
    body_cap.install(LIMIT)
    with pytest.raises(ValueError):
        body_cap.install(-1)


def test_without_daphne_nothing_is_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "daphne", None)
    assert body_cap.install(LIMIT) is False
