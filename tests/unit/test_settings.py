import os
import subprocess
import sys

from tests.support import ROOT


def run_django(env_overrides):
    env = {**os.environ, **env_overrides}
    env.pop("SECRET_KEY", None) if "SECRET_KEY" not in env_overrides else None
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=ROOT,
        env={**env, "DJANGO_SETTINGS_MODULE": "instamg.settings"},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_production_mode_refuses_to_start_without_a_secret_key():
    result = run_django({"DEBUG": "false"})
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr and "Refusing to start" in result.stderr


def test_production_mode_starts_with_a_real_secret_key():
    result = run_django({"DEBUG": "false", "SECRET_KEY": "x" * 60})
    assert result.returncode == 0, result.stderr


def test_database_url_selects_postgres_with_a_pool_and_no_persistent_connections():
    code = (
        "import django; django.setup(); from django.conf import settings as s; "
        "d = s.DATABASES['default']; "
        "print(d['ENGINE'], d['CONN_MAX_AGE'], 'pool' in d['OPTIONS'], "
        "s.CHANNEL_LAYERS['default']['BACKEND'])"
    )
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "instamg.settings",
        "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/test",
        "REDIS_URL": "redis://127.0.0.1:6379/0",
    }
    env.pop("CHANNEL_LAYER", None)
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert out.stdout.split() == [
        "django.db.backends.postgresql",
        "0",
        "True",
        "direct_messages.layers.BoundedPubSubChannelLayer",
    ], out.stderr


def test_embedded_default_is_sqlite_wal_and_in_memory_layer():
    code = (
        "import django; django.setup(); from django.conf import settings as s; "
        "d = s.DATABASES['default']; "
        "print(d['ENGINE'], 'WAL' in d['OPTIONS']['init_command'], "
        "d['OPTIONS']['timeout'], s.CHANNEL_LAYERS['default']['BACKEND'])"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env["DJANGO_SETTINGS_MODULE"] = "instamg.settings"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert out.stdout.split() == [
        "django.db.backends.sqlite3",
        "True",
        "20",
        "direct_messages.local_layer.LocalChannelLayer",
    ], out.stderr


def test_the_default_install_signs_with_a_key_of_its_own_not_one_from_the_repository():
    """No SECRET_KEY set, DEBUG on (``make run``): the key is made for this checkout and
    kept in var/ (ignored by git), the same for every process, readable only by its owner."""
    code = "import django; django.setup(); from django.conf import settings; print(settings.SECRET_KEY)"
    env = {k: v for k, v in os.environ.items() if k != "SECRET_KEY"}
    env.update(DJANGO_SETTINGS_MODULE="instamg.settings", DEBUG="true")
    keys = {
        subprocess.run(
            [sys.executable, "-c", code],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout.strip()
        for _ in range(2)
    }
    key_file = ROOT / "var" / "secret_key"
    assert keys == {key_file.read_text().strip()} and len(keys.pop()) >= 50
    assert key_file.stat().st_mode & 0o077 == 0
    ignored = subprocess.run(["git", "check-ignore", "-q", str(key_file)], cwd=ROOT)
    assert ignored.returncode == 0, "var/secret_key must never be committed"
    tracked = subprocess.run(
        ["git", "grep", "-l", "django-insecure"], cwd=ROOT, capture_output=True, text=True
    )
    assert [f for f in tracked.stdout.split() if not f.startswith("tests/")] == []


def test_demo_users_are_refused_outside_the_embedded_default():
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "instamg.settings"}
    env.update(
        DEBUG="false", SECRET_KEY="x" * 60, DATABASE_URL="postgres://postgres@127.0.0.1:5432/test"
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "seed_demo"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "exist only on the embedded" in result.stderr


def _task_settings(**env: str) -> list[str]:
    code = (
        "import django; django.setup(); from django.conf import settings as s; "
        "t = s.TASKS['default']; q = getattr(s, 'RQ_QUEUES', {}); "
        "print(t['BACKEND'], ','.join(t['QUEUES']), 'django_rq' in s.INSTALLED_APPS, "
        "','.join(f'{n}={c[\"URL\"]}' for n, c in q.items()) or '-', "
        "s.DIRECT_MESSAGES['TASK_QUEUE'])"
    )
    environ = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DM_TASK_QUEUE")}
    environ.update(DJANGO_SETTINGS_MODULE="instamg.settings", **env)
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return out.stdout.split() or [out.stderr]


def test_the_task_queue_is_in_the_database_without_redis_and_on_rq_with_it():
    assert _task_settings() == [
        "django_tasks_db.DatabaseBackend",
        "default",
        "False",
        "-",
        "default",
    ]
    url = "redis://127.0.0.1:6379/3"
    assert _task_settings(REDIS_URL=url, DM_TASK_QUEUE="site-a") == [
        "django_tasks_rq.RQBackend",
        "default,site-a",
        "True",
        f"default={url},site-a={url}",
        "site-a",
    ]
