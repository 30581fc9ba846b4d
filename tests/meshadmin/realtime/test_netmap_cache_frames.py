"""Sockets that send an equal delta share one encoded frame; a different delta gets its own."""

from __future__ import annotations

from meshadmin.realtime.netmap_cache import ViewCache
from nodeagent.protocol import messages
from nodeagent.protocol import netmap as nm


def _delta(serial: int, name: str) -> messages.Delta:
    peer = nm.Peer(peer_id="ab" * 20, name=name, overlay_ip="10.64.0.9", fingerprint="cd" * 32,
                   endpoints=(), is_public=False, is_relay=False, relay=None, online=False)
    return messages.Delta(nm.NetMapDelta(network="default", base_serial=serial - 1, serial=serial,
                                   upsert=(peer,), remove=(), routes=None, relays=None, revoked=None))


def test_an_equal_delta_is_encoded_once_and_decodes_to_itself():
    cache = ViewCache()
    first = cache.encoded(_delta(5, "mac"))
    assert cache.encoded(_delta(5, "mac")) is first
    assert messages.decode_server_message(first) == _delta(5, "mac")


def test_a_different_delta_gets_its_own_frame():
    cache = ViewCache()
    mac, pc = cache.encoded(_delta(5, "mac")), cache.encoded(_delta(5, "pc"))
    assert mac != pc and messages.decode_server_message(pc) == _delta(5, "pc")
