"""``manage.py dm_worker``: run the app's tasks (notifications, exports, erasures) on the
configured queue, whichever its backend: the database (django-tasks-db) or Redis (RQ)."""

import logging
from functools import partial
from typing import Any

from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import autoreload

from direct_messages.conf import dm_setting


class Command(BaseCommand):
    help = (
        "Run the worker of the app's task queue (docs/notifications.md) for the django-tasks "
        "backend the PUSH_TASK_BACKEND setting names: django-tasks-db's worker for its "
        "database backend, django-rq's (with its scheduler) for django-tasks-rq's RQBackend. "
        "Run it beside the server; several may run at once. On start it runs again the "
        "notification tasks a dead worker left. Logs one line per task it finishes."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--backend", help="a TASKS alias (default: PUSH_TASK_BACKEND)")
        parser.add_argument(
            "--batch", action="store_true", help="run the tasks that are due, then exit"
        )
        parser.add_argument(
            "--interval",
            type=float,
            default=1.0,
            help="seconds between polls when idle (database backend only: RQ's worker "
            "waits on Redis, and its scheduler looks for due tasks every second)",
        )
        parser.add_argument("--max-tasks", type=int, help="exit after running this many")
        parser.add_argument(
            "--reload", action="store_true", help="restart on code changes (development)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            from direct_messages.tasks import abandoned_tasks_requeue, backend_is_rq
        except ImportError as exc:
            raise CommandError("dm_worker needs the `push` extra (django-tasks)") from exc
        backend = self.backend(options["backend"] or dm_setting("PUSH_TASK_BACKEND"))
        self.configure_logging(options["verbosity"])
        run = self.rq_worker if backend_is_rq(backend) else self.database_worker
        if requeued := abandoned_tasks_requeue(backend):
            self.stderr.write(f"{requeued} notification task(s) of a dead worker run again")
        run(backend.alias, options)

    def backend(self, alias: str) -> Any:
        """The backend ``alias`` names, if this command has a worker for it."""
        from django_tasks import task_backends
        from django_tasks.exceptions import InvalidTaskBackendError

        from direct_messages.tasks import backend_is_rq

        try:
            backend = task_backends[alias]
        except InvalidTaskBackendError as exc:
            raise CommandError(str(exc)) from exc
        try:
            from django_tasks_db import DatabaseBackend
        except ImportError as exc:
            raise CommandError("dm_worker needs the `push` extra (django-tasks-db)") from exc
        if not (isinstance(backend, DatabaseBackend) or backend_is_rq(backend)):
            raise CommandError(
                f"the {alias!r} backend ({type(backend).__name__}) has no worker to run here: "
                "use django_tasks_db.DatabaseBackend, or django_tasks_rq.RQBackend "
                "(docs/notifications.md)"
            )
        return backend

    def configure_logging(self, verbosity: int) -> None:
        """One line per task started and finished (django-tasks' own, the same for both
        backends: ``Task id=… path=… state=SUCCESSFUL``), unless verbosity is 0."""
        tasks_logger = logging.getLogger("django_tasks")
        tasks_logger.setLevel(logging.CRITICAL if verbosity == 0 else logging.INFO)
        if not tasks_logger.hasHandlers():
            tasks_logger.addHandler(logging.StreamHandler(self.stdout))

    def database_worker(self, alias: str, options: dict[str, Any]) -> None:
        """django-tasks-db's ``db_worker``, polling every ``--interval`` seconds."""
        worker_args = ["--backend", alias, "--queue-name", dm_setting("TASK_QUEUE")]
        worker_args += ["--interval", str(options["interval"])]
        worker_args.append("--reload" if options["reload"] else "--no-reload")
        if options["batch"]:
            worker_args += ["--batch", "--no-startup-delay"]
        if options["max_tasks"] is not None:
            worker_args += ["--max-tasks", str(options["max_tasks"])]
        call_command("db_worker", *worker_args, verbosity=options["verbosity"])

    def rq_worker(self, alias: str, options: dict[str, Any]) -> None:
        """django-rq's ``rqworker`` on the app's queue, with RQ's scheduler, which enqueues
        the deferred tasks (a notification's delay, a retry's backoff) when they are due,
        and this app's worker class, whose maintenance runs again what a dead worker left.
        ``--batch`` is RQ's burst mode (what is due, then exit)."""
        worker_args = [
            dm_setting("TASK_QUEUE"),
            "--job-class",
            "django_tasks_rq.Job",
            "--worker-class",
            "direct_messages.tasks_rq.Worker",
            "--with-scheduler",
        ]
        if options["batch"]:
            worker_args.append("--burst")
        if options["max_tasks"] is not None:
            worker_args += ["--max-jobs", str(options["max_tasks"])]
        run = partial(call_command, "rqworker", *worker_args, verbosity=options["verbosity"])
        if options["reload"]:
            autoreload.run_with_reloader(run)
        else:
            run()
