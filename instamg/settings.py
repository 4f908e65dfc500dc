"""Settings for the instamg project, read from the environment.

One module for every deployment: the embedded default (SQLite, in-memory channel
layer, local ``media/``) needs no variables at all; PostgreSQL, Redis and S3 are
switched on by setting ``DATABASE_URL``, ``REDIS_URL`` and ``S3_BUCKET``. The README's
configuration table lists every variable.
"""

import datetime as dt
import os
import secrets
import time
from collections.abc import Callable, Mapping
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


def random_secret() -> str:
    return secrets.token_urlsafe(50)


def vapid_private_key() -> str:
    """A new VAPID private key (P-256), as ``manage.py dm_vapid_keys`` prints it."""
    import base64

    from cryptography.hazmat.primitives.asymmetric import ec

    scalar = ec.generate_private_key(ec.SECP256R1()).private_numbers().private_value
    return base64.urlsafe_b64encode(scalar.to_bytes(32, "big")).rstrip(b"=").decode()


def local_secret_key(path: Path, make: Callable[[], str] = random_secret) -> str:
    """This checkout's own random key, made on first use and kept in ``var/`` (never in
    git): the embedded default signs with a key nobody else has. Several processes
    starting at once agree on one key (the first to create the file wins)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        for _ in range(50):  # another process is writing it
            if key := path.read_text().strip():
                return key
            time.sleep(0.1)
        raise ImproperlyConfigured(f"{path} is empty: delete it to make a new key") from None
    key = make()
    with os.fdopen(fd, "w") as out:
        out.write(key)
    return key


(BASE_DIR / "var").mkdir(exist_ok=True)
# Never a key from the repository: SECRET_KEY from the environment, or (DEBUG only) one
# made for this checkout. Production must set it, the same on every process.
SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "Refusing to start: DEBUG is off and SECRET_KEY is not set. Set the SECRET_KEY "
            "environment variable to a long random value, the same on every process "
            '(python -c "import secrets; print(secrets.token_urlsafe(50))").'
        )
    SECRET_KEY = local_secret_key(BASE_DIR / "var" / "secret_key")

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
    "ninja",  # Swagger UI for /api/docs from our static files, not a CDN (a CSP allows it)
    "users",
    "direct_messages",
    "django_tasks",
    "django_tasks_db",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "instamg.middleware.ContentSecurityPolicyMiddleware",
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
        # Seconds a write waits for the lock. Nothing slow runs inside a transaction
        # (password hashing, image processing), so the lock is held for milliseconds.
        "timeout": env_int("SQLITE_BUSY_TIMEOUT", 20),
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
        # Parameters bound on the server (Django's "server_side_binding") and prepared
        # statements (psycopg's prepare_threshold, which Django turns off by default):
        # psycopg prepares a query it has run five times on a connection, so PostgreSQL
        # plans a send's statement once per connection, not once per message
        # (bench/RESULTS.md). DB_PREPARED_STATEMENTS=false behind a proxy that cannot
        # hold prepared statements (PgBouncer in transaction mode before 1.21).
        **(
            {"server_side_binding": True, "prepare_threshold": 5}
            if env_bool("DB_PREPARED_STATEMENTS", True)
            else {}
        ),
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
    CHANNEL_LAYERS = {"default": {"BACKEND": "direct_messages.local_layer.LocalChannelLayer"}}

# --- Task queue ---------------------------------------------------------------------
# Notifications, exports and erasures run in a worker (`python manage.py dm_worker`, which
# `make run` starts beside the server). With REDIS_URL the tasks wait in Redis, on RQ
# (django-tasks-rq), which several workers on several machines share; else they wait in
# the database the messages are in (django-tasks-db). The database backend's app stays
# installed either way: its table is in the migrations.
# DM_TASK_QUEUE names the queue (RQ's list in Redis, the database backend's queue_name):
# deployments, or test runs, that share one Redis keep out of each other's tasks.
# (A task is checked against "default" where it is defined, so that one is listed too.)
TASK_QUEUE = os.environ.get("DM_TASK_QUEUE", "default")
_task_queues = sorted({"default", TASK_QUEUE})
if REDIS_URL:
    INSTALLED_APPS += ["django_rq"]
    TASKS = {"default": {"BACKEND": "django_tasks_rq.RQBackend", "QUEUES": _task_queues}}
    # RQ kills a task running longer than this: an export of a long history takes minutes.
    RQ_QUEUES = {name: {"URL": REDIS_URL, "DEFAULT_TIMEOUT": 3600} for name in _task_queues}
else:
    TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend", "QUEUES": _task_queues}}

# Web Push's VAPID key (RFC 8292), the same on every process: VAPID_PRIVATE_KEY from the
# environment (`manage.py dm_vapid_keys` makes one), or (DEBUG only) one made for this
# checkout and kept in var/. Neither: no Web Push.
VAPID_PRIVATE_KEY = os.environ.get("VAPID_PRIVATE_KEY", "")
if not VAPID_PRIVATE_KEY and DEBUG:
    VAPID_PRIVATE_KEY = local_secret_key(BASE_DIR / "var" / "vapid_private_key", vapid_private_key)

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

# Brute force: django-axes counts failed logins (the token endpoint, the login page, the
# admin) per account and per client address; either one past the limit locks out for the
# cool-off, which every further failure restarts. Across processes through Redis when it
# is configured, else the database. Signup (a password hash each) is throttled per
# address. Behind a proxy, set AXES_IPWARE_PROXY_COUNT and NINJA_NUM_PROXIES.
INSTALLED_APPS += ["axes"]
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
MIDDLEWARE += ["axes.middleware.AxesMiddleware"]
AXES_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 10)
AXES_COOLOFF_TIME = dt.timedelta(seconds=env_int("LOGIN_COOLOFF_SECONDS", 15 * 60))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
# The login form's field and the token endpoint's authenticate(username=...), not the
# model's USERNAME_FIELD (axes' default, `account` here).
AXES_USERNAME_FORM_FIELD = "username"
AXES_RESET_ON_SUCCESS = True
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = True
AXES_LOCKOUT_CALLABLE = "users.lockout.lockout_response"
AXES_HANDLER = (
    "axes.handlers.cache.AxesCacheHandler"
    if REDIS_URL
    else "axes.handlers.database.AxesDatabaseHandler"
)
AXES_VERBOSE = False
SIGNUP_RATE = os.environ.get("SIGNUP_RATE", "10/hour")  # per client address
NINJA_NUM_PROXIES = 0  # throttles key on REMOTE_ADDR, never on a client's X-Forwarded-For
CACHES = {
    "default": (
        {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}
        if REDIS_URL
        else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    )
}

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
    "TOKEN_RATE": os.environ.get("DM_TOKEN_RATE", "30/min"),
    "USER_SEARCH_RATE": os.environ.get("DM_USER_SEARCH_RATE", "60/min"),
    "REPORT_RATE": os.environ.get("DM_REPORT_RATE", "20/hour"),
    "EXPORT_RATE": os.environ.get("DM_EXPORT_RATE", "3/day"),
    "SEARCH_RATE": os.environ.get("DM_SEARCH_RATE", "30/min"),
    # The demo lets its users erase themselves (POST /api/me/erase).
    "ERASE_ENDPOINT": True,
    "ERASE_RATE": os.environ.get("DM_ERASE_RATE", "5/hour"),
    "DATABASE_THREADS": DATABASE_THREADS,
    "MESSAGE_MAX_LENGTH": env_int("DM_MESSAGE_MAX_LENGTH", 1000),
    "FRAME_MAX_BYTES": env_int("DM_FRAME_MAX_BYTES", 64 * 1024),
    "ATTACHMENTS_PER_MESSAGE": env_int("DM_ATTACHMENTS_PER_MESSAGE", 10),
    "FILE_MAX_BYTES": env_int("DM_FILE_MAX_BYTES", 25 * 1024 * 1024),
    "IMAGE_MAX_PIXELS": env_int("DM_IMAGE_MAX_PIXELS", 25_000_000),
    "UPLOAD_RATE_LIMIT": env_int("DM_UPLOAD_RATE_LIMIT", 30),
    "UPLOAD_RATE_WINDOW_SECONDS": env_int("DM_UPLOAD_RATE_WINDOW_SECONDS", 60),
    "UNCLAIMED_MAX_FILES": env_int("DM_UNCLAIMED_MAX_FILES", 50),
    "UNCLAIMED_MAX_BYTES": env_int("DM_UNCLAIMED_MAX_BYTES", 200 * 1024 * 1024),
    "IMAGE_DECODE_CONCURRENCY": env_int("DM_IMAGE_DECODE_CONCURRENCY", 2),
    "THUMBNAIL_SIZE": env_int("DM_THUMBNAIL_SIZE", 640),
    "EDIT_WINDOW_SECONDS": env_int("DM_EDIT_WINDOW_SECONDS", 15 * 60),
    "SEND_RATE_LIMIT": env_int("DM_SEND_RATE_LIMIT", 30),
    "SEND_RATE_WINDOW_SECONDS": env_int("DM_SEND_RATE_WINDOW_SECONDS", 10),
    "SEND_STATEMENT": env_bool("DM_SEND_STATEMENT", True),
    "UNCLAIMED_ATTACHMENT_TTL_SECONDS": env_int("DM_UNCLAIMED_TTL_SECONDS", 24 * 3600),
    "X_ACCEL_REDIRECT_PREFIX": os.environ.get("DM_X_ACCEL_REDIRECT_PREFIX", ""),
    "PRESENCE_TTL_SECONDS": env_int("DM_PRESENCE_TTL_SECONDS", 60),
    "MAX_SOCKETS_PER_USER": env_int("DM_MAX_SOCKETS_PER_USER", 50),
    "TYPING_THROTTLE_SECONDS": float(os.environ.get("DM_TYPING_THROTTLE_SECONDS") or 1.0),
    "FRAME_RATE": float(os.environ.get("DM_FRAME_RATE") or 10.0),
    "FRAME_BURST": env_int("DM_FRAME_BURST", 40),
    "REPLAY_BATCH": env_int("DM_REPLAY_BATCH", 500),
    "REDIS_URL": REDIS_URL,
    "VAPID_PRIVATE_KEY": VAPID_PRIVATE_KEY,
    "VAPID_SUBJECT": os.environ.get("VAPID_SUBJECT", "mailto:admin@localhost"),
    "PUSH_DELAY_SECONDS": float(os.environ.get("DM_PUSH_DELAY_SECONDS") or 3.0),
    "PUSH_RETRY_BASE_SECONDS": float(os.environ.get("DM_PUSH_RETRY_BASE_SECONDS") or 2.0),
    "PUSH_ATTEMPTS": env_int("DM_PUSH_ATTEMPTS", 5),
    # Mobile apps (docs/notifications.md): unset, no FCM / no APNs.
    "FCM_CREDENTIALS": os.environ.get("DM_FCM_CREDENTIALS", ""),
    "APNS_KEY": os.environ.get("DM_APNS_KEY", ""),
    "APNS_KEY_ID": os.environ.get("DM_APNS_KEY_ID", ""),
    "APNS_TEAM_ID": os.environ.get("DM_APNS_TEAM_ID", ""),
    "APNS_TOPIC": os.environ.get("DM_APNS_TOPIC", ""),
    "APNS_SANDBOX": os.environ.get("DM_APNS_SANDBOX", "") == "1",
    "PUSH_CLAIM_SECONDS": env_int("DM_PUSH_CLAIM_SECONDS", 300),
    "TASK_QUEUE": TASK_QUEUE,
}

# --- HTTPS and error reports (python manage.py check --deploy) -----------------------
# Production is served over HTTPS, usually by a proxy that terminates TLS and says so
# in X-Forwarded-Proto: SECURE_PROXY_SSL_HEADER=HTTP_X_FORWARDED_PROTO (only behind a
# proxy that always sets or strips that header: a client could send it otherwise).
# HSTS is on by default with DEBUG off (Django sends it on HTTPS responses only); the
# redirect to HTTPS is opt-in, because the benchmarks and the tests run production
# settings over plain HTTP on loopback. README's "Running at scale" sets all of them.
if _proxy_header := os.environ.get("SECURE_PROXY_SSL_HEADER", ""):
    SECURE_PROXY_SSL_HEADER = (_proxy_header, "https")
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0 if DEBUG else 365 * 24 * 3600)
# Both commit every subdomain of the site to HTTPS too, for as long as browsers keep
# the HSTS entry (preload: for good); only when all of them serve HTTPS.
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
# Error reports (the DEBUG page, mails to ADMINS) hide DATABASE_URL, REDIS_URL and the
# password in any URL-valued setting, beside Django's KEY / SECRET / PASSWORD names.
DEFAULT_EXCEPTION_REPORTER_FILTER = "instamg.reporting.SecretsHiddenFilter"

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
