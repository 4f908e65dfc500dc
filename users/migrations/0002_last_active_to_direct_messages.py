from django.db import migrations


def copy_last_active(apps, schema_editor):
    """The last active time now lives in the app's own table (direct_messages 0007)."""
    User = apps.get_model("users", "User")
    UserActivity = apps.get_model("direct_messages", "UserActivity")
    rows = User.objects.exclude(last_active_at=None).values_list("pk", "last_active_at")
    UserActivity.objects.bulk_create(
        [UserActivity(user_id=pk, last_active_at=at) for pk, at in rows.iterator()],
        batch_size=1000,
        ignore_conflicts=True,
    )


class Migration(migrations.Migration):

    dependencies = [
        ("users", "0001_initial"),
        ("direct_messages", "0007_user_tables"),
    ]

    operations = [
        migrations.RunPython(copy_last_active, migrations.RunPython.noop),
        migrations.RemoveField(model_name="user", name="last_active_at"),
    ]
