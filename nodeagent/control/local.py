"""The local control socket: a unix stream socket (mode 0600) that serves the agent's status.

Protocol: the client sends one line, `status\\n`; the agent answers with one JSON document
(the `status --json` shape, see nodeagent.status) and closes. Anything else gets
`{"error": ...}`. Only root (the socket's owner) can connect, because of the file mode.

The path comes from the config (`control_socket`, default /run/shadowmesh/<interface>.sock);
`status --config FILE` derives the same path from the same file.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
from collections.abc import Callable
from pathlib import Path

__all__ = ["LocalSocketError", "query_status", "serve_status"]

MAX_REQUEST = 256


class LocalSocketError(Exception):
    """The agent's local socket is missing, refused us, or answered nonsense."""


async def serve_status(path: Path, status: Callable[[], dict]) -> asyncio.AbstractServer:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    if path.exists() or path.is_symlink():
        if _alive(path):
            raise LocalSocketError(f"{path}: another agent is already serving this socket")
        path.unlink()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 5)
            if line[:MAX_REQUEST].strip() == b"status":
                body = status()
            else:
                body = {"error": "unknown request (send 'status')"}
            writer.write(json.dumps(body).encode() + b"\n")
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    old = os.umask(0o177)  # the socket is born 0600: no window where others could connect
    try:
        server = await asyncio.start_unix_server(handle, path=str(path), limit=MAX_REQUEST)
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    return server


def _alive(path: Path) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(1)
        s.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        s.close()


def query_status(path: Path, timeout: float = 5.0) -> dict:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        try:
            s.connect(str(path))
        except FileNotFoundError:
            raise LocalSocketError(f"{path}: no agent socket (is `shadowmesh-agent up` running?)") from None
        except ConnectionRefusedError:
            raise LocalSocketError(f"{path}: the agent is not running (stale socket)") from None
        except PermissionError:
            raise LocalSocketError(f"{path}: permission denied (the socket is root-only)") from None
        s.sendall(b"status\n")
        chunks = []
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    except TimeoutError:
        raise LocalSocketError(f"{path}: the agent did not answer within {timeout:g} s") from None
    except OSError as exc:
        raise LocalSocketError(f"{path}: {exc.strerror or exc}") from None
    finally:
        s.close()
    try:
        doc = json.loads(b"".join(chunks))
    except ValueError:
        raise LocalSocketError(f"{path}: the agent answered something that is not JSON") from None
    if not isinstance(doc, dict) or "error" in doc:
        raise LocalSocketError(f"{path}: {doc.get('error') if isinstance(doc, dict) else 'bad answer'}")
    return doc
