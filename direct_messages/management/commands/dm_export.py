"""``manage.py dm_export <account>``: a user's data export, written here and now."""

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from direct_messages.adapters import get_adapter
from direct_messages.exports import export_write


class Command(BaseCommand):
    help = (
        "Write the data export of one user (the zip that POST /api/me/export builds: "
        "messages.json and the attachments) to a file, for a support or legal request."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("account", help="the user's handle")
        parser.add_argument("--output", "-o", help="the zip to write (default: <account>.zip)")

    def handle(self, *args: Any, **options: Any) -> None:
        user = get_adapter().get_user_by_handle(options["account"])
        if user is None:
            raise CommandError(f"no active user {options['account']!r}")
        path = Path(options["output"] or f"{options['account']}.zip")
        with path.open("wb") as out:
            data = export_write(user, out)
        messages = sum(len(c["messages"]) for c in data["conversations"])
        self.stdout.write(
            f"wrote {path}: {len(data['conversations'])} conversation(s), {messages} message(s)"
        )
