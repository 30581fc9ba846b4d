"""Dialing a peer's control port (TCP 8443) and running the opening handshake as initiator.

    connect (5 s) -> clear HELLO -> clear CHALLENGE -> clear CONFIRM -> control keys installed
    -> Link (control/links.py then sends UDP_ENDPOINT and runs the link)

The whole exchange runs under HANDSHAKE_DEADLINE_S; the cryptography (signing the HELLO and the
CONFIRM, checking the CHALLENGE) runs where `run` puts it (the `peers` worker thread,
control/crypto.py). Every failure is logged and returns None; the caller (a dialer in
control/links.py) retries with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from ..protocol.control import ControlChannel, ControlError, frame_clear_handshake
from ..protocol.handshake import HandshakeResult, Initiator
from ..protocol.handshake_errors import HandshakeError
from ..tunnel.mark import connect_marked
from .link import HANDSHAKE_DEADLINE_S, read_clear_handshake

__all__ = ["dial"]

log = logging.getLogger(__name__)


async def _inline(fn, *args):
    return fn(*args)


async def dial(host: str, port: int, make_initiator, run=_inline) -> tuple[
        asyncio.StreamReader, asyncio.StreamWriter, ControlChannel, HandshakeResult] | None:
    """Connect and handshake. `make_initiator()` returns a fresh protocol Initiator; `run(fn, *args)`
    awaits `fn(*args)` where the cryptography should run (default: right here)."""
    writer = None
    try:
        async with asyncio.timeout(HANDSHAKE_DEADLINE_S):
            # a marked socket: outside any exit node's tunnel (tunnel/mark.py)
            reader, writer = await asyncio.open_connection(sock=await connect_marked(host, port))
            channel = ControlChannel()
            initiator: Initiator = make_initiator()
            writer.write(frame_clear_handshake(await run(initiator.create_hello)))
            challenge = await read_clear_handshake(reader, channel)
            await run(initiator.consume_challenge, challenge, time.time())
            writer.write(frame_clear_handshake(await run(initiator.create_confirm)))
            await writer.drain()
            result = initiator.result
            channel.install(result.control.send, result.control.recv)
            return reader, writer, channel, result
    except TimeoutError:
        log.info("handshake with %s:%d timed out", host, port)
    except (ConnectionError, OSError) as exc:
        log.debug("cannot reach %s:%d: %s", host, port, exc)
    except (HandshakeError, ControlError) as exc:
        log.warning("handshake with %s:%d failed: %s: %s", host, port, type(exc).__name__, exc)
    if writer is not None:
        with contextlib.suppress(Exception):
            writer.close()
    return None
