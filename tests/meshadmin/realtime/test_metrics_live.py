"""/metrics of a real Daphne: the families and labels a scraper gets, and counters that move with
what happens (enrollments, refusals, agent sockets, pushes and their latency, counter reports);
then two Daphne processes and a Celery worker sharing PROMETHEUS_MULTIPROC_DIR (PostgreSQL and
Redis): a scrape of either process counts what happened in all of them. The text is parsed with
prometheus-client's parser."""

from __future__ import annotations

import asyncio
import json
import os
import urllib.error
import urllib.request
import uuid
from urllib.parse import urlsplit, urlunsplit

import pytest
from prometheus_client.parser import text_string_to_metric_families

from nodeagent.enroll import EnrollError, enroll, load_state
from nodeagent.protocol import messages
from nodeagent.protocol import netmap as nm
from nodeagent.protocol.counters import PeerCounters
from nodeagent.server_link import ServerLink
from tests.meshadmin.realtime.live_helpers import Server, Worker, peer_names, until

TOKEN = "live-metrics-token-0123456789abcdef"


def scrape(server: Server, token: str | None = None) -> dict[tuple[str, tuple], float]:
    """(sample name, sorted labels) -> value."""
    req = urllib.request.Request(server.url + "/metrics",
                                 headers={"Authorization": f"Bearer {token}"} if token else {})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200
        text = resp.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def total(samples: dict, name: str) -> float:
    return sum(v for (n, _), v in samples.items() if n == name)


def ws(server: Server) -> str:
    return server.url.replace("http://", "ws://") + "/ws/agent/"


def stats_of(peer_id: str, counter: list[int]):
    def report() -> messages.Stats:
        counter[0] += 100
        return messages.Stats(float(counter[0]), (PeerCounters(peer_id=peer_id, tx_bytes=counter[0]),))
    return report


@pytest.fixture
def server(tmp_path):
    srv = Server(tmp_path, env={"SHADOWMESH_METRICS_TOKEN": TOKEN})
    srv.start()
    yield srv
    srv.stop()


async def test_a_real_server_counts_what_happens(server, tmp_path):
    before = await asyncio.to_thread(scrape, server)
    assert value(before, "shadowmesh_metrics_source_up", source="database") == 1
    assert ("shadowmesh_celery_queue_length", (("queue", "celery"),)) not in before  # no broker here
    uk_dir, be_dir = tmp_path / "uk", tmp_path / "belgium"
    token = server.token()
    await asyncio.to_thread(enroll, server.url, token, "uk", uk_dir)
    await asyncio.to_thread(enroll, server.url, server.token(), "belgium", be_dir)
    with pytest.raises(EnrollError):  # a one-time token, spent
        await asyncio.to_thread(enroll, server.url, token, "again", tmp_path / "again")
    unknown = urllib.request.Request(server.url + "/api/auth/challenge", data=json.dumps(
        {"peer_id": "ab" * 20}).encode(), headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError):
        await asyncio.to_thread(urllib.request.urlopen, unknown, None, 10)
    be_id = load_state(be_dir).identity.peer_id
    maps: dict[str, list[nm.NetMap]] = {"uk": [], "belgium": []}
    links = [ServerLink(uk_dir, maps["uk"].append, stats_of(be_id, [0]), stats_interval=0.5,
                        url=ws(server)),
             ServerLink(be_dir, maps["belgium"].append, url=ws(server))]
    tasks = [asyncio.create_task(link.run()) for link in links]
    try:
        await until(lambda: all(link.connected.is_set() for link in links), "both agents connect", 30)
        await asyncio.to_thread(enroll, server.url, server.token(), "mac", tmp_path / "mac")
        await until(lambda: "mac" in peer_names(maps["uk"]) and "mac" in peer_names(maps["belgium"]),
                    "the push of mac's enrollment reaches both", 30)

        def moved() -> dict:
            now = scrape(server)
            assert value(now, "shadowmesh_telemetry_reports_total") >= 2  # uk reports every 0.5 s
            assert value(now, "shadowmesh_netmap_push_last_agent_seconds_count") >= 1
            return now

        after = await until_value(lambda: moved(), "reports and the push's last agent counted")
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    assert value(after, "shadowmesh_enrollments_total") - value(before, "shadowmesh_enrollments_total") == 3
    used_up = "enrollment_token_has_been_used_up"
    assert value(after, "shadowmesh_enrollment_refusals_total", reason=used_up) == 1
    assert value(after, "shadowmesh_auth_failures_total", channel="http", reason="unknown_peer") == 1
    assert value(after, "shadowmesh_agents_online", network="default") == 2
    assert value(after, "shadowmesh_agent_websockets", network="default") == 2
    assert value(after, "shadowmesh_nodes", network="default", status="active") == 3
    assert value(after, "shadowmesh_agent_websocket_connections_total") >= 2
    assert value(after, "shadowmesh_netmap_pushes_total") >= 1
    assert value(after, "shadowmesh_netmap_frames_total", kind="full") >= 2
    assert value(after, "shadowmesh_netmap_frames_total", kind="delta") >= 2  # mac's push, to both
    # change -> each agent: both sockets got mac's delta; every observation is within the +Inf bucket
    count = value(after, "shadowmesh_netmap_push_seconds_count")
    assert count >= 2 and value(after, "shadowmesh_netmap_push_seconds_bucket", le="+Inf") == count
    assert 0 < value(after, "shadowmesh_netmap_push_seconds_sum") < 30 * count
    # the scrape from loopback needed nothing; the token works as well
    assert value(await asyncio.to_thread(scrape, server, TOKEN), "shadowmesh_enrollments_total") >= 3


async def until_value(read, what: str, timeout: float = 20.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            return await asyncio.to_thread(read)
        except AssertionError:
            if loop.time() > deadline:
                raise AssertionError(f"never happened: {what}") from None
            await asyncio.sleep(0.25)


@pytest.fixture
def cluster(tmp_path):
    """Two Daphnes and a Celery worker on PostgreSQL and Redis, one multiprocess directory, JSON logs."""
    import psycopg

    base = os.environ["DATABASE_URL"]
    dbname = f"sm_metrics_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{dbname}"')
    redis = urlsplit(os.environ["REDIS_URL"])
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    env = {"DATABASE_URL": urlunsplit(urlsplit(base)._replace(path=f"/{dbname}")),
           "REDIS_URL": urlunsplit(redis._replace(path="/10")),
           "SHADOWMESH_DATA_DIR": str(tmp_path / "data"), "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
           "SHADOWMESH_LOG_FORMAT": "json"}
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


@pytest.mark.postgres
async def test_two_daphnes_and_the_worker_add_up_in_one_scrape(cluster, tmp_path):
    a, b = cluster
    await asyncio.to_thread(enroll, a.url, a.token(), "uk", tmp_path / "uk")
    await asyncio.to_thread(enroll, b.url, b.token(), "belgium", tmp_path / "belgium")
    maps: list[nm.NetMap] = []
    link = ServerLink(tmp_path / "uk", maps.append, url=ws(b))  # uk's socket is on B
    task = asyncio.create_task(link.run())
    try:
        await until(link.connected.is_set, "uk connects to B", 30)
        # a change outside both servers: the management shell -> the Celery worker pushes
        a.manage("shell", "-c", "from meshadmin.mesh.models import Node; from meshadmin.mesh.services.nodes "
                 "import rename_node; rename_node(Node.objects.get(name='belgium'), 'brussels')")
        await until(lambda: "brussels" in peer_names(maps), "the worker's push reaches uk on B", 30)

        def counted() -> tuple[dict, dict]:
            seen = scrape(a), scrape(b)
            for s in seen:
                assert value(s, "shadowmesh_netmap_push_seconds_count") >= 1  # observed on B
            return seen

        from_a, from_b = await until_value(counted, "B's push observation seen from A")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    for s in (from_a, from_b):
        assert value(s, "shadowmesh_enrollments_total") == 2  # one through A, one through B
        assert value(s, "shadowmesh_netmap_pushes_total") >= 2  # the enrollments' and the worker's
        assert value(s, "shadowmesh_agent_websocket_connections_total") >= 1
        assert value(s, "shadowmesh_agents_online", network="default") == 1
        assert value(s, "shadowmesh_celery_queue_length", queue="celery") >= 0
        assert value(s, "shadowmesh_metrics_source_up", source="redis") == 1
        assert total(s, "process_resident_memory_bytes") == 0  # per-process families are left out
    worker_log = (tmp_path / "worker.log").read_text()
    json_lines = [json.loads(line) for line in worker_log.splitlines() if line.startswith("{")]
    assert any(line["logger"].startswith("celery") for line in json_lines), worker_log[-2000:]
    assert all({"timestamp", "level", "logger", "message", "event"} <= set(line) for line in json_lines)
