"""The handshake driver (control/handshakes.py): admission, both roles inside open links, relayed
handshakes through a hub, installing keys. Real keys, real handshakes, real data paths; the
control links are `Wire`s that keep what is sent, and `flow()` hands it to the other side the way
control/links.py dispatches it, then lets the tasks the driver spawned finish (the cryptography
runs inline here: control/crypto.Inline)."""

from __future__ import annotations

import asyncio
import ipaddress
import time

import pytest
from cryptography.hazmat.primitives.asymmetric import mldsa

from nodeagent.config import PeerConfig
from nodeagent.control.crypto import Inline
from nodeagent.control.handshakes import (
    HANDSHAKE_BURST,
    HANDSHAKE_RATE,
    LINK_BURST,
    RELAY_BURST,
    HandshakeBucket,
    Handshakes,
)
from nodeagent.peers import PeerSet
from nodeagent.protocol.control import Handshake, RelayHandshake
from nodeagent.protocol.handshake import Initiator, MessageType, message_type
from nodeagent.protocol.keys import Limits
from nodeagent.protocol.opcount import COUNTS
from nodeagent.protocol.trust import LocalIdentity, PinnedKeys


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Wire:
    """Stands in for a control link to `peer`: sent messages are kept in order."""

    def __init__(self, peer) -> None:
        self.peer = peer
        self.closed = asyncio.Event()
        self.sent: list = []

    def send(self, msg) -> bool:
        self.sent.append(msg)
        return True


class Node:
    def __init__(self, name: str, n: int) -> None:
        self.name = name
        self.key = mldsa.MLDSA87PrivateKey.generate()
        self.local = LocalIdentity.pinned(self.key)
        self.id = self.local.peer_id
        self.ip = ipaddress.ip_address(f"10.10.10.{n}")

    def config(self, via: Node | None = None) -> PeerConfig:
        return PeerConfig(self.local.public_key, self.id, self.ip, self.name,
                          via=None if via is None else via.id)

    def start(self, make_datapath, knows: list[tuple[Node, Node | None]], *, is_hub: bool = False,
              enrolled: bool = False) -> None:
        """Know each (peer, its relay or None); links come with `link()`."""
        self.clock = Clock()
        self.dp = make_datapath(is_hub=is_hub, clock=self.clock)
        self.peers = PeerSet(self.dp, 1000)
        self.wires: dict[str, Wire] = {}
        self.installed: list[str] = []
        self.failed: list[str] = []
        self.tasks: list[asyncio.Task] = []
        self.hs = Handshakes(
            self.local, PinnedKeys({p.id: p.local.public_key for p, _via in knows}), datapath=self.dp,
            peers=self.peers, limits=Limits(), clock=self.clock, is_hub=lambda: self.dp.is_hub,
            via_is_fallback=enrolled, link_to=self.wires.get,
            on_keys_installed=lambda peer, now: self.installed.append(peer.config.name),
            on_handshake_failed=lambda peer: self.failed.append(peer.config.name),
            spawn=self.spawn, workers=Inline())
        self.peers.listeners.append(self.hs)
        for p, via in knows:
            self.peers.add(p.config(via))
        for p, via in knows:  # the relay paths, as paths/select.py would set them
            if via is not None:
                self.peer(p).hub = self.peer(via)

    def spawn(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.append(task)
        return task

    async def settle(self) -> None:
        """Let every task the driver spawned finish."""
        while self.tasks:
            tasks, self.tasks = self.tasks, []
            await asyncio.gather(*tasks)

    def peer(self, other: Node):
        return self.peers.get(other.id)

    def link(self, other: Node) -> Wire:
        self.wires[other.id] = Wire(self.peer(other))
        return self.wires[other.id]


async def flow(src: Node, dst: Node) -> int:
    """Deliver what `src` sent on its link to `dst`, as control/links.py dispatches it, and let both
    finish what that started."""
    await src.settle()
    wire, link = src.wires[dst.id], dst.wires[src.id]
    messages, wire.sent = wire.sent, []
    for msg in messages:
        if isinstance(msg, Handshake):
            dst.hs.on_handshake(link.peer, msg.message)
        else:
            dst.hs.on_relay_handshake(link, msg)
    await dst.settle()
    return len(messages)


def matched(ours, theirs) -> bool:
    """What one side's keypair seals, the other's opens, both ways."""
    nonce = bytes(12)
    return (theirs.recv.decrypt(nonce, ours.send.encrypt(nonce, b"ping", b""), b"") == b"ping"
            and ours.recv.decrypt(nonce, theirs.send.encrypt(nonce, b"pong", b""), b"") == b"pong")


def kinds(wire: Wire) -> list:
    return [(type(m).__name__, message_type(m.message).name) for m in wire.sent]


@pytest.fixture(scope="module")
def people():
    return Node("uk", 1), Node("belgium", 2), Node("starlink", 3)


def direct_pair(make_datapath, people):
    uk, belgium, _ = people
    uk.start(make_datapath, [(belgium, None)])
    belgium.start(make_datapath, [(uk, None)])
    uk.link(belgium)
    belgium.link(uk)
    return uk, belgium


async def test_a_handshake_inside_a_link_installs_matching_keys_on_both_sides(make_datapath, people):
    uk, belgium = direct_pair(make_datapath, people)
    assert uk.hs.request_handshake(uk.peer(belgium))
    await uk.settle()
    assert kinds(uk.wires[belgium.id]) == [("Handshake", "HELLO")]
    await flow(uk, belgium)  # HELLO -> CHALLENGE
    assert kinds(belgium.wires[uk.id]) == [("Handshake", "CHALLENGE")] and uk.id in belgium.hs.responders
    await flow(belgium, uk)  # CHALLENGE -> CONFIRM, our keys
    await flow(uk, belgium)  # CONFIRM -> their keys
    assert uk.installed == ["belgium"] and belgium.installed == ["uk"]
    assert not uk.hs.initiators and not belgium.hs.responders
    ours, theirs = uk.peer(belgium).ring.current, belgium.peer(uk).ring.current
    assert matched(ours, theirs)
    assert uk.dp.sessions[ours.local_index] == (uk.peer(belgium), ours)
    assert ours.created_at == uk.clock.now and ours.limits is uk.hs.limits


async def test_without_a_link_no_hello_leaves(make_datapath, people):
    uk, belgium = direct_pair(make_datapath, people)
    del uk.wires[belgium.id]
    assert uk.hs.request_handshake(uk.peer(belgium)) is False and not uk.hs.initiators
    uk.link(belgium).closed.set()
    assert uk.hs.request_handshake(uk.peer(belgium)) is False and not uk.hs.initiators


async def test_admission_is_a_per_peer_token_bucket(make_datapath, people):
    uk, belgium, starlink = people
    uk.start(make_datapath, [(belgium, None), (starlink, None)])
    assert [uk.hs.admit(belgium.id) for _ in range(HANDSHAKE_BURST + 1)] == [True] * HANDSHAKE_BURST + [False]
    assert uk.hs.admit(starlink.id)  # another peer has its own bucket
    uk.clock.now += 0.5  # two per second: one more
    assert uk.hs.admit(belgium.id) and not uk.hs.admit(belgium.id)
    assert not uk.hs.admit("ee" * 20)  # a stranger has no bucket
    uk.peers.remove(starlink.id)
    assert not uk.hs.admit(starlink.id)


def test_a_peers_handshake_bucket_is_a_token_bucket_with_slots_and_the_handshake_rate():
    b = HandshakeBucket()
    assert not hasattr(b, "__dict__")  # a subclass without __slots__ would give each one a dict
    assert (b.rate, b.burst, b.tokens) == (HANDSHAKE_RATE, HANDSHAKE_BURST, HANDSHAKE_BURST)


async def test_a_hello_in_a_link_over_the_links_rate_gets_no_challenge(make_datapath, people):
    uk, belgium = direct_pair(make_datapath, people)
    while belgium.hs.link_buckets.take(uk.id, belgium.clock.now):
        pass
    uk.hs.request_handshake(uk.peer(belgium))
    await flow(uk, belgium)
    assert belgium.wires[uk.id].sent == [] and not belgium.hs.responders
    assert belgium.hs.refused["link_rate"] == 1


async def test_rekeys_inside_a_link_do_not_depend_on_the_doors_budget(make_datapath, people):
    """Attack 13: whatever has spent the peer's admission budget at the door (only the peer's own
    verified HELLOs can), a rekey inside its sealed link has a bucket of its own."""
    uk, belgium = direct_pair(make_datapath, people)
    while belgium.hs.admit(uk.id):
        pass
    for _ in range(LINK_BURST):
        uk.hs.request_handshake(uk.peer(belgium))
        for hop in ((uk, belgium), (belgium, uk), (uk, belgium)):
            await flow(*hop)
        uk.clock.now += 0.5
        belgium.clock.now += 0.5
        await asyncio.sleep(0.025)  # HELLOs of one peer closer than 20 ms (wall clock) are a flood
    assert uk.installed == ["belgium"] * LINK_BURST and belgium.installed == ["uk"] * LINK_BURST


def spoofed(claimed: Node, responder: Node) -> bytes:
    """A HELLO that claims `claimed` (presenting its public key) but is signed by another key."""
    liar = LocalIdentity.pinned(mldsa.MLDSA87PrivateKey.generate())
    liar.credential = liar.public_key = claimed.local.public_key
    liar.peer_id = claimed.id
    return Initiator(liar, PinnedKeys([responder.local.public_key]), responder.id, time.time()).create_hello()


async def test_relayed_hellos_are_limited_per_hub_link_and_spoofed_ones_spend_no_peer_budget(make_datapath,
                                                                                          people):
    """A hub (or whoever holds its link) relays HELLOs that claim starlink: at most RELAY_BURST are
    even verified, none is answered, starlink's own budget is untouched, and starlink's genuine
    relayed handshake then goes through."""
    uk, belgium, starlink = people
    belgium.start(make_datapath, [(uk, None), (starlink, uk)])
    from_uk = belgium.link(uk)
    forged = [spoofed(starlink, belgium) for _ in range(4)]
    before = COUNTS.snapshot()
    for i in range(RELAY_BURST + 5):
        belgium.hs.on_relay_handshake(from_uk, RelayHandshake(starlink.id, forged[i % len(forged)]))
    await belgium.settle()
    spent = COUNTS.since(before)
    assert from_uk.sent == [] and not belgium.hs.responders
    assert belgium.hs.refused["relay_rate"] == 5 and belgium.hs.refused["bad_signature"] == RELAY_BURST
    assert spent["signatures"] == spent["encapsulations"] == 0
    assert belgium.hs.buckets[starlink.id].tokens == HANDSHAKE_BURST
    belgium.clock.now += 1.0  # the hub link's bucket refills
    starlink.start(make_datapath, [(uk, None), (belgium, uk)])
    starlink.link(uk)
    starlink.hs.request_handshake(starlink.peer(belgium))
    await starlink.settle()
    belgium.hs.on_relay_handshake(from_uk, RelayHandshake(starlink.id, starlink.wires[uk.id].sent[0].message))
    await belgium.settle()
    assert kinds(from_uk) == [("RelayHandshake", "CHALLENGE")]


async def test_a_hello_on_another_peers_path_gets_no_challenge(make_datapath, people):
    uk, belgium, starlink = people
    uk.start(make_datapath, [(belgium, None)])
    belgium.start(make_datapath, [(uk, None), (starlink, None)])
    uk.link(belgium)
    uk.hs.request_handshake(uk.peer(belgium))
    await uk.settle()
    hello = uk.wires[belgium.id].sent[0].message
    belgium.link(starlink)
    belgium.hs.on_handshake(belgium.peer(starlink), hello)  # uk's HELLO, arriving from starlink
    await belgium.settle()
    assert belgium.wires[starlink.id].sent == [] and not belgium.hs.responders


async def test_a_bad_challenge_tells_the_session_and_a_stray_one_is_ignored(make_datapath, people):
    uk, belgium = direct_pair(make_datapath, people)
    uk.hs.request_handshake(uk.peer(belgium))
    await flow(uk, belgium)
    challenge = belgium.wires[uk.id].sent[0].message
    assert message_type(challenge) is MessageType.CHALLENGE
    tampered = bytearray(challenge)
    tampered[-1] ^= 1
    uk.hs.on_handshake(uk.peer(belgium), bytes(tampered))
    await uk.settle()
    assert uk.failed == ["belgium"] and not uk.hs.initiators
    assert uk.peer(belgium).stats.handshake_failures == {"key_confirmation_failed": 1}
    uk.hs.on_handshake(uk.peer(belgium), challenge)  # no initiator in flight any more: ignored
    await uk.settle()
    assert uk.failed == ["belgium"] and uk.installed == [] and uk.wires[belgium.id].sent == []  # no CONFIRM
    assert sum(uk.peer(belgium).stats.handshake_failures.values()) == 1  # the stray one is not a failure


async def test_a_responder_waiting_too_long_for_its_confirm_is_cut(make_datapath, people):
    uk, belgium = direct_pair(make_datapath, people)
    uk.hs.request_handshake(uk.peer(belgium))
    await flow(uk, belgium)
    belgium.hs.cut_stalled(belgium.clock.now + 5.0)
    assert uk.id in belgium.hs.responders
    belgium.hs.cut_stalled(belgium.clock.now + 5.1)
    assert uk.id not in belgium.hs.responders
    await flow(belgium, uk)
    await flow(uk, belgium)  # the CONFIRM comes too late
    assert belgium.installed == []


async def finished_by_hand(uk: Node, belgium: Node):
    """uk's handshake with belgium run to its result outside the driver, which installs nothing:
    the HandshakeResult, for a test to install as it likes."""
    uk.link(belgium)
    belgium.link(uk)
    uk.hs.request_handshake(uk.peer(belgium))
    await flow(uk, belgium)
    initiator = uk.hs.initiators.pop(belgium.id)
    initiator.consume_challenge(belgium.wires[uk.id].sent[0].message, time.time())
    initiator.create_confirm()
    return initiator.result


async def test_keys_for_another_peer_are_not_installed(make_datapath, people):
    uk, belgium, starlink = people
    uk.start(make_datapath, [(belgium, None), (starlink, None)])
    belgium.start(make_datapath, [(uk, None)])
    result = await finished_by_hand(uk, belgium)
    uk.hs.install(uk.peer(starlink), result)  # belgium's keys, offered on starlink's path
    assert uk.peer(starlink).ring.current is None and uk.peer(belgium).ring.current is None
    assert uk.installed == [] and uk.dp.sessions == {}


async def test_a_hub_forwards_a_relayed_handshake_unread_and_the_far_side_answers_through_it(make_datapath,
                                                                                             people):
    uk, belgium, starlink = people
    # belgium and starlink reach each other only through uk
    uk.start(make_datapath, [(belgium, None), (starlink, None)], is_hub=True)
    belgium.start(make_datapath, [(uk, None), (starlink, uk)])
    starlink.start(make_datapath, [(uk, None), (belgium, uk)])
    for a, b in ((uk, belgium), (uk, starlink)):
        a.link(b)
        b.link(a)
    assert belgium.hs.request_handshake(belgium.peer(starlink))
    await belgium.settle()
    assert kinds(belgium.wires[uk.id]) == [("RelayHandshake", "HELLO")]
    assert belgium.wires[uk.id].sent[0].peer_id == starlink.id  # names the destination
    hello = belgium.wires[uk.id].sent[0].message
    await flow(belgium, uk)
    forwarded = uk.wires[starlink.id].sent
    assert [(m.peer_id, m.message) for m in forwarded] == [(belgium.id, hello)]  # names the source
    assert uk.hs.relayed == 1 and not uk.hs.responders  # not opened
    for hop in ((uk, starlink), (starlink, uk), (uk, belgium), (belgium, uk), (uk, starlink)):
        await flow(*hop)
    assert belgium.installed == ["starlink"] and starlink.installed == ["belgium"]
    assert uk.hs.relayed == 3 and uk.installed == []
    assert matched(belgium.peer(starlink).ring.current, starlink.peer(belgium).ring.current)


async def test_a_hub_relays_no_handshake_to_an_unknown_destination(make_datapath, people):
    """Attack 34 for handshakes: a hub asked to forward a handshake to a peer id it has no link
    with (unknown, or known but not linked) forwards nothing and answers nothing."""
    uk, belgium, starlink = people
    uk.start(make_datapath, [(belgium, None), (starlink, None)], is_hub=True)
    from_belgium = uk.link(belgium)
    hello = spoofed(belgium, starlink)
    for dest in ("ee" * 20, starlink.id):  # a stranger; a peer the hub has no link with
        uk.hs.on_relay_handshake(from_belgium, RelayHandshake(dest, hello))
    await uk.settle()
    assert uk.hs.relayed == 0 and from_belgium.sent == [] and not uk.hs.responders


async def test_a_relayed_handshake_is_accepted_only_from_the_peers_hub(make_datapath, people):
    uk, belgium, starlink = people
    starlink.start(make_datapath, [(uk, None), (belgium, uk)])
    starlink.link(uk)
    starlink.hs.request_handshake(starlink.peer(belgium))
    await starlink.settle()
    hello = starlink.wires[uk.id].sent[0].message
    belgium.start(make_datapath, [(uk, None), (starlink, uk)])
    from_starlink, from_uk = belgium.link(starlink), belgium.link(uk)
    belgium.hs.on_relay_handshake(from_starlink, RelayHandshake(starlink.id, hello))  # not its hub
    await belgium.settle()
    assert from_starlink.sent == [] and from_uk.sent == [] and not belgium.hs.responders
    belgium.hs.on_relay_handshake(from_uk, RelayHandshake(starlink.id, hello))  # through its hub
    await belgium.settle()
    assert kinds(from_uk) == [("RelayHandshake", "CHALLENGE")] and from_uk.sent[0].peer_id == starlink.id
    assert starlink.id in belgium.hs.responders and belgium.hs.relayed == 0


async def test_enrolled_a_relayed_handshake_from_the_fallback_relay_is_accepted_while_direct(make_datapath,
                                                                                             people):
    uk, belgium, starlink = people
    for enrolled in (False, True):
        starlink.start(make_datapath, [(uk, None), (belgium, uk)], enrolled=enrolled)
        starlink.peer(belgium).hub = None  # a direct link with belgium is up: the relay is not the path
        link = starlink.link(uk)
        starlink.link(belgium)
        belgium.start(make_datapath, [(uk, None), (starlink, uk)])
        belgium.link(uk)
        belgium.hs.request_handshake(belgium.peer(starlink))
        await belgium.settle()
        hello = belgium.wires[uk.id].sent[0].message
        starlink.hs.on_relay_handshake(link, RelayHandshake(belgium.id, hello))  # uk forwarded it
        await starlink.settle()
        answered = bool(starlink.wires[belgium.id].sent)
        assert answered is enrolled  # serverless: a relay that is not the path is not trusted


async def test_a_removed_peer_leaves_nothing_in_flight(make_datapath, people):
    uk, belgium = direct_pair(make_datapath, people)
    uk.hs.request_handshake(uk.peer(belgium))
    belgium.hs.request_handshake(belgium.peer(uk))
    await flow(uk, belgium)  # belgium: a responder in flight for uk, and its own initiator
    assert uk.id in belgium.hs.responders and uk.id in belgium.hs.initiators
    belgium.peers.remove(uk.id)
    assert not belgium.hs.responders and not belgium.hs.initiators and not belgium.hs.buckets
    assert len(belgium.hs.guard) == 0


async def test_keys_made_with_a_certificate_end_when_it_does(make_datapath, people):
    """The peer's certificate ends 30 s after the handshake: its keys stop there, though the
    protocol's key lifetime (180 s) would let them run on. A pinned key has no end."""
    import dataclasses

    uk, belgium, _ = people
    uk.start(make_datapath, [(belgium, None)])
    belgium.start(make_datapath, [(uk, None)])
    result = await finished_by_hand(uk, belgium)
    assert result.peer.not_after is None  # a pinned key
    ending = dataclasses.replace(result, peer=dataclasses.replace(result.peer,
                                                                  not_after=int(time.time()) + 30))
    uk.hs.install(uk.peer(belgium), ending)
    ring = uk.peer(belgium).ring
    kp = ring.current
    assert kp is not None and 28 <= kp.ends_at - uk.clock.now <= 30
    assert ring.sending(uk.clock.now + 27) is kp
    assert ring.sending(uk.clock.now + 31) is None
    assert ring.expire(uk.clock.now + 31) == [kp] and kp.wiped
