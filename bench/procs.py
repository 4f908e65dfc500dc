"""Processes and resources that a benchmark starts, and the one place that stops them.

Every process is started through a :class:`Stack`, which stops it (and drops the temp
PostgreSQL databases and directories it made) when the ``with`` block ends: normally,
on an exception, on Ctrl-C or on SIGTERM. Children also get ``PR_SET_PDEATHSIG`` so
that they die with the harness even if it is killed outright.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
POSTGRES_ADMIN_URL = os.environ.get("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432")
# Tokens are signed with this key in every server the harness starts (DEBUG is off).
SECRET_KEY = "bench-" + uuid.uuid4().hex * 2
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def raise_nofile_limit() -> int:
    """Raise the open-files soft limit to the hard limit (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen | None = None, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args[:4]} exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port}")


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the harness dies, and leave its process group."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine_seconds() -> tuple[float, float]:
    """CPU seconds of the whole machine so far, all cores: (busy, stolen). Busy is what
    ran on it, every tenant included; stolen is what the hypervisor gave other guests
    while ours were ready to run, which shows up as latency, not as work."""
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, irq, softirq, steal, *_ = (
            int(x) for x in f.readline().split()[1:]
        )
    return (user + nice + system + irq + softirq) / CLK_TCK, steal / CLK_TCK


def cpu_by_process(servers: list[int]) -> dict[str, float]:
    """CPU seconds so far of every process on the machine, summed by what it is: the
    servers under test, PostgreSQL, Redis, nginx, this harness (the load generator)."""
    me = os.getpid()
    totals: dict[str, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            with open(f"/proc/{pid}/comm") as f:
                comm = f.read().strip()
            seconds = cpu_seconds(pid)
        except OSError:  # gone meanwhile
            continue
        if pid in servers:
            kind = "servers"
        elif pid == me:
            kind = "load generator"
        elif comm in ("postgres", "redis-server", "nginx"):
            kind = {"postgres": "PostgreSQL", "redis-server": "Redis"}.get(comm, comm)
        else:
            kind = "other"
        totals[kind] = totals.get(kind, 0.0) + seconds
    return totals


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE_SIZE


def wait_quiet(pids: list[int], busy: float = 0.15, timeout: float = 60.0) -> float:
    """Wait until ``pids`` together use under ``busy`` CPU for 0.5 s; the time waited.

    An overloaded server keeps working off queued frames after the clients are gone;
    the next measurement must not start before it is done.
    """
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        before = sum(cpu_seconds(p) for p in pids)
        time.sleep(0.5)
        if sum(cpu_seconds(p) for p in pids) - before < busy * 0.5:
            break
    return time.monotonic() - start


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        if not self.alive():
            return
        with contextlib.suppress(ProcessLookupError):
            self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                self.popen.kill()
            self.popen.wait(timeout)

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""


class _Terminated(KeyboardInterrupt):
    """SIGTERM, delivered like Ctrl-C so that ``finally`` blocks run."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise _Terminated()


@dataclass
class Stack:
    """Owns every process, database and directory of one harness run."""

    tmp: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="instamg-bench-")))
    procs: list[Proc] = field(default_factory=list)
    cleanups: list[Callable[[], None]] = field(default_factory=list)
    keep_tmp: bool = False

    def __enter__(self) -> Stack:
        signal.signal(signal.SIGTERM, _on_sigterm)
        # Started in the background by a shell, Python inherits SIGINT ignored.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        # Ctrl-C again while cleaning up must not leave half of it undone.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            for proc in reversed(self.procs):
                with contextlib.suppress(Exception):
                    proc.stop()
            self.procs.clear()
            for cleanup in reversed(self.cleanups):
                try:
                    cleanup()
                except Exception as exc:
                    print(f"bench: cleanup failed: {exc!r}", file=sys.stderr)
            self.cleanups.clear()
            if not self.keep_tmp:
                shutil.rmtree(self.tmp, ignore_errors=True)
        finally:
            signal.signal(signal.SIGINT, previous)

    # --- processes ---------------------------------------------------------------------

    def spawn(self, name: str, cmd: list[str], env: dict[str, str] | None = None) -> Proc:
        log = self.tmp / f"{name}.log"
        with open(log, "ab") as out:
            popen = subprocess.Popen(
                cmd,
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        proc = Proc(name, popen, log)
        self.procs.append(proc)
        return proc

    def stop(self, proc: Proc) -> None:
        proc.stop()
        if proc in self.procs:
            self.procs.remove(proc)

    def run(self, cmd: list[str], env: dict[str, str] | None = None, timeout: float = 900) -> str:
        """Run a helper to completion; its stdout (stderr goes to the terminal)."""
        out = subprocess.run(
            cmd,
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            check=True,
            timeout=timeout,
            text=True,
            preexec_fn=_die_with_parent,
        )
        return out.stdout

    # --- services ----------------------------------------------------------------------

    def redis(self) -> Redis:
        port = free_port()
        proc = self.spawn(
            f"redis-{port}",
            [
                shutil.which("redis-server") or "redis-server",
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--maxclients",
                "20000",
            ],
        )
        wait_for_port(port, proc.popen)
        return Redis(port, proc)

    def postgres_database(self, synchronous_commit: bool = True) -> str:
        """A new, empty PostgreSQL database, dropped when the stack closes; its URL.

        ``synchronous_commit=False`` sets it off for this database only: commits stop
        waiting for the WAL flush, which on a shared VM disk takes milliseconds with
        50 ms outliers and would otherwise swamp what is being compared.
        """
        import psycopg

        name = f"bench_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(f"{POSTGRES_ADMIN_URL}/postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
            if not synchronous_commit:
                conn.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = off')

        def drop() -> None:
            with psycopg.connect(f"{POSTGRES_ADMIN_URL}/postgres", autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

        self.cleanups.append(drop)
        return f"{POSTGRES_ADMIN_URL}/{name}"

    def sqlite_database(self, name: str = "db") -> str:
        return f"sqlite:///{self.tmp / (name + '.sqlite3')}"

    def nginx(self, port: int, backends: list[int]) -> Proc:
        """nginx in front of ``backends``; ``?node=a`` / ``?node=b`` pins a WebSocket.

        Plain requests are balanced round-robin over every backend; ``node`` lets the
        load generator put senders on one process and recipients on the other, as a
        real balancer's sticky routing would. Unknown query parameters are ignored by
        the app (PROTOCOL.md reads only ``after``).
        """
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        if not os.path.exists(binary):
            raise RuntimeError("nginx is not installed: apt-get install -y nginx")
        prefix = self.tmp / f"nginx-{port}"
        prefix.mkdir(exist_ok=True)
        servers = "".join(f"    server 127.0.0.1:{p};\n" for p in backends)
        pinned = "".join(
            f"  upstream up_{chr(97 + i)} {{ server 127.0.0.1:{p}; }}\n"
            for i, p in enumerate(backends)
        )
        routes = "".join(f"    {chr(97 + i)} up_{chr(97 + i)};\n" for i in range(len(backends)))
        conf = prefix / "nginx.conf"
        conf.write_text(
            f"""worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
worker_rlimit_nofile 40000;
events {{ worker_connections 20000; }}
http {{
  access_log off;
  client_body_temp_path {prefix}/body;
  proxy_temp_path {prefix}/proxy;
  fastcgi_temp_path {prefix}/fastcgi;
  uwsgi_temp_path {prefix}/uwsgi;
  scgi_temp_path {prefix}/scgi;
  map $http_upgrade $connection_upgrade {{ default upgrade; '' ''; }}
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
        proc = self.spawn(
            f"nginx-{port}",
            [binary, "-c", str(conf), "-p", str(prefix), "-e", str(prefix / "error.log")],
        )
        wait_for_port(port, proc.popen)
        return proc


@dataclass
class Redis:
    port: int
    proc: Proc

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def commandstats(self) -> dict[str, int]:
        import redis

        client = redis.Redis(port=self.port)
        try:
            stats = client.info("commandstats")
        finally:
            client.close()
        return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}


def commit_latency_ms(samples: int = 100) -> dict[str, float]:
    """Durable INSERT + COMMIT round trips on PostgreSQL: what the disk's fsync costs."""
    import psycopg

    name = f"bench_probe_{uuid.uuid4().hex[:8]}"
    times = []
    with psycopg.connect(f"{POSTGRES_ADMIN_URL}/postgres", autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {name} (x int)")
        try:
            for _ in range(samples):
                t = time.perf_counter()
                conn.execute(f"INSERT INTO {name} VALUES (1)")
                times.append((time.perf_counter() - t) * 1000)
        finally:
            conn.execute(f"DROP TABLE {name}")
    times.sort()
    return {
        "p50": round(times[len(times) // 2], 2),
        "p99": round(times[int(len(times) * 0.99) - 1], 2),
        "max": round(times[-1], 2),
    }


def git_commit() -> str:
    """The work tree's commit (and whether it has local changes): what a server runs."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            [
                "git",
                "status",
                "--porcelain",
                "--untracked-files=no",
                "--",
                ".",
                ":!bench",
                ":!docs",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
        return head + ("+changes" if dirty else "")
    except OSError:
        return "?"


def server_env(database_url: str, redis_url: str | None = None, **extra: str) -> dict[str, str]:
    """The environment of a product server (and of its migrate) in a benchmark."""
    drop = {"REDIS_URL", "DATABASE_URL", "CHANNEL_LAYER", "DJANGO_SETTINGS_MODULE"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(
        DATABASE_URL=database_url,
        DEBUG="false",
        SECRET_KEY=SECRET_KEY,
        ALLOWED_HOSTS="127.0.0.1,localhost,testserver",
        # Each load user sends 5 to 15 messages a second, far past the real limit (30
        # per 10 s), so the limit is lifted; the window is narrowed so that each user's
        # window row holds about as many entries (20 to 45) as a real user's at the
        # limit does (31), instead of ten times that.
        DM_SEND_RATE_LIMIT="1000000",
        DM_SEND_RATE_WINDOW_SECONDS="3",
        # The load generator signs up and logs in thousands of users from one address.
        SIGNUP_RATE="100000000/hour",
        DM_TOKEN_RATE="100000000/min",
        LOGIN_FAILURE_LIMIT="100000000",
        DM_FRAME_RATE="100000000",  # a load user sends up to 15 frames a second
        DM_FRAME_BURST="100000000",
        LOG_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
    )
    if redis_url:
        env["REDIS_URL"] = redis_url
    env.update(extra)
    return env


def migrate(stack: Stack, env: dict[str, str]) -> None:
    stack.run([PY, "manage.py", "migrate", "--noinput", "-v0"], env=env)


def server_command(kind: str, port: int, app: str = "instamg.asgi:application") -> list[str]:
    if kind == "uvicorn":
        return [
            PY,
            "-m",
            "uvicorn",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--lifespan",
            "off",
            # As the README's production command: compression costs CPU on every frame
            # (and the floor does not compress either).
            "--ws-per-message-deflate",
            "false",
            app,
        ]
    if kind == "daphne":
        return [PY, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), app]
    raise ValueError(f"unknown server {kind!r}")


def start_server(
    stack: Stack,
    kind: str,
    env: dict[str, str],
    port: int | None = None,
    app: str = "instamg.asgi:application",
) -> Server:
    """The product (or, with ``app="bench.ceiling:application"``, the framework ceiling)."""
    port = port or free_port()
    proc = stack.spawn(f"{kind}-{port}", server_command(kind, port, app), env)
    try:
        wait_for_port(port, proc.popen, timeout=60)
    except Exception:
        print(proc.log_tail(), file=sys.stderr)
        raise
    return Server(kind, port, proc)


def start_floor(
    stack: Stack, database_url: str, fanout: str, redis_url: str = "", port: int | None = None
) -> Server:
    """The bare relay of :mod:`bench.floor` (the baseline)."""
    port = port or free_port()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    cmd = [PY, "-m", "bench.floor", "--port", str(port), "--database-url", database_url]
    cmd += ["--secret-key", SECRET_KEY, "--fanout", fanout]
    if redis_url:
        cmd += ["--redis-url", redis_url]
    proc = stack.spawn(f"floor-{port}", cmd, env)
    try:
        wait_for_port(port, proc.popen, timeout=30)
    except Exception:
        print(proc.log_tail(), file=sys.stderr)
        raise
    return Server("floor", port, proc)


@dataclass
class Server:
    kind: str
    port: int
    proc: Proc

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"


@contextlib.contextmanager
def running(stack: Stack, servers: list[Server]) -> Iterator[list[Server]]:
    """Stop ``servers`` at the end of the block (the stack would at the very end)."""
    try:
        yield servers
    finally:
        for server in servers:
            stack.stop(server.proc)
