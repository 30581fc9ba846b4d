"""One HTTP request through an ASGI application, in process: what the tests that need the real
ASGI path (the proxy middleware, the body cap, the HTTP handler) send and read back."""

from __future__ import annotations

import asyncio


def http_scope(method: str, path: str, headers: dict[str, str] | None = None,
               client: tuple[str, int] = ("127.0.0.1", 40000)) -> dict:
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
            "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
            "client": client, "server": ("127.0.0.1", 8000),
            "headers": [(b"host", b"localhost")]
            + [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]}


async def asgi_request(app, scope: dict, chunks: list[bytes] | None = None
                       ) -> tuple[int, dict[str, list[str]], bytes]:
    """(status, headers by lowercase name, body) of `app`'s answer to `scope` with the body sent in
    `chunks` (one empty chunk by default); the client stays connected until the answer is done."""
    parts = chunks or [b""]
    pending = [{"type": "http.request", "body": c, "more_body": i < len(parts) - 1}
               for i, c in enumerate(parts)]
    sent: list[dict] = []

    async def receive():
        if pending:
            return pending.pop(0)
        await asyncio.Event().wait()  # the client stays connected; Django cancels this when done

    async def send(message):
        sent.append(message)

    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    named: dict[str, list[str]] = {}
    for k, v in start["headers"]:
        named.setdefault(k.decode().lower(), []).append(v.decode())
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], named, body
