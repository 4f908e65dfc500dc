"""Helpers for tests that run real server processes and real WebSocket clients."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


def need(condition: bool, reason: str) -> None:
    """Fail with ``reason`` when a service or binary the test needs is missing: a
    skipped check is not a passing one (`bash .ci/run` installs everything)."""
    if not condition:
        pytest.fail(f"missing on this machine: {reason} (see .ci/run for what to install)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 20.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {port}")


def redis_server_binary() -> str | None:
    return shutil.which("redis-server")


@dataclass
class RedisServer:
    """A private ``redis-server`` on a free port, which a test may stop and restart."""

    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = redis_server_binary()
        assert binary
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, proc=self.proc)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


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
    )
    if redis_url:
        env["REDIS_URL"] = redis_url
    env.update(extra)
    return env


def migrate(env: dict[str, str]) -> None:
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v0"],
        cwd=ROOT,
        env=env,
        check=True,
    )


@dataclass
class LiveServer:
    """A real ASGI server process (daphne by default) serving ``instamg.asgi``."""

    env: dict[str, str]
    server: str = "daphne"
    args: tuple[str, ...] = ()  # more command-line options for the server
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None
    log_path: Path | None = None

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self) -> LiveServer:
        if self.server == "uvicorn":
            cmd = [
                sys.executable,
                "-m",
                "uvicorn",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--log-level",
                "warning",
                "instamg.asgi:application",
            ]
        else:
            cmd = [
                sys.executable,
                "-m",
                "daphne",
                "-b",
                "127.0.0.1",
                "-p",
                str(self.port),
                "instamg.asgi:application",
            ]
        cmd[-1:-1] = self.args
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=log, stderr=log)
        wait_for_port(self.port, proc=self.proc)
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:  # daphne waits up to 10 s for open WebSockets; tests need not
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def restart(self) -> None:
        self.stop()
        self.start()


def http_json(method: str, url: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
    import urllib.error
    import urllib.request

    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        return exc.code, json.loads(raw) if raw else None


def signup(
    base: str, account: str | None = None, password: str = "correct-horse-battery"
) -> dict[str, Any]:
    account = account or f"u{uuid.uuid4().hex[:12]}"
    status, body = http_json(
        "POST", f"{base}/api/auth/signup", {"account": account, "password": password}
    )
    assert status == 201, body
    return {"account": account, "token": body["token"], "id": body["user"]["id"]}


class WsClient:
    """A real WebSocket client (the ``websockets`` library) speaking PROTOCOL.md."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.backlog: list[dict[str, Any]] = []  # frames skipped by recv_type, kept in order

    @classmethod
    async def open(cls, url: str, token: str | None = None, **kwargs: Any) -> WsClient:
        from websockets.asyncio.client import connect

        headers = {"Authorization": f"Bearer {token}"} if token else {}
        conn = await connect(url, additional_headers=headers, open_timeout=10, **kwargs)
        return cls(conn)

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


@contextlib.contextmanager
def live_servers(
    env: dict[str, str], count: int = 1, log_dir: Path | None = None
) -> Iterator[list[LiveServer]]:
    servers = []
    try:
        for i in range(count):
            server = LiveServer(env=env, log_path=(log_dir / f"server{i}.log") if log_dir else None)
            servers.append(server.start())
        yield servers
    finally:
        for server in servers:
            server.stop()
