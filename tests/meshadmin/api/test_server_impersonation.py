"""A server impersonator (attack 18) cannot turn an agent's websocket login into an HTTP session.

The impersonator asks the real server for an HTTP challenge naming the node, hands those bytes to
the real agent as its websocket challenge, and offers the agent's answer to /api/auth/verify.
"""

from __future__ import annotations

import asyncio
import base64
import json

import pytest
from websockets.asyncio.server import serve

from nodeagent.enroll import write_private_file
from nodeagent.protocol import messages
from nodeagent.server_link import ServerLink

pytestmark = pytest.mark.django_db


def state_dir_for(tmp_path, ident, answer: dict, server: str = "http://127.0.0.1:1"):
    """The state directory `enroll` would have written for this enrollment answer."""
    d = tmp_path / "state"
    d.mkdir(mode=0o700)
    write_private_file(d / "node.key", ident.key.private_bytes_raw())
    (d / "node.pub").write_bytes(ident.public_key)
    write_private_file(d / "node.crt", base64.b64decode(answer["certificate"]))
    write_private_file(d / "ca.pub", base64.b64decode(answer["ca_public_key"]))
    write_private_file(d / "server.json", json.dumps({
        "server": server, "peer_id": ident.peer_id, "name": "belgium",
        "overlay_ip": answer["overlay_ip"], "network": answer["network"]}).encode())
    return d


async def _signature_for(state_dir, challenge: bytes) -> bytes:
    """Run the real agent link against an impersonating websocket server that sends `challenge`."""
    got: asyncio.Future = asyncio.get_running_loop().create_future()

    async def handler(ws):
        await ws.send(messages.encode(messages.Challenge(challenge)))
        auth = messages.decode_agent_message(await ws.recv())
        if not got.done():
            got.set_result(auth)
        await ws.close()

    server = await serve(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    link = ServerLink(state_dir, lambda m: None, url=f"ws://127.0.0.1:{port}/ws/agent/")
    task = asyncio.create_task(link.run())
    try:
        auth = await asyncio.wait_for(got, 10)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        server.close()
        await server.wait_closed()
    assert isinstance(auth, messages.Auth)
    return auth.signature


def test_an_impersonated_server_cannot_mint_an_http_session_with_the_agents_websocket_signature(
        tmp_path, api, belgium):
    ident, answer = belgium
    state = state_dir_for(tmp_path, ident, answer)
    response = api.post("/api/auth/challenge", {"peer_id": ident.peer_id})
    assert response.status_code == 200
    challenge = base64.b64decode(response.json()["challenge"])

    signature = asyncio.run(_signature_for(state, challenge))

    minted = api.post("/api/auth/verify", {"peer_id": ident.peer_id,
                                           "challenge": base64.b64encode(challenge).decode(),
                                           "signature": base64.b64encode(signature).decode()})
    assert minted.status_code == 401, minted.content
    assert "session_token" not in minted.json()
