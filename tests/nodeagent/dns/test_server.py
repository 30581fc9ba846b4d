"""dns/server.py: what each query gets back (strangers, garbage, sizes, forwards), and the real
UDP and TCP sockets on a loopback address."""

from __future__ import annotations

import asyncio
import socket

import dns.asyncquery
import dns.flags
import dns.message
import dns.rcode
import dns.rrset
import pytest

from nodeagent.dns.server import ASKER_BURST, ASKER_RATE, UDP_MAX, UDP_PLAIN, DnsService
from nodeagent.protocol import netmap as nm

ME, UK = "1" * 40, "2" * 40
MAP = nm.NetMap("default", 1, nm.SelfInfo(ME, "belgium", "10.10.10.2", 24, dns_suffix="default.mesh"),
                (nm.Peer(UK, "uk", "10.10.10.1", "0" * 64),))


def service(upstreams=("198.18.0.53",)) -> DnsService:
    s = DnsService("10.10.10.2", "10.10.10.0/24")
    s.update(MAP)
    s.upstreams = tuple(upstreams)
    return s


def q(name: str, rdtype: str = "A", **kw) -> dns.message.Message:
    return dns.message.make_query(name, rdtype, **kw)


async def ask(s: DnsService, wire: bytes, source: str = "10.10.10.2", tcp: bool = False):
    out = await s.answer(wire, source, tcp=tcp)
    return None if out is None else dns.message.from_wire(out)


async def test_a_mesh_name_gets_an_authoritative_answer_with_the_query_id():
    s = service()
    query = q("uk.default.mesh")
    r = await ask(s, query.to_wire(), "10.10.10.7")
    assert r.id == query.id and r.rcode() == dns.rcode.NOERROR and r.flags & dns.flags.AA
    assert [rr.to_text() for rr in r.answer[0]] == ["10.10.10.1"]
    r = await ask(s, q("nobody.default.mesh").to_wire())
    assert r.rcode() == dns.rcode.NXDOMAIN and r.flags & dns.flags.AA
    assert s.stats.answered == 2 and s.stats.queries == 2


async def test_strangers_and_garbage_are_dropped_and_counted_never_answered():
    s = service()
    good = q("uk.default.mesh").to_wire()
    assert await ask(s, good, "198.18.0.9") is None  # outside the overlay: no reflection
    assert await ask(s, good, "fe80::1%eth0") is None
    response = dns.message.make_response(q("uk.default.mesh")).to_wire()
    two = q("uk.default.mesh")
    two.question.append(q("mac.default.mesh").question[0])
    notify = q("uk.default.mesh")
    notify.set_opcode(4)
    for bad in (b"", b"\x00" * 5, good + b"junk", good[:-2], response, two.to_wire(), notify.to_wire(),
                bytes.fromhex("abcd01000001000000000000") + b"\xc0\x0c\x00\x01\x00\x01"):
        assert await ask(s, bad) is None
    assert s.stats.outside == 2 and s.stats.malformed == 8 and s.stats.answered == 0


async def test_peers_get_no_recursion_and_the_node_its_forward(monkeypatch):
    s = service()
    r = await ask(s, q("example.com").to_wire(), "10.10.10.7")
    assert r.rcode() == dns.rcode.REFUSED and s.stats.refused == 1
    forwarded = dns.message.make_response(q("example.com"))
    forwarded.answer.append(dns.rrset.from_text("example.com.", 60, "IN", "A", "198.18.99.9"))

    async def upstream(query, tcp):
        return forwarded

    monkeypatch.setattr(s, "_ask_upstream", upstream)
    query = q("example.com")
    r = await ask(s, query.to_wire())
    assert r.id == query.id and [rr.to_text() for rr in r.answer[0]] == ["198.18.99.9"]
    assert s.stats.forwarded == 1


async def test_an_upstream_that_does_not_answer_is_servfail(monkeypatch):
    s = service()

    async def nobody(query, tcp):
        return None

    monkeypatch.setattr(s, "_ask_upstream", nobody)
    r = await ask(s, q("example.com").to_wire())
    assert r.rcode() == dns.rcode.SERVFAIL and s.stats.upstream_failed == 1
    r = await ask(service(upstreams=()), q("example.com").to_wire())
    assert r.rcode() == dns.rcode.REFUSED  # nothing to forward to


@pytest.mark.parametrize("edns, limit", [(None, UDP_PLAIN), (4096, UDP_MAX), (600, 600)])
async def test_a_udp_answer_never_exceeds_its_limit_it_is_truncated_instead(monkeypatch, edns, limit):
    s = service()
    big = dns.message.make_response(q("example.com"))
    texts = [f'"{i}' + "x" * 200 + '"' for i in range(20)]
    big.answer.append(dns.rrset.from_text_list("example.com.", 60, "IN", "TXT", texts))

    async def upstream(query, tcp):
        return big

    monkeypatch.setattr(s, "_ask_upstream", upstream)
    query = q("example.com", "TXT", use_edns=edns is not None, payload=edns or 512)
    out = await s.answer(query.to_wire(), "10.10.10.2", tcp=False)
    assert len(out) <= limit
    r = dns.message.from_wire(out)
    assert r.flags & dns.flags.TC and not r.answer and s.stats.truncated == 1
    out = await s.answer(query.to_wire(), "10.10.10.2", tcp=True)  # over TCP the whole answer
    assert len(out) > UDP_MAX and not dns.message.from_wire(out).flags & dns.flags.TC


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_real_udp_and_tcp_sockets():
    port = _free_port()
    s = DnsService("127.0.0.2", "127.0.0.0/8", port=port)
    s.update(nm.NetMap("default", 1, nm.SelfInfo(ME, "belgium", "127.0.0.2", 8, dns_suffix="default.mesh"),
                       (nm.Peer(UK, "uk", "127.0.0.3", "0" * 64),)))
    task = asyncio.create_task(s.run())
    try:
        for _ in range(100):
            if s.listening:
                break
            await asyncio.sleep(0.01)
        r = await dns.asyncquery.udp(q("uk.default.mesh"), "127.0.0.2", port=port, timeout=2)
        assert [rr.to_text() for rr in r.answer[0]] == ["127.0.0.3"]
        r = await dns.asyncquery.tcp(q("belgium.default.mesh"), "127.0.0.2", port=port, timeout=2)
        assert [rr.to_text() for rr in r.answer[0]] == ["127.0.0.2"]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:  # garbage: no answer, no crash
            sock.settimeout(0.3)
            sock.sendto(b"\xff" * 30, ("127.0.0.2", port))
            with pytest.raises(TimeoutError):
                sock.recv(512)
        r = await dns.asyncquery.udp(q("uk.default.mesh"), "127.0.0.2", port=port, timeout=2)
        assert r.rcode() == dns.rcode.NOERROR
        assert s.status()["malformed"] == 1 and s.status()["listening"] == f"127.0.0.2:{port}"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert not s.listening


async def test_a_peer_asking_too_fast_is_dropped_without_an_answer_and_others_are_not():
    """A peer flooding the agent's DNS (a resolver loop, or a peer turned hostile) gets ASKER_BURST
    answers at once and then ASKER_RATE a second; the rest is dropped, counted, never answered.
    Another peer and the node itself are not held back by it."""
    now = [100.0]
    s = DnsService("10.10.10.2", "10.10.10.0/24", clock=lambda: now[0])
    s.update(MAP)
    wire = q("uk.default.mesh").to_wire()
    answers = [await ask(s, wire, "10.10.10.7") for _ in range(int(ASKER_BURST) + 50)]
    assert sum(a is not None for a in answers) == ASKER_BURST
    assert answers[-1] is None and s.stats.limited == 50
    assert await ask(s, wire, "10.10.10.8") is not None  # another peer has its own budget
    assert await ask(s, wire, "10.10.10.2") is not None  # the node's own queries: no limit
    now[0] += 1.0  # a second later: ASKER_RATE more for the flooding peer, not a burst
    more = [await ask(s, wire, "10.10.10.7") for _ in range(int(ASKER_RATE) + 30)]
    assert sum(a is not None for a in more) == ASKER_RATE
    assert s.stats.limited == 50 + 30
    assert s.status()["limited"] == s.stats.limited  # in status --json node.dns
