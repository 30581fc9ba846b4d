"""Bad frames on /ws/agent/ close the socket with a typed code and reason, before and after auth."""

from __future__ import annotations

import logging

import msgpack
import pytest

from nodeagent.protocol import messages
from nodeagent.protocol.constants import PROTOCOL_VERSION as V
from nodeagent.protocol.constants import CloseCode
from tests.meshadmin.realtime.realtime_helpers import close_code, login, open_socket, receive

pytestmark = pytest.mark.django_db(transaction=True)

CASES = [
    pytest.param({"bytes_data": b"\xc1\x00garbage"}, CloseCode.MALFORMED, id="bad-msgpack"),
    pytest.param({"text_data": '{"v": 1, "t": "ack", "serial": 1}'}, CloseCode.MALFORMED, id="json-text"),
    pytest.param({"bytes_data": msgpack.packb({"v": V, "t": "reboot"})}, CloseCode.UNKNOWN_TYPE,
                 id="unknown-type"),
    pytest.param({"bytes_data": msgpack.packb({"v": 9, "t": "ack", "serial": 1})},
                 CloseCode.UNSUPPORTED_VERSION, id="future-version"),
    pytest.param({"bytes_data": msgpack.packb({"v": 1, "t": "ack", "serial": 1})},
                 CloseCode.UNSUPPORTED_VERSION, id="version-1-agent"),
    pytest.param({"bytes_data": msgpack.packb({"v": 2, "t": "ack", "serial": 1})},
                 CloseCode.UNSUPPORTED_VERSION, id="version-2-agent"),
    pytest.param({"bytes_data": msgpack.packb({"v": V, "t": "ack", "serial": "7"})}, CloseCode.MALFORMED,
                 id="wrong-field-type"),
    pytest.param({"bytes_data": b"\x00" * (messages.MAX_MESSAGE_SIZE + 1)}, CloseCode.TOO_LARGE,
                 id="oversized"),
]


@pytest.mark.parametrize(("frame", "code"), CASES)
async def test_a_bad_frame_after_auth_closes_with_its_code(belgium, frame, code, caplog):
    comm, _ = await login(belgium[0])
    with caplog.at_level(logging.WARNING, logger="meshadmin.realtime.consumers"):
        await comm.send_to(**frame)
        assert await close_code(comm) == code
    logged = [r.getMessage() for r in caplog.records]
    assert any(belgium[0].peer_id in m and str(int(code)) in m for m in logged)


@pytest.mark.parametrize(("frame", "code"), CASES)
async def test_a_bad_frame_before_auth_closes_with_its_code(belgium, frame, code):
    comm = await open_socket()
    await receive(comm)
    await comm.send_to(**frame)
    assert await close_code(comm) == code


async def test_a_second_auth_on_an_authenticated_socket_is_refused(belgium):
    comm, _ = await login(belgium[0])
    await comm.send_to(bytes_data=messages.encode(messages.Auth(belgium[0].peer_id, b"x" * 10)))
    assert await close_code(comm) == CloseCode.MALFORMED
