"""The Celery application: `celery -A meshadmin.celery:app worker` / `... beat`.

Configuration comes from Django settings (CELERY_* names). Without REDIS_URL tasks run eagerly
in-process, so the embedded default needs no worker. The periodic jobs are in
settings.CELERY_BEAT_SCHEDULE.
"""

import logging.config
import os

from celery import Celery
from celery.signals import setup_logging

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "meshadmin.settings")

app = Celery("meshadmin")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


def _json_logging(loglevel: int | str | None = None, **kwargs: object) -> None:
    """SHADOWMESH_LOG_FORMAT=json: the worker and beat log through settings.LOGGING (one JSON
    object per line) instead of configuring Celery's own text format; Celery's loggers keep the
    level given with --loglevel."""
    from django.conf import settings

    logging.config.dictConfig(settings.LOGGING)
    logging.getLogger("celery").setLevel(loglevel or logging.INFO)


def _connect_logging() -> None:
    from django.conf import settings

    if settings.LOG_FORMAT == "json":
        setup_logging.connect(_json_logging, weak=False)


_connect_logging()
