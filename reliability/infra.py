"""What a fault breaks beyond :mod:`tests.support`'s servers and Redis: a private
PostgreSQL cluster, a SQLite lock holder; and what the soak samples.

Nothing here touches the shared PostgreSQL on 5432 or the shared Redis on 6379.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.procs import rss_bytes
from tests.support import PY, ROOT, RedisServer, Stack, free_port


def postgres_bindir() -> str | None:
    """The directory with ``initdb``, ``pg_ctl`` and ``postgres``, if installed."""
    initdb = shutil.which("initdb")
    candidates = [str(Path(os.path.realpath(initdb)).parent)] if initdb else []
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
    """A throwaway PostgreSQL cluster (initdb into a temp dir) on a free port; the
    stack destroys it (``pg_ctl`` detaches it from us)."""

    stack: Stack
    port: int = 0
    directory: Path | None = None
    bindir: str = ""

    @property
    def admin_url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        assert self.directory is not None
        result = subprocess.run(
            [f"{self.bindir}/{args[0]}", *args[1:]],
            cwd=self.directory,
            preexec_fn=_as_postgres()[0],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=120,
            env={**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"},
        )
        if result.returncode != 0:
            log = ""
            with contextlib.suppress(OSError):
                log = (self.directory / "server.log").read_text(errors="replace")[-3000:]
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
        data = str(self.directory / "data")
        self._run("initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        self.start()
        return self

    def start(self) -> None:
        assert self.directory is not None
        options = (
            f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c full_page_writes=off -c max_connections=200"
        )
        log = str(self.directory / "server.log")
        data = str(self.directory / "data")
        self._run("pg_ctl", "-D", data, "-l", log, "-o", options, "-w", "-t", "60", "start")

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
        return f"postgres://postgres@127.0.0.1:{self.port}/{name}"


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
    """Another process holds ``BEGIN EXCLUSIVE`` on ``path`` for ``seconds``; the
    monotonic times the lock was taken and released."""
    proc = subprocess.Popen(
        [PY, "-c", _LOCKER, path, str(seconds)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    times = []
    for expected in ("locked", "released"):
        line = proc.stdout.readline().strip()
        times.append(time.monotonic())
        if line != expected:
            proc.wait(10)
            raise RuntimeError(f"lock holder: {line!r} instead of {expected!r}")
    proc.wait(10)
    return times[0], times[1]


def process_sample(pid: int) -> dict[str, Any]:
    """A process's resident memory (MB) and open file descriptors, None if unreadable."""
    sample: dict[str, Any] = {"rss_mb": None, "fds": None}
    with contextlib.suppress(OSError):
        sample["rss_mb"] = round(rss_bytes(pid) / 2**20, 1)
    with contextlib.suppress(OSError):
        sample["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    return sample


def redis_used_mb(redis: RedisServer) -> float | None:
    try:
        return round(int(redis.info("memory")["used_memory"]) / 2**20, 2)
    except Exception:
        return None
