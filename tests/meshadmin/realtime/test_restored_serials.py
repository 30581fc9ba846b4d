"""After a database restore, the networks' serials are behind what the agents hold: `advanceserials`
raises them, so every agent takes the restored map instead of keeping its own."""

from __future__ import annotations

import asyncio
import io

import pytest
from asgiref.sync import sync_to_async
from django.core.management import CommandError, call_command

from meshadmin.mesh.choices import AuditAction
from meshadmin.mesh.models import AuditEvent, Network, Node
from meshadmin.mesh.services.networks import RESTORE_SERIAL_STEP
from meshadmin.realtime import netmap_cache
from nodeagent.protocol import messages
from nodeagent.protocol import netmap as nm
from tests.meshadmin.realtime.realtime_helpers import open_socket, receive

pytestmark = pytest.mark.django_db(transaction=True)


async def _login_holding(ident, held: int):
    """Log in as an agent that holds the map of serial `held`; the server's first answer."""
    comm = await open_socket()
    challenge = await receive(comm)
    await comm.send_to(bytes_data=messages.encode(
        messages.Auth(ident.peer_id, ident.sign_login(challenge.nonce), held)))
    answer = await receive(comm, ca_public_key=ident.ca_public_key)
    await comm.disconnect()
    return answer


def _restore(network_id: int, serial: int, removed_peer: str | None = None) -> None:
    """What a restore of an older backup does to what the agents see: a node enrolled after the
    backup is gone, and the serial is back at the backup's."""
    if removed_peer is not None:
        Node.objects.filter(peer_id=removed_peer).delete()
    Network.objects.filter(pk=network_id).update(serial=serial)


def _server_restarted() -> None:
    """The server is restarted on the restored database: its processes' views are gone."""
    netmap_cache._caches.pop(asyncio.get_running_loop(), None)


async def test_an_agent_holding_a_map_from_after_the_backup_takes_the_restored_one_once_serials_advance(
        network, uk, enrolled):
    backup_serial = (await Network.objects.aget(pk=network.pk)).serial
    later, _ = await sync_to_async(enrolled)("later")  # enrolled after the backup
    held = (await Network.objects.aget(pk=network.pk)).serial  # uk's map lists `later`
    # the restored database may even stand at the serial uk holds (changes made after the backup
    # and before the restore's own ones): the server answers "current", and uk keeps a map that
    # lists a node the server no longer has
    await sync_to_async(_restore)(network.pk, held, later.peer_id)
    _server_restarted()
    answer = await _login_holding(uk[0], held)
    assert isinstance(answer, messages.Delta) and answer.delta.is_empty and answer.delta.serial == held
    # ... or below it: the full map is older than uk's, which uk ignores (nm.is_stale)
    await sync_to_async(_restore)(network.pk, backup_serial)
    _server_restarted()
    answer = await _login_holding(uk[0], held)
    assert isinstance(answer, messages.Full) and nm.is_stale(held, answer.netmap.serial)

    out = io.StringIO()
    await sync_to_async(call_command)("advanceserials", stdout=out)
    assert out.getvalue().strip() == (
        f"default: serial {backup_serial} -> {backup_serial + RESTORE_SERIAL_STEP}")
    answer = await _login_holding(uk[0], held)
    assert isinstance(answer, messages.Full) and not nm.is_stale(held, answer.netmap.serial)
    assert later.peer_id not in {p.peer_id for p in answer.netmap.peers}


def test_advanceserials_names_a_bad_network_or_step(network):
    with pytest.raises(CommandError, match="no network named 'nope'"):
        call_command("advanceserials", "--network", "nope")
    with pytest.raises(CommandError, match="by: a whole number"):
        call_command("advanceserials", "--by", "0")
    call_command("advanceserials", "--network", "default", "--by", "5", stdout=io.StringIO())
    assert Network.objects.get(pk=network.pk).serial == network.serial + 5
    event = AuditEvent.objects.filter(action=AuditAction.NETWORK_SERIALS_ADVANCED).get()
    assert event.actor == "cli" and event.network_id == network.pk
    before, after = event.details["serial_before"], event.details["serial_after"]
    assert (before, after) == (network.serial, network.serial + 5)
