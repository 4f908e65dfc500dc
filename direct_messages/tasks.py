"""Work done off the request, on Django's tasks API (django-tasks on Django 5.2): the
notification of a sent message, ``PUSH_DELAY_SECONDS`` after it commits, data
exports and users' erasures.

``manage.py dm_worker`` runs the tasks. This module needs the ``push`` extra; the
app connects :func:`message_sent_receiver` only where django-tasks is installed.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from django.utils import timezone
from django_tasks import task, task_backends
from django_tasks.backends.base import BaseTaskBackend
from django_tasks.base import Task

from direct_messages import erasure, exports, push
from direct_messages.conf import dm_setting
from direct_messages.models import DirectMessage

logger = logging.getLogger(__name__)


@task()
def message_notify(message_id: int, attempt: int = 1) -> str:
    """Notify the recipient of a message (the decision is taken now, not at send time);
    pushes that failed for now are tried again later, by a new task."""
    result = push.message_notify(message_id=message_id, attempt=attempt)
    if result.retry:
        notify_enqueue(message_id, delay=push.retry_delay(attempt), attempt=attempt + 1)
    return result.reason


def notify_enqueue(message_id: int, *, delay: float, attempt: int = 1) -> None:
    """Run :func:`message_notify` ``delay`` seconds from now (at once on a backend that
    cannot defer, as django-tasks' immediate one)."""
    options: dict[str, Any] = {}
    if task_backends[dm_setting("PUSH_TASK_BACKEND")].supports_defer:
        run_after = timezone.now() + dt.timedelta(seconds=delay)
        # Up to the next whole second: RQ's scheduler keeps whole seconds, dropping the
        # fraction, and would run the task up to a second before its delay is over. (No
        # delay: due now, which dropping the fraction cannot make early.)
        if delay > 0 and run_after.microsecond:
            run_after += dt.timedelta(microseconds=1_000_000 - run_after.microsecond)
        options["run_after"] = run_after
    _on_queue(message_notify, **options).enqueue(message_id, attempt)


def _on_queue(task: Task[Any, Any], **options: Any) -> Task[Any, Any]:
    """``task`` on the backend and queue the app's settings name."""
    return task.using(
        backend=dm_setting("PUSH_TASK_BACKEND"), queue_name=dm_setting("TASK_QUEUE"), **options
    )


def backend_is_rq(backend: BaseTaskBackend) -> bool:
    """Whether ``backend`` is django-tasks-rq's (which needs the ``rq`` extra)."""
    try:
        from django_tasks_rq import RQBackend
    except ImportError:
        return False
    return isinstance(backend, RQBackend)


def abandoned_tasks_requeue(backend: BaseTaskBackend) -> int:
    """Run again the notification tasks a dead worker left (neither the database
    backend nor RQ does): those started more than ``PUSH_CLAIM_SECONDS`` ago. Their
    pushes are sent once all the same (:class:`~direct_messages.models.PushDelivery`).
    Returns how many."""
    if backend_is_rq(backend):
        from direct_messages.tasks_rq import abandoned_jobs_requeue

        return abandoned_jobs_requeue(backend.queues)
    from django_tasks import TaskResultStatus
    from django_tasks_db.models import DBTaskResult

    cutoff = timezone.now() - dt.timedelta(seconds=float(dm_setting("PUSH_CLAIM_SECONDS")))
    return DBTaskResult.objects.filter(
        backend_name=backend.alias,
        status=TaskResultStatus.RUNNING,
        started_at__lt=cutoff,
        task_path=message_notify.module_path,
    ).update(status=TaskResultStatus.READY)


def message_sent_receiver(sender: Any, message: DirectMessage, **kwargs: Any) -> None:
    """``message_sent`` (after commit): enqueue the notification, if one may be wanted.

    Nothing about push can fail a send: the message is committed and acknowledged
    whatever happens here, so a failure is logged and dropped."""
    try:
        if push.notification_wanted(message):
            notify_enqueue(message.pk, delay=float(dm_setting("PUSH_DELAY_SECONDS")))
    except Exception:
        logger.exception("notification of message %s not enqueued", message.pk)


@task()
def export_build(export_id: str) -> str:
    """Build a data export (:func:`exports.export_build`: at most once at a time)."""
    return "built" if exports.export_build(export_id) is not None else "not built here"


def export_enqueue(export_id: Any) -> None:
    _on_queue(export_build).enqueue(str(export_id))


@task()
def user_erase(user_id: str) -> str:
    """A user's own erasure (:func:`erasure.user_erase`), after they asked for it."""
    return "erased" if erasure.user_erase(user_id) else "gone already"


def erase_enqueue(user_id: Any) -> None:
    _on_queue(user_erase).enqueue(str(user_id))
