"""``manage.py dm_worker``: run the app's tasks (notifications) on the configured queue."""

from typing import Any

from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser

from direct_messages.conf import dm_setting


class Command(BaseCommand):
    help = (
        "Run the worker of the app's task queue (notifications, docs/notifications.md) for "
        "the django-tasks backend the PUSH_TASK_BACKEND setting names: with the database "
        "backend, django-tasks-db's own worker. Run it beside the server; several may run "
        "at once. On start it runs again the notification tasks a dead worker left."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--backend", help="a TASKS alias (default: PUSH_TASK_BACKEND)")
        parser.add_argument(
            "--batch", action="store_true", help="run the tasks that are due, then exit"
        )
        parser.add_argument(
            "--interval", type=float, default=1.0, help="seconds between polls when idle"
        )
        parser.add_argument("--max-tasks", type=int, help="exit after running this many")
        parser.add_argument(
            "--reload", action="store_true", help="restart on code changes (development)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            from django_tasks import task_backends
            from django_tasks.exceptions import InvalidTaskBackendError
        except ImportError as exc:
            raise CommandError("dm_worker needs the `push` extra (django-tasks)") from exc
        alias = options["backend"] or dm_setting("PUSH_TASK_BACKEND")
        try:
            backend = task_backends[alias]
        except InvalidTaskBackendError as exc:
            raise CommandError(str(exc)) from exc
        try:
            from django_tasks_db import DatabaseBackend
        except ImportError as exc:
            raise CommandError("dm_worker needs the `push` extra (django-tasks-db)") from exc
        if not isinstance(backend, DatabaseBackend):
            raise CommandError(
                f"the {alias!r} backend ({type(backend).__name__}) has no worker to run here: "
                "use django_tasks_db.DatabaseBackend (docs/notifications.md)"
            )
        from direct_messages.tasks import abandoned_tasks_requeue

        if requeued := abandoned_tasks_requeue():
            self.stderr.write(f"{requeued} notification task(s) of a dead worker run again")
        worker_args = ["--backend", alias, "--interval", str(options["interval"])]
        worker_args.append("--reload" if options["reload"] else "--no-reload")
        if options["batch"]:
            worker_args += ["--batch", "--no-startup-delay"]
        if options["max_tasks"] is not None:
            worker_args += ["--max-tasks", str(options["max_tasks"])]
        call_command("db_worker", *worker_args, verbosity=options["verbosity"])
