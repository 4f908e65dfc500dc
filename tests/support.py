"""The one support library of tests, bench and reliability: processes that die with
their parent (servers, Redis, nginx) and the :class:`Stack` that stops them, free ports,
an HTTP JSON client and WebSocket clients that speak PROTOCOL.md."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
PASSWORD = "correct-horse-battery"
APP = "instamg.asgi:application"
POSTGRES_ADMIN_URL = os.environ.get("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432")


def need(condition: bool, reason: str) -> None:
    """Fail with ``reason`` when a service or binary the test needs is missing: a
    skipped check is not a passing one (`bash .ci/run` installs everything)."""
    if not condition:
        import pytest

        pytest.fail(f"missing on this machine: {reason} (see .ci/run for what to install)")


# --- processes -----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen | None = None, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r:.120} exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port}")


def _die_with_parent() -> None:
    """In the child: SIGTERM when the thread that started it ends (PR_SET_PDEATHSIG)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)


def spawn(
    cmd: list[str], env: dict[str, str] | None = None, log: Path | None = None
) -> subprocess.Popen[bytes]:
    """``cmd`` in the repository, in a session of its own, its output appended to ``log``."""
    with open(log or os.devnull, "ab") as out:
        return subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )


def stop(proc: subprocess.Popen | None, sig: int = signal.SIGTERM, timeout: float = 3.0) -> None:
    """``sig``, then SIGKILL if it is still running after ``timeout`` (daphne would wait
    up to 10 s for open WebSockets)."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def run(cmd: list[str], env: dict[str, str] | None = None, timeout: float = 900) -> str:
    """Run a helper to completion in the repository; its stdout (stderr goes through)."""
    return subprocess.run(
        cmd,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        check=True,
        timeout=timeout,
        text=True,
        preexec_fn=_die_with_parent,
    ).stdout


LIVE_TASK_QUEUE = f"live-{uuid.uuid4().hex[:12]}"


def server_env(database_url: str, redis_url: str | None = None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"REDIS_URL", "DATABASE_URL"}}
    env.update(
        DATABASE_URL=database_url,
        DEBUG="true",
        ALLOWED_HOSTS="127.0.0.1,localhost",
        DM_SEND_RATE_LIMIT="100000",
        # Every test's users sign up and log in from 127.0.0.1: the throttles and lockouts
        # have tests of their own (tests/integration/test_throttles.py).
        SIGNUP_RATE="1000000/hour",
        DM_TOKEN_RATE="1000000/min",
        DM_USER_SEARCH_RATE="1000000/min",
        DM_SEARCH_RATE="1000000/min",
        LOGIN_FAILURE_LIMIT="1000000",
        DM_FRAME_RATE="1000000",
        DM_FRAME_BURST="1000000",
        PYTHONUNBUFFERED="1",
        # The task queue of this test run's servers and workers: another run's tasks, in
        # the same Redis, are not theirs.
        DM_TASK_QUEUE=LIVE_TASK_QUEUE,
    )
    if redis_url:
        env["REDIS_URL"] = redis_url
    env.update(extra)
    return env


def migrate(env: dict[str, str]) -> None:
    run([PY, "manage.py", "migrate", "--noinput", "-v0"], env)


def server_command(kind: str, port: int, app: str = APP, args: tuple[str, ...] = ()) -> list[str]:
    """daphne or uvicorn serving ``app``, or the benchmark's floor (``bench.floor``)."""
    p = str(port)
    commands = {
        "daphne": ["-m", "daphne", "-b", "127.0.0.1", "-p", p, *args, app],
        "uvicorn": ["-m", "uvicorn", "--host", "127.0.0.1", "--port", p, *UVICORN, *args, app],
        "floor": ["-m", "bench.floor", "--port", p, *args],
    }
    return [PY, *commands[kind]]


UVICORN = ("--log-level", "warning")


@dataclass
class LiveServer:
    """A real server process (daphne by default) serving ``instamg.asgi``."""

    env: dict[str, str] | None = None
    server: str = "daphne"
    args: tuple[str, ...] = ()  # more command-line options for the server
    port: int = field(default_factory=free_port)
    log_path: Path | None = None
    app: str = APP
    proc: subprocess.Popen | None = None

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, wait: bool = True) -> LiveServer:
        cmd = server_command(self.server, self.port, self.app, self.args)
        self.proc = spawn(cmd, self.env, self.log_path)
        return self.wait() if wait else self

    def wait(self) -> LiveServer:
        try:
            wait_for_port(self.port, self.proc, timeout=60)
        except Exception:
            if self.log_path and self.log_path.exists():
                print(self.log_path.read_text(errors="replace")[-3000:], file=sys.stderr)
            raise
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        stop(self.proc, sig)

    def restart(self) -> None:
        self.stop()
        self.start()


def redis_server_binary() -> str | None:
    return shutil.which("redis-server")


@dataclass
class RedisServer:
    """A private ``redis-server`` on a free port, which may be stopped and restarted."""

    port: int = field(default_factory=free_port)
    log_path: Path | None = None
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        cmd = [redis_server_binary() or "redis-server", "--port", str(self.port)]
        cmd += ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--maxclients", "20000"]
        self.proc = spawn(cmd, log=self.log_path)
        wait_for_port(self.port, self.proc)
        return self

    def stop(self) -> None:
        """SIGKILL: no shutdown, every connection reset, all data gone."""
        stop(self.proc, signal.SIGKILL)

    def info(self, section: str) -> Any:
        import redis

        client = redis.Redis(port=self.port, socket_timeout=2)
        try:
            return client.info(section)
        finally:
            client.close()


class _Terminated(KeyboardInterrupt):
    """SIGTERM, delivered like Ctrl-C so that ``finally`` blocks run."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise _Terminated()


@dataclass
class Stack:
    """Owns the processes, databases and temp directory of a harness run, and stops or
    removes them (last first) when the ``with`` block ends: normally, on an exception,
    on Ctrl-C or on SIGTERM."""

    keep_tmp: bool = False
    tmp: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="instamg-bench-")))
    cleanups: list[Callable[[], None]] = field(default_factory=list)

    def __enter__(self) -> Stack:
        signal.signal(signal.SIGTERM, _on_sigterm)
        # Started in the background by a shell, Python inherits SIGINT ignored.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        return self

    def __exit__(self, *exc: Any) -> None:
        # Ctrl-C again while cleaning up must not leave half of it undone.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            while self.cleanups:
                try:
                    self.cleanups.pop()()
                except Exception as exc:
                    print(f"cleanup failed: {exc!r}", file=sys.stderr)
            if not self.keep_tmp:
                shutil.rmtree(self.tmp, ignore_errors=True)
        finally:
            signal.signal(signal.SIGINT, previous)

    def servers(
        self,
        kind: str,
        env: dict[str, str],
        ports: int | list[int],
        app: str = APP,
        args: tuple[str, ...] = (),
    ) -> list[LiveServer]:
        """Servers on ``ports`` (or on that many free ports), started at once (each takes
        seconds to import Django). uvicorn compresses no frames, as in the README's
        production command."""
        if isinstance(ports, int):
            ports = [free_port() for _ in range(ports)]
        if kind == "uvicorn":
            args = ("--lifespan", "off", "--ws-per-message-deflate", "false", *args)
        started = []
        for port in ports:
            log = self.tmp / f"{kind}-{port}.log"
            server = LiveServer(env, kind, args, port, log, app)
            self.cleanups.append(server.stop)
            started.append(server.start(wait=False))
        return [server.wait() for server in started]

    def server(self, kind: str, env: dict[str, str], app: str = APP) -> LiveServer:
        return self.servers(kind, env, 1, app)[0]

    @contextlib.contextmanager
    def running(self, servers: list[LiveServer]) -> Iterator[list[LiveServer]]:
        """Stop ``servers`` when the block ends (not only when the stack does)."""
        try:
            yield servers
        finally:
            for server in servers:
                server.stop()
                self.cleanups.remove(server.stop)

    def redis(self) -> RedisServer:
        redis = RedisServer()
        redis.log_path = self.tmp / f"redis-{redis.port}.log"
        self.cleanups.append(redis.stop)
        return redis.start()

    def postgres_database(self, synchronous_commit: bool = True) -> str:
        """A new, empty PostgreSQL database, dropped when the stack closes; its URL.

        ``synchronous_commit=False`` sets it off for this database only (docs/benchmarks.md).
        """
        import psycopg

        name = f"bench_{uuid.uuid4().hex[:12]}"
        admin = f"{POSTGRES_ADMIN_URL}/postgres"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
            if not synchronous_commit:
                conn.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = off')

        def drop() -> None:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

        self.cleanups.append(drop)
        return f"{POSTGRES_ADMIN_URL}/{name}"

    def sqlite_database(self, name: str = "db") -> str:
        return f"sqlite:///{self.tmp / (name + '.sqlite3')}"

    def nginx(self, port: int, backends: list[int]) -> None:
        """nginx in front of ``backends``, round-robin; ``?node=a`` / ``?node=b`` pins a
        request to the first / second (the app ignores unknown query parameters)."""
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        if not os.path.exists(binary):
            raise RuntimeError("nginx is not installed: apt-get install -y nginx")
        prefix = self.tmp / f"nginx-{port}"
        prefix.mkdir(exist_ok=True)
        names = [chr(97 + i) for i in range(len(backends))]
        servers = "".join(f"    server 127.0.0.1:{p};\n" for p in backends)
        pinned = "".join(
            f"  upstream up_{n} {{ server 127.0.0.1:{p}; }}\n"
            for n, p in zip(names, backends, strict=True)
        )
        routes = "".join(f"    {n} up_{n};\n" for n in names)
        temp = "".join(f"  {k}_temp_path {prefix}/{k};\n" for k in TEMP_PATHS)
        (prefix / "nginx.conf").write_text(
            f"""worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
worker_rlimit_nofile 40000;
events {{ worker_connections 20000; }}
http {{
  access_log off;
{temp}  map $http_upgrade $connection_upgrade {{ default upgrade; '' ''; }}
  upstream up_all {{
{servers}    keepalive 32;
  }}
{pinned}  map $arg_node $pool {{
{routes}    default up_all;
  }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://$pool;
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      proxy_set_header Host $host;
      proxy_read_timeout 3600s;
      proxy_buffering off;
    }}
  }}
}}
"""
        )
        cmd = [binary, "-c", f"{prefix}/nginx.conf", "-p", str(prefix), "-e", f"{prefix}/error.log"]
        proc = spawn(cmd, log=self.tmp / f"nginx-{port}.log")
        self.cleanups.append(lambda: stop(proc))
        wait_for_port(port, proc)


TEMP_PATHS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


# --- clients -------------------------------------------------------------------------


def http_json(
    method: str, url: str, body: Any = None, token: str | None = None, timeout: float = 30.0
) -> tuple[int, Any]:
    """The status and the decoded JSON body (an error's first 200 bytes if not JSON)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw) if raw else None
        except ValueError:
            return exc.code, raw[:200]


def signup(
    base: str, account: str | None = None, password: str = PASSWORD, prefix: str = "u"
) -> dict[str, Any]:
    """A new account through ``POST /api/auth/signup``: its account, token and id."""
    account = account or f"{prefix}{uuid.uuid4().hex[:12]}"
    status, body = http_json(
        "POST", f"{base}/api/auth/signup", {"account": account, "password": password}
    )
    if status != 201:
        raise RuntimeError(f"signup failed: {status} {body}")
    return {"account": account, "token": body["token"], "id": body["user"]["id"]}


async def ws_connect(url: str, token: str | None = None, **kwargs: Any) -> Any:
    """A ``websockets`` connection with the Bearer token of a mobile client (no Origin)."""
    from websockets.asyncio.client import connect

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return await connect(url, additional_headers=headers, **{"open_timeout": 10, **kwargs})


async def open_dm(url: str, token: str, timeout: float = 30.0, **kwargs: Any) -> Any:
    """A ``/ws/dm/`` connection, once its first frame (``room.joined``) has come."""
    conn = await ws_connect(url, token, open_timeout=timeout, **kwargs)
    first = json.loads(await asyncio.wait_for(conn.recv(), timeout))
    if first.get("type") != "room.joined":
        await conn.close()
        raise RuntimeError(f"expected room.joined first, got {first}")
    return conn


class WsClient:
    """A real WebSocket client (the ``websockets`` library) speaking PROTOCOL.md."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.backlog: list[dict[str, Any]] = []  # frames skipped by recv_type, kept in order

    @classmethod
    async def open(cls, url: str, token: str | None = None, **kwargs: Any) -> WsClient:
        return cls(await ws_connect(url, token, **kwargs))

    async def send(self, frame: dict[str, Any]) -> None:
        await self.conn.send(json.dumps(frame))

    async def recv(self, timeout: float = 10.0) -> dict[str, Any]:
        if self.backlog:
            return self.backlog.pop(0)
        return json.loads(await asyncio.wait_for(self.conn.recv(), timeout))

    async def recv_type(self, *types: str, timeout: float = 10.0) -> dict[str, Any]:
        """The next frame of one of ``types``; other frames stay queued for later calls."""
        for i, frame in enumerate(self.backlog):
            if frame["type"] in types:
                return self.backlog.pop(i)
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {types} frame within {timeout}s")
            frame = json.loads(await asyncio.wait_for(self.conn.recv(), remaining))
            if frame["type"] in types:
                return frame
            self.backlog.append(frame)

    async def send_message(
        self, text: str, client_id: str | None = None, **extra: Any
    ) -> dict[str, Any]:
        client_id = client_id or str(uuid.uuid4())
        await self.send({"type": "message.send", "client_id": client_id, "message": text, **extra})
        return await self.recv_type("message.ack", "error")

    async def close(self) -> None:
        await self.conn.close()
