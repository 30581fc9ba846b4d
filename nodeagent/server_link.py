"""The agent's websocket link to meshadmin: authenticate, receive netmaps, send counters.

Flow of one connection (`_session`):
  1. connect to <server>/ws/agent/ (binary frames, max 1 MiB, no compression)
  2. the server's first frame is a challenge; sign its nonce, bound to the purpose and to our
     network's CA (protocol.auth.sign_agent_login, context shadowmesh/agent-auth/v1), answer `auth`
  3. the server sends the full netmap; then deltas. A map older than the applied one is ignored; a
     delta that does not start at the applied serial triggers a `resync` (full map follows)
  4. every applied map is persisted (state dir, 0600) and handed to `on_netmap`, then acknowledged
  5. meanwhile counters go up every `stats_interval` seconds (the `stats` message the agent built,
     status.stats_report) and endpoints every 5 minutes
When the connection drops, `run()` waits `backoff_delay(attempt)` (exponential, capped, jittered)
and reconnects; the tunnels keep running on the last map. A server close with REVOKED ends `run()`.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import random
from collections.abc import Awaitable, Callable
from pathlib import Path

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from . import __version__
from .enroll import NETMAP_FILE, EnrolledState, load_state, write_private_file
from .protocol import messages
from .protocol import netmap as nm
from .protocol.auth import sign_agent_login
from .protocol.constants import PEER_RECORD_REFRESH_S, CloseCode
from .protocol.strict import MessageError

__all__ = ["BACKOFF_BASE_S", "BACKOFF_CAP_S", "ServerLink", "backoff_delay", "load_netmap"]

log = logging.getLogger(__name__)

BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 8.0  # keeps "server back -> all agents online" under 10 s
STATS_INTERVAL_S = 2.0
RATE_LIMITED_ATTEMPT = 4  # after a 4429 close the next delay is already the capped one

NetMapCallback = Callable[[nm.NetMap], Awaitable[None] | None]
StatsSource = Callable[[], "messages.Stats | None"]


def backoff_delay(attempt: int, rnd: float, base: float = BACKOFF_BASE_S,
                  cap: float = BACKOFF_CAP_S) -> float:
    """Delay before reconnect number `attempt` (0 = first retry); `rnd` in [0, 1) spreads agents.

    Exponential growth capped at `cap`, with "equal jitter": half fixed, half random, so a fleet
    does not reconnect in lock step yet no agent waits less than half the nominal delay."""
    if attempt < 0 or not 0.0 <= rnd < 1.0:
        raise ValueError("attempt >= 0 and 0 <= rnd < 1")
    nominal = min(cap, base * (2 ** min(attempt, 32)))
    return nominal / 2 + nominal / 2 * rnd


def load_netmap(state_dir: Path) -> nm.NetMap | None:
    """The persisted last netmap, or None when there is none or it is unreadable."""
    path = Path(state_dir) / NETMAP_FILE
    try:
        return nm.netmap_from_dict(json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:  # strict.Malformed is a ValueError
        log.warning("ignoring persisted netmap %s: %s", path, exc)
        return None


class _Reconnect(Exception):
    pass


class ServerLink:
    """Holds the agent's websocket to meshadmin. `await run()` until cancelled (or revoked).

    on_netmap(netmap)   called (sync or async) with every newly applied map, including the
                        persisted one at start, so tunnels come up while the server is down
    stats_source()      returns the `messages.Stats` to send now, or None (the agent's
                        `stats_report`: the counters of its status document)
    endpoints           this node's listening endpoints to report (optional)
    """

    def __init__(self, state_dir: Path | str, on_netmap: NetMapCallback,
                 stats_source: StatsSource | None = None, *, endpoints: tuple[nm.Endpoint, ...] = (),
                 stats_interval: float = STATS_INTERVAL_S, url: str | None = None,
                 rng: Callable[[], float] = random.random,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.state_dir = Path(state_dir)
        self.state: EnrolledState = load_state(self.state_dir)
        self.url = url or self.state.websocket_url
        self.on_netmap = on_netmap
        self.stats_source = stats_source
        self.endpoints = tuple(endpoints)
        self.stats_interval = stats_interval
        self.netmap: nm.NetMap | None = load_netmap(self.state_dir)
        self.connected = asyncio.Event()
        self.revoked = False
        self.attempt = 0
        self.stale_ignored = 0
        self.resyncs = 0
        self._rng, self._sleep = rng, sleep

    # -- public

    async def run(self) -> None:
        if self.netmap is not None:
            await self._deliver(self.netmap)
        while not self.revoked:
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except ConnectionClosed as exc:
                code = exc.rcvd.code if exc.rcvd else None
                reason = exc.rcvd.reason if exc.rcvd else ""
                if code == CloseCode.REVOKED:
                    log.error("server revoked this node: %s", reason)
                    self.revoked = True
                    break
                if code == CloseCode.RATE_LIMITED:  # too many sockets from our address: wait the longest
                    log.warning("server refused the link: %s", reason)
                    self.attempt = max(self.attempt, RATE_LIMITED_ATTEMPT)
                log.warning("server link closed (code %s %s)", code, reason)
            except (OSError, InvalidHandshake, InvalidURI, TimeoutError, MessageError, _Reconnect) as exc:
                log.warning("server link failed: %s: %s", type(exc).__name__, exc)
            self.connected.clear()
            delay = backoff_delay(self.attempt, self._rng())
            self.attempt += 1
            log.info("reconnecting in %.1f s", delay)
            await self._sleep(delay)

    # -- one connection

    async def _session(self) -> None:
        async with connect(self.url, max_size=messages.MAX_MESSAGE_SIZE, compression=None, ping_interval=20,
                           ping_timeout=20, open_timeout=10, close_timeout=5) as ws:
            first = messages.decode_server_message(await asyncio.wait_for(ws.recv(), 10))
            if not isinstance(first, messages.Challenge):
                raise _Reconnect(f"expected a challenge, got {first.type}")
            signature = sign_agent_login(self.state.identity.private_key, self.state.ca_public_key,
                                         first.nonce)
            await ws.send(messages.encode(messages.Auth(self.state.identity.peer_id, signature)))
            sender = asyncio.create_task(self._senders(ws))
            try:
                await self._receive(ws)
            finally:
                sender.cancel()
                await asyncio.gather(sender, return_exceptions=True)
            raise _Reconnect("server closed the link")  # _receive only returns on close

    async def _receive(self, ws) -> None:
        async for frame in ws:
            msg = messages.decode_server_message(frame)
            match msg:
                case messages.Full():
                    if not self.connected.is_set():
                        self.connected.set()
                        self.attempt = 0
                    if nm.is_stale(self._serial, msg.netmap.serial):
                        self.stale_ignored += 1
                        log.info("ignoring stale netmap %d < %d", msg.netmap.serial, self._serial)
                        continue
                    await self._apply(ws, msg.netmap)
                case messages.Delta():
                    d = msg.delta
                    if nm.is_stale(self._serial, d.serial):
                        self.stale_ignored += 1
                        continue
                    try:
                        if self.netmap is None:
                            raise nm.SerialGap("no map applied yet")
                        new = nm.apply_delta(self.netmap, d)
                    except nm.SerialGap as exc:
                        log.info("netmap gap (%s): asking for a full map", exc)
                        self.resyncs += 1
                        await ws.send(messages.encode(messages.Resync(self._serial or 0)))
                        continue
                    await self._apply(ws, new)
                case messages.Challenge():
                    raise _Reconnect("unexpected second challenge")

    async def _senders(self, ws) -> None:
        await self.connected.wait()
        next_endpoints = 0.0
        elapsed = 0.0
        while True:
            if self.endpoints and elapsed >= next_endpoints:
                await ws.send(messages.encode(messages.EndpointReport(self.endpoints, __version__)))
                next_endpoints = elapsed + PEER_RECORD_REFRESH_S
            if self.stats_source is not None:
                try:
                    stats = self.stats_source()
                    frame = None if stats is None else messages.encode(stats)
                    if frame is not None:
                        messages.decode_agent_message(frame)  # the server closes the link on a bad frame
                except (KeyError, TypeError, ValueError) as exc:  # a bad report is skipped, not fatal
                    log.warning("cannot send counters: %s: %s", type(exc).__name__, exc)
                    frame = None
                if frame is not None:
                    await ws.send(frame)
            await asyncio.sleep(self.stats_interval)
            elapsed += self.stats_interval

    # -- applying

    @property
    def _serial(self) -> int | None:
        return None if self.netmap is None else self.netmap.serial

    async def _apply(self, ws, netmap: nm.NetMap) -> None:
        changed = netmap != self.netmap
        self.netmap = netmap
        if changed:
            write_private_file(self.state_dir / NETMAP_FILE,
                               json.dumps(nm.netmap_to_dict(netmap), sort_keys=True).encode())
            await self._deliver(netmap)
        await ws.send(messages.encode(messages.Ack(netmap.serial)))

    async def _deliver(self, netmap: nm.NetMap) -> None:
        try:
            result = self.on_netmap(netmap)
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.exception("on_netmap failed for serial %d", netmap.serial)
