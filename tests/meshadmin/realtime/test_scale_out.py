"""Scale-out: two Daphne processes + a Celery worker on one PostgreSQL and Redis.

An agent connected to one server receives a change made through the other (groups live in
Redis), and a change made outside any server (a management shell) reaches the agents through the
Celery worker, twice in a row — the second push would fail with "Event loop is closed" if the
worker reused channels_redis pools across its per-call event loops.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from nodeagent.enroll import enroll
from nodeagent.protocol import netmap as nm
from nodeagent.server_link import ServerLink
from tests.meshadmin.realtime.live_helpers import Server, Worker, peer_names, until

pytestmark = pytest.mark.postgres


@pytest.fixture
def cluster(tmp_path):
    """Own database and Redis db index, so other PostgreSQL tests are not disturbed."""
    base = os.environ["DATABASE_URL"]
    dbname = f"sm_scale_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{dbname}"')
    parts = urlsplit(base)
    redis = urlsplit(os.environ["REDIS_URL"])
    env = {"DATABASE_URL": urlunsplit(parts._replace(path=f"/{dbname}")),
           "REDIS_URL": urlunsplit(redis._replace(path="/9")),
           "SHADOWMESH_DATA_DIR": str(tmp_path / "data")}
    a = Server(tmp_path, env, migrate=True, name="daphne-a")
    b = Server(tmp_path, env, migrate=False, name="daphne-b")
    worker = Worker(a.env, tmp_path / "worker.log")
    try:
        a.start()
        b.start()
        worker.start()
        yield a, b
    finally:
        worker.stop()
        b.stop()
        a.stop()
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


async def test_a_change_through_one_server_reaches_an_agent_on_the_other(cluster, tmp_path):
    a, b = cluster
    uk_dir, be_dir = tmp_path / "uk", tmp_path / "belgium"
    await asyncio.to_thread(enroll, a.url, a.token(public=True), "uk", uk_dir, None, True)
    await asyncio.to_thread(enroll, b.url, b.token(), "belgium", be_dir)
    maps: dict[str, list[nm.NetMap]] = {"uk": [], "belgium": []}
    ws = lambda srv: srv.url.replace("http://", "ws://") + "/ws/agent/"  # noqa: E731
    links = [ServerLink(uk_dir, maps["uk"].append, url=ws(a)),
             ServerLink(be_dir, maps["belgium"].append, url=ws(b))]
    tasks = [asyncio.create_task(link.run()) for link in links]
    try:
        await until(lambda: all(link.connected.is_set() for link in links), "both agents connect", 30)
        # through server A (which serves uk) to belgium on server B
        await asyncio.to_thread(enroll, a.url, a.token(), "mac", tmp_path / "mac")
        await until(lambda: "mac" in peer_names(maps["belgium"]), "belgium (on B) sees mac via A", 30)
        # outside any server: management shell -> Celery worker -> Redis groups, twice
        a.manage("shell", "-c", "from meshadmin.mesh.models import Node; from meshadmin.mesh.services.nodes "
                 "import revoke_node; revoke_node(Node.objects.get(name='mac'))")
        await until(lambda: "mac" not in peer_names(maps["uk"]) and "mac" not in peer_names(maps["belgium"]),
                    "the worker's push drops mac everywhere", 30)
        assert {r.peer_id for r in maps["uk"][-1].revoked} == {r.peer_id for r in maps["belgium"][-1].revoked}
        a.manage("shell", "-c", "from meshadmin.mesh.models import Node; from meshadmin.mesh.services.nodes "
                 "import rename_node; rename_node(Node.objects.get(name='belgium'), 'brussels')")
        await until(lambda: "brussels" in peer_names(maps["uk"]), "a second worker push (renamed peer)", 30)
        pushed = (tmp_path / "worker.log").read_text().count("push_netmaps")
        assert "Event loop is closed" not in (tmp_path / "worker.log").read_text()
        assert pushed >= 2, "the shell's changes must have gone through the Celery worker"
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
