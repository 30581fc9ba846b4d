"""The control links (control/links.py) against a compromised peer: a UDP_ENDPOINT naming an
address that is not a peer is refused, and a dialer of an endpoint that never answers backs off
to one attempt a minute (it dialed every 2 s forever before: issue 9, attack 5). A real peer set
and data path; the dialing itself is replaced so nothing leaves the host."""

from __future__ import annotations

import asyncio
import ipaddress
from types import SimpleNamespace

import pytest

from nodeagent.config import PeerConfig
from nodeagent.control import links as links_module
from nodeagent.control.crypto import Inline
from nodeagent.control.links import BACKOFF_MAX_S, Links, dial_delay
from nodeagent.peers import PeerSet
from nodeagent.protocol.control import UdpEndpoint

PEER = "ab" * 20


def make_links(make_datapath, listen_ip: str = "0.0.0.0", running: bool = False) -> Links:
    peers = PeerSet(make_datapath(), 1000)
    flushed: list = []
    links = Links("cd" * 20, peers, SimpleNamespace(make_responder=None, admit=None, workers=Inline()),
                  listen_ip=ipaddress.ip_address(listen_ip), udp_port=9443, keepalive_s=10,
                  dial_relayed=True,
                  flush_pending=flushed.append, on_path_change=lambda p: None, on_hub_up=lambda p: None,
                  spawn=asyncio.ensure_future, is_running=lambda: running)
    links.flushed = flushed
    peers.listeners.append(links)
    return links


def udp_endpoint(links: Links, peer, remote_ip: str, ip: str, port: int) -> None:
    """A UDP_ENDPOINT from `peer` on a link whose far end is `remote_ip`."""
    link = SimpleNamespace(peer=peer, remote_ip=remote_ip)
    links._on_message(link, UdpEndpoint(ipaddress.ip_address(ip), port))


def add_peer(links: Links, endpoint=None):
    overlay = ipaddress.ip_address("10.10.10.4")
    return links.peers.add(PeerConfig(b"", PEER, overlay, "mac", endpoint=endpoint))


@pytest.mark.parametrize(
    ("ip", "port"),
    [("127.0.0.1", 9443), ("169.254.169.254", 80), ("224.0.0.251", 5353), ("255.255.255.255", 9443),
     ("::1", 9443), ("fe80::1", 9443), ("ff02::1", 9443), ("198.18.0.8", 0)],
)
async def test_a_udp_endpoint_no_peer_should_be_sent_to_is_refused_and_counted(make_datapath, ip, port):
    links = make_links(make_datapath)
    peer = add_peer(links)
    udp_endpoint(links, peer, "198.18.0.8", ip, port)
    assert peer.endpoint is None and links.refused_endpoints == 1 and links.flushed == []
    udp_endpoint(links, peer, "198.18.0.8", "198.18.0.8", 9443)
    assert peer.endpoint == ("198.18.0.8", 9443) and links.flushed == [peer]


async def test_an_unspecified_udp_endpoint_means_the_links_own_source_address(make_datapath):
    links = make_links(make_datapath)
    peer = add_peer(links)
    udp_endpoint(links, peer, "198.18.0.8", "0.0.0.0", 9443)
    assert peer.endpoint == ("198.18.0.8", 9443)
    # ...which must itself be a peer's address
    udp_endpoint(links, peer, "127.0.0.1", "0.0.0.0", 9444)
    assert peer.endpoint == ("198.18.0.8", 9443) and links.refused_endpoints == 1


async def test_loopback_udp_endpoints_are_taken_when_we_listen_on_loopback(make_datapath):
    """Agents that listen on loopback are a lab on one host (tests/nodeagent/test_agent_loopback.py)."""
    links = make_links(make_datapath, listen_ip="127.0.0.1")
    peer = add_peer(links)
    udp_endpoint(links, peer, "127.0.0.1", "127.0.0.1", 9443)
    assert peer.endpoint == ("127.0.0.1", 9443)
    udp_endpoint(links, peer, "127.0.0.1", "169.254.1.1", 9443)
    assert peer.endpoint == ("127.0.0.1", 9443) and links.refused_endpoints == 1


def test_the_dial_delay_doubles_from_200_ms_to_a_60_s_cap_with_jitter():
    assert [dial_delay(n, 1.0) for n in range(1, 6)] == pytest.approx([0.2, 0.4, 0.8, 1.6, 3.2])
    assert [dial_delay(n, 0.0) for n in range(1, 6)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6])
    for failures in (10, 11, 50, 10_000):
        assert BACKOFF_MAX_S / 2 <= dial_delay(failures, 0.0) <= dial_delay(failures, 0.999) <= BACKOFF_MAX_S
    assert dial_delay(10, 0.999) > 59  # an endpoint that never answers: about one attempt a minute
    assert dial_delay(10, 0.1) != dial_delay(10, 0.9)  # agents do not dial in step


async def test_a_dialer_of_a_dead_endpoint_backs_off_and_a_new_endpoint_starts_afresh(make_datapath,
                                                                                        monkeypatch):
    dialed: list[tuple[str, int]] = []
    delays: list[float] = []
    enough = asyncio.Event()

    async def never_answers(host, port, make_initiator, run=None):
        dialed.append((host, port))
        return None

    async def sleep(delay):
        delays.append(delay)
        if len(delays) in (14, 17):
            enough.set()
            await asyncio.Event().wait()  # this dialer stops here
        await asyncio.sleep(0)

    monkeypatch.setattr(links_module, "dial", never_answers)
    links = make_links(make_datapath, running=True)
    links.sleep, links.rng = sleep, lambda: 0.5
    peer = add_peer(links, endpoint=("198.18.0.8", 8443))
    await asyncio.wait_for(enough.wait(), 5)
    assert delays[:4] == pytest.approx([0.15, 0.3, 0.6, 1.2])
    assert delays == sorted(delays) and delays[-1] == pytest.approx(45.0) and max(delays) <= BACKOFF_MAX_S
    assert set(dialed) == {("198.18.0.8", 8443)} and len(dialed) == 14
    # the netmap moves the peer: its new endpoint is dialed at once and backs off from the start
    enough.clear()
    old = links.dialers[PEER]
    links.peers.update(PeerConfig(b"", PEER, peer.config.overlay_ip, "mac", endpoint=("198.18.0.9", 8443)))
    await asyncio.wait_for(enough.wait(), 5)
    assert old.cancelled() or old.done()
    assert delays[14:] == pytest.approx([0.15, 0.3, 0.6]) and dialed[14:] == [("198.18.0.9", 8443)] * 3
    for task in links.dialers.values():
        task.cancel()
