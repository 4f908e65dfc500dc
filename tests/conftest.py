"""Shared fixtures: users, authenticated clients, WebSocket helpers, live servers."""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client

from tests.support import (
    PY,
    LiveServer,
    RedisServer,
    migrate,
    need,
    redis_server_binary,
    server_env,
    spawn,
    stop,
)

PASSWORD = "correct-horse-battery"


@pytest.fixture(scope="session", autouse=True)
def _database_threads_closed(django_db_setup: Any, django_db_blocker: Any) -> Iterator[None]:
    """The sockets' database threads keep their connections for the life of the
    process: close them (and any other session) before the test database is dropped."""
    yield
    from direct_messages.db import database_threads_close

    with django_db_blocker.unblock():
        database_threads_close()
        from django.db import connection

        if connection.vendor == "postgresql":
            # Whatever else still holds a session (a thread of a test's event loop, the
            # thread asgiref runs sync_to_async calls on) would stop Django from dropping
            # the test database, and every run would leave one behind.
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )


def pytest_generate_tests(metafunc: Any) -> None:
    """The send tests (``pytestmark = pytest.mark.usefixtures("send_path")``) run once
    per way a send is stored: through the ORM, and on PostgreSQL through the send
    statement (direct_messages/send_pg.py) as well."""
    if "send_path" in metafunc.fixturenames:
        from django.conf import settings

        postgresql = settings.DATABASES["default"]["ENGINE"].endswith("postgresql")
        paths = ["orm", "statement"] if postgresql else ["orm"]
        metafunc.parametrize("send_path", paths, indirect=True)


@pytest.fixture
def send_path(request: Any, settings: Any) -> str:
    settings.DIRECT_MESSAGES = {
        **settings.DIRECT_MESSAGES,
        "SEND_STATEMENT": request.param == "statement",
    }
    return str(request.param)


@pytest.fixture(autouse=True)
def _lenient_throttles(settings: Any) -> None:
    """Every test signs up and logs in from 127.0.0.1, and the cache (Redis in the
    PostgreSQL pass) outlives a test: the throttles and lockouts are lifted here and
    tested, at their real limits, in tests/integration/test_throttles.py."""
    settings.AXES_FAILURE_LIMIT = 1_000_000
    settings.SIGNUP_RATE = "1000000/hour"
    settings.DIRECT_MESSAGES = {
        **settings.DIRECT_MESSAGES,
        "TOKEN_RATE": "1000000/min",
        "USER_SEARCH_RATE": "1000000/min",
        "SEARCH_RATE": "1000000/min",
        "REPORT_RATE": "1000000/min",
        "EXPORT_RATE": "1000000/min",
        "ERASE_RATE": "1000000/min",
        "FRAME_RATE": 1_000_000.0,
        "FRAME_BURST": 1_000_000,
    }


@pytest.fixture(autouse=True)
def _fresh_presence() -> Iterator[None]:
    from direct_messages import presence

    if isinstance(presence.store(), presence.MemoryPresence):
        presence.store().clear()  # type: ignore[union-attr]
    yield


@pytest.fixture(autouse=True)
def _fresh_channel_layer() -> Iterator[None]:
    """Each test gets its own channel layer object: pytest-asyncio gives every test a
    new event loop, and a Redis layer's connection pools belong to the loop that made
    them."""
    from channels.layers import channel_layers

    channel_layers.backends = {}
    yield
    channel_layers.backends = {}


@pytest.fixture
def make_user(db: Any) -> Callable[..., Any]:
    from django.contrib.auth import get_user_model

    def make(account: str | None = None, password: str = PASSWORD, **extra: Any) -> Any:
        account = account or f"u{uuid.uuid4().hex[:10]}"
        return get_user_model().objects.create_user(account=account, password=password, **extra)

    return make


@pytest.fixture
def alice(make_user: Callable[..., Any]) -> Any:
    return make_user("alice", name="Alice")


@pytest.fixture
def bob(make_user: Callable[..., Any]) -> Any:
    return make_user("bob", name="Bob")


def token_for(user: Any) -> str:
    from direct_messages.auth import token_issue

    return token_issue(user)[0]


@pytest.fixture
def auth_client() -> Callable[[Any], Client]:
    """A Django test client that sends ``user``'s Bearer token with every request."""

    def make(user: Any) -> Client:
        return Client(HTTP_AUTHORIZATION=f"Bearer {token_for(user)}")

    return make


def ws_headers(user: Any | None = None, origin: str | None = None) -> list[tuple[bytes, bytes]]:
    headers = [(b"host", b"127.0.0.1")]
    if user is not None:
        headers.append((b"authorization", f"Bearer {token_for(user)}".encode()))
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    return headers


@pytest.fixture
async def ws_connect() -> AsyncIterator[Callable[..., Any]]:
    """Open a ``WebsocketCommunicator`` on ``instamg.asgi.application``; all are closed
    at the end of the test."""
    from instamg.asgi import application

    opened: list[WebsocketCommunicator] = []

    async def connect(
        path: str,
        user: Any | None = None,
        origin: str | None = None,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> WebsocketCommunicator:
        communicator = WebsocketCommunicator(
            application,
            path,
            headers=headers
            if headers is not None
            else await sync_to_async(ws_headers)(user, origin),
        )
        connected, _ = await communicator.connect(timeout=10)
        assert connected, f"handshake to {path} refused"
        opened.append(communicator)
        return communicator

    yield connect
    for communicator in opened:
        await communicator.disconnect(timeout=5)


# --- Live server processes ---------------------------------------------------------------


@pytest.fixture(scope="session")
def live_database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A migrated database for server processes: PostgreSQL when ``DATABASE_URL`` points
    there, else a SQLite file. Tests use fresh accounts, so they can share it."""
    configured = os.environ.get("DATABASE_URL", "")
    if configured.startswith(("postgres://", "postgresql://")):
        import psycopg

        name = f"instamg_live_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(configured, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        url = configured.rsplit("/", 1)[0] + f"/{name}"
        migrate(server_env(url))
        yield url
        with psycopg.connect(configured, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    else:
        path: Path = tmp_path_factory.mktemp("live") / "db.sqlite3"
        url = f"sqlite:///{path}"
        migrate(server_env(url))
        yield url


@pytest.fixture
def redis_url() -> Iterator[str]:
    """``REDIS_URL`` if set, else a private ``redis-server`` for this test."""
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"]
        return
    need(redis_server_binary() is not None, "needs REDIS_URL or a redis-server binary")
    server = RedisServer()
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    """A ``redis-server`` of this test's own, which the test may stop and restart."""
    need(redis_server_binary() is not None, "needs the redis-server binary")
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def asgi_server_factory(
    live_database_url: str, tmp_path: Path
) -> Iterator[Callable[..., LiveServer]]:
    started: list[LiveServer] = []

    def start(
        redis_url: str | None = None,
        server: str = "daphne",
        args: tuple[str, ...] = (),
        **extra: str,
    ) -> LiveServer:
        env = server_env(live_database_url, redis_url, **extra)
        log_path = tmp_path / f"server{len(started)}.log"
        live = LiveServer(env=env, server=server, args=args, log_path=log_path)
        started.append(live.start())
        return live

    yield start
    for live in started:
        live.stop()
    for log in tmp_path.glob("server*.log"):
        text = log.read_text(errors="replace")
        if "Traceback" in text:
            print(f"--- {log.name} ---\n{text[-4000:]}")


@pytest.fixture
def asgi_server(asgi_server_factory: Callable[..., LiveServer]) -> LiveServer:
    """One daphne process on the embedded defaults (or on Redis when REDIS_URL is set).

    Not called ``live_server``: that name belongs to pytest-django's own fixture.
    """
    return asgi_server_factory(os.environ.get("REDIS_URL") or None)


# --- The task worker ---------------------------------------------------------------


@pytest.fixture
def database_tasks(settings: Any) -> Any:
    """The app's tasks on django-tasks-db's database backend, REDIS_URL or not (which
    moves them to RQ): for the tests that run ``dm_worker --batch`` in this process and
    read the task rows. The live tests (``worker``) run on whichever is configured."""
    settings.TASKS = {
        "default": {"BACKEND": "django_tasks_db.DatabaseBackend", "QUEUES": ["default"]}
    }
    settings.DIRECT_MESSAGES = {**settings.DIRECT_MESSAGES, "TASK_QUEUE": "default"}
    return settings


WORKER_PUSH_DELAY = "2"  # DM_PUSH_DELAY_SECONDS, for the server (which enqueues) and the worker


class Worker:
    """The worker process, as its log tells what it did (django-tasks' line per task,
    the same on the database backend and on RQ)."""

    def __init__(self, proc: Any, log: Path) -> None:
        self.proc = proc
        self.log = log

    def kill(self) -> None:
        """SIGKILL to the worker and every process it started (RQ's work horse, in a
        session of its own, and its scheduler): a machine that dies."""
        for pid in [*descendants(self.proc.pid), self.proc.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait(10)

    def wait_for_tasks(self, count: int, timeout: float = 30.0) -> None:
        """Until ``count`` tasks have finished (successfully)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.log.exists() and self.log.read_text().count("state=SUCCESSFUL") >= count:
                return
            time.sleep(0.1)
        raise TimeoutError(f"fewer than {count} tasks finished:\n{self.log.read_text()[-2000:]}")


def descendants(pid: int) -> list[int]:
    """The processes ``pid`` started, and theirs (from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


@pytest.fixture
def worker_factory(live_database_url: str, tmp_path: Path) -> Iterator[Callable[..., Worker]]:
    """Start ``manage.py dm_worker`` (the app's task queue) on the live servers' database,
    with the notification delay of ``WORKER_PUSH_DELAY`` and ``extra`` environment (the
    servers' storage, say)."""
    started: list[tuple[Any, Path]] = []

    def start(**extra: str) -> Worker:
        log = tmp_path / f"worker{len(started)}.log"
        env = server_env(
            live_database_url,
            os.environ.get("REDIS_URL"),
            DM_PUSH_DELAY_SECONDS=WORKER_PUSH_DELAY,
            **extra,
        )
        proc = spawn([PY, "manage.py", "dm_worker", "--interval", "0.2"], env, log)
        started.append((proc, log))
        return Worker(proc, log)

    yield start
    for proc, log in started:
        stop(proc)
        text = log.read_text(errors="replace")
        if "Traceback" in text:
            print(f"--- {log.name} ---\n{text[-4000:]}")


@pytest.fixture
def worker(worker_factory: Callable[..., Worker]) -> Worker:
    """One worker on the embedded defaults' storage."""
    return worker_factory()
