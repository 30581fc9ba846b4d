"""Path choice (paths/select.py): the pure decision, and PathSelector keeping `peer.hub` equal to it
as the peer set (a real PeerSet over a real data path) and the control links change."""

from __future__ import annotations

import ipaddress
import logging
import secrets

import pytest

from nodeagent.config import PeerConfig
from nodeagent.paths.select import PathSelector, choose_relay
from nodeagent.peers import PeerSet
from nodeagent.protocol.keys import Keypair

ME, HUB, OTHER = "aa" * 20, "bb" * 20, "cc" * 20
KNOWN = {ME, HUB}


@pytest.mark.parametrize(
    ("via", "fallback", "link_up", "expected"),
    [
        (None, False, False, None),  # no relay configured: direct
        ("", True, False, None),
        (ME, False, False, None),  # a peer cannot relay for itself
        (OTHER, False, False, None),  # a relay we do not have is no path
        (OTHER, True, False, None),
        (HUB, False, False, HUB),  # serverless: the relay IS the path...
        (HUB, False, True, HUB),  # ...even with a direct link
        (HUB, True, False, HUB),  # enrolled: the fallback while no direct link is up
        (HUB, True, True, None),  # enrolled: a direct link ends the fallback
    ],
)
def test_choose_relay(via, fallback, link_up, expected):
    assert choose_relay(ME, via, KNOWN, via_is_fallback=fallback, direct_link_up=link_up) == expected


def pc(name: str, n: int, via: str | None = None) -> PeerConfig:
    return PeerConfig(b"", secrets.token_hex(20), ipaddress.ip_address(f"10.10.10.{n}"), name, via=via)


class Paths:
    """A PeerSet with a PathSelector as its listener; `up` holds the peer ids with a direct link."""

    def __init__(self, datapath, enrolled: bool, announce: bool = False) -> None:
        self.up: set[str] = set()
        self.flushed: list = []
        self.peers = PeerSet(datapath, 1000)
        self.selector = PathSelector(self.peers, via_is_fallback=enrolled,
                                     direct_link_up=self.up.__contains__, flush_pending=self.flushed.append,
                                     announce=lambda: announce)
        self.peers.listeners.append(self.selector)


def test_serverless_a_relayed_peer_added_before_its_hub_gets_the_hub_when_it_arrives(make_datapath):
    box = Paths(make_datapath(), enrolled=False)
    hub_config = pc("hub", 1)
    far = box.peers.add(pc("far", 2, via=hub_config.peer_id))
    assert far.hub is None and far.path == "direct"
    hub = box.peers.add(hub_config)
    assert far.hub is hub and far.path == f"relay:{hub_config.peer_id}"
    box.up.add(far.config.peer_id)
    box.selector.resolve(far)
    assert far.hub is hub  # serverless: a direct link does not change the path


def test_removing_the_hub_makes_its_peers_direct(make_datapath):
    box = Paths(make_datapath(), enrolled=False)
    hub = box.peers.add(pc("hub", 1))
    far = box.peers.add(pc("far", 2, via=hub.config.peer_id))
    assert far.hub is hub
    box.peers.remove(hub.config.peer_id)
    assert far.hub is None


def test_enrolled_the_relay_is_used_only_while_no_direct_link_is_up(make_datapath):
    box = Paths(make_datapath(), enrolled=True)
    hub = box.peers.add(pc("hub", 1))
    far = box.peers.add(pc("far", 2, via=hub.config.peer_id))
    assert far.hub is hub
    box.up.add(far.config.peer_id)  # a direct control link came up
    box.selector.resolve(far)
    assert far.hub is None
    box.up.discard(far.config.peer_id)  # ...and went down
    box.selector.resolve(far)
    assert far.hub is hub


def test_parked_packets_leave_when_the_path_moves_to_a_hub_that_has_keys(make_datapath):
    dp = make_datapath()
    box = Paths(dp, enrolled=True)
    hub = box.peers.add(pc("hub", 1))
    far = box.peers.add(pc("far", 2, via=hub.config.peer_id))
    assert box.flushed == []  # the hub has no keys yet: nothing to flush
    box.up.add(far.config.peer_id)
    box.selector.resolve(far)
    dp.install(hub, Keypair(bytes(32), bytes(32), local_index=1, remote_index=2, created_at=dp.clock(),
                            initiator=True), confirmed=True)
    box.up.discard(far.config.peer_id)
    box.selector.resolve(far)
    assert box.flushed == [far]


def test_a_path_change_is_logged_once_the_agent_runs(make_datapath, caplog):
    caplog.set_level(logging.INFO, logger="nodeagent.paths.select")
    quiet = Paths(make_datapath(), enrolled=False, announce=False)
    hub = quiet.peers.add(pc("hub", 1))
    quiet.peers.add(pc("far", 2, via=hub.config.peer_id))
    assert "path to" not in caplog.text
    loud = Paths(make_datapath(), enrolled=False, announce=True)
    hub = loud.peers.add(pc("hub", 1))
    loud.peers.add(pc("far", 2, via=hub.config.peer_id))
    assert "path to far: relay via hub" in caplog.text


def test_path_changes_are_counted_per_peer_as_the_path_history_records_them(make_datapath):
    box = Paths(make_datapath(), enrolled=True)
    hub = box.peers.add(pc("hub", 1))
    far = box.peers.add(pc("far", 2, via=hub.config.peer_id))
    # born relayed: the relay is its first recorded path (a peer born direct records nothing)
    assert far.hub is hub and far.stats.path_changes == 1 and hub.stats.path_changes == 0
    box.up.add(far.config.peer_id)
    box.selector.resolve(far)  # relay -> direct
    box.selector.resolve(far)  # asked again, nothing moved
    assert far.stats.path_changes == 2
    box.up.discard(far.config.peer_id)
    box.selector.resolve(far)  # direct -> relay
    assert far.stats.path_changes == 3
    box.peers.remove(hub.config.peer_id)  # relay gone -> direct, counted once
    assert far.hub is None and far.stats.path_changes == 4
    assert hub.stats.path_changes == 0


def test_a_handshake_hub_change_that_keeps_the_data_path_is_not_a_path_change(make_datapath):
    box = Paths(make_datapath(), enrolled=True)
    hub = box.peers.add(pc("hub", 1))
    far = box.peers.add(pc("far", 2, via=hub.config.peer_id))
    box.selector.data_path = lambda peer, h: None  # the traversal keeps the data direct
    box.selector.resolve(far)  # data: relay -> direct (one change)
    assert far.hub is hub and far.data_hub is None and far.stats.path_changes == 2
    box.up.add(far.config.peer_id)
    box.selector.resolve(far)  # the handshakes move to the direct link; the data path stays direct
    assert far.hub is None and far.stats.path_changes == 2


def test_a_removed_relay_is_a_path_change_the_traversal_records_with_its_reason(make_datapath):
    """Removing a hub moves the data of the peers it relayed: counted, and in the path history as
    `relay_gone` (the hub setter clears `data_hub` itself, so the move must still be seen)."""
    from nodeagent.traversal import Traversal

    dp = make_datapath()
    peers = PeerSet(dp, 1000)
    traversal = Traversal("ee" * 20, peers, dp, udp_port=dp.udp.port, mtu=1380, clock=lambda: 5.0,
                          resolve=lambda p: None, hub_ids=lambda: (), interface_addresses=list,
                          skip_interfaces=(), skip_networks=list, on_candidates=lambda c: None,
                          spawn=lambda c: c.close())
    selector = PathSelector(peers, via_is_fallback=True, direct_link_up=lambda pid: False,
                            flush_pending=lambda p: None, announce=lambda: False,
                            data_path=traversal.data_path, on_change=traversal.path_changed)
    peers.listeners.extend([traversal, selector])
    hub = peers.add(pc("hub", 1))
    far = peers.add(pc("far", 2, via=hub.config.peer_id))
    near = peers.add(pc("near", 3))
    assert far.path == f"relay:{hub.config.peer_id}" and near.path == "direct"
    peers.remove(hub.config.peer_id)
    assert far.path == "direct" and far.stats.path_changes == 2
    fields = traversal.peer_fields(far, 6.0)
    assert [(h["path"], h["reason"]) for h in fields["path_history"]] == [
        (f"relay:{hub.config.peer_id}", "relay"), ("direct", "relay_gone")]
    assert near.stats.path_changes == 0 and traversal.reasons == {}  # nothing left for a later change


def test_a_removed_data_relay_that_is_not_the_handshake_hub_moves_the_data_too(make_datapath):
    """A peer's data may take a second hub (`data_hub`) while its handshakes keep the first
    (`hub`). Removing the second must move the data back: a removed peer carries nothing."""
    dp = make_datapath()
    peers = PeerSet(dp, 1000)
    second: list[str] = []

    def data_path(peer, hub):  # traversal's rule in short: the measured relay while it is a peer
        other = peers.get(second[0]) if second else None
        return hub if other is None else other

    selector = PathSelector(peers, via_is_fallback=True, direct_link_up=lambda pid: False,
                            flush_pending=lambda p: None, announce=lambda: False, data_path=data_path)
    peers.listeners.append(selector)
    hub = peers.add(pc("hub", 1))
    hub2 = peers.add(pc("hub2", 4))
    second.append(hub2.config.peer_id)
    far = peers.add(pc("far", 2, via=hub.config.peer_id))
    assert far.hub is hub and far.data_hub is hub2
    peers.remove(hub2.config.peer_id)
    assert far.hub is hub and far.data_hub is hub and far.stats.path_changes == 2
