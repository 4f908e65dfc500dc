"""What the benchmark reads from ``/proc`` and git, and the environment of its servers.

Starting and stopping processes is :mod:`tests.support`'s (:class:`tests.support.Stack`).
"""

from __future__ import annotations

import os
import resource
import subprocess
import time
import uuid

from tests.support import POSTGRES_ADMIN_URL, ROOT

# Tokens are signed with this key in every server the harness starts (DEBUG is off).
SECRET_KEY = "bench-" + uuid.uuid4().hex * 2
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def raise_nofile_limit() -> None:
    """Raise the open-files soft limit to the hard limit (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


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
    names = {"postgres": "PostgreSQL", "redis-server": "Redis", "nginx": "nginx"}
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
        elif pid == os.getpid():
            kind = "load generator"
        else:
            kind = names.get(comm, "other")
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
    """The work tree's commit, and whether its code (not bench/ or docs/) has changes."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout

    try:
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench", ":!docs")
        return git("rev-parse", "--short", "HEAD").strip() + ("+changes" if dirty.strip() else "")
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
        DM_SEARCH_RATE="100000000/min",  # the reads scenario searches far past 30 a minute
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
