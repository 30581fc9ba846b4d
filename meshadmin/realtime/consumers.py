"""AgentConsumer: the node agent's websocket, /ws/agent/ (binary msgpack frames, nodeagent.protocol.messages).

Life of a socket:
  1. connect: accept; every new socket is charged to its client address's per-minute budget
     (SHADOWMESH_AGENT_CONNECT_RATE), and one over it is closed at once with 4429, before any
     other work. With `Authorization: Bearer <session token>` (from /api/auth/verify) the node is
     known at once; otherwise the first server frame is a 32-byte challenge and the agent must
     answer `auth` (ML-DSA-87, context shadowmesh/agent-auth/v1, bound to the network's CA:
     auth.py) within AUTH_TIMEOUT (5 s; the answer's arrival counts, however long checking it
     then takes). Failed authentications are audited, folded per address and reason
     (mesh/services/audit.py). A login that passes is charged to its node's per-minute budget of
     logins (SHADOWMESH_AGENT_LOGIN_RATE; over it: 4429), and the socket's charge is given back
     to its address: the address's budget bounds its failed and unfinished logins of the minute,
     so any number of honest agents behind one NAT log in, while a flood of bad ones does not.
  2. authenticated: join groups node.<peer id> and agents.<network> (through the process's one
     channel: fanout.py hands their events to the process's sockets), mark presence, send the
     full netmap; an agent that named `telemetry` in `auth` is then told how often to report its
     counters (stats_rate.py: the process's agent sockets within SHADOWMESH_AGENT_STATS_BUDGET).
  3. then: on `netmap.changed` the socket computes its own map from the process's shared
     NetworkView (netmap_cache.py) and sends the delta against what it last sent, signed by the
     network's CA (one signature per distinct delta, netmap_cache.ViewCache.encoded); if the node is no
     longer an active member (revoked, deleted) it closes with 4403. The agent's
     `resync` gets a full map, `ack` is recorded, `endpoints` register the discovery record (with
     the address the server saw), `stats` are buffered, stored in batches (stats_buffer.py) and
     announced to dashboard.<network>. A stats frame is refused before it is decoded when it
     comes within MIN_STATS_INTERVAL_S (for an agent told an interval: half of that) of the last
     one decoded, or when it is larger than a
     report of the network's size can be; a decoded report listing more peers than that is not
     stored either (`_stats_wanted`, `_receive_stats`). `renew` is answered with a `certificate`
     (mesh/services/certificates.py; at most one request per RENEW_INTERVAL_S per socket).
  4. A revocation made through the services reaches the socket as the next `netmap.changed`
     (the node is no longer a member: closed with 4403, ≤ the debounce after the commit);
     `agent.revoke` {peer_id, reason} sent to node.<peer id> closes it at once the same way.
Anything malformed, of an unknown type or version, larger than 1 MiB, or a text frame closes the
socket with the code from protocol.constants.CloseCode and a short reason, and is logged. Every
frame's type and size are read from its first bytes before anything is decoded
(messages.agent_frame_type): a frame larger than any valid frame of its type closes the socket
with 1009 (TOO_LARGE) undecoded, and a `stats` frame before authentication with 4401.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time

from asgiref.sync import sync_to_async
from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.layers import get_channel_layer
from django.conf import settings

from meshadmin.client_address import scope_client_ip
from meshadmin.mesh.choices import AuditAction
from meshadmin.mesh.services.audit import record_refusal
from meshadmin.mesh.services.certificates import renew_certificate
from meshadmin.mesh.services.common import node_actor
from meshadmin.mesh.services.errors import ServiceError
from meshadmin.mesh.services.exits import advertise_exit_node, remove_exit_node
from meshadmin.mesh.services.peers import register_peer
from meshadmin.mesh.services.ratelimit import Charge, charge, limit_of, refund
from meshadmin.metrics import events
from meshadmin.netmap import compute
from meshadmin.telemetry import ingest, presence
from nodeagent.protocol import messages
from nodeagent.protocol import netmap as nm
from nodeagent.protocol.constants import CloseCode
from nodeagent.protocol.strict import MessageError

from . import auth, batches, groups, tasks
from .fanout import process_fanout
from .netmap_cache import current_serial, view_cache
from .push_latency import push_latency
from .stats_buffer import stats_buffer
from .stats_rate import stats_rate

__all__ = ["AgentConsumer"]

log = logging.getLogger(__name__)

DEFAULT_AUTH_TIMEOUT_S = 5.0
MIN_STATS_INTERVAL_S = 0.5  # stats frames faster than this are dropped undecoded (agents send every 2-30 s)
# A report may list this many peers more than the network this socket was last sent has members.
# The agent reports the peers of the last map it applied; when nodes leave the network, the view
# we last sent is already smaller while the agent's next report may still name them (it drops them
# as it applies the map, within milliseconds, and reports every 2 s). 16 covers any ordinary change;
# a larger mass removal costs at most a report or two, dropped (the next one is stored as usual).
STATS_PEER_SLACK = 16
RENEW_INTERVAL_S = 1.0  # `renew` requests closer together than this on one socket are ignored


def auth_timeout() -> float:
    return float(getattr(settings, "SHADOWMESH_AGENT_AUTH_TIMEOUT_S", DEFAULT_AUTH_TIMEOUT_S))


async def _admit(ip: str | None) -> Charge | None:
    """Charge a new socket to its address's per-minute budget ("agent_connect"): the charge, given
    back if the socket logs in (`_admit_login`), or None when the budget is spent. A refused
    socket is not charged (the budget counts what it let in: failed and unfinished logins), costs
    no database work, and the first refusal of each minute is audited (folded)."""
    if limit_of("agent_connect") <= 0:
        return Charge(admitted=True)  # unlimited: nothing to count
    spent = await sync_to_async(charge, thread_sensitive=False)("agent_connect", ip)
    if spent.admitted:
        return spent
    if spent.first_refusal:
        await database_sync_to_async(record_refusal)(
            AuditAction.AUTH_RATE_LIMITED, reason="too many connections", channel="websocket",
            source_ip=ip, limit_per_minute=limit_of("agent_connect"))
    return None


def _settle_login(agent: auth.AgentIdentity, connected: Charge | None) -> Charge:
    """A login that passed its checks is charged to its node's budget of logins ("agent_login");
    within it, the socket's charge to its address (`connected`) is given back."""
    spent = charge("agent_login", agent.peer_id)
    if spent.admitted and connected is not None:
        refund(connected)
    return spent


def _refuse_login(agent: auth.AgentIdentity, ip: str | None) -> None:
    from meshadmin.mesh.models import Network

    record_refusal(AuditAction.AUTH_RATE_LIMITED, reason="too many logins", channel="websocket",
                   actor=node_actor(agent), network=Network.objects.filter(pk=agent.network_id).first(),
                   object_type="node", object_id=agent.peer_id, source_ip=ip,
                   limit_per_minute=limit_of("agent_login"))


async def _admit_login(agent: auth.AgentIdentity, ip: str | None, connected: Charge | None) -> bool:
    """Whether the node of a login that passed its checks is within its budget of logins (an
    agent that logs in again and again, however correctly, is held to it); the first refusal of
    each minute is audited (folded). Stays charged to its address when refused."""
    if limit_of("agent_login") <= 0 and (connected is None or connected.cache_key is None):
        return True  # nothing to count, nothing to give back
    spent = await sync_to_async(_settle_login, thread_sensitive=False)(agent, connected)
    if spent.admitted:
        return True
    if spent.first_refusal:
        await database_sync_to_async(_refuse_login)(agent, ip)
    return False


def _renew(agent: auth.AgentIdentity, source_ip: str | None) -> bytes:
    from meshadmin.mesh.models import Node

    return renew_certificate(Node.objects.get(pk=agent.pk), source_ip=source_ip).certificate


def _advertise(agent: auth.AgentIdentity, exit_node: bool) -> None:
    from meshadmin.mesh.models import Node

    node = Node.objects.get(pk=agent.pk)
    if exit_node:
        advertise_exit_node(node, actor=node_actor(node))
    else:
        remove_exit_node(node, actor=node_actor(node))


def _came_online(agents: list[auth.AgentIdentity]) -> list[tuple[bool, int] | Exception]:
    """Per agent: presence counted (True: the node just came online) and its network's current
    serial; many agents in one hop (realtime/batches.py), each count on its own."""
    from meshadmin.mesh.models import Network

    counted: list[bool | Exception] = []
    for agent in agents:
        try:
            counted.append(presence.connected(agent.pk))
        except Exception as exc:  # that socket's failure alone (it was not counted)
            counted.append(exc)
    serials = dict(Network.objects.filter(pk__in={a.network_id for a in agents}).values_list("pk", "serial"))
    return [c if isinstance(c, Exception) else (c, serials.get(a.network_id) or 0)
            for c, a in zip(counted, agents, strict=True)]


def _check_logins(requests: list) -> list:
    """The login checks of one hop (realtime/batches.py); auth's function is looked up per hop."""
    return auth.authenticate_signatures(requests)


def _register(agent: auth.AgentIdentity, endpoint: nm.Endpoint, observed_ip: str | None,
              agent_version: str | None = None, candidates=None):
    from meshadmin.mesh.models import Node

    node = Node.objects.get(pk=agent.pk)
    register_peer(node, ip=endpoint.ip, port=endpoint.control_port, udp_port=endpoint.udp_port,
                  is_public=node.is_public, observed_ip=observed_ip, agent_version=agent_version,
                  candidates=candidates)


async def _load_view(event: dict) -> None:
    """Before a `netmap.changed` is handed to the process's sockets (fanout.py): the network's view
    at the event's serial, loaded into the process's cache once, so no socket waits for it."""
    await view_cache().get(int(event["network"]), int(event.get("serial", 0)))


def _fanout():
    return process_fanout(prepare=_load_view, on_watch=_watched)


def _watched(event: dict) -> None:
    """`telemetry.watch` (a dashboard page of the network is open): a lease on the network's
    reporting interval in this process (stats_rate.py); a new one is told at once."""
    network, seconds = event.get("network"), event.get("seconds")
    if not isinstance(network, int) or isinstance(network, bool) \
            or not isinstance(seconds, (int, float)) or isinstance(seconds, bool):
        log.warning("telemetry.watch without a network id and seconds dropped: %r", event)
        return
    rate = stats_rate()
    if rate.watch(network, float(seconds)):
        task = asyncio.get_running_loop().create_task(rate.check())
        _checks.add(task)  # referenced until done (the loop holds tasks weakly)
        task.add_done_callback(_checks.discard)


_checks: set[asyncio.Task] = set()


class AgentConsumer(AsyncWebsocketConsumer):
    agent: auth.AgentIdentity | None = None
    present = False  # counted in the node's presence: connected() done, disconnected() not yet
    counted = False  # counted in this process's sockets of its network (push_latency.py)
    rated = False  # counted in this process's agent sockets (stats_rate.py)
    features: tuple[str, ...] = ()  # what the agent named in `auth`
    told_interval: float | None = None  # the stats interval this socket's agent was last told

    async def __call__(self, scope, receive, send) -> None:
        """As the base class, minus the socket's own channel: the channel-layer events for agent
        sockets reach the process once and are handed to its sockets in process (fanout.py), so a
        socket waits on its websocket only (no channel, no pending receive of the layer per socket).
        The layer is still used to send (dashboard events). A consumer that dies of an exception
        is counted off the node's presence: Daphne sends it no websocket.disconnect, so
        `disconnect()` never runs, and the node would keep one socket too many and stay online
        after its agent has gone."""
        self.scope = scope
        layer = get_channel_layer()
        assert layer is not None  # settings.CHANNEL_LAYERS always names one
        self.channel_layer = layer
        self.base_send = send
        try:
            while True:
                await self.dispatch(await receive())
        except StopConsumer:
            pass
        except asyncio.CancelledError:  # Daphne kills an instance that outlived its socket
            self.closing = True
            _fanout().forget(self)  # or the process would keep handing it events
            self._uncount()
            raise
        except Exception:
            await self._died()
            raise

    @property
    def me(self) -> auth.AgentIdentity:
        """The authenticated agent: what every handler past the login acts for."""
        if self.agent is None:
            raise RuntimeError("the agent socket has not authenticated")
        return self.agent

    async def _died(self) -> None:
        self.closing = True
        timer = getattr(self, "auth_timer", None)
        if timer is not None:
            timer.cancel()
        self._uncount()
        try:
            await self._leave_groups()
        except Exception:
            log.exception("cannot take the dead socket of %s out of its groups",
                          self.agent.peer_id if self.agent else self._client_ip())
        if self.present:
            self.present = False
            try:
                await database_sync_to_async(presence.disconnected)(self.me.pk)
            except Exception:
                log.exception("cannot count off the dead socket of %s", self.me.peer_id)

    async def dispatch(self, message: dict) -> None:
        """As the base class, minus its `aclose_old_connections()` before every message: that is a
        hop to the single database thread per frame and per event, which serialises a thousand
        sockets behind each other. Every database access here goes through
        database_sync_to_async, which closes stale connections itself."""
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"no handler for message type {message['type']}")
        await handler(message)

    # ------------------------------------------------------------------ connection

    async def connect(self) -> None:
        self.agent = None
        self.nonce: bytes | None = None
        self.sent: compute.NetworkView | None = None  # the view this socket's map came from
        self.closing = False
        self.last_stats: messages.Stats | None = None  # the last report stored, and when it came
        self.last_stats_at = 0.0
        self.stats_window_at: float | None = None  # when the last stats frame was let through to decoding
        self.max_peers = STATS_PEER_SLACK  # the report cap (`_peer_cap`), kept while `sent` is None
        self.stats_refused = 0
        self.last_renew_at: float | None = None
        self.map_lock = asyncio.Lock()  # one map (full or delta) computed and sent at a time
        self.connect_charge: Charge | None = None  # this socket's charge to its address (`_admit`)
        loop = asyncio.get_running_loop()
        tasks.register_loop(loop)
        await self.accept()
        events.agent_socket_opened()
        self.connect_charge = await _admit(self._client_ip())
        if self.connect_charge is None:
            await self._close(CloseCode.RATE_LIMITED, "too many connections from this address; wait a minute")
            return
        token = auth.bearer_token(self.scope)
        if token is not None:
            try:
                agent = await database_sync_to_async(auth.authenticate_token)(token, self._client_ip())
            except auth.AuthRefused as exc:
                await self._close(CloseCode.AUTH_FAILED, str(exc))
                return
            await self._logged_in(agent)
            return
        self.nonce = os.urandom(messages.CHALLENGE_SIZE)
        await self.send(bytes_data=messages.encode(messages.Challenge(self.nonce)))
        self.auth_timer = loop.call_later(auth_timeout(), self._arm_auth_expiry, loop)

    def _arm_auth_expiry(self, loop: asyncio.AbstractEventLoop) -> None:
        self.auth_expiry = loop.create_task(self._auth_expired())  # referenced until it is done

    async def disconnect(self, code: int) -> None:
        self.closing = True
        timer = getattr(self, "auth_timer", None)
        if timer is not None:
            timer.cancel()
        await self._leave_groups()
        self._uncount()
        if self.present:
            self.present = False
            went_offline = await database_sync_to_async(presence.disconnected)(self.me.pk)
            if went_offline:
                await self._to_dashboard(groups.PRESENCE_UPDATE, online=False)

    async def _auth_expired(self) -> None:
        if self.agent is None and not self.closing:
            await self._close(CloseCode.AUTH_TIMEOUT, "no valid auth in time")

    async def _close(self, code: int, reason: str) -> None:
        if self.closing:
            return
        self.closing = True
        who = self.agent.peer_id if self.agent else self._client_ip()
        try:
            events.agent_socket_closed(CloseCode(code).name)
        except ValueError:
            events.agent_socket_closed(str(int(code)))
        log.warning("agent socket %s closed: %d %s", who, code, reason,
                    extra={"event": "agent.socket_closed", "reason": reason, "code": int(code),
                           "peer_id": self.agent.peer_id if self.agent else None,
                           "node": self.agent.name if self.agent else None})
        await self.close(code=int(code), reason=reason.encode()[:120].decode("utf-8", "ignore"))

    async def _leave_groups(self) -> None:
        if self.agent is not None:
            fanout = _fanout()
            for group in (groups.node_group(self.agent.peer_id), groups.agents_group(self.agent.network_id)):
                await fanout.discard(group, self)

    def _uncount(self) -> None:
        if self.counted and self.agent is not None:
            self.counted = False
            push_latency().left(self.agent.network_id)
        if self.rated and self.agent is not None:
            self.rated = False
            stats_rate().left(self if self._takes_telemetry() else None, self.agent.network_id)

    def _takes_telemetry(self) -> bool:
        return messages.FEATURE_TELEMETRY in self.features

    async def tell_stats_interval(self, interval_s: float) -> None:
        """Ask the agent for its counters every `interval_s` (stats_rate.py)."""
        if not self.closing:
            self.told_interval = interval_s
            await self.send(bytes_data=messages.encode(messages.Telemetry(interval_s)))

    def _client_ip(self) -> str | None:
        """The TCP peer, or the client behind a trusted proxy (meshadmin/client_address.py)."""
        return scope_client_ip(self.scope)

    async def _logged_in(self, agent: auth.AgentIdentity, held: int | None = None) -> None:
        """The login passed its checks (token or signature): within its node's budget of logins,
        the socket's charge is given back to its address and the socket is in."""
        if not await _admit_login(agent, self._client_ip(), self.connect_charge):
            await self._close(CloseCode.RATE_LIMITED,
                              f"too many logins of node {agent.peer_id} this minute; wait a minute")
            return
        if self.closing:
            return
        await self._authenticated(agent, held)

    async def _authenticated(self, agent: auth.AgentIdentity, held: int | None = None) -> None:
        """Logged in: groups, presence, then the map: the full one, or an empty delta when the
        agent said it holds (`held`, from `auth`) the network's current serial."""
        timer = getattr(self, "auth_timer", None)
        if timer is not None:
            timer.cancel()
        self.agent, self.nonce = agent, None
        push_latency().joined(agent.network_id)  # before joining the group: see push_latency.py
        self.counted = True
        fanout = _fanout()
        await fanout.add(groups.node_group(agent.peer_id), self)
        await fanout.add(groups.agents_group(agent.network_id), self)
        # one hop to the database thread for both (read after the groups are joined: a change
        # committed later reaches this socket as an event)
        came_online, serial = await batches.per_loop("came_online", _came_online)(agent)
        self.present = True
        log.info("agent %s (%s) connected", agent.name, agent.peer_id,
                 extra={"event": "agent.connected", "peer_id": agent.peer_id, "node": agent.name})
        await self._send_full(serial, held)
        if not self.closing:
            takes = self._takes_telemetry()
            interval = stats_rate().joined(self if takes else None, agent.network_id)
            self.rated = True
            if takes:
                await self.tell_stats_interval(interval)
        if came_online:
            await self._to_dashboard(groups.PRESENCE_UPDATE, online=True)

    # ------------------------------------------------------------------ frames from the agent

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.closing:
            return
        if bytes_data is None:
            await self._close(CloseCode.MALFORMED, "binary msgpack frames only")
            return
        try:
            # the type and the size first, from the frame's first bytes: nothing large is decoded
            # that could not be used here (a frame larger than any valid one of its type, a
            # report before the login, outside its throttle window or larger than the network
            # needs); the other types are at most a few KB
            t = messages.agent_frame_type(bytes_data)
            if t == "stats":
                if self.agent is None:
                    await self._close(CloseCode.AUTH_FAILED, "authenticate first")
                    return
                if not self._stats_wanted(len(bytes_data)):
                    return
            msg = messages.decode_agent_message(bytes_data)
        except MessageError as exc:
            await self._close(exc.code, str(exc))
            return
        if self.agent is None:
            await self._receive_auth(msg)
            return
        match msg:
            case messages.Resync():
                self.sent = None
                await self._send_full()
            case messages.Ack():
                stats_buffer().ack(self.agent.pk, msg.serial)
            case messages.EndpointReport():
                await self._receive_endpoints(msg)
            case messages.Stats():
                await self._receive_stats(msg)
            case messages.Renew():
                await self._receive_renew()
            case messages.Advertise():
                await self._receive_advertise(msg)
            case messages.Auth():
                await self._close(CloseCode.MALFORMED, "already authenticated")

    async def _receive_auth(self, msg: messages.AgentMessage) -> None:
        if not isinstance(msg, messages.Auth) or self.nonce is None:
            await self._close(CloseCode.AUTH_FAILED, "authenticate first")
            return
        # The agent answered in time: the deadline is for its answer, not for our checking it.
        # Under a reconnect storm the checks queue behind each other (one database thread per
        # process); a deadline still running would close sockets whose answer is already here,
        # and they would come back and queue again.
        timer = getattr(self, "auth_timer", None)
        if timer is not None:
            timer.cancel()
        try:
            agent = await batches.per_loop("login_checks", _check_logins)(
                (msg.peer_id, self.nonce, msg.signature, self._client_ip()))
        except auth.AuthRefused as exc:
            code = CloseCode.REVOKED if exc.revoked else CloseCode.AUTH_FAILED
            await self._close(code, str(exc))
            return
        if self.closing:  # closed while we checked (its deadline had fired as the answer came)
            return
        self.features = msg.features
        await self._logged_in(agent, msg.serial)

    async def _receive_endpoints(self, msg: messages.EndpointReport) -> None:
        """The first endpoint is where the node listens; "local" and "reflexive" ones after it are
        its UDP candidates (anything else after it is ignored). Changes are limited per node
        (services/peers.py)."""
        if not msg.endpoints:
            return
        candidates = [(e.source, e.ip, e.udp_port) for e in msg.endpoints[1:]
                      if e.source in ("local", "reflexive")]
        try:
            await database_sync_to_async(_register)(self.me, msg.endpoints[0], self._client_ip(),
                                                    msg.agent_version, candidates)
        except ServiceError as exc:
            log.info("endpoint report of %s refused: %s", self.me.peer_id, exc,
                     extra={"event": "endpoint.refused", "peer_id": self.me.peer_id,
                            "node": self.me.name, "reason": str(exc)})

    async def _receive_advertise(self, msg: messages.Advertise) -> None:
        """The node offers itself as an exit node (pending until an operator approves it), or
        withdraws the offer. Repeats change nothing (services/exits.py writes only changes)."""
        try:
            await database_sync_to_async(_advertise)(self.me, msg.exit_node)
        except ServiceError as exc:
            log.info("exit-node offer of %s refused: %s", self.me.peer_id, exc)

    def _peer_cap(self) -> int:
        """The most peers a report of this node may list: its network's members, plus slack."""
        if self.sent is not None:
            self.max_peers = len(self.sent.members) + STATS_PEER_SLACK
        return self.max_peers

    def _stats_wanted(self, size: int) -> bool:
        """Whether a stats frame of `size` bytes is worth decoding (it opens a new throttle window)."""
        now = time.monotonic()
        # an agent told an interval is held to half of it (one that follows it counts from its
        # last report, so its reports are at least the interval apart)
        window = MIN_STATS_INTERVAL_S if self.told_interval is None else max(
            MIN_STATS_INTERVAL_S, self.told_interval / 2)
        if self.stats_window_at is not None and now - self.stats_window_at < window:
            return False
        if size > messages.max_stats_size(self._peer_cap()):
            self._refused(f"a {size}-byte report")
            return False
        self.stats_window_at = now
        return True

    def _refused(self, what: str) -> None:
        events.report_dropped("too_large")
        self.stats_refused += 1
        if self.stats_refused == 1:  # once per socket: a flood must not become a log flood
            log.info("agent %s: %s is larger than a network of %d peers needs; dropped", self.me.peer_id,
                     what, self.max_peers - STATS_PEER_SLACK)

    async def _receive_renew(self) -> None:
        now = time.monotonic()
        if self.last_renew_at is not None and now - self.last_renew_at < RENEW_INTERVAL_S:
            return
        self.last_renew_at = now
        try:
            certificate = await database_sync_to_async(_renew)(self.me, self._client_ip())
        except ServiceError as exc:
            log.info("certificate renewal of %s refused: %s", self.me.peer_id, exc)
            return
        if not self.closing:
            await self.send(bytes_data=messages.encode(messages.CertificateIssued(certificate)))

    async def _receive_stats(self, msg: messages.Stats) -> None:
        if len(msg.peers) > self._peer_cap():
            self._refused(f"a report of {len(msg.peers)} peers")
            return
        now = time.monotonic()
        interval = now - self.last_stats_at if self.last_stats is not None else 0.0
        reporter = ingest.Reporter(self.me.pk, self.me.peer_id, self.me.network_id)
        stats_buffer().add(ingest.Report(reporter, msg, self.last_stats, interval))
        self.last_stats, self.last_stats_at = msg, now

    # ------------------------------------------------------------------ events from the server

    async def _view_with_me(self, min_serial: int) -> compute.NetworkView | None:
        """The shared view at >= min_serial; None (and the socket closed) if this node is not in it."""
        view = await view_cache().get(self.me.network_id, min_serial)
        if self.me.pk not in view.peers:  # revoked, deleted or without an address
            await self._close(CloseCode.REVOKED, "this node is no longer an active member")
            return None
        return view

    async def _send_full(self, serial: int | None = None, held: int | None = None) -> None:
        """The full map at >= `serial` (read now if not given); only an empty delta, signed,
        when the agent holds (`held`) the serial of that map: its map is this one (every change
        to a map bumps the network's serial), and the agent needs only to know it is current."""
        async with self.map_lock:
            if serial is None:
                serial = await current_serial(self.me.network_id)
            view = await self._view_with_me(serial)
            if view is None:
                return
            if held is not None and held == view.snapshot.serial:
                cache = view_cache()
                current = nm.NetMapDelta(view.snapshot.network, held, held)
                await self.send(bytes_data=cache.encoded(current, cache.signer(view)))
                events.netmap_frame_sent("current")
            else:
                await self.send(bytes_data=self._full_frame(view))
                events.netmap_frame_sent("full")
            self.sent = view

    def _full_frame(self, view: compute.NetworkView) -> bytes:
        cache = view_cache()
        return cache.full_frame(view.netmap_for(self.me.peer_id), cache.signer(view), view)

    async def netmap_changed(self, event: dict) -> None:
        if self.agent is None:
            return
        sent_at = None
        try:
            async with self.map_lock:
                sent_at = await self._catch_up(event)
        finally:  # every socket reports once, sent or not (push_latency.py)
            changed = event.get("changed_at")
            changed_at = float(changed) if isinstance(changed, (int, float)) else None
            push_latency().handled(self.agent.network_id, int(event.get("serial", 0)), changed_at, sent_at)

    async def _catch_up(self, event: dict) -> float | None:
        """Send what the push of `event` changed for this node; the time it was sent, or None."""
        if self.closing:
            return None
        if self.sent is not None and event.get("serial", 0) <= self.sent.snapshot.serial:
            return None  # already sent this or a newer map
        try:
            view = await self._view_with_me(int(event.get("serial", 0)))
        except Exception:
            log.exception("netmap for %s failed; the agent keeps its map", self.me.peer_id,
                          extra={"event": "netmap.failed", "peer_id": self.me.peer_id})
            return None
        if view is None or self.closing:
            return None
        old = self.sent
        if old is None:
            await self.send(bytes_data=self._full_frame(view))
            events.netmap_frame_sent("full")
        elif view is old or nm.is_stale(old.snapshot.serial, view.snapshot.serial):
            return None
        else:
            delta = compute.delta_for(old, view, view_cache().changes(old, view), self.me.peer_id)
            if delta is None:  # a relay, or its own entry changed: the general path
                delta = nm.diff(old.netmap_for(self.me.peer_id), view.netmap_for(self.me.peer_id))
            cache = view_cache()
            await self.send(bytes_data=cache.encoded(delta, cache.signer(view)))
            events.netmap_frame_sent("delta")
        self.sent = view
        return time.time()

    # ------------------------------------------------------------------ the process's fan-out (fanout.py)

    async def fanout_deliver(self, event: dict) -> None:
        """An event of one of this socket's groups, handed over by the process's fan-out (in its
        own task: map sends are kept in order by `map_lock`)."""
        if self.closing:
            return
        try:
            await self.dispatch(event)
        except Exception:
            log.exception("agent socket %s: %s failed", self.me.peer_id, event.get("type"))

    def fanout_serial(self) -> int | None:
        sent = self.sent
        return None if sent is None or self.closing else sent.snapshot.serial

    async def agent_revoke(self, event: dict) -> None:
        if self.agent is not None:
            await self._close(CloseCode.REVOKED, str(event.get("reason") or "node revoked"))

    async def _to_dashboard(self, kind: str, **fields) -> None:
        await self.channel_layer.group_send(
            groups.dashboard_group(self.me.network_id),
            {"type": kind, "network": self.me.network_id, "peer_id": self.me.peer_id, **fields})
