"""Two handshakes that cross: both peers dialed each other at once, so each side completes one
handshake as initiator and one as responder, and its link election (control/election.py) keeps
one of the two links. Whatever order the two arrive in on either side, both sides must end up
sending on keys the other side holds. Real handshakes, real data paths and control/links.py's
own `_established`; the TCP streams are stand-ins (nothing is read from them)."""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import os
import secrets
import time
from types import SimpleNamespace

import pytest
from cryptography.hazmat.primitives.asymmetric import mldsa

from nodeagent.config import PeerConfig
from nodeagent.control.crypto import Inline
from nodeagent.control.handshakes import Handshakes
from nodeagent.control.links import Links
from nodeagent.peers import PeerSet
from nodeagent.protocol.control import ControlChannel
from nodeagent.protocol.keys import Keypair, Limits
from nodeagent.protocol.trust import LocalIdentity, PinnedKeys


class Writer:
    def __init__(self) -> None:
        self.transport = SimpleNamespace(get_write_buffer_size=lambda: 0)
        self.closed = False

    def get_extra_info(self, _name):
        return ("127.0.0.1", 9)

    def write(self, _data) -> None:
        pass

    def close(self) -> None:
        self.closed = True


class Reader:
    async def read(self, _n):
        await asyncio.Event().wait()


class Side:
    def __init__(self, name: str, n: int) -> None:
        self.name = name
        self.local = LocalIdentity.pinned(mldsa.MLDSA87PrivateKey.generate())
        self.id = self.local.peer_id
        self.ip = ipaddress.ip_address(f"10.10.10.{n}")
        self.tasks: list[asyncio.Task] = []

    def spawn(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.append(task)
        return task

    def start(self, make_datapath, other: Side) -> None:
        """Its agent's parts, with `other` as its one peer; data frames go to `other`'s UDP socket
        (`meet`)."""
        self.dp = make_datapath()
        self.peers = PeerSet(self.dp, 1000)
        self.hs = Handshakes(
            self.local, PinnedKeys({other.id: other.local.public_key}), datapath=self.dp, peers=self.peers,
            limits=Limits(), clock=time.monotonic, is_hub=lambda: False, via_is_fallback=False,
            link_to=lambda pid: self.links.get(pid), on_keys_installed=lambda peer, now: None,
            on_handshake_failed=lambda peer: None, spawn=self.spawn, workers=Inline())
        self.links = Links(
            self.id, self.peers, self.hs, listen_ip=ipaddress.ip_address("127.0.0.1"), udp_port=1,
            keepalive_s=10.0, dial_relayed=False, flush_pending=self.dp.flush_pending,
            on_path_change=lambda peer: None, on_hub_up=lambda peer: None, spawn=self.spawn,
            is_running=lambda: False)
        self.peers.listeners.extend([self.hs, self.links])
        self.peer = self.peers.add(PeerConfig(other.local.public_key, other.id, other.ip, other.name))

    def meet(self, other: Side) -> None:
        self.peer.endpoint = ("127.0.0.1", other.dp.udp.port)

    def link_up(self, result, dialer: Side) -> None:
        """What control/links.py does when a handshake finished on a fresh connection."""
        channel = ControlChannel()
        channel.install(result.control.send, result.control.recv)
        self.links._established(Reader(), Writer(), channel, result, [], dialer.id)

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


def handshake(initiator: Side, responder: Side):
    """One complete handshake: (the initiator's result, the responder's result)."""
    now = time.time()
    ini = initiator.hs.make_initiator(initiator.peer)
    res = responder.hs.make_responder()
    res.consume_hello(ini.create_hello(), now)
    ini.consume_challenge(res.create_challenge(), now)
    confirm = ini.create_confirm()
    return ini.result, res.consume_confirm(confirm, now)


def opens(sender: Side, receiver: Side) -> bool:
    """A frame `sender` seals now can be opened by `receiver` (it holds that keypair)."""
    kp = sender.peer.ring.sending(time.monotonic())
    theirs = receiver.peer.ring.lookup(kp.remote_index)
    if theirs is None or theirs.wiped:
        return False
    nonce = bytes(12)
    return theirs.recv.decrypt(nonce, kp.send.encrypt(nonce, b"ping", b""), b"") == b"ping"


def ids(low_first: bool) -> tuple[Side, Side]:
    """(uk, mac) with uk's peer id the lower one, or the higher one."""
    while True:
        uk, mac = Side("uk", 1), Side("mac", 2)
        if (uk.id < mac.id) == low_first:
            return uk, mac


@pytest.mark.parametrize(("uk_order", "mac_order"), list(itertools.product(("A", "B"), repeat=2)))
@pytest.mark.parametrize("uk_has_old_keys", [True, False], ids=["uk-has-old-keys", "no-old-keys"])
@pytest.mark.parametrize("uk_lower", [True, False], ids=["uk-lower", "mac-lower"])
async def test_crossing_handshakes_leave_both_sides_on_keys_the_other_holds(
        make_datapath, uk_order, mac_order, uk_has_old_keys, uk_lower):
    """A: uk dialed mac; B: mac dialed uk. `uk_order` / `mac_order`: which one each side finished
    first. uk may still hold keys from before mac restarted (mac holds none). The frames the two
    sides sent on their new keys (a responder's keepalive) are delivered; then each must be
    sending on keys the other holds."""
    uk, mac = ids(uk_lower)
    uk.start(make_datapath, mac)
    mac.start(make_datapath, uk)
    uk.meet(mac)
    mac.meet(uk)
    try:
        if uk_has_old_keys:  # from before mac restarted: usable, but mac no longer has them
            old = Keypair(os.urandom(32), os.urandom(32), local_index=secrets.randbits(32), remote_index=1,
                          created_at=0, initiator=True)
            uk.dp.install(uk.peer, old, confirmed=True)
        a_ini, a_res = handshake(uk, mac)
        b_ini, b_res = handshake(mac, uk)
        at_uk = {"A": (a_ini, uk), "B": (b_res, mac)}
        at_mac = {"A": (a_res, uk), "B": (b_ini, mac)}
        for key in (uk_order, "B" if uk_order == "A" else "A"):
            uk.link_up(*at_uk[key])
        for key in (mac_order, "B" if mac_order == "A" else "A"):
            mac.link_up(*at_mac[key])
        assert uk.links.get(mac.id).initiator_id == mac.links.get(uk.id).initiator_id  # the same link
        for side in (uk, mac):
            side.dp.on_udp()  # the keepalives the responders sent on their new keys
        assert opens(uk, mac), "mac cannot open what uk sends"
        assert opens(mac, uk), "uk cannot open what mac sends"
    finally:
        await uk.stop()
        await mac.stop()
