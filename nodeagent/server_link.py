"""The agent's websocket link to meshadmin: authenticate, receive netmaps, send counters.

Flow of one connection (`_session`):
  1. connect to <server>/ws/agent/ (binary frames, max 1 MiB, no compression)
  2. the server's first frame is a challenge; sign its nonce, bound to the purpose and to our
     network's CA (protocol.auth.sign_agent_login, context shadowmesh/agent-auth/v1), answer `auth`
  3. the server sends the full netmap, or, when `auth` named the serial of the map we hold and that
     is the network's current one, an empty delta from that serial to itself ("your map is
     current": no full map to build, send and check); then deltas, each signed by the network's
     CA: the signature is checked against our ca.pub before the body is even parsed, and a map
     for another node is refused too; either ends the connection (close BAD_SIGNATURE, reconnect)
     with nothing applied. A map older than the applied one is ignored; a delta that does not
     start at the applied serial triggers a `resync` (full map follows)
  4. every applied map is persisted as its signed chain (netmap_sign.SignedChain: the last full map
     and the deltas on it, as received; state dir, 0600), handed to `on_netmap`, then acknowledged
     (`ack`, 1.5-3 s later and once for the maps applied meanwhile: delayed_ack.py).
     After CHAIN_LIMIT deltas (16..31, drawn per agent) the agent asks for a fresh full map.
  5. meanwhile counters go up every `stats_interval` seconds (the `stats` message the agent built,
     status.stats_report) and endpoints every 5 minutes; from two thirds of our certificate's
     lifetime on, a `renew` goes up until a new certificate comes back (protocol/renewal.py); it is
     checked, written to node.crt and handed to `on_certificate`
When the connection drops, `run()` waits `backoff_delay(attempt)` (exponential, capped, jittered)
and reconnects; the tunnels keep running on the last map. A server close with REVOKED ends `run()`.
`renew_certificate()` is the one-shot form of 5 that `up` uses when our certificate has expired.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from . import __version__
from .delayed_ack import ACK_DELAY_S, DelayedAck
from .delayed_ack import ack_delay as ack_delay_of
from .enroll import (
    CA_FILE,
    CERT_FILE,
    NETMAP_FILE,
    EnrolledState,
    EnrollError,
    load_state,
    write_private_file,
)
from .protocol import messages, netmap_sign, renewal
from .protocol import netmap as nm
from .protocol.auth import sign_agent_login
from .protocol.cert import CertificateError, parse_certificate
from .protocol.constants import PEER_RECORD_REFRESH_S, CloseCode
from .protocol.strict import MessageError
from .tunnel.mark import connect_marked

__all__ = [
    "BACKOFF_BASE_S", "BACKOFF_CAP_S", "CHAIN_LIMIT", "RenewalFailed", "ServerLink", "backoff_delay",
    "load_netmap", "load_signed_netmap", "renew_certificate",
]

log = logging.getLogger(__name__)

BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 8.0  # keeps "server back -> all agents online" under 10 s
STATS_INTERVAL_S = 2.0  # until the server says otherwise (`telemetry`)
# what this agent takes beyond the first server messages (named in `auth`)
FEATURES = (messages.FEATURE_TELEMETRY,)
RATE_LIMITED_ATTEMPT = 4  # after a 4429 close the next delay is already the capped one
CHAIN_LIMIT = (16, 32)  # deltas kept on top of the signed full map: each agent draws a limit here

NetMapCallback = Callable[[nm.NetMap], Awaitable[None] | None]
CertificateCallback = Callable[[bytes], None]
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


SignedNetMap = tuple[nm.NetMap, netmap_sign.SignedChain]


def load_signed_netmap(state_dir: Path, ca_public_key: bytes | None = None) -> SignedNetMap | None:
    """The persisted last netmap and its signed chain, verified again against the CA key
    (`ca.pub` of the state dir unless given); None when there is none, or it is unreadable,
    unsigned or not signed by our CA (logged)."""
    path = Path(state_dir) / NETMAP_FILE
    try:
        raw = json.loads(path.read_text())
        if ca_public_key is None:
            ca_public_key = (Path(state_dir) / CA_FILE).read_bytes()
    except FileNotFoundError as exc:
        if exc.filename and Path(exc.filename).name == NETMAP_FILE:
            return None
        log.warning("ignoring persisted netmap %s: %s", path, exc)
        return None
    except (OSError, ValueError, RecursionError) as exc:  # json.loads recurses into nested arrays
        why = "nested too deeply" if isinstance(exc, RecursionError) else exc
        log.warning("ignoring persisted netmap %s: %s", path, why)
        return None
    try:
        chain = netmap_sign.chain_from_dict(raw)
        chain.verify(ca_public_key)  # before a byte of it is parsed
        netmap = messages.netmap_from_body(chain.full.body)
        for part in chain.deltas:
            netmap = nm.apply_delta(netmap, messages.delta_from_body(part.body))
    except netmap_sign.BadNetmapSignature as exc:
        log.error("refusing persisted netmap %s: %s", path, exc)
        return None
    except ValueError as exc:  # strict.Malformed and SerialGap are ValueErrors
        log.warning("ignoring persisted netmap %s: %s", path, exc)
        return None
    return netmap, chain


def load_netmap(state_dir: Path, ca_public_key: bytes | None = None) -> nm.NetMap | None:
    """The persisted last netmap (checked as `load_signed_netmap` does), or None."""
    loaded = load_signed_netmap(state_dir, ca_public_key)
    return None if loaded is None else loaded[0]


def save_signed_netmap(state_dir: Path, chain: netmap_sign.SignedChain) -> None:
    write_private_file(Path(state_dir) / NETMAP_FILE,
                       json.dumps(netmap_sign.chain_to_dict(chain), sort_keys=True).encode())


class _Reconnect(Exception):
    pass


class _Refused(Exception):
    """Something the server sent that we must not use (bad signature, another node's map)."""

    def __init__(self, message: str, code: CloseCode) -> None:
        super().__init__(message)
        self.code = code


class RenewalFailed(Exception):
    """`renew_certificate` got no certificate we may use; str() says why."""


@contextlib.asynccontextmanager
async def _connect(state: EnrolledState, url: str):
    """The websocket, over a marked TCP connection: outside any exit node's tunnel (tunnel/mark.py)."""
    parts = urlsplit(url)
    async with asyncio.timeout(10):
        port = parts.port or (443 if parts.scheme == "wss" else 80)
        sock = await connect_marked(parts.hostname or "", port)
    try:
        conn = connect(url, sock=sock, max_size=messages.MAX_MESSAGE_SIZE, compression=None,
                       ping_interval=20, ping_timeout=20, open_timeout=10, close_timeout=5,
                       ssl=state.ssl_context(url))
    except BaseException:
        sock.close()
        raise
    async with conn as ws:
        yield ws


async def _login(ws, state: EnrolledState, serial: int | None = None,
                 features: tuple[str, ...] = ()) -> None:
    """Answer the server's challenge (protocol.auth.sign_agent_login), naming the serial of the
    map we hold, if any (`serial`), and the server messages we take beyond the first ones
    (`features`)."""
    first = messages.decode_server_message(await asyncio.wait_for(ws.recv(), 10))
    if not isinstance(first, messages.Challenge):
        raise _Reconnect(f"expected a challenge, got {first.type}")
    signature = sign_agent_login(state.identity.private_key, state.ca_public_key, first.nonce)
    await ws.send(messages.encode(messages.Auth(state.identity.peer_id, signature, serial, features)))


def is_current_answer(held: nm.NetMap | None, delta: nm.NetMapDelta) -> bool:
    """Whether `delta` is the server's "your map is current" answer to a login that named
    `held`'s serial: empty, from that serial to itself, for our network."""
    return (held is not None and delta.is_empty and delta.network == held.network
            and delta.base_serial == delta.serial == held.serial)


def _accept_certificate(state: EnrolledState, data: bytes, now: float) -> bytes | None:
    """The renewed certificate, written to node.crt, or None when it is the one we hold.
    Raises renewal.RenewalRefused."""
    current = parse_certificate(state.certificate)
    new = renewal.check_renewed(current, data, state.ca_public_key, int(now))
    if not renewal.is_renewal(current, new):
        return None
    write_private_file(state.state_dir / CERT_FILE, new.to_bytes())
    log.info("certificate renewed: valid until %s (was %s)", new.not_after, current.not_after)
    return new.to_bytes()


async def renew_certificate(state_dir: Path | str, *, url: str | None = None, timeout: float = 20.0,
                            clock: Callable[[], float] = time.time) -> bytes:
    """Log in once, ask for a new certificate, check it and write it to node.crt; returns it.

    For `up` with an expired certificate: the server accepts the login of an active node by its
    key alone (the certificate plays no part in it), so renewal needs no valid certificate.
    Raises RenewalFailed (unreachable, refused, revoked, or an answer we may not use)."""
    try:
        state = load_state(state_dir)
    except EnrollError as exc:
        raise RenewalFailed(str(exc)) from None
    url = url or state.websocket_url

    async def exchange() -> bytes:
        async with _connect(state, url) as ws:
            await _login(ws, state)
            await ws.send(messages.encode(messages.Renew()))
            async for frame in ws:
                msg = messages.decode_server_message(frame, netmap_key=state.ca_public_key)
                if isinstance(msg, messages.CertificateIssued):
                    new = _accept_certificate(state, msg.certificate, clock())
                    if new is None:
                        raise RenewalFailed("the server answered with the certificate we hold")
                    return new
            raise RenewalFailed("the server closed the link without a certificate")

    try:
        return await asyncio.wait_for(exchange(), timeout)
    except ConnectionClosed as exc:
        code = exc.rcvd.code if exc.rcvd else None
        raise RenewalFailed(f"server closed the link (code {code} {exc.rcvd.reason if exc.rcvd else ''})") \
            from None
    except (OSError, InvalidHandshake, InvalidURI, TimeoutError, MessageError, _Reconnect,
            renewal.RenewalRefused) as exc:
        raise RenewalFailed(f"{type(exc).__name__}: {exc}") from None


class ServerLink:
    """Holds the agent's websocket to meshadmin. `await run()` until cancelled (or revoked).

    on_netmap(netmap)   called (sync or async) with every newly applied map, including the
                        persisted one at start, so tunnels come up while the server is down
    stats_source()      returns the `messages.Stats` to send now, or None (the agent's
                        `stats_report`: the counters of its status document)
    endpoints           this node's listening endpoints to report (optional)
    advertise_exit      offer this node as an exit node once per connection (`up
                        --advertise-exit-node`); an operator approves it
    on_certificate(c)   called with a renewed certificate (already checked and written to node.crt)
    clock()             wall-clock Unix seconds, for the certificate's renewal time
    """

    def __init__(self, state_dir: Path | str, on_netmap: NetMapCallback,
                 stats_source: StatsSource | None = None, *, endpoints: tuple[nm.Endpoint, ...] = (),
                 advertise_exit: bool = False,
                 stats_interval: float = STATS_INTERVAL_S, url: str | None = None,
                 on_certificate: CertificateCallback | None = None,
                 rng: Callable[[], float] = random.random,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 clock: Callable[[], float] = time.time,
                 ack_delay: tuple[float, float] = ACK_DELAY_S) -> None:
        self.state_dir = Path(state_dir)
        self.state: EnrolledState = load_state(self.state_dir)
        self.url = url or self.state.websocket_url
        self.on_netmap = on_netmap
        self.stats_source = stats_source
        self.endpoints = tuple(endpoints)
        self.endpoints_changed = False  # report again at the next send (update_endpoints)
        self.advertise_exit = advertise_exit
        self.stats_interval = stats_interval
        self.on_certificate = on_certificate
        self.netmap: nm.NetMap | None = None
        self.chain: netmap_sign.SignedChain | None = None
        loaded = load_signed_netmap(self.state_dir, self.state.ca_public_key)
        if loaded is not None and self._ours(loaded[0]):
            self.netmap, self.chain = loaded
        self.connected = asyncio.Event()
        self.revoked = False
        self.attempt = 0
        self.stale_ignored = 0
        self.resyncs = 0
        self.refused = 0  # maps and deltas refused: bad signature, or not ours
        self.renewed = 0
        self.resumed = 0  # logins answered "your map is current" (no full map sent)
        # name our map's serial and our features in `auth`; off for good once a server closes the
        # login as malformed for them (a server older than the fields parses `auth` strictly)
        self.extended_login = True
        self._extended_sent = False
        # the stats interval the server asked for (`telemetry`) on this connection; None: ours
        self.server_interval: float | None = None
        self._interval_changed = asyncio.Event()  # wakes the sender to follow a new interval
        self._renew_sent_at: float | None = None
        self._chain_resync = False  # a resync asked for because the chain is long, not answered yet
        self._rng, self._sleep, self._clock = rng, sleep, clock
        self.ack_delay = ack_delay
        ack_delay_of(0.0, ack_delay)  # bad bounds refused here
        self._acks: DelayedAck | None = None  # the link's pending ack (delayed_ack.py)
        self.chain_limit = CHAIN_LIMIT[0] + int(rng() * (CHAIN_LIMIT[1] - CHAIN_LIMIT[0]))

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
                    log.error("server revoked this node: %s", reason,
                              extra={"event": "server.revoked", "reason": reason})
                    self.revoked = True
                    break
                if code == CloseCode.MALFORMED and self._extended_sent and not self.connected.is_set():
                    log.warning("the server refused our login naming our map's serial and our "
                                "features (%s): logging in without them from now on", reason)
                    self.extended_login = False
                # too many unfinished logins from our address, or logins of this node: wait the longest
                if code == CloseCode.RATE_LIMITED:
                    log.warning("server refused the link: %s", reason,
                                extra={"event": "server.refused", "reason": reason})
                    self.attempt = max(self.attempt, RATE_LIMITED_ATTEMPT)
                log.warning("server link closed (code %s %s)", code, reason,
                            extra={"event": "server.disconnected", "reason": reason, "code": code})
            except (OSError, InvalidHandshake, InvalidURI, TimeoutError, MessageError, _Reconnect) as exc:
                log.warning("server link failed: %s: %s", type(exc).__name__, exc,
                            extra={"event": "server.disconnected", "reason": type(exc).__name__})
            self.connected.clear()
            delay = backoff_delay(self.attempt, self._rng())
            self.attempt += 1
            log.info("reconnecting in %.1f s", delay)
            await self._sleep(delay)

    @property
    def report_interval(self) -> float:
        """Seconds between counter reports: the server's choice on this connection, else ours."""
        return self.server_interval if self.server_interval is not None else self.stats_interval

    def update_endpoints(self, endpoints: tuple[nm.Endpoint, ...]) -> None:
        """New endpoints to report (the node's UDP candidates changed): sent at the sender's next
        turn, so reports are at least `stats_interval` apart."""
        endpoints = tuple(endpoints)
        if endpoints != self.endpoints:
            self.endpoints = endpoints
            self.endpoints_changed = True

    # -- one connection

    async def _session(self) -> None:
        self._chain_resync = False
        async with _connect(self.state, self.url) as ws:
            # the serial we hold and our features, unless this server refused them once (one older
            # than the fields)
            self.server_interval = None
            serial = self._serial if self.extended_login else None
            features = FEATURES if self.extended_login else ()
            self._extended_sent = serial is not None or bool(features)
            await _login(ws, self.state, serial, features)
            sender = asyncio.create_task(self._senders(ws))
            self._acks = DelayedAck(lambda serial: ws.send(messages.encode(messages.Ack(serial))),
                                    self._rng, self.ack_delay)
            try:
                await self._receive(ws)
            except _Refused as exc:
                self.refused += 1
                log.error("refused from the server: %s; nothing applied, reconnecting", exc)
                await ws.close(int(exc.code), str(exc)[:120])
                raise _Reconnect(str(exc)) from None
            finally:
                sender.cancel()
                await asyncio.gather(sender, return_exceptions=True)
                acks, self._acks = self._acks, None
                await acks.close()
            raise _Reconnect("server closed the link")  # _receive only returns on close

    def _ours(self, netmap: nm.NetMap) -> bool:
        return netmap.node.peer_id == self.state.identity.peer_id

    async def _receive(self, ws) -> None:
        async for frame in ws:
            try:
                msg = messages.decode_server_message(frame, netmap_key=self.state.ca_public_key)
            except netmap_sign.BadNetmapSignature as exc:
                raise _Refused(str(exc), CloseCode.BAD_SIGNATURE) from None
            match msg:
                case messages.Full():
                    if not self._ours(msg.netmap):
                        raise _Refused(f"a netmap for {msg.netmap.node.peer_id}, not for us",
                                       CloseCode.MALFORMED)
                    if not self.connected.is_set():
                        self.connected.set()
                        self.attempt = 0
                    if nm.is_stale(self._serial, msg.netmap.serial):
                        self.stale_ignored += 1
                        log.info("ignoring stale netmap %d < %d", msg.netmap.serial, self._serial)
                        continue
                    part = netmap_sign.SignedPart(netmap_sign.LABEL_FULL, msg.body, msg.signature)
                    self._chain_resync = False
                    await self._apply(msg.netmap, netmap_sign.SignedChain(part))
                case messages.Delta():
                    d = msg.delta
                    if not self.connected.is_set() and is_current_answer(self.netmap, d):
                        self.connected.set()  # logged in, and the map we hold is current
                        self.attempt = 0
                        self.resumed += 1
                        assert self.netmap is not None  # is_current_answer
                        await self._ack(self.netmap.serial)
                        continue
                    if nm.is_stale(self._serial, d.serial):
                        self.stale_ignored += 1
                        continue
                    try:
                        if self.netmap is None or self.chain is None:
                            raise nm.SerialGap("no map applied yet")
                        new = nm.apply_delta(self.netmap, d)
                    except nm.SerialGap as exc:
                        log.info("netmap gap (%s): asking for a full map", exc)
                        self.resyncs += 1
                        await ws.send(messages.encode(messages.Resync(self._serial or 0)))
                        continue
                    if not self._ours(new):
                        raise _Refused(f"a delta that makes us {new.node.peer_id}", CloseCode.MALFORMED)
                    part = netmap_sign.SignedPart(netmap_sign.LABEL_DELTA, msg.body, msg.signature)
                    chain = dataclasses.replace(self.chain, deltas=(*self.chain.deltas, part))
                    await self._apply(new, chain)
                    if len(chain.deltas) >= self.chain_limit and not self._chain_resync:
                        self._chain_resync = True  # once, until a full map comes
                        await ws.send(messages.encode(messages.Resync(new.serial)))
                case messages.CertificateIssued():
                    self._certificate(msg.certificate)
                case messages.Telemetry():
                    if msg.interval_s != self.report_interval:
                        log.info("the server asks for counters every %g s", msg.interval_s,
                                 extra={"event": "server.telemetry"})
                    self.server_interval = msg.interval_s
                    self._interval_changed.set()
                case messages.Challenge():
                    raise _Reconnect("unexpected second challenge")

    def _certificate(self, data: bytes) -> None:
        try:
            new = _accept_certificate(self.state, data, self._clock())
        except (renewal.RenewalRefused, CertificateError, OSError) as exc:
            log.error("renewal: %s", exc)
            return
        if new is None:
            return  # not due on the server's side yet: asked again after the retry interval
        self.state = dataclasses.replace(self.state, certificate=new)
        self._renew_sent_at = None
        self.renewed += 1
        if self.on_certificate is not None:
            try:
                self.on_certificate(new)
            except Exception:
                log.exception("on_certificate failed")

    def _renewal_due(self) -> bool:
        now = self._clock()
        cert = parse_certificate(self.state.certificate)
        if not renewal.wants_renewal(cert, now):
            return False
        if self._renew_sent_at is not None and now - self._renew_sent_at < renewal.retry_interval(cert):
            return False
        self._renew_sent_at = now
        return True

    async def _senders(self, ws) -> None:
        """After the login: the exit-node offer once; then, every `stats_interval` at the most,
        certificate renewal when due and the endpoints when they changed (and every
        PEER_RECORD_REFRESH_S); the counters every `report_interval` (a new one from the server
        counts from the last report)."""
        await self.connected.wait()
        if self.advertise_exit:  # once per connection: the server keeps the offer until it is removed
            await ws.send(messages.encode(messages.Advertise(exit_node=True)))
        clock = asyncio.get_running_loop().time
        next_endpoints = clock()
        last_stats: float | None = None
        while True:
            now = clock()
            if self._renewal_due():
                await ws.send(messages.encode(messages.Renew()))
            if self.endpoints and (now >= next_endpoints or self.endpoints_changed):
                self.endpoints_changed = False
                await ws.send(messages.encode(messages.EndpointReport(self.endpoints, __version__)))
                next_endpoints = now + PEER_RECORD_REFRESH_S
            wait = self.stats_interval
            if self.stats_source is not None:
                if last_stats is None or now - last_stats >= self.report_interval:
                    last_stats = now
                    await self._send_stats(ws)
                wait = min(wait, last_stats + self.report_interval - now)
            self._interval_changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._interval_changed.wait(), max(wait, 0.0))

    async def _send_stats(self, ws) -> None:
        assert self.stats_source is not None
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

    # -- applying

    @property
    def _serial(self) -> int | None:
        return None if self.netmap is None else self.netmap.serial

    async def _apply(self, netmap: nm.NetMap, chain: netmap_sign.SignedChain) -> None:
        changed = netmap != self.netmap
        self.netmap, self.chain = netmap, chain
        save_signed_netmap(self.state_dir, chain)
        if changed:
            await self._deliver(netmap)
        await self._ack(netmap.serial)

    async def _ack(self, serial: int) -> None:
        """Acknowledge `serial`: after a short random wait, together with what comes meanwhile
        (delayed_ack.py)."""
        assert self._acks is not None  # set for the whole of a session, the only place maps arrive
        await self._acks.ack(serial)

    async def _deliver(self, netmap: nm.NetMap) -> None:
        try:
            result = self.on_netmap(netmap)
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.exception("on_netmap failed for serial %d", netmap.serial)
