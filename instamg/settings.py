"""Settings for the instamg project, read from the environment.

One module for every deployment: the embedded default (SQLite, in-memory channel
layer, local ``media/``) needs no variables at all; PostgreSQL, Redis and S3 are
switched on by setting ``DATABASE_URL``, ``REDIS_URL`` and ``S3_BUCKET``. The README's
configuration table lists every variable.
"""

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return default if value in (None, "") else int(value)


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


DEBUG = env_bool("DEBUG", True)

DEVELOPMENT_SECRET_KEY = "django-insecure-instamg-development-key-never-use-in-production"
SECRET_KEY = os.environ.get("SECRET_KEY") or DEVELOPMENT_SECRET_KEY
if not DEBUG and SECRET_KEY == DEVELOPMENT_SECRET_KEY:
    raise ImproperlyConfigured(
        "Refusing to start: DEBUG is off but SECRET_KEY is the development key. "
        "Set the SECRET_KEY environment variable to a long random value "
        '(python -c "import secrets; print(secrets.token_urlsafe(50))").'
    )

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", "")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "users",
    "direct_messages",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "instamg.urls"
ASGI_APPLICATION = "instamg.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -----------------------------------------------------------------------
# Under ASGI every request may run on a different thread, so persistent connections
# (CONN_MAX_AGE > 0) would leak one connection per thread. PostgreSQL gets psycopg's
# pool instead; SQLite gets WAL (readers never block the writer), a busy timeout and
# IMMEDIATE transactions (a writer takes the lock up front instead of failing to
# upgrade a read lock under concurrency).
(BASE_DIR / "var").mkdir(exist_ok=True)
# Threads for the WebSocket side's database work, each keeping one connection
# (direct_messages.db); asyncio's default executor size.
DATABASE_THREADS = env_int("DM_DATABASE_THREADS", min(32, (os.cpu_count() or 1) + 4))
DATABASE_URL = os.environ.get("DATABASE_URL") or f"sqlite:///{BASE_DIR / 'var' / 'db.sqlite3'}"
_database = dj_database_url.parse(DATABASE_URL, conn_max_age=0)
if _database["ENGINE"] == "django.db.backends.sqlite3":
    # Keep SQLite connections open (one per worker thread): closing one checkpoints the
    # WAL and reopening re-runs the PRAGMAs, 1.4 ms of every send (bench/RESULTS.md).
    _database["CONN_MAX_AGE"] = None
    _database["CONN_HEALTH_CHECKS"] = True
    _database["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # A file, not SQLite's shared-cache memory database: that one takes table locks and
    # ignores the busy timeout, so concurrency tests would test the wrong thing.
    _database["TEST"] = {"NAME": str(BASE_DIR / "var" / f"test-{os.getpid()}.sqlite3")}
elif _database["ENGINE"] == "django.db.backends.postgresql":
    # One test database per test process, so that concurrent runs never share one.
    _database["TEST"] = {"NAME": f"test_{_database['NAME']}_{os.getpid()}"}
    _database["OPTIONS"] = {
        # Lets the send statement be prepared once per connection (direct_messages.
        # send_sql); Django's own queries bind on the client and are never prepared.
        # DB_PREPARED_STATEMENTS=false behind a pooler that cannot keep them (PgBouncer
        # before 1.21 in transaction mode).
        "prepare_threshold": 5 if env_bool("DB_PREPARED_STATEMENTS", True) else None,
        # Each of the sockets' database threads keeps one connection (DATABASE_THREADS);
        # the rest serve HTTP requests.
        "pool": {
            "min_size": env_int("DB_POOL_MIN_SIZE", 2),
            "max_size": env_int("DB_POOL_MAX_SIZE", DATABASE_THREADS + 16),
            "timeout": 10,
        },
    }
DATABASES = {"default": _database}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Channel layer ------------------------------------------------------------------
REDIS_URL = os.environ.get("REDIS_URL", "")
# "pubsub": Redis publish/subscribe with a bounded queue per socket (direct_messages.layers),
# a third of the Redis commands per message; "redis": channels-redis' list-based layer.
CHANNEL_LAYER = os.environ.get("CHANNEL_LAYER", "pubsub")
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": (
                "direct_messages.layers.BoundedPubSubChannelLayer"
                if CHANNEL_LAYER == "pubsub"
                else "channels_redis.core.RedisChannelLayer"
            ),
            "CONFIG": {"hosts": [REDIS_URL]},
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# --- Auth ---------------------------------------------------------------------------
AUTH_USER_MODEL = "users.User"
AUTH_PASSWORD_VALIDATORS = [
    {
        "NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator",
        "OPTIONS": {"user_attributes": ("account", "name", "email")},
    },
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "users:login"
LOGIN_REDIRECT_URL = "direct_messages:inbox"
LOGOUT_REDIRECT_URL = "users:login"

SESSION_COOKIE_SECURE = env_bool("SECURE_COOKIES", not DEBUG)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_CONTENT_TYPE_NOSNIFF = True

# --- Files --------------------------------------------------------------------------
STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATIC_ROOT.mkdir(exist_ok=True)
WHITENOISE_USE_FINDERS = DEBUG  # no collectstatic needed for `make run`
MEDIA_ROOT = Path(os.environ.get("MEDIA_ROOT") or BASE_DIR / "media")
MEDIA_URL = "/media/"
STORAGES: dict[str, dict[str, Any]] = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "instamg.storage.StaticStorage"
        )
    },
}


def s3_storage(environ: Mapping[str, str]) -> dict[str, Any]:
    """django-storages' S3 backend configured from ``S3_*`` variables.

    Private objects, read through signed URLs that expire after
    ``S3_URL_EXPIRE_SECONDS``; a name is never overwritten. Signature V4 everywhere
    (newer AWS regions accept nothing else). ``S3_ADDRESSING_STYLE=path`` for endpoints
    without a host name per bucket (MinIO and the like); IP endpoints get path style
    anyway. The storage tests build their moto-backed storage with this function.
    """
    return {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": environ["S3_BUCKET"],
            "endpoint_url": environ.get("S3_ENDPOINT_URL") or None,
            "region_name": environ.get("S3_REGION") or None,
            "access_key": environ.get("S3_ACCESS_KEY_ID") or None,
            "secret_key": environ.get("S3_SECRET_ACCESS_KEY") or None,
            "default_acl": "private",
            "querystring_auth": True,
            "querystring_expire": int(environ.get("S3_URL_EXPIRE_SECONDS") or 300),
            "file_overwrite": False,
            "signature_version": "s3v4",
            "addressing_style": environ.get("S3_ADDRESSING_STYLE") or None,
        },
    }


S3_BUCKET = os.environ.get("S3_BUCKET", "")
if S3_BUCKET:
    STORAGES["default"] = s3_storage(os.environ)
# Request bodies: the API's JSON bodies are small; uploads stream to temporary files.
DATA_UPLOAD_MAX_MEMORY_SIZE = 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 1024 * 1024

# --- The direct_messages app --------------------------------------------------------
DIRECT_MESSAGES = {
    "USER_ADAPTER": "users.adapters.AccountAdapter",
    "API_ROUTERS": {"/auth": "users.api.signup_router"},
    "TOKEN_LIFETIME_SECONDS": env_int("TOKEN_LIFETIME_SECONDS", 7 * 24 * 3600),
    "DATABASE_THREADS": DATABASE_THREADS,
    "MESSAGE_MAX_LENGTH": env_int("DM_MESSAGE_MAX_LENGTH", 1000),
    "FRAME_MAX_BYTES": env_int("DM_FRAME_MAX_BYTES", 64 * 1024),
    "ATTACHMENTS_PER_MESSAGE": env_int("DM_ATTACHMENTS_PER_MESSAGE", 10),
    "FILE_MAX_BYTES": env_int("DM_FILE_MAX_BYTES", 25 * 1024 * 1024),
    "IMAGE_MAX_PIXELS": env_int("DM_IMAGE_MAX_PIXELS", 40_000_000),
    "THUMBNAIL_SIZE": env_int("DM_THUMBNAIL_SIZE", 640),
    "EDIT_WINDOW_SECONDS": env_int("DM_EDIT_WINDOW_SECONDS", 15 * 60),
    "SEND_RATE_LIMIT": env_int("DM_SEND_RATE_LIMIT", 30),
    "SEND_RATE_WINDOW_SECONDS": env_int("DM_SEND_RATE_WINDOW_SECONDS", 10),
    "UNCLAIMED_ATTACHMENT_TTL_SECONDS": env_int("DM_UNCLAIMED_TTL_SECONDS", 24 * 3600),
    "X_ACCEL_REDIRECT_PREFIX": os.environ.get("DM_X_ACCEL_REDIRECT_PREFIX", ""),
    "PRESENCE_TTL_SECONDS": env_int("DM_PRESENCE_TTL_SECONDS", 60),
    "MAX_SOCKETS_PER_USER": env_int("DM_MAX_SOCKETS_PER_USER", 50),
    "TYPING_THROTTLE_SECONDS": float(os.environ.get("DM_TYPING_THROTTLE_SECONDS") or 1.0),
    "REDIS_URL": REDIS_URL,
}

# --- Misc ---------------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {"daphne": {"level": "WARNING"}, "django.channels.server": {"level": "WARNING"}},
}
