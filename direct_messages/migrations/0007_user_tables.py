# The app's own tables of what it keeps about a user (last active time, token revocation),
# instead of fields on the host's user model.

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('direct_messages', '0006_fewer_index_writes'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name='UserActivity',
            fields=[
                ('user', models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, primary_key=True, related_name='+', serialize=False, to=settings.AUTH_USER_MODEL)),
                ('last_active_at', models.DateTimeField()),
            ],
            options={
                'verbose_name_plural': 'user activity',
            },
        ),
        migrations.CreateModel(
            name='UserTokens',
            fields=[
                ('user', models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, primary_key=True, related_name='+', serialize=False, to=settings.AUTH_USER_MODEL)),
                ('version', models.PositiveIntegerField(default=0)),
                ('revoked', models.JSONField(default=list)),
            ],
            options={
                'verbose_name_plural': 'user tokens',
            },
        ),
    ]
