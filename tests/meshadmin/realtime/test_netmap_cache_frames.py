"""Sockets that send an equal delta share one signed, encoded frame; a different delta gets its own."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import mldsa

from meshadmin.realtime.netmap_cache import ViewCache
from nodeagent.protocol import messages
from nodeagent.protocol import netmap as nm

CA = mldsa.MLDSA87PrivateKey.generate()
CA_PUBLIC = CA.public_key().public_bytes_raw()


def _delta(serial: int, name: str) -> nm.NetMapDelta:
    peer = nm.Peer(peer_id="ab" * 20, name=name, overlay_ip="10.64.0.9", fingerprint="cd" * 32,
                   endpoints=(), is_public=False, is_relay=False, relay=None, online=False)
    return nm.NetMapDelta(network="default", base_serial=serial - 1, serial=serial,
                          upsert=(peer,), remove=(), routes=None, relays=None, revoked=None)


def test_an_equal_delta_is_encoded_and_signed_once_and_decodes_to_itself():
    cache = ViewCache()
    first = cache.encoded(_delta(5, "mac"), CA)
    assert cache.encoded(_delta(5, "mac"), CA) is first
    assert cache.signatures == 1
    assert messages.decode_server_message(first, netmap_key=CA_PUBLIC).delta == _delta(5, "mac")


def test_a_different_delta_gets_its_own_frame():
    cache = ViewCache()
    mac, pc = cache.encoded(_delta(5, "mac"), CA), cache.encoded(_delta(5, "pc"), CA)
    assert mac != pc and messages.decode_server_message(pc, netmap_key=CA_PUBLIC).delta == _delta(5, "pc")
    assert cache.signatures == 2


async def test_a_load_that_finished_before_its_callback_ran_still_comes_with_its_signer():
    """A finished load schedules the cache's bookkeeping; a socket asking in between gets the view
    at once and must find its CA key beside it (it used to raise KeyError and kill the socket)."""
    import asyncio
    import types

    cache = ViewCache()
    view = types.SimpleNamespace(snapshot=types.SimpleNamespace(serial=3, network_id=7))
    done = asyncio.get_running_loop().create_future()
    done.set_result((view, CA))
    cache._loading[7] = done  # finished; the done callback (`_done`) has not run
    got = await cache.get(7, 3)
    assert got is view
    assert cache.signer(got) is CA


def test_full_frames_from_a_view_pack_each_peer_once_and_match_the_plain_encoding():
    """Every member's full map is signed on its own, but the peer entries inside come from one
    packing per view; the bytes signed are exactly the plain encoding of each member's map."""
    from meshadmin.netmap import compute
    from meshadmin.netmap.snapshot import NodeRow, Snapshot

    rows = tuple(NodeRow(pk=i + 1, peer_id=f"{i + 1:040x}", name=f"n{i}", overlay_ip=f"10.64.0.{i + 1}",
                         active=True, is_public=i < 2, is_relay=False, endpoint_ip=None,
                         control_port=None, udp_port=None, observed_ip=None, candidates=(),
                         fingerprint="ab" * 32)
                 for i in range(20))
    view = compute.view(Snapshot(network_id=7, network="default", serial=4, prefix_len=24,
                                 ca_public_key=CA_PUBLIC, nodes=rows, routes=()))
    cache = ViewCache()
    for row in rows:
        netmap = view.netmap_for(row.peer_id)
        frame = cache.full_frame(netmap, CA, view)
        got = messages.decode_server_message(frame, netmap_key=CA_PUBLIC)
        assert got.netmap == netmap
        assert got.body == messages.pack_netmap(netmap)
    assert cache.signatures == len(rows)
    assert len(cache._peer_bytes) == 1 and cache._peer_bytes[7][0] is view  # one packing, kept per view
    # a map that is not one of this view's (another serial, a peer renamed) still packs to its own bytes
    renamed = tuple(r if r.pk != 5 else NodeRow(**{**{f: getattr(r, f) for f in r.__slots__}, "name": "x"})
                    for r in rows)
    other = compute.view(Snapshot(network_id=7, network="default", serial=5, prefix_len=24,
                                  ca_public_key=CA_PUBLIC, nodes=renamed, routes=()))
    for row in rows[:4]:
        netmap = other.netmap_for(row.peer_id)
        got = messages.decode_server_message(cache.full_frame(netmap, CA, view), netmap_key=CA_PUBLIC)
        assert got.netmap == netmap and got.body == messages.pack_netmap(netmap)


def test_an_ordinary_members_full_map_packs_no_peer_entry_again(monkeypatch):
    """After the view's one packing, a member that relays for nobody gets its map joined from
    the packed entries (two slices); a relay's map packs only the entries with its own hints."""
    from meshadmin.netmap import compute
    from meshadmin.netmap.snapshot import NodeRow, Snapshot

    rows = tuple(NodeRow(pk=i + 1, peer_id=f"{i + 1:040x}", name=f"n{i}", overlay_ip=f"10.64.0.{i + 1}",
                         active=True, is_public=i < 2, is_relay=False, fingerprint="ab" * 32)
                 for i in range(12))
    view = compute.view(Snapshot(network_id=3, network="default", serial=2, prefix_len=24,
                                 ca_public_key=CA_PUBLIC, nodes=rows, routes=()))
    cache = ViewCache()
    cache.full_frame(view.netmap_for(rows[5].peer_id), CA, view)  # packs the view's entries once
    packed: list[nm.Peer] = []
    plain = messages.pack_peer
    monkeypatch.setattr(messages, "pack_peer", lambda p: packed.append(p) or plain(p))
    for row in rows[2:]:
        cache.full_frame(view.netmap_for(row.peer_id), CA, view)
    assert packed == []
    relay_map = view.netmap_for(rows[0].peer_id)  # the first-choice relay: hints towards others differ
    cache.full_frame(relay_map, CA, view)
    assert packed and all(p.relay != rows[0].peer_id for p in packed)
    assert len(packed) < len(relay_map.peers)
