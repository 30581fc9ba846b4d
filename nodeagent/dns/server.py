"""The agent's DNS answers on its overlay address, UDP and TCP port 53 (enrolled mode).

Every query goes through `answer`:
  1. the source must be inside the overlay network (a peer, or this node itself): anything else
     is dropped without a reply and counted `outside`, so the agent never answers, and never
     reflects, traffic from outside the mesh; a peer may ask ASKER_RATE queries a second (bursts
     of ASKER_BURST), more are dropped without a reply and counted `limited` (the node's own
     queries are not limited)
  2. strict parsing with dnspython: anything but a standard query with one question (a response,
     another opcode, trailing bytes, a bad pointer...) is dropped and counted `malformed`
  3. names.decide: the mesh's names are answered from the netmap (authoritative, TTL 30 s);
     other names are forwarded to the resolver the node had before the agent (the nameservers of
     its resolv.conf, read at start) for the node's own queries, and REFUSED for peers' queries
     and when there is none; an unanswered forward is SERVFAIL
  4. the size: a UDP answer is at most 512 bytes, or what the query's EDNS0 offers up to 1,232
     (the DNS flag day figure); a larger one goes out truncated (TC set, no records) and the
     asker retries over TCP. Mesh answers are one record, so no answer to a UDP query is ever
     much larger than the query itself.
Counters are in `stats` (`status --json` node.dns). Nothing here raises into the event loop: a
failure to answer is counted and logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import struct
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from ..ratelimit import Buckets
from .names import Answer, Decision, Forward, MeshNames, NameError_, Refused, decide
from .system import ResolvConf

__all__ = ["DNS_PORT", "DnsService", "DnsStats"]

log = logging.getLogger(__name__)

DNS_PORT = 53
UDP_PLAIN = 512  # RFC 1035: a UDP answer without EDNS0
UDP_MAX = 1232  # the largest UDP answer we send, whatever EDNS0 offers (no fragments)
FORWARD_TIMEOUT_S = 2.0
MAX_FORWARDS = 32  # forwards in flight; more are SERVFAIL
MAX_TCP = 32  # TCP connections at once; more are closed
TCP_IDLE_S = 10.0
ASKER_RATE = 100.0  # queries a second one peer may ask (a resolver asking for a busy host: a few)
ASKER_BURST = 200.0
MAX_ASKERS = 4096  # peers with a bucket at once; the least recent is forgotten first


@dataclass(slots=True)
class DnsStats:
    queries: int = 0
    answered: int = 0  # mesh names: an address, no data, or NXDOMAIN
    forwarded: int = 0
    refused: int = 0
    upstream_failed: int = 0
    truncated: int = 0
    malformed: int = 0
    outside: int = 0  # from outside the overlay: dropped, never answered
    limited: int = 0  # over a peer's ASKER_RATE: dropped, never answered


class DnsService:
    def __init__(self, address, network, *, resolv: ResolvConf | None = None, manage_resolver: bool = False,
                 port: int = DNS_PORT, clock: Callable[[], float] = time.monotonic) -> None:
        """`address`: our overlay address (ip_address); `network`: the overlay network; `resolv`:
        the node's resolv.conf (read for the upstream nameservers, and rewritten with
        `manage_resolver`, `up --dns`); `clock`: for the askers' rate limit."""
        self.address = ipaddress.ip_address(address)
        self.network = ipaddress.ip_network(network)
        self.port = port
        self.resolv = resolv
        self.manage_resolver = manage_resolver
        self.names = MeshNames()
        self.stats = DnsStats()
        self.clock = clock
        self.askers = Buckets(ASKER_RATE, ASKER_BURST, MAX_ASKERS)
        self.upstreams: tuple[str, ...] = ()
        self.listening = False
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._forwards = 0
        self._tcp_clients = 0
        self._suffix: str | None = None

    # --- names -------------------------------------------------------------------------------
    def update(self, netmap) -> None:
        """A netmap was applied: the name table follows it (renames, new peers, a new suffix)."""
        names = MeshNames.from_netmap(netmap)
        if names.ambiguous and names.ambiguous != self.names.ambiguous:
            log.warning("DNS: names more than one node has are not answered: %s",
                        ", ".join(sorted(names.ambiguous)))
        if names.skipped and names.skipped != self.names.skipped:
            log.info("DNS: no name for nodes whose names are not DNS labels: %s",
                     ", ".join(names.skipped))
        self.names = names
        self._suffix = names.suffix
        if self.resolv is not None:
            try:
                self.resolv.update(names.suffix)
            except OSError as exc:
                log.error("DNS: %s: %s", self.resolv.path, exc)

    # --- lifecycle ---------------------------------------------------------------------------
    async def run(self) -> None:
        """Listen until cancelled; then close and (with --dns) put the node's resolver back."""
        loop = asyncio.get_running_loop()
        if self.resolv is not None:
            self.upstreams = tuple(a for a in self.resolv.previous().nameservers if a != str(self.address))
        host = str(self.address)
        try:
            try:
                self._udp, _ = await loop.create_datagram_endpoint(lambda: _Udp(self),
                                                                   local_addr=(host, self.port))
                self._tcp = await asyncio.start_server(self._tcp_client, host, self.port, reuse_address=True)
            except OSError as exc:
                log.error("DNS: cannot listen on %s port %d: %s; no mesh names on this node%s", host,
                          self.port, exc.strerror or exc,
                          " (the resolver is left as it is)" if self.manage_resolver else "")
                return
            self.listening = True
            log.info("DNS: answering mesh names on %s:%d (upstream: %s)", host, self.port,
                     ", ".join(self.upstreams) or "none, other names are refused")
            if self.manage_resolver and self.resolv is not None:
                try:
                    self.resolv.install(self._suffix)
                except OSError as exc:
                    log.error("DNS: cannot point %s at the agent: %s", self.resolv.path, exc)
            await asyncio.Event().wait()
        finally:
            self.listening = False
            if self.resolv is not None:
                try:
                    self.resolv.restore()
                except OSError as exc:
                    log.error("DNS: cannot put %s back: %s", self.resolv.path, exc)
            if self._udp is not None:
                self._udp.close()
            if self._tcp is not None:
                self._tcp.close()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._tcp.wait_closed(), 1)

    def status(self) -> dict:
        return {"listening": f"{self.address}:{self.port}" if self.listening else None,
                "suffix": self.names.suffix, "names": len(self.names.table),
                "resolver": "managed" if self.resolv is not None and self.resolv.installed else "untouched",
                "upstreams": list(self.upstreams), **asdict(self.stats)}

    # --- one query ---------------------------------------------------------------------------
    async def answer(self, wire: bytes, source: str, *, tcp: bool) -> bytes | None:
        """The bytes to send back for one query from `source`, or None to send nothing."""
        checked = self.check(wire, source)
        if checked is None:
            return None
        query, decision = checked
        if isinstance(decision, Forward):
            return await self.forward(query, tcp)
        return self.reply(query, decision, tcp)

    def check(self, wire: bytes, source: str) -> tuple[dns.message.Message, Decision] | None:
        """Steps 1-3 (module docstring): None when the query is dropped (counted)."""
        st = self.stats
        st.queries += 1
        try:
            src = ipaddress.ip_address(source.split("%")[0])
        except ValueError:
            src = None
        if src is None or src not in self.network:
            st.outside += 1
            return None
        if src != self.address and not self.askers.take(src, self.clock()):
            st.limited += 1
            return None
        try:
            query = dns.message.from_wire(wire)
        except (dns.exception.DNSException, ValueError, IndexError, UnicodeError):
            st.malformed += 1
            return None
        if (query.flags & dns.flags.QR or query.opcode() != dns.opcode.QUERY or len(query.question) != 1
                or query.answer or query.authority):
            st.malformed += 1
            return None
        question = query.question[0]
        decision = decide(self.names, question.name.to_text(omit_final_dot=True), question.rdtype,
                          question.rdclass, from_self=src == self.address, can_forward=bool(self.upstreams))
        return query, decision

    def reply(self, query: dns.message.Message, decision: Decision, tcp: bool) -> bytes | None:
        """The answer to a question the agent answers itself (not a forward)."""
        st = self.stats
        if isinstance(decision, Refused):
            st.refused += 1
            return self._wire(query, self._response(query, dns.rcode.REFUSED), tcp)
        st.answered += 1
        rcode = dns.rcode.NXDOMAIN if isinstance(decision, NameError_) else dns.rcode.NOERROR
        response = self._response(query, rcode, authoritative=True)
        if isinstance(decision, Answer):
            name = query.question[0].name
            for addr in decision.addresses:
                rdtype = dns.rdatatype.A if ipaddress.ip_address(addr).version == 4 else dns.rdatatype.AAAA
                response.answer.append(dns.rrset.from_text(name, decision.ttl, "IN", rdtype, addr))
        return self._wire(query, response, tcp)

    async def forward(self, query: dns.message.Message, tcp: bool) -> bytes | None:
        """Ask the node's former resolver; SERVFAIL when none answers (or too many are in flight)."""
        answer = await self._ask_upstream(query, tcp)
        if answer is None:
            self.stats.upstream_failed += 1
            return self._wire(query, self._response(query, dns.rcode.SERVFAIL), tcp)
        self.stats.forwarded += 1
        return self._wire(query, answer, tcp)

    def servfail(self, query: dns.message.Message) -> bytes | None:
        return self._wire(query, self._response(query, dns.rcode.SERVFAIL), False)

    @property
    def forwards_full(self) -> bool:
        return self._forwards >= MAX_FORWARDS

    def _response(self, query: dns.message.Message, rcode: dns.rcode.Rcode,
                  authoritative: bool = False) -> dns.message.Message:
        response = dns.message.make_response(query, our_payload=UDP_MAX)
        response.set_rcode(rcode)
        if authoritative:
            response.flags |= dns.flags.AA
        return response

    def _wire(self, query: dns.message.Message, response: dns.message.Message, tcp: bool) -> bytes | None:
        limit = 65535 if tcp else (
            min(max(query.payload, UDP_PLAIN), UDP_MAX) if query.edns >= 0 else UDP_PLAIN)
        response.id = query.id
        try:
            return response.to_wire(max_size=limit)
        except dns.exception.TooBig:
            self.stats.truncated += 1
            short = dns.message.make_response(query, our_payload=UDP_MAX)
            short.set_rcode(response.rcode())
            short.flags |= dns.flags.TC | (response.flags & dns.flags.AA)
            try:
                return short.to_wire(max_size=limit)
            except dns.exception.DNSException:
                return None
        except dns.exception.DNSException as exc:
            log.debug("DNS: cannot encode an answer: %s", exc)
            return None

    async def _ask_upstream(self, query: dns.message.Message, tcp: bool) -> dns.message.Message | None:
        if self.forwards_full:
            return None
        self._forwards += 1
        try:
            for upstream in self.upstreams:
                try:
                    if tcp:
                        answer = await dns.asyncquery.tcp(query, upstream,
                                                          timeout=FORWARD_TIMEOUT_S)
                    else:
                        answer = await dns.asyncquery.udp(query, upstream, timeout=FORWARD_TIMEOUT_S,
                                                          ignore_unexpected=True)
                        if answer.flags & dns.flags.TC:
                            answer = await dns.asyncquery.tcp(query, upstream,
                                                              timeout=FORWARD_TIMEOUT_S)
                    return answer
                except (dns.exception.DNSException, OSError, EOFError, ValueError) as exc:
                    log.debug("DNS: upstream %s: %s", upstream, exc)
            return None
        finally:
            self._forwards -= 1

    # --- sockets -----------------------------------------------------------------------------
    async def _tcp_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        try:
            if self._tcp_clients >= MAX_TCP or not peer:
                return
            self._tcp_clients += 1
            try:
                while True:
                    head = await asyncio.wait_for(reader.readexactly(2), TCP_IDLE_S)
                    (size,) = struct.unpack("!H", head)
                    wire = await asyncio.wait_for(reader.readexactly(size), TCP_IDLE_S)
                    out = await self.answer(wire, peer[0], tcp=True)
                    if out is None:
                        return  # a malformed query or a stranger: the connection ends
                    writer.write(struct.pack("!H", len(out)) + out)
                    await writer.drain()
            finally:
                self._tcp_clients -= 1
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


class _Udp(asyncio.DatagramProtocol):
    """Answers at once; only a forward becomes a task (at most MAX_FORWARDS in flight)."""

    def __init__(self, service: DnsService) -> None:
        self.service = service
        self.transport: asyncio.DatagramTransport | None = None
        self.tasks: set[asyncio.Task] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a datagram endpoint's is a DatagramTransport

    def connection_lost(self, exc) -> None:
        for task in self.tasks:
            task.cancel()

    def datagram_received(self, data: bytes, addr) -> None:
        service = self.service
        try:
            checked = service.check(data, addr[0])
            if checked is None:
                return
            query, decision = checked
            if isinstance(decision, Forward):
                if service.forwards_full:
                    service.stats.upstream_failed += 1
                    self._send(service.servfail(query), addr)
                    return
                task = asyncio.get_running_loop().create_task(self._forward(query, addr))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)
                return
            self._send(service.reply(query, decision, False), addr)
        except Exception:  # never into the loop: counted, logged
            service.stats.malformed += 1
            log.exception("DNS: a query could not be answered")

    async def _forward(self, query: dns.message.Message, addr) -> None:
        try:
            self._send(await self.service.forward(query, False), addr)
        except Exception:
            log.exception("DNS: a forwarded query failed")

    def _send(self, out: bytes | None, addr) -> None:
        if out is not None and self.transport is not None:
            self.transport.sendto(out, addr)
