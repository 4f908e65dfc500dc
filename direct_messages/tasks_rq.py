"""The app's tasks on RQ (django-tasks-rq, the ``rq`` extra): what ``dm_worker`` adds to
RQ's own worker so that a worker that dies mid-task loses no notification.

RQ keeps a started job in its queue's ``StartedJobRegistry`` under a heartbeat; when
the heartbeat of a dead worker runs out, a worker's maintenance (on start, then every
10 minutes) moves the job to the ``FailedJobRegistry`` as an ``AbandonedJobError``, and
there it stays: RQ runs it again only if it was enqueued with a ``Retry``, which
django-tasks-rq does not offer. Here the notification jobs a dead worker left are run
again instead, as ``tasks.abandoned_tasks_requeue`` does for the database backend;
their pushes are sent once all the same (:class:`~direct_messages.models.PushDelivery`).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import django_rq
from django.utils import timezone
from django_tasks_rq import Job
from rq.job import Job as RQJob
from rq.job import JobStatus
from rq.registry import FailedJobRegistry, StartedJobRegistry
from rq.worker import Worker as BaseWorker

from direct_messages.conf import dm_setting

# How RQ records a job whose worker (or work horse) died under it.
ABANDONED = ("AbandonedJobError", "Work-horse terminated unexpectedly")
# Failed jobs looked at by each maintenance, the newest first.
FAILED_SCAN = 200
# Seconds between a worker's maintenances (RQ's default: 600). A worker killed holds its
# scheduler's lock for 61 s more, and a worker started meanwhile takes the lock over only
# at a maintenance: until then deferred tasks (every notification) wait.
MAINTENANCE_SECONDS = 30


def abandoned_jobs_requeue(queue_names: list[str] | set[str]) -> int:
    """Run again the notification jobs a dead worker left on these queues: those it was
    running more than ``PUSH_CLAIM_SECONDS`` ago, at once; those RQ found abandoned, once
    that long has passed since they started (sooner, the push the dead worker claimed
    would still look like another worker's, and be skipped). Returns how many."""
    claim = dt.timedelta(seconds=float(dm_setting("PUSH_CLAIM_SECONDS")))
    requeued = 0
    for name in queue_names:
        queue = django_rq.get_queue(name, job_class=Job)
        requeued += _started_requeue(queue, timezone.now() - claim)
        requeued += _failed_requeue(queue, claim)
    return requeued


def _notification_job(queue: Any, job_id: str) -> RQJob | None:
    """The job ``job_id`` if it is still there and a notification's."""
    from direct_messages.tasks import message_notify

    job = Job.fetch_many([job_id], connection=queue.connection)[0]
    return job if job is not None and job.func_name == message_notify.module_path else None


def _started_requeue(queue: Any, cutoff: dt.datetime) -> int:
    """Notification jobs still marked running, started before ``cutoff``: their worker
    is dead (RQ's job timeout would have stopped a live one's). Each is taken out of the
    registry first: of two workers starting at once, one requeues it."""
    registry = StartedJobRegistry(queue=queue, job_class=Job)
    requeued = 0
    for job_id, execution_id in registry.get_job_and_execution_ids(cleanup=False):
        job = _notification_job(queue, job_id)
        if job is None or job.get_status() != JobStatus.STARTED:
            continue
        if job.started_at is None or job.started_at >= cutoff:
            continue
        if queue.connection.zrem(registry.key, f"{job_id}:{execution_id}"):
            queue.enqueue_job(job)
            requeued += 1
    return requeued


def _failed_requeue(queue: Any, claim: dt.timedelta) -> int:
    """Notification jobs RQ moved to the failed registry as abandoned, scheduled to run
    ``claim`` after they started (the worker's scheduler enqueues them then)."""
    registry = FailedJobRegistry(queue=queue, job_class=Job)
    requeued = 0
    # The newest: what RQ found abandoned is taken out at the maintenance that found it.
    for job_id in registry.get_job_ids(0, FAILED_SCAN - 1, desc=True, cleanup=False):
        job = _notification_job(queue, job_id)
        if job is None:
            continue
        result = job.latest_result()
        reason = (result.exc_string or "") if result is not None else ""
        if not any(mark in reason for mark in ABANDONED):
            continue
        if registry.remove(job):
            started = job.started_at or timezone.now()
            queue.schedule_job(job, max(timezone.now(), started + claim))
            requeued += 1
    return requeued


class Worker(BaseWorker):
    """RQ's worker, whose maintenance (on start, then every 10 minutes) also runs again
    the notifications a dead worker left: a worker that dies while others keep running
    is recovered by them. Its maintenance is more frequent than RQ's (``MAINTENANCE_SECONDS``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("maintenance_interval", MAINTENANCE_SECONDS)
        super().__init__(*args, **kwargs)

    def clean_registries(self) -> None:
        """Called on start and then periodically by RQ, to clean the queues' registries."""
        super().clean_registries()
        if requeued := abandoned_jobs_requeue(self.queue_names()):
            self.log.warning("%s notification task(s) of a dead worker run again", requeued)
