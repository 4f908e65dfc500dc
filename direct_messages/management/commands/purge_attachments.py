"""``manage.py purge_attachments``: delete uploads that no message ever claimed."""

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from direct_messages.attachments import attachments_purge
from direct_messages.conf import dm_setting


class Command(BaseCommand):
    help = (
        "Delete attachments uploaded but never sent in a message, older than "
        "UNCLAIMED_ATTACHMENT_TTL_SECONDS (24 hours by default): rows and stored files. "
        "Uploads start the same purge by themselves, at most every PURGE_INTERVAL_SECONDS "
        "per process; run this from a scheduler if that is set to 0, or to purge now."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--older-than",
            type=int,
            metavar="SECONDS",
            help="age in seconds (default: the UNCLAIMED_ATTACHMENT_TTL_SECONDS setting)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        older_than = options["older_than"]
        if older_than is None:
            older_than = int(dm_setting("UNCLAIMED_ATTACHMENT_TTL_SECONDS"))
        purged = attachments_purge(older_than_seconds=max(0, older_than))
        self.stdout.write(f"purged {purged} unclaimed attachment(s)")
