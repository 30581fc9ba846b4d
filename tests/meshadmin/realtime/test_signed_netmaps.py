"""The server signs what it pushes with each network's own CA (attack 18, issue 9 item 3b): every
full map and delta an agent receives verifies against its network's CA, and only against it."""

from __future__ import annotations

import base64

import pytest
from channels.db import database_sync_to_async

from meshadmin.mesh.services.networks import create_network
from meshadmin.mesh.services.tokens import create_token
from nodeagent.protocol import messages, netmap_sign
from tests.meshadmin.realtime.realtime_helpers import login

pytestmark = pytest.mark.django_db(transaction=True)


def _enroll_in(net_name: str, cidr: str, name: str, api, identity_factory):
    network = create_network(net_name, cidr)
    _, token = create_token(network)
    ident = identity_factory()
    response = api.enroll(token, ident, name)
    assert response.status_code == 201, response.content
    ident.ca_public_key = base64.b64decode(response.json()["ca_public_key"])
    return ident


async def test_each_network_is_signed_by_its_own_ca_maps_and_deltas_alike(api, identity_factory, belgium, uk):
    other = await database_sync_to_async(_enroll_in)("lab", "10.77.0.0/24", "lab-1", api, identity_factory)
    assert other.ca_public_key != belgium[0].ca_public_key
    comm_a, _ = await login(belgium[0])  # login() checks the full map against the node's own CA
    comm_b, _ = await login(other)
    # a change in the default network: belgium's delta is signed by the default CA, not lab's
    await database_sync_to_async(_enroll_mac)(api, identity_factory)
    frame = await comm_a.receive_from(5)
    delta = messages.decode_server_message(frame, netmap_key=belgium[0].ca_public_key)
    assert isinstance(delta, messages.Delta) and "mac" in {p.name for p in delta.delta.upsert}
    with pytest.raises(netmap_sign.BadNetmapSignature):
        messages.decode_server_message(frame, netmap_key=other.ca_public_key)
    assert await comm_b.receive_nothing(timeout=0.5)  # lab heard nothing of it
    await comm_a.disconnect()
    await comm_b.disconnect()


def _enroll_mac(api, identity_factory) -> None:
    from meshadmin.mesh.models import Network

    token = create_token(Network.objects.get(name="default"))[1]
    assert api.enroll(token, identity_factory(), "mac").status_code == 201
