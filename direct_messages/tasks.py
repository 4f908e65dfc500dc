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
    alias = dm_setting("PUSH_TASK_BACKEND")
    options: dict[str, Any] = {"backend": alias}
    if task_backends[alias].supports_defer:
        options["run_after"] = timezone.now() + dt.timedelta(seconds=delay)
    message_notify.using(**options).enqueue(message_id, attempt)


def abandoned_tasks_requeue() -> int:
    """Make the notification tasks a dead worker left running ready to run again (the
    database backend does not): those started more than ``PUSH_CLAIM_SECONDS`` ago.
    Their pushes are sent once all the same (:class:`~direct_messages.models.PushDelivery`).
    Returns how many."""
    from django_tasks import TaskResultStatus
    from django_tasks_db.models import DBTaskResult

    cutoff = timezone.now() - dt.timedelta(seconds=float(dm_setting("PUSH_CLAIM_SECONDS")))
    return DBTaskResult.objects.filter(
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
    export_build.using(backend=dm_setting("PUSH_TASK_BACKEND")).enqueue(str(export_id))


@task()
def user_erase(user_id: str) -> str:
    """A user's own erasure (:func:`erasure.user_erase`), after they asked for it."""
    return "erased" if erasure.user_erase(user_id) else "gone already"


def erase_enqueue(user_id: Any) -> None:
    user_erase.using(backend=dm_setting("PUSH_TASK_BACKEND")).enqueue(str(user_id))
