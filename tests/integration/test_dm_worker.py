"""``manage.py dm_worker``: the worker of whichever task backend is configured, with the
same options, and on RQ the notifications a dead worker left run again (the live
tests, test_push_live.py, kill real workers)."""

import datetime as dt
import time
import uuid

import pytest
from django.core.management import CommandError, call_command

from direct_messages.management.commands import dm_worker

DATABASE = "django_tasks_db.DatabaseBackend"
RQ = "django_tasks_rq.RQBackend"


@pytest.fixture
def commands_run(monkeypatch):
    """What dm_worker hands over to (the worker command and its arguments), not run."""
    calls: list[tuple] = []
    monkeypatch.setattr(dm_worker, "call_command", lambda *args, **kw: calls.append(args))
    monkeypatch.setattr(
        "direct_messages.tasks.abandoned_tasks_requeue",
        lambda backend: calls.append(("requeue",)) and 0,
    )
    return calls


def use_backend(settings, backend, queue="dm-test", redis_url="redis://127.0.0.1:6379/0"):
    settings.TASKS = {"default": {"BACKEND": backend, "QUEUES": ["default", queue]}}
    settings.RQ_QUEUES = {name: {"URL": redis_url} for name in ("default", queue)}
    settings.DIRECT_MESSAGES = {**settings.DIRECT_MESSAGES, "TASK_QUEUE": queue}


def test_the_database_backend_runs_db_worker_on_the_apps_queue(settings, commands_run):
    use_backend(settings, DATABASE)
    call_command("dm_worker", "--batch", "--max-tasks", "3", "--interval", "0.5")
    assert commands_run == [
        ("requeue",),
        (
            "db_worker",
            *("--backend", "default", "--queue-name", "dm-test", "--interval", "0.5"),
            *("--no-reload", "--batch", "--no-startup-delay", "--max-tasks", "3"),
        ),
    ]


def test_rq_runs_django_rqs_worker_with_the_scheduler_and_burst_for_batch(settings, commands_run):
    use_backend(settings, RQ)
    call_command("dm_worker", "--batch", "--max-tasks", "3", "--interval", "0.5")
    assert commands_run == [
        ("requeue",),
        (
            "rqworker",
            "dm-test",
            *("--job-class", "django_tasks_rq.Job"),
            *("--worker-class", "direct_messages.tasks_rq.Worker"),
            "--with-scheduler",
            "--burst",
            *("--max-jobs", "3"),
        ),
    ]


def test_rq_runs_until_stopped_without_batch(settings, commands_run):
    use_backend(settings, RQ)
    call_command("dm_worker")
    assert "--burst" not in commands_run[-1] and "--max-jobs" not in commands_run[-1]


def test_a_backend_without_a_worker_is_refused_by_name(settings, commands_run):
    settings.TASKS = {"default": {"BACKEND": "django_tasks.backends.immediate.ImmediateBackend"}}
    with pytest.raises(CommandError, match=r"ImmediateBackend.*DatabaseBackend.*RQBackend"):
        call_command("dm_worker")
    with pytest.raises(CommandError, match="nope"):
        call_command("dm_worker", "--backend", "nope")
    assert commands_run == []


# --- RQ: what a dead worker left, on a real Redis --------------------------------------


@pytest.fixture
def rq_queue(settings, redis_url):
    """A queue of this test's own on Redis (REDIS_URL, or a private redis-server), and
    the app's tasks on it; its keys are deleted after."""
    import django_rq
    from django_tasks_rq import Job

    name = f"dm-test-{uuid.uuid4().hex[:12]}"
    use_backend(settings, RQ, queue=name, redis_url=redis_url)
    settings.DIRECT_MESSAGES = {**settings.DIRECT_MESSAGES, "PUSH_CLAIM_SECONDS": 300}
    queue = django_rq.get_queue(name, job_class=Job)
    yield queue
    job_ids = set(queue.get_job_ids())
    for registry in (queue.started_job_registry, queue.failed_job_registry):
        job_ids |= set(registry.get_job_ids(cleanup=False))
    job_ids |= set(queue.scheduled_job_registry.get_job_ids(cleanup=False))
    for job_id in job_ids:
        queue.connection.delete(f"rq:job:{job_id}", f"rq:results:{job_id}")
    for key in queue.connection.scan_iter(f"rq:*:{name}*"):
        queue.connection.delete(key)


def started_by_a_dead_worker(queue, minutes_ago: float):
    """A notification task that a worker took from ``queue`` and never finished."""
    from django.utils import timezone
    from django_tasks_rq import Job
    from rq.job import JobStatus

    from direct_messages import tasks

    result = tasks._on_queue(tasks.message_notify).enqueue(1)
    assert queue.pop_job_id() == result.id
    job = Job.fetch(result.id, connection=queue.connection)
    job.set_status(JobStatus.STARTED)
    job.started_at = timezone.now() - dt.timedelta(minutes=minutes_ago)
    job.save()
    # As RQ's worker does: job id and execution id, due by the heartbeat's end.
    queue.connection.zadd(queue.started_job_registry.key, {f"{job.id}:dead": time.time() + 60})
    return job


@pytest.mark.redis
def test_a_task_started_past_the_claim_by_a_dead_worker_is_queued_again_once(rq_queue):
    from django_tasks import task_backends

    from direct_messages import tasks
    from direct_messages.tasks_rq import abandoned_jobs_requeue

    old = started_by_a_dead_worker(rq_queue, minutes_ago=10)
    recent = started_by_a_dead_worker(rq_queue, minutes_ago=1)  # maybe a live worker's
    assert tasks.abandoned_tasks_requeue(task_backends["default"]) == 1
    assert rq_queue.get_job_ids() == [old.id]
    assert rq_queue.started_job_registry.get_job_ids(cleanup=False) == [recent.id]
    assert abandoned_jobs_requeue([rq_queue.name]) == 0  # a second worker starting


@pytest.mark.redis
def test_a_task_rq_found_abandoned_is_scheduled_for_when_its_push_claim_lapses(rq_queue):
    from django.utils import timezone
    from rq.job import JobStatus

    from direct_messages.tasks_rq import abandoned_jobs_requeue

    job = started_by_a_dead_worker(rq_queue, minutes_ago=1)
    # The dead worker's heartbeat ran out: RQ's maintenance fails the job as abandoned.
    rq_queue.started_job_registry.cleanup(timestamp=time.time() + 120)
    assert rq_queue.failed_job_registry.get_job_ids(cleanup=False) == [job.id]

    assert abandoned_jobs_requeue([rq_queue.name]) == 1
    assert rq_queue.failed_job_registry.get_job_ids(cleanup=False) == []
    job.refresh()
    assert job.get_status() == JobStatus.SCHEDULED
    at = rq_queue.scheduled_job_registry.get_scheduled_time(job)
    expected = job.started_at + dt.timedelta(seconds=300)
    assert abs((at - expected).total_seconds()) < 2 and at > timezone.now()
    assert abandoned_jobs_requeue([rq_queue.name]) == 0


@pytest.mark.redis
def test_a_task_that_failed_by_itself_is_left_failed(rq_queue):
    from direct_messages.tasks_rq import abandoned_jobs_requeue

    job = started_by_a_dead_worker(rq_queue, minutes_ago=1)
    rq_queue.started_job_registry.remove_executions(job)
    rq_queue.failed_job_registry.add(job, exc_string="Traceback ... ValueError: a bug")
    assert abandoned_jobs_requeue([rq_queue.name]) == 0
    assert rq_queue.failed_job_registry.get_job_ids(cleanup=False) == [job.id]
