"""The cost of a user's data export and of their erasure (issue 21's figures): a user
with ``--messages`` messages (half theirs) and ``--files`` photos, in a fresh database
(SQLite, or PostgreSQL with DATABASE_URL) and a temporary media directory.

    .venv/bin/python -m bench.privacy                  # 10,000 messages, 100 photos
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/test .venv/bin/python -m bench.privacy
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import time
import uuid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--files", type=int, default=100)
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "instamg.settings")
    media = tempfile.mkdtemp(prefix="dm-privacy-")
    import django
    from django.conf import settings

    django.setup()
    settings.MEDIA_ROOT = media
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    }
    from django.db import connection
    from django.test.utils import setup_test_environment

    setup_test_environment()
    old_name = connection.creation.create_test_db(verbosity=0)
    try:
        run(args.messages, args.files, media)
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)


def run(count: int, files: int, media: str) -> None:
    from django.contrib.auth import get_user_model
    from django.core.files.base import ContentFile
    from django.db import connection
    from PIL import Image

    from direct_messages import exports, services
    from direct_messages.models import DirectMessage, DirectMessageAttachFiles, Room

    User = get_user_model()
    alice = User.objects.create_user("alice", password="x" * 12)
    bob = User.objects.create_user("bob", password="x" * 12)
    first = services.message_send(sender=alice, recipient=bob, client_id=uuid.uuid4(), text="hi")
    room = Room.objects.get(pk=first.message.room_id)
    DirectMessage.objects.bulk_create(
        DirectMessage(
            room=room,
            sender=alice if seq % 2 else bob,
            seq=seq,
            message=f"message {seq} of the benchmark conversation",
            client_id=uuid.uuid4(),
        )
        for seq in range(2, count + 1)
    )
    Room.objects.filter(pk=room.pk).update(last_seq=count)
    buffer = io.BytesIO()
    Image.effect_noise((1200, 900), 64).convert("RGB").save(buffer, "JPEG", quality=95)
    photo = buffer.getvalue()
    theirs = DirectMessage.objects.filter(sender=alice).order_by("seq")[:files]
    for message in theirs:
        row = DirectMessageAttachFiles(
            message=message, uploader=alice, kind="image", content_type="image/jpeg",
            size=len(photo), width=1200, height=900, name="p.jpg",
        )  # fmt: skip
        row.file.save("p.jpg", ContentFile(photo), save=False)
        row.save()
    print(
        f"{connection.vendor}: {count} messages ({count // 2} alice's), {files} photos of "
        f"{len(photo) / 1e6:.1f} MB"
    )

    started = time.perf_counter()
    export = exports.export_request(alice, enqueue=exports.export_build)
    export.refresh_from_db()
    assert export.status == "ready", export.status
    print(
        f"export of alice: {time.perf_counter() - started:.2f} s, {export.file.size / 1e6:.0f} MB"
    )

    started = time.perf_counter()
    alice.delete()
    elapsed = time.perf_counter() - started
    left = sum(len(names) for _, _, names in os.walk(os.path.join(media, "dm")))
    tombstones = DirectMessage.objects.filter(sender__isnull=True).count()
    print(f"erasure of alice: {elapsed:.2f} s ({tombstones} tombstones; files left: {left})")


if __name__ == "__main__":
    main()
