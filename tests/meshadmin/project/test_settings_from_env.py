"""meshadmin/settings.py reads everything from the environment and fails loudly on bad values."""

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
SHOW = """
import json, django
from django.conf import settings
django.setup()
db = settings.DATABASES["default"]
print(json.dumps(default=lambda f: f.__qualname__, obj={
    "key": settings.SECRET_KEY, "debug": settings.DEBUG, "eager": settings.CELERY_TASK_ALWAYS_EAGER,
    "layer": settings.CHANNEL_LAYERS["default"]["BACKEND"], "cache": settings.CACHES["default"]["BACKEND"],
    "db": db["ENGINE"], "dbname": str(db["NAME"]), "pool": db.get("OPTIONS", {}).get("pool"),
    "broker": settings.CELERY_BROKER_URL, "hosts": settings.ALLOWED_HOSTS,
    "layer_config": settings.CHANNEL_LAYERS["default"].get("CONFIG"),
    "limits": settings.SHADOWMESH_RATE_LIMITS,
}))
"""


def _run(tmp_path, code=None, args=None, **env):
    base = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "DJANGO_SETTINGS_MODULE": "meshadmin.settings",
        "SHADOWMESH_DATA_DIR": str(tmp_path),
    }
    cmd = [sys.executable, *(args or ["-c", code or SHOW])]
    return subprocess.run(cmd, cwd=ROOT, env={**base, **env}, capture_output=True, text=True, timeout=120)


def _settings(tmp_path, **env) -> dict:
    result = _run(tmp_path, **env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_embedded_default_needs_no_services(tmp_path):
    shown = _settings(tmp_path)
    assert shown["db"] == "django.db.backends.sqlite3"
    assert shown["dbname"] == str(tmp_path / "db.sqlite3")
    assert shown["layer"] == "meshadmin.realtime.layers.LocalChannelLayer"
    assert shown["cache"].endswith("LocMemCache")
    assert shown["eager"] is True
    assert shown["debug"] is False


def test_database_url_and_redis_url_switch_to_postgresql_and_redis(tmp_path):
    shown = _settings(
        tmp_path, DATABASE_URL="postgres://u:p@127.0.0.1:5432/mesh", REDIS_URL="redis://127.0.0.1:6379/0"
    )
    assert shown["db"] == "django.db.backends.postgresql"
    assert shown["dbname"] == "mesh"
    assert shown["pool"]["max_size"] == 20
    assert shown["pool"]["check"] == "ConnectionPool.check_connection"  # a dead connection is not handed out
    assert shown["layer"] == "channels_redis.core.RedisChannelLayer"
    assert shown["cache"].endswith("RedisCache")
    assert shown["broker"] == "redis://127.0.0.1:6379/0"
    assert shown["eager"] is False
    assert shown["layer_config"]["hosts"][0]["address"] == "redis://127.0.0.1:6379/0"


LAYER_POOL = """
import json, django
django.setup()
from channels.layers import get_channel_layer
from channels_redis.utils import create_pool
layer = get_channel_layer()
pool = create_pool(layer.hosts[0])  # as the layer makes its connection pools
print(json.dumps({"socket_timeout": pool.connection_kwargs.get("socket_timeout"),
                  "blocking_pop_s": layer.brpop_timeout, "max_connections": pool.max_connections}))
"""


def test_the_redis_channel_layer_reads_longer_than_its_blocking_pop_waits(tmp_path):
    """redis-py 8 reads with a 5 s timeout by default, as long as channels_redis's BZPOPMIN blocks:
    an idle receive would raise TimeoutError and take down a consumer every 5 s."""
    result = _run(tmp_path, code=LAYER_POOL, DATABASE_URL="postgres://u:p@127.0.0.1:5432/mesh",
                  REDIS_URL="redis://127.0.0.1:6379/0")
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout.strip().splitlines()[-1])
    assert shown["socket_timeout"] is not None
    assert shown["socket_timeout"] > shown["blocking_pop_s"]


def test_the_redis_channel_layer_pool_holds_a_reconnect_storm(tmp_path):
    """redis-py 8 caps an asyncio pool at 100 connections and refuses the 101st command at once
    (MaxConnectionsError): a restart's thousands of group_adds killed consumers that way."""
    result = _run(tmp_path, code=LAYER_POOL, DATABASE_URL="postgres://u:p@127.0.0.1:5432/mesh",
                  REDIS_URL="redis://127.0.0.1:6379/0")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1])["max_connections"] >= 1000


def test_the_agent_limits_have_defaults_and_read_the_environment(tmp_path):
    limits = _settings(tmp_path)["limits"]
    assert (limits["agent_connect"], limits["agent_login"]) == (60, 30)
    limits = _settings(tmp_path, SHADOWMESH_AGENT_CONNECT_RATE="5", SHADOWMESH_AGENT_LOGIN_RATE="0")["limits"]
    assert (limits["agent_connect"], limits["agent_login"]) == (5, 0)  # 0 = unlimited


def test_the_secret_key_is_generated_once_with_mode_0600(tmp_path):
    first = _settings(tmp_path)["key"]
    second = _settings(tmp_path)["key"]
    assert first == second and len(first) >= 50
    key_file = tmp_path / "secret_key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert _settings(tmp_path, SHADOWMESH_SECRET_KEY="k" * 60)["key"] == "k" * 60


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SHADOWMESH_DEBUG": "yes"}, "SHADOWMESH_DEBUG"),
        ({"SHADOWMESH_DB_POOL_MAX_SIZE": "many"}, "SHADOWMESH_DB_POOL_MAX_SIZE"),
        ({"DATABASE_URL": "mysql://u@h/db"}, "DATABASE_URL"),
        ({"REDIS_URL": "http://127.0.0.1"}, "REDIS_URL"),
        ({"SHADOWMESH_SECRET_KEY": "short"}, "SHADOWMESH_SECRET_KEY"),
        ({"SHADOWMESH_TRUSTED_PROXIES": "127.0.0.1,proxy.example"}, "SHADOWMESH_TRUSTED_PROXIES"),
        ({"SHADOWMESH_AUDIT_RETENTION_DAYS": "-1"}, "SHADOWMESH_AUDIT_RETENTION_DAYS"),
        ({"SHADOWMESH_AGENT_CONNECT_RATE": "lots"}, "SHADOWMESH_AGENT_CONNECT_RATE"),
        ({"SHADOWMESH_AGENT_LOGIN_RATE": "-1"}, "SHADOWMESH_AGENT_LOGIN_RATE"),
        ({"SHADOWMESH_EPHEMERAL_AFTER_S": "60"}, "SHADOWMESH_EPHEMERAL_AFTER_S must be >= 120"),
        (
            {"SHADOWMESH_PRODUCTION": "1", "SHADOWMESH_DEBUG": "1", "SHADOWMESH_ALLOWED_HOSTS": "a.example"},
            "DEBUG",
        ),
        ({"SHADOWMESH_PRODUCTION": "1"}, "SHADOWMESH_ALLOWED_HOSTS"),
        ({"SHADOWMESH_PRODUCTION": "1", "SHADOWMESH_ALLOWED_HOSTS": "*"}, "SHADOWMESH_ALLOWED_HOSTS"),
    ],
)
def test_bad_values_stop_the_server_naming_the_variable(tmp_path, env, message):
    result = _run(tmp_path, **env)
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert message in result.stderr


def test_production_settings_pass_the_deploy_check_with_no_warnings(tmp_path):
    result = _run(
        tmp_path,
        args=["manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        SHADOWMESH_PRODUCTION="1",
        SHADOWMESH_ALLOWED_HOSTS="mesh.example.com",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_the_development_settings_do_fail_the_deploy_check(tmp_path):
    result = _run(tmp_path, args=["manage.py", "check", "--deploy", "--fail-level", "WARNING"])
    assert result.returncode != 0
    assert "security.W004" in result.stderr + result.stdout


@pytest.mark.parametrize(("env", "named"), [
    ({"SHADOWMESH_METRICS_TOKEN": "short"}, "SHADOWMESH_METRICS_TOKEN"),
    ({"SHADOWMESH_LOG_FORMAT": "xml"}, "SHADOWMESH_LOG_FORMAT"),
    ({"PROMETHEUS_MULTIPROC_DIR": "/nonexistent/metrics"}, "PROMETHEUS_MULTIPROC_DIR"),
])
def test_bad_metrics_and_log_settings_stop_the_server_naming_the_variable(tmp_path, env, named):
    result = _run(tmp_path, **env)
    assert result.returncode != 0 and named in result.stderr


def test_an_empty_multiprocess_dir_means_single_process_mode(tmp_path):
    code = ("import os, django; django.setup(); from meshadmin.metrics.endpoint import multiprocess_dir; "
            "from prometheus_client import values; "
            "print(multiprocess_dir(), values.ValueClass.__name__, 'PROMETHEUS_MULTIPROC_DIR' in os.environ)")
    result = _run(tmp_path, code=code, PROMETHEUS_MULTIPROC_DIR="")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["None", "MutexValue", "False"]


def test_json_log_format_gives_one_json_object_per_line(tmp_path):
    code = ("import json, logging, django; django.setup(); "
            "logging.getLogger('meshadmin.x').warning('hello %s', 'there', "
            "extra={'event': 'x.y', 'peer_id': 'ab'})")
    result = _run(tmp_path, code=code, SHADOWMESH_LOG_FORMAT="json")
    assert result.returncode == 0, result.stderr
    line = json.loads(result.stderr.strip().splitlines()[-1])
    assert line["message"] == "hello there" and line["event"] == "x.y" and line["peer_id"] == "ab"
    assert line["level"] == "WARNING" and line["logger"] == "meshadmin.x" and line["timestamp"].endswith("Z")
    plain = _run(tmp_path, code=code).stderr.strip().splitlines()[-1]
    assert plain.endswith("WARNING meshadmin.x hello there")  # the default format is unchanged
