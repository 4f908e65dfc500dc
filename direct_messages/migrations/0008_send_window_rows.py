# Every user has a send window row from here on (new users get theirs on creation, in
# ratelimit.send_window_create), so a send never has to make one.

from django.conf import settings
from django.db import migrations


def windows_create(apps, schema_editor):
    User = apps.get_model(settings.AUTH_USER_MODEL)
    SendWindow = apps.get_model("direct_messages", "SendWindow")
    db = schema_editor.connection.alias
    have = SendWindow.objects.using(db).values("user_id")
    missing = User._default_manager.using(db).exclude(pk__in=have).values_list("pk", flat=True)
    batch = []
    for pk in missing.iterator(chunk_size=2000):
        batch.append(SendWindow(user_id=pk))
        if len(batch) == 2000:
            SendWindow.objects.using(db).bulk_create(batch)
            batch = []
    SendWindow.objects.using(db).bulk_create(batch)


class Migration(migrations.Migration):
    dependencies = [
        ("direct_messages", "0007_user_tables"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [migrations.RunPython(windows_create, migrations.RunPython.noop)]
