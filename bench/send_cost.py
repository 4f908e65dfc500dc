"""The CPU cost of one send, in process: ``services.message_send`` on 20 pairs in turn.

No server, socket or layer: what a send costs the thread that runs it, and how many
statements it takes. It runs the checkout in the current directory, so the same file
measures another checkout (an A/B)::

    python bench/send_cost.py                      # SQLite, in a temporary file
    DATABASE_URL=postgres://... python bench/send_cost.py
    cd ../other-checkout && python /path/to/bench/send_cost.py
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import uuid
from pathlib import Path


def main(sends: int = 2000) -> None:
    sys.path.insert(0, os.getcwd())
    scratch = tempfile.mkdtemp(prefix="send-cost-")
    os.environ.setdefault("DATABASE_URL", f"sqlite:///{Path(scratch) / 'db.sqlite3'}")
    os.environ.update(
        DJANGO_SETTINGS_MODULE="instamg.settings",
        DEBUG="false",
        SECRET_KEY=uuid.uuid4().hex * 2,
        LOG_LEVEL="WARNING",
        # As in the load tests (bench/procs.py): the limit lifted, the window as full as
        # a real user's at the limit.
        DM_SEND_RATE_LIMIT="1000000",
        DM_SEND_RATE_WINDOW_SECONDS="3",
    )
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from direct_messages import realtime, services

    call_command("migrate", verbosity=0)
    users = get_user_model()._default_manager
    run = uuid.uuid4().hex[:6]
    people = [
        users.create_user(account=f"c{run}{n}", email=f"c{run}{n}@example.com", password="p" * 12)
        for n in range(40)
    ]
    pairs = list(zip(people[::2], people[1::2], strict=True))

    def send(n: int) -> None:
        low, high = pairs[(n // 2) % len(pairs)]
        sender, recipient = (low, high) if n % 2 else (high, low)
        realtime.collecting_events(
            services.message_send,
            sender=sender,
            recipient=recipient,
            client_id=uuid.uuid4().hex,
            text=f"message {n}",
        )

    for n in range(4 * len(pairs)):  # every room made, every sender with unread
        send(n)
    with CaptureQueriesContext(connection) as queries:
        send(1)
    started = time.process_time()
    for n in range(sends):
        send(n)
    spent = time.process_time() - started
    print(f"{connection.vendor}: {spent / sends * 1000:.2f} ms of CPU a send, ", end="")
    print(f"{len(queries.captured_queries)} statements (BEGIN and COMMIT included)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)
