"""The services a fault breaks: a private Redis, a private PostgreSQL cluster, server
processes that can be killed and restarted on the same port, a SQLite lock holder.

Everything is started through a :class:`bench.procs.Stack`, which stops it when the
run ends (the PostgreSQL cluster through a cleanup, since ``pg_ctl`` detaches it).
Nothing here touches the shared PostgreSQL on 5432 or the shared Redis on 6379.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.procs import (
    PY,
    ROOT,
    Proc,
    Server,
    Stack,
    free_port,
    server_command,
    wait_for_port,
)


def _log_tail(path: Path, lines: int = 30) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


# --- Redis -------------------------------------------------------------------------------


def redis_binary() -> str | None:
    return shutil.which("redis-server")


@dataclass
class PrivateRedis:
    """A ``redis-server`` of our own on a fixed free port: SIGKILL it, start it again."""

    stack: Stack
    port: int = 0
    proc: Proc | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> PrivateRedis:
        self.port = self.port or free_port()
        binary = redis_binary() or "redis-server"
        cmd = [binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        cmd += ["--save", "", "--appendonly", "no", "--maxclients", "10000"]
        self.proc = self.stack.spawn(f"redis-{self.port}", cmd)
        wait_for_port(self.port, self.proc.popen)
        return self

    def kill(self) -> None:
        """SIGKILL: no shutdown, every connection reset, all data gone."""
        assert self.proc is not None
        self.proc.popen.send_signal(signal.SIGKILL)
        self.proc.popen.wait(10)

    def used_memory(self) -> int | None:
        import redis

        client = redis.Redis(port=self.port, socket_timeout=2)
        try:
            info: Any = client.info("memory")
            return int(info["used_memory"])
        except Exception:
            return None
        finally:
            client.close()


# --- Server processes ------------------------------------------------------------------------


def start_servers(
    stack: Stack, env: dict[str, str], count: int, kind: str = "daphne"
) -> list[Server]:
    """``count`` servers started at once (each takes seconds to import Django)."""
    ports = [free_port() for _ in range(count)]
    procs = [stack.spawn(f"{kind}-{p}", server_command(kind, p), env) for p in ports]
    servers = []
    for port, proc in zip(ports, procs, strict=True):
        try:
            wait_for_port(port, proc.popen, timeout=60)
        except Exception:
            print(proc.log_tail(), file=sys.stderr)
            raise
        servers.append(Server(kind, port, proc))
    return servers


def kill_server(server: Server) -> None:
    server.proc.popen.send_signal(signal.SIGKILL)
    server.proc.popen.wait(10)


def restart_server(stack: Stack, server: Server, env: dict[str, str]) -> Server:
    """A new process on the same port (the old one must be dead)."""
    proc = stack.spawn(
        f"{server.kind}-{server.port}", server_command(server.kind, server.port), env
    )
    try:
        wait_for_port(server.port, proc.popen, timeout=60)
    except Exception:
        print(proc.log_tail(), file=sys.stderr)
        raise
    return Server(server.kind, server.port, proc)


# --- PostgreSQL ------------------------------------------------------------------------------


def postgres_bindir() -> str | None:
    """The directory with ``initdb``, ``pg_ctl`` and ``postgres``, if installed."""
    candidates = []
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(str(Path(os.path.realpath(initdb)).parent))
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for directory in candidates:
        if all(os.access(f"{directory}/{b}", os.X_OK) for b in ("initdb", "pg_ctl", "postgres")):
            return directory
    return None


def _as_postgres() -> tuple[Callable[[], None] | None, int | None, int | None]:
    """PostgreSQL refuses to run as root: under root, run its tools as ``postgres``."""
    if os.geteuid() != 0:
        return None, None, None
    entry = pwd.getpwnam("postgres")
    uid, gid = entry.pw_uid, entry.pw_gid

    def demote() -> None:
        os.setgid(gid)
        os.setuid(uid)

    return demote, uid, gid


@dataclass
class PrivateCluster:
    """A throwaway PostgreSQL cluster (initdb into a temp dir) on a free port."""

    stack: Stack
    port: int = 0
    directory: Path | None = None
    bindir: str = ""

    @property
    def admin_url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, database: str) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str, timeout: float = 120) -> None:
        demote, _, _ = _as_postgres()
        assert self.directory is not None
        result = subprocess.run(
            [f"{self.bindir}/{args[0]}", *args[1:]],
            cwd=self.directory,
            preexec_fn=demote,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            env={**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"},
        )
        if result.returncode != 0:
            log = _log_tail(self.directory / "server.log")
            raise RuntimeError(f"{args[0]} failed ({result.returncode}): {result.stdout}\n{log}")

    def init(self) -> PrivateCluster:
        bindir = postgres_bindir()
        if bindir is None:
            raise RuntimeError("PostgreSQL binaries (initdb, pg_ctl, postgres) not found")
        self.bindir = bindir
        self.port = self.port or free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="instamg-pg-"))
        _, uid, gid = _as_postgres()
        if uid is not None and gid is not None:
            os.chown(self.directory, uid, gid)
        self.stack.cleanups.append(self.destroy)
        self._run(
            "initdb",
            "-D",
            str(self.directory / "data"),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        )
        self.start()
        return self

    def start(self) -> None:
        assert self.directory is not None
        options = (
            f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c full_page_writes=off -c max_connections=200"
        )
        self._run(
            "pg_ctl",
            "-D",
            str(self.directory / "data"),
            "-l",
            str(self.directory / "server.log"),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        """``fast``: roll back open transactions, close every connection, shut down."""
        assert self.directory is not None
        self._run("pg_ctl", "-D", str(self.directory / "data"), "-m", mode, "-w", "stop")

    def destroy(self) -> None:
        if self.directory is None:
            return
        with contextlib.suppress(Exception):
            self.stop("immediate")
        shutil.rmtree(self.directory, ignore_errors=True)
        self.directory = None

    def create_database(self, name: str = "reliability") -> str:
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


def pg_connections(admin_url: str, database: str) -> int | None:
    """Open connections to ``database`` (``pg_stat_activity``), or None if unreachable."""
    import psycopg

    try:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=3) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (database,)
            ).fetchone()
            return int(row[0]) if row else 0
    except Exception:
        return None


# --- SQLite ----------------------------------------------------------------------------------

_LOCKER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], timeout=60, isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("COMMIT")
print("released", flush=True)
"""


def hold_sqlite_lock(path: str, seconds: float) -> tuple[float, float]:
    """Another process holds ``BEGIN EXCLUSIVE`` on ``path`` for ``seconds``.

    Returns the monotonic times the lock was taken and released.
    """
    proc = subprocess.Popen(
        [PY, "-c", _LOCKER, path, str(seconds)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    taken = time.monotonic()
    if line != "locked":
        proc.wait(10)
        raise RuntimeError(f"lock holder failed: {line!r}")
    line = proc.stdout.readline().strip()
    released = time.monotonic()
    proc.wait(10)
    if line != "released":
        raise RuntimeError(f"lock holder did not release: {line!r}")
    return taken, released


# --- Sampling ----------------------------------------------------------------------------------


def fd_count(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def process_sample(pid: int) -> dict[str, Any]:
    from bench.procs import rss_bytes

    try:
        rss: int | None = rss_bytes(pid)
    except OSError:
        rss = None
    return {"rss_mb": None if rss is None else round(rss / 2**20, 1), "fds": fd_count(pid)}
