"""The control-port listener (TCP 8443): accepts peers and runs the opening handshake as responder.

This is the agent's unauthenticated door. Per source first, per peer only once authenticated;
cheap checks before expensive ones. For each new connection, in order:
  1. the source's connection rate (SOURCE_RATE per second, burst SOURCE_BURST; a source is an
     IPv4 address or an IPv6 /64, ratelimit.source_key)           -> closed at once, unread
  2. the doorway of unauthenticated connections (DOOR_PER_SOURCE per source, DOOR_TOTAL in all):
     never full to a newcomer, who displaces the oldest unauthenticated connection of its own
     source, or of the source holding the most (admission.Doorway)   -> the displaced one closed
  3. the first frame must be a clear HELLO within the 5 s deadline    -> closed
  4. Responder.consume_hello on the `door` worker thread: size, version/suite, the claimed peer id
     is one we know, addressed to us, HELLO replay/flood guard, then the credential and ONE
     signature verification: the HELLO must be the claimed peer's own  -> closed
     The connection is authenticated from here: it leaves the doorway and nothing displaces it.
  5. the peer's own handshake rate (`admit(peer_id)`, control/handshakes.py): only HELLOs that
     peer made count, so no stranger can spend it                      -> closed
  6. only now, on the `peers` worker thread: ML-KEM encapsulation + ML-DSA signature (CHALLENGE),
     then for CONFIRM the ML-DSA verify; the whole exchange is cut after HANDSHAKE_DEADLINE_S.
A refused connection gets nothing back but the TCP close: no byte leaves before step 4 passed.

The port is shared with the DHT (docs/dht.md): at step 3 the first five bytes are read first; if
they start a DHT frame (length, then a msgpack map: discovery/messages.py `is_dht_frame_start`)
and the agent runs a DHT (`dht_serve`), the connection leaves the doorway and the stream, with
those bytes, goes to the DHT node, whose own limits apply from there (connections per source,
deadlines, request budgets); anything else goes on as a control connection with those bytes
first. A HELLO refused because it names a peer id we do not know is reported to
`on_unknown_peer` (the DHT may look that id up).

Why no cookie round trip (WireGuard's mac2) here: the handshake rides TCP, whose own three-way
handshake proves that the source address is reachable before a byte of HELLO is read (under a
SYN flood the kernel's SYN cookies keep that stateless), so the per-source limits of steps 1-2
cannot be dodged by spoofing addresses, which is what the cookie gives WireGuard's UDP; the
doorway and the rate cost the listener a few bytes of state per source. docs/protocol.md#admission
has the whole argument.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable

from ..discovery.messages import is_dht_frame_start
from ..protocol.control import ControlChannel, ControlError, frame_clear_handshake
from ..protocol.handshake_errors import HandshakeError, UnknownPeer, reason
from .admission import Buckets, Doorway, source_key
from .link import HANDSHAKE_DEADLINE_S, read_clear_handshake

__all__ = ["DOOR_PER_SOURCE", "DOOR_TOTAL", "SOURCE_BURST", "SOURCE_RATE", "ControlPortInUse",
           "ControlServer"]

log = logging.getLogger(__name__)

SOURCE_RATE = 4.0  # new connections per second from one source, burst below
SOURCE_BURST = 8
DOOR_TOTAL = 16  # unauthenticated connections held at once
DOOR_PER_SOURCE = 4  # ... of them from one source
# DhtNode.serve(reader, writer, first bytes)
DhtServe = Callable[[asyncio.StreamReader, asyncio.StreamWriter, bytes], Awaitable[None]]
FIRST_BYTES = 5  # a control frame's length and kind, or a DHT frame's length and map header


class ControlPortInUse(OSError):
    pass


class ControlServer:
    def __init__(self, make_responder, admit, on_established, workers, clock=time.monotonic) -> None:
        """`make_responder()`: a protocol Responder; `admit(peer_id)`: the peer's handshake rate,
        asked once its HELLO verified; `on_established(reader, writer, channel, result, pending)`;
        `workers`: where the cryptography runs (control/crypto.py); `clock`: monotonic seconds."""
        self.make_responder = make_responder
        self.admit = admit
        self.on_established = on_established
        self.workers = workers
        self.clock = clock
        self.sources = Buckets(SOURCE_RATE, SOURCE_BURST)
        self.doorway: Doorway[asyncio.StreamWriter] = Doorway(DOOR_TOTAL, DOOR_PER_SOURCE)
        self.counts: Counter[str] = Counter()  # connections by what became of them
        self.refused: Counter[str] = Counter()  # HELLOs refused at step 4, by reason
        self.server: asyncio.AbstractServer | None = None
        self.dht_serve: DhtServe | None = None  # DhtNode.serve when the agent runs the DHT
        self.on_unknown_peer: Callable[[str], None] | None = None  # a HELLO named a peer id we do not know

    def status(self) -> dict:
        """What the door did: the status document's node.handshake.door."""
        return {
            "connections": self.counts["connections"],
            "rate_limited": self.counts["rate_limited"],  # step 1
            "displaced": self.counts["displaced"],  # step 2
            "cut": self.counts["cut"],  # the deadline
            "refused": dict(sorted(self.refused.items())),  # step 4, by reason; "peer_rate": step 5
            "answered": self.counts["answered"],  # CHALLENGEs sent
            "waiting": len(self.doorway),
            "dht": self.counts["dht"],  # connections handed to the DHT
        }

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
        peer_addr = writer.get_extra_info("peername")
        self.counts["connections"] += 1
        try:
            source = source_key(peer_addr[0])
        except (TypeError, ValueError, IndexError):
            source = str(peer_addr)
        if not self.sources.take(source, self.clock()):
            self.counts["rate_limited"] += 1
            writer.close()
            return
        for displaced in self.doorway.enter(writer, source):
            self.counts["displaced"] += 1
            displaced.close()
        established = dht = False
        try:
            async with asyncio.timeout(HANDSHAKE_DEADLINE_S):
                first = await reader.readexactly(FIRST_BYTES)
                dht = self.dht_serve is not None and is_dht_frame_start(first)
                if not dht:
                    channel = ControlChannel()
                    channel.feed(first)
                    hello = await read_clear_handshake(reader, channel)
                    responder = self.make_responder()
                    claimed = await self.workers.run_door(responder.consume_hello, hello, time.time())
                    if writer.is_closing():
                        return  # displaced while its HELLO was checked
                    self.doorway.leave(writer)  # authenticated: nothing displaces it any more
                    if not self.admit(claimed):
                        log.info("handshake from %s (%s) refused: rate limit", claimed[:8], peer_addr,
                                 extra={"event": "handshake.refused", "peer_id": claimed,
                                        "reason": "peer_rate", "where": "door"})
                        self.refused["peer_rate"] += 1
                        return
                    challenge = await self.workers.run_peers(responder.create_challenge)
                    writer.write(frame_clear_handshake(challenge))
                    self.counts["answered"] += 1
                    confirm = await read_clear_handshake(reader, channel)
                    result = await self.workers.run_peers(responder.consume_confirm, confirm, time.time())
                    channel.install(result.control.send, result.control.recv)
                    pending = channel.feed(b"")  # sealed frames that came with the CONFIRM
            if dht and self.dht_serve is not None:  # the DHT's from here, under its own limits
                self.doorway.leave(writer)
                self.counts["dht"] += 1
                established = True
                await self.dht_serve(reader, writer, first)
                return
            established = True
            self.on_established(reader, writer, channel, result, pending)
        except TimeoutError:
            self.counts["cut"] += 1
            log.info("handshake from %s stalled; cut after %.0f s", peer_addr, HANDSHAKE_DEADLINE_S,
                     extra={"event": "handshake.refused", "reason": "cut", "where": "door"})
        except HandshakeError as exc:
            self.refused[reason(exc)] += 1
            log.info("handshake from %s refused: %s: %s", peer_addr, type(exc).__name__, exc,
                     extra={"event": "handshake.refused", "reason": reason(exc), "where": "door"})
            claimed_id = getattr(exc, "peer_id", None)
            if isinstance(exc, UnknownPeer) and claimed_id and self.on_unknown_peer is not None:
                self.on_unknown_peer(claimed_id)
        except asyncio.IncompleteReadError:
            log.debug("control connection from %s closed before its first frame", peer_addr)
        except (ControlError, ConnectionError, OSError) as exc:
            log.debug("control connection from %s failed: %s", peer_addr, exc)
        finally:
            self.doorway.leave(writer)
            if not established:
                with contextlib.suppress(Exception):
                    writer.close()
