"""Per-process cache of the current NetworkView of each network, shared by the agent sockets.

On `netmap.changed` every socket of a network needs the new view; the first to ask loads the
snapshot (3 queries) and computes the view, the others await the same load. A view is reused
while its serial is at least the one asked for. The change set between two views and the encoded,
signed frame of an equal delta are also computed once, not once per socket. One cache per event
loop (futures belong to one).

Signing: every netmap and delta goes out signed by the network's CA key
(nodeagent/protocol/netmap_sign.py). The key is unsealed once per process and CA (keyed by the CA
public key the snapshot carries, one extra query the first time), in the database thread that
loads the view, and kept by the cache beside the view (`signer`); a delta shared by most sockets
costs one signature, a full map (on connect and on `resync`) one per socket.

The same key signs the CA's revocation list for the DHT (meshadmin/netmap/revocations.py), made in
that thread with the view and carried by every map of it; the cache keeps the last list of each
network and hands it to the next load, which signs a new one only when the revoked nodes changed
or the list has aged (so unchanged maps stay equal and most deltas do not carry it).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time

from channels.db import database_sync_to_async
from cryptography.hazmat.primitives.asymmetric import mldsa

from meshadmin.mesh.models import Network
from meshadmin.mesh.pki import load_ca_key
from meshadmin.netmap import compute, revocations, snapshot
from nodeagent.protocol import messages
from nodeagent.protocol import netmap as nm

from .per_loop import PerLoop

__all__ = ["ViewCache", "current_serial", "netmap_signer", "view_cache"]

log = logging.getLogger(__name__)

# CA public key -> its unsealed private key: spares the unsealing on later loads (a cache only:
# whoever signs holds the key it got from `_load`)
_unsealed: dict[bytes, mldsa.MLDSA87PrivateKey] = {}


def netmap_signer(network_id: int, ca_public_key: bytes) -> mldsa.MLDSA87PrivateKey:
    """The network's CA key, for signing its netmaps (database and unsealing the first time per
    process): call from a database thread."""
    key = _unsealed.get(ca_public_key)
    if key is None:
        network = Network.objects.only("ca_public_key", "ca_private_sealed").get(pk=network_id)
        if bytes(network.ca_public_key) != ca_public_key:
            raise LookupError(f"network {network_id}'s CA changed while its map was computed")
        if len(_unsealed) >= 64:
            _unsealed.clear()
        key = _unsealed[ca_public_key] = load_ca_key(network)
    return key


def _load(network_id: int, held_list: bytes | None = None) -> tuple[compute.NetworkView,
                                                                   mldsa.MLDSA87PrivateKey]:
    """The view at the current serial and the CA key that signs its maps; the view carries the CA's
    revocation list for the DHT (`held_list`, the one the previous view carried, again when it still
    fits)."""
    started = time.perf_counter()
    v = compute.view(snapshot.load(network_id))
    key = netmap_signer(network_id, v.snapshot.ca_public_key)
    try:
        rl = revocations.revocation_list((r.peer_id for r in v.revoked), sign=key.sign,
                                         ca_public_key=v.snapshot.ca_public_key, held=held_list,
                                         now=time.time())
    except revocations.TooManyRevoked as exc:
        log.error("network %s: no revocation list for the DHT: %s", network_id, exc)
        rl = None
    v = v.with_revocation_list(rl)
    log.info("network %s serial %s: view of %d nodes loaded in %.0f ms", network_id, v.snapshot.serial,
             len(v.snapshot.nodes), 1000 * (time.perf_counter() - started))
    return v, key


@database_sync_to_async
def current_serial(network_id: int) -> int:
    return Network.objects.filter(pk=network_id).values_list("serial", flat=True).first() or 0


class ViewCache:
    def __init__(self) -> None:
        self._views: dict[int, compute.NetworkView] = {}
        self._signers: dict[int, mldsa.MLDSA87PrivateKey] = {}  # network -> the key of its views
        self._loading: dict[int, asyncio.Future] = {}
        # (id(old), id(new)) -> (old, new, changes); the views are held so their ids stay unique
        self._changes: dict[tuple[int, int], tuple] = {}
        # (delta, id(signer)) -> (signer, frame); the signer is held so its id stays its own
        self._encoded: dict[tuple[nm.NetMapDelta, int], tuple[mldsa.MLDSA87PrivateKey, bytes]] = {}
        self.signatures = 0  # netmaps and deltas this cache signed
        # network -> (the view, its members' Peer entries packed in order, by id): full maps
        self._peer_bytes: dict[int, tuple[compute.NetworkView, list[bytes], dict[int, bytes]]] = {}

    def encoded(self, delta: nm.NetMapDelta, signer: mldsa.MLDSA87PrivateKey) -> bytes:
        """The delta's frame, signed by `signer` and encoded once for all sockets that send an equal
        delta (most members after a change)."""
        key = (delta, id(signer))
        hit = self._encoded.get(key)
        if hit is None:
            if len(self._encoded) >= 64:
                self._encoded.clear()
            self.signatures += 1
            hit = self._encoded[key] = (signer, messages.encode(messages.sign_delta(delta, signer)))
        return hit[1]

    def signer(self, view: compute.NetworkView) -> mldsa.MLDSA87PrivateKey:
        """The CA key that signs `view`'s maps (loaded with it)."""
        return self._signers[view.snapshot.network_id]

    def full_frame(self, netmap: nm.NetMap, signer: mldsa.MLDSA87PrivateKey,
                   view: compute.NetworkView | None = None) -> bytes:
        """A node's full map, signed (one signature each: every node's map differs). With the
        `view` it came from, each peer entry is packed once per view and process, not once per map."""
        self.signatures += 1
        if view is None:
            return messages.encode(messages.sign_full(netmap, signer))
        return messages.encode(messages.sign_full(netmap, signer, self._peers_packer(view)))

    def _peers_packer(self, view: compute.NetworkView) -> messages.PackPeers:
        """Joins a map's peer entries from those packed once for `view`. Most maps list every member
        but their own node (compute.NetworkView.netmap_for): two slices of the packed entries (the
        list is compared with the view's first, element by element, which is an identity check
        for the view's own entries). Any
        other list (a relay's, with its own relay hints) goes entry by entry: by identity, from
        the view's own Peer objects (the view holds them, so no live object shares their ids),
        packing only those that are not the view's."""
        network_id = view.snapshot.network_id
        held = self._peer_bytes.get(network_id)
        if held is None or held[0] is not view:
            ordered = [messages.pack_peer(p) for p in view.ordered]
            by_id = {id(p): b for p, b in zip(view.ordered, ordered, strict=True)}
            held = self._peer_bytes[network_id] = (view, ordered, by_id)
        _, ordered, by_id = held

        def packed_peers(netmap: nm.NetMap) -> bytes:
            peers = netmap.peers
            me = view.index.get(netmap.node.peer_id)
            k = None if me is None else view.position.get(me.pk)
            if k is not None and peers == view.ordered[:k] + view.ordered[k + 1:]:  # identity first, in C
                return b"".join(ordered[:k]) + b"".join(ordered[k + 1:])
            return b"".join(by_id.get(id(p)) or messages.pack_peer(p) for p in peers)

        return packed_peers

    def changes(self, old: compute.NetworkView, new: compute.NetworkView) -> compute.Changes:
        """The change set between two views, computed once for all sockets that go from old to new."""
        key = (id(old), id(new))
        hit = self._changes.get(key)
        if hit is None:
            if len(self._changes) >= 16:  # keep the views referenced by recent keys only
                self._changes.pop(next(iter(self._changes)))
            hit = self._changes[key] = (old, new, compute.changes(old, new))
        return hit[2]

    async def get(self, network_id: int, min_serial: int = 0) -> compute.NetworkView:
        while True:
            v = self._views.get(network_id)
            if v is not None and v.snapshot.serial >= min_serial:
                return v
            fut = self._loading.get(network_id)
            if fut is None:
                held = self._views.get(network_id)
                fut = asyncio.ensure_future(database_sync_to_async(_load)(
                    network_id, None if held is None else held.revocation_list))
                self._loading[network_id] = fut
                fut.add_done_callback(functools.partial(self._done, network_id))
            v, key = await asyncio.shield(fut)
            # kept here too, not only in `_done`: a load that finished has scheduled `_done` but
            # not run it yet, and a caller arriving in between gets its result at once
            self._keep(network_id, v, key)
            if v.snapshot.serial >= min_serial:
                return v
            # that load started before the change we were told about committed: load again

    def _done(self, network_id: int, fut: asyncio.Future) -> None:
        if self._loading.get(network_id) is fut:
            del self._loading[network_id]
        if not fut.cancelled() and fut.exception() is None:
            self._keep(network_id, *fut.result())

    def _keep(self, network_id: int, new: compute.NetworkView, key: mldsa.MLDSA87PrivateKey) -> None:
        old = self._views.get(network_id)
        if old is None or new.snapshot.serial >= old.snapshot.serial:
            self._views[network_id] = new
            self._signers[network_id] = key


_caches: PerLoop[ViewCache] = PerLoop()


def view_cache() -> ViewCache:
    return _caches.current(ViewCache)
