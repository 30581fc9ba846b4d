"""The Celery application: `celery -A meshadmin.celery:app worker` / `... beat`.

Configuration comes from Django settings (CELERY_* names). Without REDIS_URL tasks run eagerly
in-process, so the embedded default needs no worker. The periodic jobs are in
settings.CELERY_BEAT_SCHEDULE.
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "meshadmin.settings")

app = Celery("meshadmin")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
