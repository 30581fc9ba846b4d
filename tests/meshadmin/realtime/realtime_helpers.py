"""Helpers for the agent websocket tests: connect an agent persona through the real ASGI app."""

from __future__ import annotations

from channels.testing import WebsocketCommunicator

from nodeagent.protocol import messages
from nodeagent.protocol import netmap as nm


def application():
    from meshadmin.asgi import application as app

    return app


async def open_socket(headers=None, path="/ws/agent/") -> WebsocketCommunicator:
    comm = WebsocketCommunicator(application(), path, headers=headers or [])
    connected, _ = await comm.connect()
    assert connected
    return comm


async def receive(comm: WebsocketCommunicator, timeout: float = 5, ca_public_key: bytes | None = None):
    """The next frame from the server; with `ca_public_key`, netmaps must be signed by that CA."""
    return messages.decode_server_message(await comm.receive_from(timeout), netmap_key=ca_public_key)


async def close_code(comm: WebsocketCommunicator, timeout: float = 5) -> int:
    """Skip data frames until the server closes; return the close code."""
    while True:
        out = await comm.receive_output(timeout)
        if out["type"] == "websocket.close":
            return out.get("code")


async def login(ident) -> tuple[WebsocketCommunicator, nm.NetMap]:
    """Open /ws/agent/, answer the challenge with `ident`, return the socket and the first map."""
    comm = await open_socket()
    challenge = await receive(comm)
    assert isinstance(challenge, messages.Challenge)
    auth = messages.Auth(ident.peer_id, ident.sign_login(challenge.nonce))
    await comm.send_to(bytes_data=messages.encode(auth))
    full = await receive(comm, ca_public_key=ident.ca_public_key)  # signed by the network's CA
    assert isinstance(full, messages.Full)
    return comm, full.netmap
