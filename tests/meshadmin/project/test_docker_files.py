"""docker/: every compose command names something that exists; every setting is in .env.example.

No Docker engine runs here, so these read the files and import what they name.
"""

import ast
import importlib
import json
import re
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import yaml
from celery import Celery
from django.core.management import get_commands

ROOT = Path(__file__).resolve().parents[3]
DOCKER = ROOT / "docker"
OUR_VARS = re.compile(r"^(SHADOWMESH_\w+|DATABASE_URL|REDIS_URL)$")


def _compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yml").read_text())


def _dockerfile_cmd() -> list[str]:
    line = next(ln for ln in (DOCKER / "Dockerfile").read_text().splitlines() if ln.startswith("CMD "))
    return json.loads(line[4:])


def _commands() -> list[tuple[str, list[str]]]:
    found = [("Dockerfile CMD", _dockerfile_cmd())]
    for name, service in _compose()["services"].items():
        if "command" in service and "build" in service:  # postgres/redis run upstream images
            assert isinstance(service["command"], list), f"{name}: use the exec (list) form"
            found.append((name, service["command"]))
    return found


def _import_target(spec: str):
    module, _, attr = spec.partition(":")
    loaded = importlib.import_module(module)
    return getattr(loaded, attr) if attr else loaded


def _console_script_exists(name: str) -> bool:
    return any(ep.name == name for ep in entry_points(group="console_scripts"))


def test_compose_has_the_five_services_built_from_our_image():
    services = _compose()["services"]
    assert {"postgres", "redis", "web", "worker", "beat"} <= set(services)
    for name in ("web", "worker", "beat", "migrate"):
        assert services[name]["build"]["dockerfile"] == "docker/Dockerfile"
        assert services[name]["env_file"] == ".env"


@pytest.mark.parametrize(("where", "command"), _commands(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_command_names_an_entry_point_or_module_that_exists(where, command):
    program = command[0]
    if program == "daphne":
        assert _console_script_exists("daphne"), where
        app = next(arg for arg in command[1:] if ":" in arg and not arg.startswith("-"))
        target = _import_target(app)
        assert callable(target), f"{where}: {app} is not an ASGI application"
    elif program == "celery":
        assert _console_script_exists("celery"), where
        app = command[command.index("-A") + 1]
        assert isinstance(_import_target(app), Celery), f"{where}: {app} is not a Celery app"
        assert command[command.index("-A") + 2] in {"worker", "beat"}, where
    elif program == "python":
        assert command[1] == "manage.py" and (ROOT / "manage.py").is_file(), where
        assert command[2] in get_commands(), f"{where}: no management command {command[2]}"
    else:
        pytest.fail(f"{where}: unexpected program {program!r}")


def test_the_beat_schedule_names_registered_tasks():
    from django.conf import settings

    from meshadmin.celery import app

    for entry in settings.CELERY_BEAT_SCHEDULE.values():
        module = entry["task"].rpartition(".")[0]
        importlib.import_module(module)  # the worker finds it the same way (autodiscovery of tasks.py)
        assert entry["task"] in app.tasks, entry["task"]


def test_every_file_the_dockerfile_copies_exists():
    for line in (DOCKER / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), f"Dockerfile copies missing {source}"


def _env_reads() -> set[str]:
    """Every environment variable of ours that meshadmin code reads (env_* helpers or os.environ)."""
    names = set()
    for path in (ROOT / "meshadmin").rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            first = node.args[0]
            if not (isinstance(first, ast.Constant) and isinstance(first.value, str)):
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name.startswith("env_") or name in {"getenv", "get"}:
                if OUR_VARS.match(first.value):
                    names.add(first.value)
    return names


def test_every_environment_variable_is_listed_in_env_example():
    from meshadmin.env import REGISTRY

    listed = {
        m.group(1)
        for m in re.finditer(r"^#?\s*([A-Z][A-Z0-9_]*)=", (DOCKER / ".env.example").read_text(), re.M)
    }
    read = _env_reads() | set(REGISTRY)
    assert {
        "DATABASE_URL",
        "REDIS_URL",
        "SHADOWMESH_DATA_DIR",
        "SHADOWMESH_ALLOWED_HOSTS",
        "SHADOWMESH_DEBUG",
    } <= read
    missing = read - listed
    assert not missing, f"not in docker/.env.example: {sorted(missing)}"


# --- the TLS proxy in front of web (docs/operations.md#tls-proxy); run for real in test_tls_proxy.py


def _env_example() -> dict[str, str]:
    return dict(re.findall(r"^([A-Z][A-Z0-9_]*)=(.*)$", (DOCKER / ".env.example").read_text(), re.M))


def test_only_the_tls_proxy_is_published_and_web_sits_behind_it():
    services = _compose()["services"]
    proxy, web = services["proxy"], services["web"]
    assert proxy["image"].startswith("nginx:")
    assert "443:443" in proxy["ports"]
    assert "ports" not in web, "web is reached only through the proxy"
    assert "./nginx.conf:/etc/nginx/nginx.conf:ro" in proxy["volumes"]
    assert "edge" in web["networks"] and "edge" in proxy["networks"]
    daphne_port = web["command"][web["command"].index("-p") + 1]
    conf = (DOCKER / "nginx.conf").read_text()
    upstream = re.search(r"upstream meshadmin \{\s*server ([\w.-]+):(\d+);", conf)
    assert upstream and upstream.groups() == ("web", daphne_port)


def test_web_believes_proxy_headers_from_the_proxys_address_only():
    import ipaddress

    compose = _compose()
    proxy_ip = compose["services"]["proxy"]["networks"]["edge"]["ipv4_address"]
    subnet = compose["networks"]["edge"]["ipam"]["config"][0]["subnet"]
    assert ipaddress.ip_address(proxy_ip) in ipaddress.ip_network(subnet)
    env = _env_example()
    assert env["SHADOWMESH_TRUSTED_PROXIES"] == proxy_ip
    assert env["SHADOWMESH_TRUST_PROXY_HTTPS"] == "1" and env["SHADOWMESH_PUBLIC_URL"].startswith("https://")


def test_the_proxy_sets_the_headers_django_and_websockets_need():
    conf = (DOCKER / "nginx.conf").read_text()
    location = re.search(r"location / \{(.*?)\n        \}", conf, re.S).group(1)
    directives = {tuple(line.split(None, 2)[1:3]) for line in location.splitlines()
                  if line.strip().startswith("proxy_set_header")}
    assert ("Host", "$http_host;") in directives
    assert ("X-Forwarded-For", "$remote_addr;") in directives  # replaced, not appended to the client's
    assert ("X-Forwarded-Proto", "$scheme;") in directives
    assert ("Upgrade", "$http_upgrade;") in directives
    assert ("Connection", "$connection_upgrade;") in directives
    assert "proxy_http_version 1.1;" in location
    assert re.search(r"listen 443 ssl;", conf) and "ssl_protocols TLSv1.2 TLSv1.3;" in conf
    assert re.search(r"listen 80;\s*return 308 https://", conf)


# --- the local build (scripts/containers.py, docs/containers.md): no image registry, Debian's packages


def _script():
    """scripts/containers.py, imported for its constants (importing it runs nothing)."""
    import importlib.util
    import sys

    sys.path.insert(0, str(ROOT / "scripts"))
    spec = importlib.util.spec_from_file_location("containers_script", ROOT / "scripts" / "containers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _ComposeLoader(yaml.SafeLoader):
    """YAML with compose's merge tags: `!override` keeps its value, `!reset` stands for None."""


_ComposeLoader.add_constructor("!override", lambda loader, node: (
    loader.construct_sequence(node, deep=True) if isinstance(node, yaml.SequenceNode)
    else loader.construct_mapping(node, deep=True) if isinstance(node, yaml.MappingNode)
    else loader.construct_scalar(node)))
_ComposeLoader.add_constructor("!reset", lambda loader, node: None)


def _local() -> dict:
    return yaml.load((DOCKER / "compose.local.yml").read_text(), Loader=_ComposeLoader)


def test_the_dockerfile_base_is_a_build_arg_that_defaults_to_the_registry_image():
    lines = [ln for ln in (DOCKER / "Dockerfile").read_text().splitlines() if ln and not ln.startswith("#")]
    froms = [ln for ln in lines if ln.startswith("FROM ")]
    assert froms == ["FROM ${BASE_IMAGE}"]
    arg = lines.index("ARG BASE_IMAGE=python:3.13-slim")  # `docker compose build` with a registry
    assert arg < lines.index(froms[0])


def test_the_local_override_names_only_services_and_networks_of_compose_yml():
    base, local = _compose(), _local()
    assert set(local["services"]) <= set(base["services"]), "the override adds no service"
    assert set(local["networks"]) <= set(base["networks"])
    for name, service in local["services"].items():
        for net in service.get("networks", {}):
            assert net in base["services"][name].get("networks", ["default"]), (name, net)


def test_every_registry_image_is_replaced_by_a_local_one_and_the_server_builds_on_the_local_base():
    base, local, script = _compose(), _local(), _script()
    for name, service in base["services"].items():
        mine = local["services"].get(name, {})
        if "build" in service:
            assert mine["image"] == script.SERVER_IMAGE, name
            assert mine["build"]["dockerfile"] == service["build"]["dockerfile"] == "docker/Dockerfile"
            assert mine["build"]["context"] == service["build"]["context"]
            # the script builds it with podman directly: the same base as the compose file says
            assert mine["build"]["args"] == {"BASE_IMAGE": script.IMAGES["python"]}, name
        else:
            assert "/" not in service["image"].split(":")[0], f"{name}: compose.yml names a registry image"
            assert mine["image"] in script.IMAGES.values(), f"{name}: no local image in compose.local.yml"


def test_every_local_image_is_built_from_a_containerfile_on_the_imported_base():
    script = _script()
    for name in script.IMAGES:
        path = DOCKER / "local" / f"{name}.Containerfile"
        lines = [ln for ln in path.read_text().splitlines() if ln and not ln.startswith("#")]
        assert lines[:2] == ["ARG BASE", "FROM ${BASE}"], path
        for line in lines:
            if line.startswith("COPY "):
                for source in line.split()[1:-1]:
                    assert (DOCKER / "local" / source).is_file(), f"{path.name} copies missing {source}"


def test_the_local_stack_publishes_the_proxy_on_loopback_only_and_uses_the_scripts_networks():
    local, script = _local(), _script()
    proxy = local["services"]["proxy"]
    cfg = script.cfg
    assert proxy["ports"] == [f"127.0.0.1:{cfg.HTTPS_PORT}:443", f"127.0.0.1:{cfg.HTTP_PORT}:80"]
    assert proxy["networks"]["edge"]["ipv4_address"].startswith("${LOCAL_PROXY_IP")
    for key, network in local["networks"].items():
        assert network == {"external": True, "name": script.NETWORKS[key]}
    assert local["x-podman"] == {"in_pod": False}


# --- monitoring: docker/prometheus.yml and docker/grafana-dashboard.json name only metrics that exist

AGENT_DOC = {
    "node": {"peer_id": "ab" * 20, "name": "uk", "overlay_ip": "10.10.10.1", "uptime_s": 1.0,
             "mode": "enrolled", "serial": 1, "server": "connected", "drops": {"replay": 0},
             "relay": {"forwarded_frames": 0, "forwarded_bytes": 0, "rate_limited": 0, "no_destination": 0,
                       "handshakes": 0},
             "tun_gro": {"writes": 0, "merged_segments": 0, "errors": 0},
             "handshake": {"crypto": {"signatures": 0}, "refused_in_links": {"link_rate": 0},
                           "door": {"connections": 0, "rate_limited": 0, "displaced": 0, "cut": 0,
                                    "refused": {"bad_signature": 0}, "answered": 0, "waiting": 0}}},
    "peers": [{"peer_id": "cd" * 20, "name": "be", "overlay_ip": "10.10.10.2", "path": "direct",
               "rtt_ms": 1.0, "tx_frames": 0, "rx_frames": 0, "tx_bytes": 0, "rx_bytes": 0, "lost_frames": 0,
               "replayed_frames": 0, "bad_frames": 0, "last_handshake_s": 1.0, "relayed_frames": 0,
               "handshakes": 0, "control": "up", "path_changes": 0, "handshake_timeouts": 0,
               "handshake_failures": {"key_confirmation_failed": 0}, "handshake_give_ups": 0}],
}


def _sample_names(text: str) -> set[str]:
    """The sample names each family of the text has or would have (a labelled counter that has
    counted nothing yet is in the text with its HELP and TYPE only)."""
    from prometheus_client.parser import text_string_to_metric_families

    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    return {fam.name + end for fam in text_string_to_metric_families(text) for end in suffixes[fam.type]}


@pytest.fixture
def existing_metrics(db) -> set[str]:
    """Every sample name the server and an agent serve: a real scrape of each, plus the Celery queue
    gauge, which the server exports only with Redis (meshadmin/metrics/state.py)."""
    from meshadmin.metrics import state
    from meshadmin.metrics.endpoint import _render
    from nodeagent.metrics.http import render

    names = _sample_names(_render().decode()) | _sample_names(render(AGENT_DOC).decode())
    assert f'"{state.CELERY_QUEUE_METRIC}"' in (ROOT / "meshadmin/metrics/state.py").read_text()
    return names | {state.CELERY_QUEUE_METRIC}


def _dashboard_exprs() -> list[str]:
    dash = json.loads((DOCKER / "grafana-dashboard.json").read_text())
    return [t["expr"] for panel in dash["panels"] for t in panel.get("targets", [])]


def test_the_grafana_dashboard_parses_and_names_only_metrics_that_exist(existing_metrics):
    exprs = _dashboard_exprs()
    assert len(exprs) >= 20
    used = {name for e in exprs for name in re.findall(r"\b(shadowmesh_\w+)", e)}
    assert used, "the dashboard names no metric"
    assert not used - existing_metrics, f"not served by anything: {sorted(used - existing_metrics)}"
    # both the server and the agents are on it
    assert "shadowmesh_netmap_push_last_agent_seconds_bucket" in used
    assert "shadowmesh_peer_rx_bytes_total" in used


def test_the_prometheus_config_parses_and_scrapes_both_with_the_token_for_the_server():
    conf = yaml.safe_load((DOCKER / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in conf["scrape_configs"]}
    server, agents = jobs["shadowmesh-server"], jobs["shadowmesh-agents"]
    assert server["metrics_path"] == agents["metrics_path"] == "/metrics"
    assert server["authorization"]["type"] == "Bearer"
    assert server["authorization"]["credentials_file"] == "/etc/prometheus/metrics-token"
    web = _compose()["services"]["web"]["command"]
    assert server["static_configs"][0]["targets"] == [f"web:{web[web.index('-p') + 1]}"]
    # Prometheus runs from an override of its own: compose.yml stays free of it (the local build
    # replaces every image of compose.yml), and the override adds only that service
    assert "prometheus" not in _compose()["services"]
    monitoring = yaml.safe_load((DOCKER / "compose.monitoring.yml").read_text())
    assert set(monitoring) == {"services"} and set(monitoring["services"]) == {"prometheus"}
    prometheus = monitoring["services"]["prometheus"]
    assert prometheus["depends_on"] == ["web"]
    assert "./prometheus.yml:/etc/prometheus/prometheus.yml:ro" in prometheus["volumes"]
    assert "./metrics-token:/etc/prometheus/metrics-token:ro" in prometheus["volumes"]
    assert all(p.startswith("127.0.0.1:") for p in prometheus["ports"])
    # the job names the dashboard filters on
    assert {re.search(r'job="([\w-]+)"', e).group(1) for e in _dashboard_exprs()} == set(jobs)
