from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

DEMO_USERS = [("alice", "Alice Liddell"), ("bob", "Bob Marley")]
DEMO_PASSWORD_SUFFIX = "-demo-pass"


class Command(BaseCommand):
    help = (
        "Create the demo users alice and bob (if missing) and print their passwords: only on "
        "the embedded default (DEBUG, SQLite), which `make run` serves on loopback."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        engine = settings.DATABASES["default"]["ENGINE"]
        if not settings.DEBUG or not engine.endswith("sqlite3"):
            raise CommandError(
                "Demo users, whose passwords are published, exist only on the embedded "
                "default (DEBUG on, SQLite): refusing."
            )
        User = get_user_model()
        for account, name in DEMO_USERS:
            password = f"{account}{DEMO_PASSWORD_SUFFIX}"
            user, created = User.objects.get_or_create(account=account, defaults={"name": name})
            if created:
                user.set_password(password)
                user.save()
            state = "created" if created else "exists"
            self.stdout.write(f"demo user {account!r} ({state}): password {password!r}")
