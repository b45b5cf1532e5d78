"""Writes for kernels, campaigns and tasks, one module per concern. Keyword-only, atomic, and
each announces what it changed (campaigns.signals) after commit. Views, the API, the CLI and jobs
all call these.

- base: ServiceError, the platform's limits, this process's kernel sandbox, announcements
- blobs: content-addressed bytes
- kernels: upload (validation), delete
- creation: campaign_create
- tasks: tasks_add, the raw inserts of tasks and their replicas
- generators: the generator job, regenerating
- lifecycle: start, pause, resume, cancel, approval, completion
- reducer: the reducer job
- runs: synchronous runs (POST /api/v1/run): queueing one, telling who waits that it returned

The application's code imports from the module concerned; the names below are re-exported for
tests, scripts and the shell (`from campaigns import services; services.campaign_start(...)`).
"""

from campaigns.services.base import ServiceError, limits, sandbox_host
from campaigns.services.blobs import blob_put
from campaigns.services.creation import POLICY_FIELDS, campaign_create
from campaigns.services.generators import campaign_regenerate, run_generator
from campaigns.services.kernels import kernel_delete, kernel_get_or_upload, kernel_upload
from campaigns.services.lifecycle import (
    PAST,
    TRANSITIONS,
    campaign_cancel,
    campaign_check_complete,
    campaign_pause,
    campaign_resume,
    campaign_set_approved,
    campaign_start,
)
from campaigns.services.reducer import campaign_reduce, campaign_reduce_soon
from campaigns.services.tasks import tasks_add

__all__ = [
    "PAST",
    "POLICY_FIELDS",
    "TRANSITIONS",
    "ServiceError",
    "blob_put",
    "campaign_cancel",
    "campaign_check_complete",
    "campaign_create",
    "campaign_pause",
    "campaign_reduce",
    "campaign_reduce_soon",
    "campaign_regenerate",
    "campaign_resume",
    "campaign_set_approved",
    "campaign_start",
    "kernel_delete",
    "kernel_get_or_upload",
    "kernel_upload",
    "limits",
    "run_generator",
    "sandbox_host",
    "tasks_add",
]
