"""Metrics and logs of real processes in namespaces: `up --metrics-listen` scraped from inside the
node's namespace while traffic flows (the counters move with it), meshadmin's /metrics scraped
from a namespace (not loopback: the token is needed), and no secret in any log line of a real
enrollment, HTTP auth and agent run, in both log formats."""

from __future__ import annotations

import base64
import json
import re
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.agentlab import PYTHON, two_nodes, wait_for
from tests.integration.meshlab import Mesh

pytestmark = pytest.mark.privileged

METRICS_PORT = 9464
TOKEN = "integration-metrics-token-0123456789"
SCRAPE = """
import sys, urllib.request, urllib.error
auth = {"Authorization": "Bearer " + sys.argv[2]} if sys.argv[2] else {}
req = urllib.request.Request(sys.argv[1], headers=auth)
try:
    with urllib.request.urlopen(req, timeout=10) as r:
        sys.stdout.write(r.read().decode())
except urllib.error.HTTPError as e:
    print("HTTP", e.code)
"""


def scrape_in(ns, url: str, token: str = "") -> str:
    return ns.run(PYTHON, "-c", SCRAPE, url, token).stdout


def samples(text: str) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def per_peer(text: str, name: str, peer: str) -> float:
    return samples(text)[(name, (("peer", peer),))]


def test_agent_metrics_move_with_traffic_and_logs_are_json(lab):
    args = ("--metrics-listen", f"127.0.0.1:{METRICS_PORT}", "--log-format", "json")
    a_ns, _b_ns, _a_id, b_id, _, _, (a, _b) = two_nodes(lab, args=args)
    url = f"http://127.0.0.1:{METRICS_PORT}/metrics"
    wait_for(lambda: lab.tool(a_ns, "ping", "10.10.10.2", "--count", "1", "--timeout", "1").returncode == 0,
             30, "ping a -> b")
    before = scrape_in(a_ns, url)
    assert lab.tool(a_ns, "ping", "10.10.10.2", "--count", "20", "--interval", "0.05").returncode == 0
    after = scrape_in(a_ns, url)
    for name in ("shadowmesh_peer_tx_bytes_total", "shadowmesh_peer_rx_bytes_total",
                 "shadowmesh_peer_tx_frames_total", "shadowmesh_peer_rx_frames_total"):
        grew = per_peer(after, name, b_id) - per_peer(before, name, b_id)
        assert grew >= (20 * 50 if "bytes" in name else 20), (name, grew)  # a frame of a ping is > 50 bytes
    assert per_peer(after, "shadowmesh_peer_handshakes_total", b_id) >= 1
    assert per_peer(after, "shadowmesh_peer_control_up", b_id) == 1
    assert per_peer(after, "shadowmesh_peer_path_changes_total", b_id) == 0  # direct from the start
    assert 0 < per_peer(after, "shadowmesh_peer_rtt_seconds", b_id) < 5
    fams = {m.name: m for m in text_string_to_metric_families(after)}
    assert fams["shadowmesh_drops"].type == "counter"
    assert {s.labels["reason"] for s in fams["shadowmesh_drops"].samples} >= {"replay", "bad_tag", "no_route"}
    assert "shadowmesh_handshakes_refused" in fams and "shadowmesh_control_connections" in fams
    # the agent's own log: one JSON object per line, its node name on each
    lines = [json.loads(line) for line in a.log_text().splitlines() if line.strip()]
    assert lines and all({"timestamp", "level", "logger", "message", "event"} <= set(x) for x in lines)
    assert {x.get("node") for x in lines} == {"a"}
    events = {x["event"] for x in lines}
    assert {"agent.up", "link.up", "session.keys", "metrics.listening"} <= events
    assert any(x["event"] == "link.up" and x["peer_id"] == b_id for x in lines)


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_server_metrics_from_a_namespace_and_no_secret_in_any_log_line(lab, log_format):
    mesh = Mesh(lab, server_env={"SHADOWMESH_METRICS_TOKEN": TOKEN, "SHADOWMESH_LOG_FORMAT": log_format})
    tokens: list[str] = []
    made = mesh.server.token

    def token(public: bool = False) -> str:
        tokens.append(made(public=public))
        return tokens[-1]

    mesh.server.token = token  # type: ignore[method-assign]
    uk = mesh.node("uk", public=True, up_args=("--log-format", log_format, "--metrics-listen",
                                            f"127.0.0.1:{METRICS_PORT}"))
    belgium = mesh.node("belgium", up_args=("--log-format", log_format))
    mesh.wait_ping(belgium, uk, timeout=30)
    # an HTTP login with belgium's own key: a real session token, used once and once wrongly
    session = login(mesh, belgium)
    for bearer, expected in ((session, 200), (session[:-1] + "x", 401)):
        req = urllib.request.Request(f"{mesh.server.url}/api/peers/{uk.peer_id}",
                                     headers={"Authorization": f"Bearer {bearer}"})
        try:
            status = urllib.request.urlopen(req, timeout=10).status
        except urllib.error.HTTPError as exc:
            status = exc.code
        assert status == expected
    # meshadmin from a namespace (through the bridge, not loopback): the token, or nothing
    server_url = f"{mesh.server.agent_url}/metrics"
    assert scrape_in(uk.ns, server_url).strip() == "HTTP 401"
    assert scrape_in(uk.ns, server_url, TOKEN + "x").strip() == "HTTP 401"
    text = scrape_in(uk.ns, server_url, TOKEN)
    wait_for(lambda: samples(scrape_in(uk.ns, server_url, TOKEN))[
        ("shadowmesh_agents_online", (("network", "default"),))] == 2, 20, "both agents online")
    assert samples(text)[("shadowmesh_enrollments_total", ())] == 2
    # the enrolled agent's own metrics: the netmap and the server link
    mine = samples(scrape_in(uk.ns, f"http://127.0.0.1:{METRICS_PORT}/metrics"))
    assert mine[("shadowmesh_server_connected", ())] == 1 and mine[("shadowmesh_netmap_serial", ())] >= 2
    for node in (uk, belgium):
        node.stop()

    logs = {"server": mesh.server.log.read_text(errors="replace"),
            **{n.name: n.log_text() for n in (uk, belgium)}}
    secrets = [*tokens, *(t.split(".")[0] for t in tokens), session, TOKEN]
    for node in (uk, belgium):
        secrets += forms((node.state / "node.key").read_bytes())
    ca_seed = mesh.server.manage(
        "shell", "-c", "from meshadmin.mesh.models import Network; "
        "from meshadmin.mesh.pki import load_ca_key; "
        "print(load_ca_key(Network.objects.get(name='default')).private_bytes_raw().hex())").split()[-1]
    secrets += forms(bytes.fromhex(ca_seed))
    secrets.append(mesh.server.manage("shell", "-c", "from django.conf import settings; "
                                      "print(settings.SECRET_KEY)").split()[-1])
    assert all(len(s) >= 16 for s in secrets)
    for where, text in logs.items():
        assert text.strip(), f"{where} logged nothing: the check would prove nothing"
        for secret in secrets:
            assert secret not in text, f"a secret in the {where} log ({log_format})"
        if log_format == "json":  # every log line; Daphne's access log is its own text on stdout
            for line in records(text):
                assert {"timestamp", "level", "logger", "message", "event"} <= set(json.loads(line)), where
    if log_format == "json":
        server_events = {json.loads(x).get("event") for x in records(logs["server"])}
        assert "agent.connected" in server_events
        agent_lines = [json.loads(x) for x in logs["belgium"].splitlines()]
        assert {x["node"] for x in agent_lines} == {"belgium"}
        assert any(x["event"] == "netmap.applied" for x in agent_lines)
    else:
        assert re.search(r"INFO nodeagent: agent belgium \([0-9a-f]{40}\) up: ", logs["belgium"])


ACCESS_LOG = re.compile(r'^\S+:\d+ - - \[[^]]+\] "')  # Daphne's access log (docs/operations.md#log-format)


def records(text: str) -> list[str]:
    return [line for line in text.splitlines() if not ACCESS_LOG.match(line)]


def forms(raw: bytes) -> list[str]:
    return [raw.hex(), base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode().rstrip("=")]


def login(mesh: Mesh, node) -> str:
    """POST /api/auth/challenge and /api/auth/verify with the node's own key (from its state dir)."""
    from cryptography.hazmat.primitives.asymmetric import mldsa

    from nodeagent.protocol.constants import CONTEXT_AUTH

    key = mldsa.MLDSA87PrivateKey.from_seed_bytes((node.state / "node.key").read_bytes())

    def post(path: str, body: dict) -> dict:
        req = urllib.request.Request(mesh.server.url + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    challenge = post("/api/auth/challenge", {"peer_id": node.peer_id})["challenge"]
    signature = key.sign(base64.b64decode(challenge), CONTEXT_AUTH)
    return post("/api/auth/verify", {"peer_id": node.peer_id, "challenge": challenge,
                                     "signature": base64.b64encode(signature).decode()})["session_token"]
