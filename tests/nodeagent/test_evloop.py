"""The agent's event loop choice (nodeagent/evloop.py): uvloop when installed, asyncio on request
or without it, a clear error for a bad setting; and a reader callback works on both loops."""

import asyncio
import socket

import pytest

from nodeagent import evloop
from nodeagent.evloop import EventLoopError, choose

try:
    import uvloop  # an agent dependency (pyproject.toml): installed wherever the agent is
except ImportError:  # pragma: no cover - only the tests that need it are skipped
    uvloop = None
needs_uvloop = pytest.mark.skipif(uvloop is None, reason="uvloop is not installed")


@pytest.mark.parametrize(("setting", "available", "expected"), [
    (None, True, "uvloop"),
    (None, False, "asyncio"),
    ("", True, "uvloop"),
    ("auto", True, "uvloop"),
    ("auto", False, "asyncio"),
    (" Auto ", False, "asyncio"),
    ("asyncio", True, "asyncio"),
    ("ASYNCIO", False, "asyncio"),
    ("uvloop", True, "uvloop"),
])
def test_choose(setting, available, expected):
    assert choose(setting, available) == expected


def test_asking_for_uvloop_without_it_is_an_error_naming_the_variable():
    with pytest.raises(EventLoopError, match="SHADOWMESH_EVENT_LOOP=uvloop but uvloop is not installed"):
        choose("uvloop", False)


def test_an_unknown_setting_is_an_error_naming_the_choices():
    with pytest.raises(EventLoopError, match=r"LOOP='trio': expected one of auto, asyncio, uvloop"):
        choose("trio", True)


@needs_uvloop
def test_selected_reads_the_environment(monkeypatch):
    monkeypatch.setenv("SHADOWMESH_EVENT_LOOP", "asyncio")
    assert evloop.selected() == "asyncio"
    monkeypatch.delenv("SHADOWMESH_EVENT_LOOP")
    assert evloop.selected() == "uvloop"
    monkeypatch.setenv("SHADOWMESH_EVENT_LOOP", "nope")
    with pytest.raises(EventLoopError):
        evloop.selected()


@needs_uvloop
@pytest.mark.parametrize("name", ["asyncio", "uvloop"])
def test_run_uses_the_loop_named_and_a_reader_callback_fires_on_it(name):
    seen = {}

    async def main():
        loop = asyncio.get_running_loop()
        seen["loop"] = loop
        rx, tx = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        got = asyncio.Event()
        try:
            rx.setblocking(False)
            loop.add_reader(rx.fileno(), lambda: (seen.setdefault("data", rx.recv(100)), got.set()))
            tx.send(b"ping")
            await asyncio.wait_for(got.wait(), 10)
            loop.remove_reader(rx.fileno())
        finally:
            rx.close()
            tx.close()

    evloop.run(main(), name)
    assert seen["data"] == b"ping"
    assert isinstance(seen["loop"], uvloop.Loop) == (name == "uvloop")
    assert isinstance(seen["loop"], asyncio.BaseEventLoop) == (name == "asyncio")
