"""The Celery application. Tasks live in each app's tasks.py and are enqueued through
ccgsc.jobs.enqueue, which defers them until the surrounding transaction commits."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ccgsc.settings")

app = Celery("ccgsc")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(related_name="jobs")
