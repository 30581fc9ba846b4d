"""The control-port listener (TCP 8443): accepts peers and runs the opening handshake as responder.

Cheap checks come before expensive ones; in order, for each new connection:
  1. connection table full (handshakes in progress + open links)     -> closed at once, unread
  2. the first frame must be a clear HELLO within the 5 s deadline    -> closed
  3. Responder.consume_hello: exact size, version/suite, the claimed peer id is one we know,
     addressed to us, HELLO timestamp/flood guard (no asymmetric cryptography yet)
  4. the per-peer handshake rate (`admit(peer_id)`, control/handshakes.py)  -> closed
  5. only now: ML-KEM encapsulation + ML-DSA signature (CHALLENGE), then for CONFIRM the
     ML-DSA verify; the whole exchange is cut after HANDSHAKE_DEADLINE_S.
A refused connection gets nothing back but the TCP close.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import time

from ..protocol.control import ControlChannel, ControlError, frame_clear_handshake
from ..protocol.handshake_errors import HandshakeError
from .link import HANDSHAKE_DEADLINE_S, read_clear_handshake

__all__ = ["ControlPortInUse", "ControlServer"]

log = logging.getLogger(__name__)


class ControlPortInUse(OSError):
    pass


class ControlServer:
    def __init__(self, make_responder, admit, on_established, max_connections: int) -> None:
        self.make_responder = make_responder  # () -> protocol Responder
        self.admit = admit  # (peer_id) -> bool: per-peer handshake rate
        self.on_established = on_established  # (reader, writer, channel, result, pending) -> None
        self.max_connections = max_connections
        self.handshaking = 0
        self.open_links = lambda: 0  # set by the owner (control/links.py)
        self.refused = 0
        self.server: asyncio.AbstractServer | None = None

    async def start(self, host: str, port: int) -> None:
        try:
            self.server = await asyncio.start_server(self._accept, host, port, reuse_address=True)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ControlPortInUse(exc.errno, f"TCP control port {port} on {host} is already in use") \
                    from None
            raise

    def close(self) -> None:
        if self.server is not None:
            self.server.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.handshaking + self.open_links() >= self.max_connections:
            self.refused += 1
            writer.close()
            return
        self.handshaking += 1
        peer_addr = writer.get_extra_info("peername")
        established = False
        try:
            async with asyncio.timeout(HANDSHAKE_DEADLINE_S):
                channel = ControlChannel()
                hello = await read_clear_handshake(reader, channel)
                responder = self.make_responder()
                claimed = responder.consume_hello(hello, time.time())
                if not self.admit(claimed):
                    log.info("handshake from %s (%s) refused: rate limit", claimed[:8], peer_addr)
                    self.refused += 1
                    return
                writer.write(frame_clear_handshake(responder.create_challenge()))
                confirm = await read_clear_handshake(reader, channel)
                result = responder.consume_confirm(confirm, time.time())
                channel.install(result.control.send, result.control.recv)
                pending = channel.feed(b"")  # sealed frames that came with the CONFIRM
            established = True
            self.on_established(reader, writer, channel, result, pending)
        except TimeoutError:
            log.info("handshake from %s stalled; cut after %.0f s", peer_addr, HANDSHAKE_DEADLINE_S)
        except HandshakeError as exc:
            log.info("handshake from %s refused: %s: %s", peer_addr, type(exc).__name__, exc)
        except (ControlError, ConnectionError, OSError) as exc:
            log.debug("control connection from %s failed: %s", peer_addr, exc)
        finally:
            self.handshaking -= 1
            if not established:
                with contextlib.suppress(Exception):
                    writer.close()
