"""A GIN index for full-text search of message text, on PostgreSQL only.

The expression is exactly what ``SearchVector("message", config="simple")`` compiles
to, so the planner uses the index for ``selectors.message_search``. SQLite searches
with a case-insensitive substring match and gets no index.
"""

from django.db import migrations

INDEX = "dm_message_search_idx"


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(
            f"CREATE INDEX IF NOT EXISTS {INDEX} ON direct_messages_directmessage "
            "USING gin (to_tsvector('simple'::regconfig, COALESCE(message, '')))"
        )


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"DROP INDEX IF EXISTS {INDEX}")


class Migration(migrations.Migration):
    dependencies = [("direct_messages", "0001_initial")]
    operations = [migrations.RunPython(create, drop)]
