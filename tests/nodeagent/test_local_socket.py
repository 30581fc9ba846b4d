"""The agent's local status socket (nodeagent/control/local.py): born mode 0600, answers `status`
with the status document, refuses a second agent on the same path, and names every failure."""

import asyncio
import stat

import pytest

from nodeagent.control.local import LocalSocketError, query_status, serve_status

DOC = {"node": {"peer_id": "ab" * 20, "drops": {}}, "peers": []}


async def _serving(path):
    return await serve_status(path, lambda: DOC)


async def test_the_socket_is_mode_0600_and_serves_the_status_document(tmp_path):
    path = tmp_path / "run" / "agent.sock"
    server = await _serving(path)
    try:
        assert stat.S_ISSOCK(path.stat().st_mode)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert await asyncio.to_thread(query_status, path) == DOC
    finally:
        server.close()
        await server.wait_closed()


async def test_a_second_agent_on_a_live_socket_is_refused_and_a_stale_one_is_replaced(tmp_path):
    path = tmp_path / "agent.sock"
    server = await _serving(path)
    try:
        with pytest.raises(LocalSocketError, match="already serving"):
            await _serving(path)
    finally:
        server.close()
        await server.wait_closed()
    path.touch()  # what a killed agent may leave behind: a path nobody listens on
    replacement = await _serving(path)
    try:
        assert await asyncio.to_thread(query_status, path) == DOC
    finally:
        replacement.close()
        await replacement.wait_closed()


def test_querying_without_an_agent_names_the_path(tmp_path):
    with pytest.raises(LocalSocketError, match=r"agent\.sock: no agent socket"):
        query_status(tmp_path / "agent.sock")
