"""meshadmin settings: everything comes from the environment (see meshadmin/env.py).

Embedded default (no variables set): SQLite in SHADOWMESH_DATA_DIR, the in-memory channel layer,
a local-memory cache and Celery tasks run eagerly in-process. DATABASE_URL=postgres://... switches
to PostgreSQL (psycopg 3 with a connection pool); REDIS_URL=redis://... switches the channel
layer, the cache (rate limits) and the Celery broker to Redis.

SHADOWMESH_PRODUCTION=1 turns on the deployment hardening (secure cookies, HSTS, SSL redirect) so
that `manage.py check --deploy --fail-level WARNING` reports nothing; it refuses DEBUG and an
empty SHADOWMESH_ALLOWED_HOSTS.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from django.utils.csp import CSP

from meshadmin.client_address import parse_trusted_proxies
from meshadmin.datadir import private_dir, private_file, write_private_file
from meshadmin.env import env_bool, env_int, env_list, env_path, env_str
from meshadmin.gc_tuning import DEFAULT_THRESHOLD as _GC_THRESHOLD

BASE_DIR = Path(__file__).resolve().parent.parent

DATA_DIR = env_path(
    "SHADOWMESH_DATA_DIR",
    BASE_DIR / "data",
    "Directory for the embedded SQLite database and the generated secret key (default: <project>/data)",
)
private_dir(DATA_DIR)  # 0700 whatever the umask (meshadmin/datadir.py)

PRODUCTION = env_bool(
    "SHADOWMESH_PRODUCTION", False, "1 = deployment hardening: secure cookies, HSTS, SSL redirect, no DEBUG"
)
DEBUG = env_bool("SHADOWMESH_DEBUG", False, "1 = Django debug mode (never in production)")
if PRODUCTION and DEBUG:
    raise ImproperlyConfigured("SHADOWMESH_DEBUG and SHADOWMESH_PRODUCTION cannot both be on")


def _load_secret_key() -> str:
    """SHADOWMESH_SECRET_KEY, or a key generated once into DATA_DIR/secret_key (mode 0600)."""
    from_env = env_str(
        "SHADOWMESH_SECRET_KEY", None, "Django SECRET_KEY; unset = generated once into DATA_DIR/secret_key"
    )
    if from_env is not None:
        if len(from_env) < 50:
            raise ImproperlyConfigured("SHADOWMESH_SECRET_KEY must be at least 50 characters")
        return from_env
    path = DATA_DIR / "secret_key"
    key = secrets.token_urlsafe(50)
    if write_private_file(path, (key + "\n").encode()):
        return key
    private_file(path)  # one written before the data directory was private
    key = path.read_text().strip()
    if len(key) < 50:
        raise ImproperlyConfigured(f"{path} is too short; delete it to regenerate")
    return key


SECRET_KEY = _load_secret_key()
SECRET_KEY_FALLBACKS = env_list(
    "SHADOWMESH_SECRET_KEY_FALLBACKS", [], "Comma-separated previous secret keys, kept while rotating"
)

ALLOWED_HOSTS = env_list(
    "SHADOWMESH_ALLOWED_HOSTS",
    [] if PRODUCTION else ["localhost", "127.0.0.1", "[::1]", "testserver"],
    "Comma-separated host names this server answers to (required in production)",
)
if PRODUCTION and (not ALLOWED_HOSTS or "*" in ALLOWED_HOSTS):
    raise ImproperlyConfigured("SHADOWMESH_ALLOWED_HOSTS must list explicit host names in production")
CSRF_TRUSTED_ORIGINS = env_list(
    "SHADOWMESH_CSRF_TRUSTED_ORIGINS", [], "Comma-separated origins (https://host) trusted for admin POSTs"
)

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "meshadmin.mesh",
    "meshadmin.dashboard",
    "meshadmin.realtime",
    "meshadmin.telemetry",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "meshadmin.middleware.BodySizeLimitMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django.middleware.csp.ContentSecurityPolicyMiddleware",
]

ROOT_URLCONF = "meshadmin.urls"
LOGIN_URL = "dashboard:login"
LOGIN_REDIRECT_URL = "dashboard:overview"
LOGOUT_REDIRECT_URL = "dashboard:login"
ASGI_APPLICATION = "meshadmin.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- database
DATABASE_URL = env_str(
    "DATABASE_URL", None, "postgres://user:password@host:5432/name; unset = SQLite in SHADOWMESH_DATA_DIR"
)
DB_POOL_MAX_SIZE = env_int(
    "SHADOWMESH_DB_POOL_MAX_SIZE", 20, "PostgreSQL connection pool size per process (0 = no pool)"
)
DATABASES: dict[str, Mapping[str, object]]  # the two branches build different shapes
if DATABASE_URL is None:
    private_file(DATA_DIR / "db.sqlite3", sqlite=True)  # before SQLite creates it with the umask
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": DATA_DIR / "db.sqlite3",
            "OPTIONS": {"transaction_mode": "IMMEDIATE", "timeout": 20},
        }
    }
else:
    if not DATABASE_URL.startswith(("postgres://", "postgresql://", "sqlite://")):
        raise ImproperlyConfigured("DATABASE_URL must be a postgres:// (or sqlite://) URL")
    _db = dj_database_url.parse(DATABASE_URL, conn_max_age=0)
    if _db["ENGINE"] == "django.db.backends.postgresql" and DB_POOL_MAX_SIZE > 0:
        from psycopg_pool import ConnectionPool

        # `check`: a connection is tried (one empty query) before it is handed out, so the idle
        # connections a PostgreSQL restart ended are replaced instead of failing the next request.
        # `timeout`: how long a request waits for a working connection (while PostgreSQL is down,
        # how long a request takes to fail).
        _db.setdefault("OPTIONS", {})["pool"] = {"min_size": 1, "max_size": DB_POOL_MAX_SIZE, "timeout": 30,
                                                 "check": ConnectionPool.check_connection}
    DATABASES = {"default": _db}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: channel layer, cache, Celery broker
REDIS_URL = env_str(
    "REDIS_URL", None, "redis://host:6379/0; unset = in-memory channel layer, local cache, eager Celery"
)
CHANNEL_LAYERS: dict[str, dict[str, object]]
REDIS_LAYER_SOCKET_TIMEOUT_S = 30.0  # > channels_redis's 5 s blocking pop; see below
REDIS_LAYER_MAX_CONNECTIONS = 1000  # per process; redis-py 8's pool refuses (not waits) past 100
if REDIS_URL is None:
    CHANNEL_LAYERS = {"default": {"BACKEND": "meshadmin.realtime.layers.LocalChannelLayer"}}
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    CELERY_BROKER_URL = "memory://"
    CELERY_TASK_ALWAYS_EAGER = True
    CELERY_TASK_EAGER_PROPAGATES = True
else:
    if not REDIS_URL.startswith(("redis://", "rediss://", "unix://")):
        raise ImproperlyConfigured("REDIS_URL must be a redis:// URL")
    # redis-py 8 reads with a 5 s socket timeout by default, the same 5 s the channel layer's
    # blocking pop (BZPOPMIN) waits for a message: an idle process's receive then raises
    # TimeoutError and takes down whichever consumer was waiting (one agent socket every 5 s per
    # process, closed 1011). The read timeout must outlast the blocking pop. redis-py 8 also caps
    # an asyncio pool at 100 connections and raises MaxConnectionsError past it: a reconnect storm
    # (every agent socket's group_add at once) killed hundreds of consumers that way.
    CHANNEL_LAYERS = {
        "default": {"BACKEND": "channels_redis.core.RedisChannelLayer",
                    "CONFIG": {"hosts": [{"address": REDIS_URL,
                                          "socket_timeout": REDIS_LAYER_SOCKET_TIMEOUT_S,
                                          "max_connections": REDIS_LAYER_MAX_CONNECTIONS}]}}
    }
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "shadowmesh",
        }
    }
    CELERY_BROKER_URL = REDIS_URL
    CELERY_TASK_ALWAYS_EAGER = False
CELERY_TASK_IGNORE_RESULT = True
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULE = {
    "purge-expired-peer-records": {
        "task": "meshadmin.mesh.tasks.purge_expired_peer_records",
        "schedule": 300.0,
    },
    "purge-expired-credentials": {
        "task": "meshadmin.mesh.tasks.purge_expired_credentials",
        "schedule": 3600.0,
    },
    "telemetry-rollup": {"task": "meshadmin.telemetry.tasks.rollup", "schedule": 60.0},
    "telemetry-prune": {"task": "meshadmin.telemetry.tasks.prune", "schedule": 600.0},
    "telemetry-sweep-presence": {"task": "meshadmin.telemetry.tasks.sweep_presence", "schedule": 15.0},
    "prune-audit-events": {"task": "meshadmin.mesh.tasks.prune_audit_events", "schedule": 3600.0},
    "reap-ephemeral-nodes": {"task": "meshadmin.mesh.tasks.reap_ephemeral_nodes", "schedule": 60.0},
}
# an ephemeral node (enrolled with an ephemeral token) is deleted once silent this long; longer
# than the 90 s after which a node whose server process died counts as offline
SHADOWMESH_EPHEMERAL_AFTER_S = env_int(
    "SHADOWMESH_EPHEMERAL_AFTER_S", 1800,
    "Seconds an ephemeral node may be silent before it is deleted", minimum=120)

# --- certificates, and the URL nodes use
SHADOWMESH_CERT_LIFETIME_S = env_int(
    "SHADOWMESH_CERT_LIFETIME_S", 365 * 86400,
    "Lifetime of node certificates in seconds (agents renew at two thirds)", minimum=10)
SHADOWMESH_PUBLIC_URL = env_str(
    "SHADOWMESH_PUBLIC_URL", None,
    "URL nodes use to reach this server (the dashboard's enroll command and QR code name it)")
if SHADOWMESH_PUBLIC_URL is not None:
    _public = urlsplit(SHADOWMESH_PUBLIC_URL)
    if _public.scheme not in ("http", "https") or not _public.hostname or _public.query or _public.fragment:
        raise ImproperlyConfigured(
            f"SHADOWMESH_PUBLIC_URL must be http(s)://host[:port][/path], not {SHADOWMESH_PUBLIC_URL!r}")
    SHADOWMESH_PUBLIC_URL = SHADOWMESH_PUBLIC_URL.rstrip("/")

# --- API limits
DATA_UPLOAD_MAX_MEMORY_SIZE = 64 * 1024  # also enforced as 413 by BodySizeLimitMiddleware
try:
    SHADOWMESH_TRUSTED_PROXIES = parse_trusted_proxies(env_list(
        "SHADOWMESH_TRUSTED_PROXIES", [],
        "Comma-separated addresses or prefixes of reverse proxies whose X-Forwarded-For is believed",
    ))
except ValueError as exc:
    raise ImproperlyConfigured(f"SHADOWMESH_TRUSTED_PROXIES: {exc}") from None
_AUTH_RATE = env_int("SHADOWMESH_AUTH_RATE", 120, "Auth challenge/verify requests per minute per address")
SHADOWMESH_RATE_LIMITS = {
    # per client address (meshadmin/client_address.py), per minute unless noted
    "enroll": env_int("SHADOWMESH_ENROLL_RATE", 30, "Enrollment requests per minute per client address"),
    "auth": _AUTH_RATE,
    "auth_peer": env_int(
        "SHADOWMESH_AUTH_PEER_RATE", 30, "Auth requests per minute from one address naming one peer id"
    ),
    "bearer": _AUTH_RATE,  # requests with a bad session token
    "agent_connect": env_int(
        "SHADOWMESH_AGENT_CONNECT_RATE", 60,
        "Agent websocket connections per minute per client address, less those that log in"
    ),
    # per node, per minute
    "agent_login": env_int(
        "SHADOWMESH_AGENT_LOGIN_RATE", 30, "Agent websocket logins per minute per node"
    ),
    # per node, per ENDPOINT_CHANGE_WINDOW_S (10 minutes)
    "endpoint_change": env_int(
        "SHADOWMESH_ENDPOINT_CHANGE_RATE", 10, "Endpoint record changes per node per 10 minutes"
    ),
}
SHADOWMESH_AGENT_STATS_BUDGET = env_int(
    "SHADOWMESH_AGENT_STATS_BUDGET", 250,
    "Counter reports per second one server process asks its agents for at most (0 = every 2 s)",
)
SHADOWMESH_GC_THRESHOLD = env_int(
    "SHADOWMESH_GC_THRESHOLD", _GC_THRESHOLD,
    "New objects between two collections of the youngest GC generation in a server process "
    "(0 = Python's defaults)",
)
SHADOWMESH_ALLOW_LOOPBACK_ENDPOINTS = env_bool(
    "SHADOWMESH_ALLOW_LOOPBACK_ENDPOINTS", False,
    "1 = accept loopback endpoint addresses from nodes (a lab where every agent runs on this host)",
)

# --- audit log
SHADOWMESH_AUDIT_RETENTION_DAYS = env_int(
    "SHADOWMESH_AUDIT_RETENTION_DAYS", 90, "Days audit events are kept (0 = forever)"
)

# --- passwords, i18n, static
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = (
    BASE_DIR / "staticfiles"
)  # filled by collectstatic (docker image); created so WhiteNoise finds it
STATIC_ROOT.mkdir(exist_ok=True)
STATICFILES_DIRS = [BASE_DIR / "static"] if (BASE_DIR / "static").is_dir() else []
WHITENOISE_USE_FINDERS = True

# --- security (always on; PRODUCTION adds the TLS-dependent parts)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# The dashboard has no inline script or style: scripts are files in static/js/, data goes through
# json_script; the enrollment QR code is inline SVG.
SECURE_CSP = {
    "default-src": [CSP.SELF],
    "script-src": [CSP.SELF],
    "style-src": [CSP.SELF],
    "img-src": [CSP.SELF, "data:"],
    "connect-src": [CSP.SELF],
    "object-src": [CSP.NONE],
    "base-uri": [CSP.NONE],
    "frame-ancestors": [CSP.NONE],
    "form-action": [CSP.SELF],
}
SESSION_COOKIE_HTTPONLY = True
# The reverse proxy in front (docker/nginx.conf, SHADOWMESH_TRUSTED_PROXIES above): its
# X-Forwarded-Proto sets the scheme, and is removed from every other connection (meshadmin/proxy.py,
# wrapped around the application in asgi.py).
if env_bool(
    "SHADOWMESH_TRUST_PROXY_HTTPS", False, "1 = trust X-Forwarded-Proto: https from the TLS proxy in front"
):
    if not SHADOWMESH_TRUSTED_PROXIES:
        raise ImproperlyConfigured("SHADOWMESH_TRUST_PROXY_HTTPS=1 needs SHADOWMESH_TRUSTED_PROXIES (the "
                                   "proxy's addresses): anyone else could send X-Forwarded-Proto")
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
if PRODUCTION:
    SECURE_SSL_REDIRECT = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int(
        "SHADOWMESH_HSTS_SECONDS", 31536000, "Strict-Transport-Security max-age in production", minimum=3600
    )
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True

# --- metrics (meshadmin/metrics/, docs/operations.md#server-metrics)
SHADOWMESH_METRICS_TOKEN = env_str(
    "SHADOWMESH_METRICS_TOKEN", None,
    "Bearer token that lets a scraper read /metrics from a non-loopback address; unset = loopback only")
if SHADOWMESH_METRICS_TOKEN is not None and len(SHADOWMESH_METRICS_TOKEN) < 16:
    raise ImproperlyConfigured("SHADOWMESH_METRICS_TOKEN must be at least 16 characters")
PROMETHEUS_MULTIPROC_DIR = env_str(
    "PROMETHEUS_MULTIPROC_DIR", None,
    "Directory shared by every server process of one host: /metrics then adds up all of their counters")
if PROMETHEUS_MULTIPROC_DIR is None:
    # prometheus-client turns multiprocess mode on when the variable merely exists, even empty
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
elif not Path(PROMETHEUS_MULTIPROC_DIR).is_dir():
    raise ImproperlyConfigured(f"PROMETHEUS_MULTIPROC_DIR: {PROMETHEUS_MULTIPROC_DIR} is not a directory")

LOG_LEVEL = env_str("SHADOWMESH_LOG_LEVEL", "INFO", "Log level for the meshadmin loggers (DEBUG, INFO, ...)")
LOG_FORMAT = env_str(
    "SHADOWMESH_LOG_FORMAT", "text", "Log lines as text (default) or json (one object per line)")
if LOG_FORMAT not in ("text", "json"):
    raise ImproperlyConfigured(f"SHADOWMESH_LOG_FORMAT must be text or json, not {LOG_FORMAT!r}")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
                   "json": {"()": "nodeagent.logs.JsonFormatter"}},
    "handlers": {"console": {"class": "logging.StreamHandler",
                             "formatter": "json" if LOG_FORMAT == "json" else "plain"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {"meshadmin": {"handlers": ["console"], "level": LOG_LEVEL, "propagate": False}},
}
