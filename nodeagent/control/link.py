"""One authenticated TCP control connection to a peer (either direction), after its handshake.

The protocol lives in nodeagent.protocol.control (ControlChannel: framing, sealing, strict
counters); this is the thin asyncio adapter around it: `send()` seals and writes, `run()` reads,
feeds the channel and hands each opened message to its owner (control/links.py). Any
ControlError, EOF or a silence longer than `idle_timeout` ends the link; `closed` is set then.

`read_clear_handshake()` is used by client and server while the connection is still being
opened (clear HANDSHAKE frames only); both run it under the 5 s handshake deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from ..protocol.control import Close, CloseReason, ControlChannel, ControlError, Message

__all__ = ["HANDSHAKE_DEADLINE_S", "Link", "read_clear_handshake"]

log = logging.getLogger(__name__)

HANDSHAKE_DEADLINE_S = 5.0  # a handshake that stalls longer is cut (issue 3)
READ_CHUNK = 65536


async def read_clear_handshake(reader: asyncio.StreamReader, channel: ControlChannel) -> bytes:
    """The next clear handshake message on an unsecured channel."""
    while True:
        items = channel.feed(b"")
        if items:
            item = items[0]
            if isinstance(item, bytes):
                return item
            raise ControlError("expected a handshake message")
        data = await reader.read(READ_CHUNK)
        if not data:
            raise ConnectionError("connection closed during the handshake")
        items = channel.feed(data)
        if items:
            item = items[0]
            if isinstance(item, bytes):
                return item
            raise ControlError("expected a handshake message")


class Link:
    """A secured control connection. `initiator_id` is the peer id of the side that dialed."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, channel: ControlChannel,
                 peer, initiator_id: str, on_message, idle_timeout: float) -> None:
        self.reader = reader
        self.writer = writer
        self.channel = channel
        self.peer = peer
        self.initiator_id = initiator_id
        self.on_message = on_message  # callback(link, Message)
        self.idle_timeout = idle_timeout
        self.closed = asyncio.Event()
        self.last_rx = time.monotonic()
        self.remote_ip = writer.get_extra_info("peername")[0]

    def __repr__(self) -> str:
        return f"<Link {self.peer.config.name} via {self.remote_ip} dialed by {self.initiator_id[:8]}>"

    def send(self, msg: Message) -> bool:
        """Seal and queue one message; False if the link is closed or broken."""
        if self.closed.is_set():
            return False
        try:
            self.writer.write(self.channel.seal(msg))
        except (ControlError, ConnectionError, RuntimeError) as exc:
            log.debug("%r: send failed: %s", self, exc)
            self.close()
            return False
        if self.writer.transport.get_write_buffer_size() > 4 << 20:
            log.warning("%r: peer does not read its control channel; closing", self)
            self.close()
            return False
        return True

    async def run(self, pending: list | None = None) -> None:
        try:
            for item in pending or ():
                self._dispatch(item)
            while not self.closed.is_set():
                try:
                    async with asyncio.timeout(self.idle_timeout):
                        data = await self.reader.read(READ_CHUNK)
                except TimeoutError:
                    log.info("%r: silent for %.0f s; closing", self, self.idle_timeout)
                    break
                if not data:
                    break
                self.last_rx = time.monotonic()
                for item in self.channel.feed(data):
                    self._dispatch(item)
        except ControlError as exc:
            log.warning("%r: protocol error: %s", self, exc)
        except (ConnectionError, OSError) as exc:
            log.debug("%r: %s", self, exc)
        finally:
            self.close()

    def _dispatch(self, item) -> None:
        if isinstance(item, bytes):
            raise ControlError("clear handshake frame on a secured channel")
        if isinstance(item, Close):
            log.info("%r: peer closed (%s %s)", self, item.reason.name, item.text)
            self.close()
            return
        self.on_message(self, item)

    def close(self, reason: CloseReason | None = None, text: str = "") -> None:
        if self.closed.is_set():
            return
        if reason is not None:
            with contextlib.suppress(Exception):
                self.writer.write(self.channel.seal(Close(reason, text)))
        self.closed.set()
        with contextlib.suppress(Exception):
            self.writer.close()
