"""The four faults and the soak, each during steady traffic from retrying clients.

Each scenario takes a :class:`tests.support.Stack` (which stops whatever it starts) and a
:class:`Plan`, and returns a JSON-able dict: the reconciled counts of
:func:`reliability.client.reconcile`, the fault's window and the recovery times.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from bench.procs import server_env
from reliability.client import Load, now, reconcile, recovery
from reliability.infra import (
    PrivateCluster,
    hold_sqlite_lock,
    pg_connections,
    process_sample,
    redis_used_mb,
)
from tests.support import Stack, free_port, migrate, signup


@dataclass
class Plan:
    rate: float = 30.0  # new messages per second, all pairs together
    pairs: int = 10
    seconds: float = 40.0  # of traffic
    fault_at: float = 10.0  # seconds into the traffic
    down: float = 5.0  # how long the fault lasts
    drain: float = 60.0  # at most this long for the last acks and deliveries
    ack_timeout: float = 3.0
    churn: tuple[float, float] | None = None  # close/reconnect every lo..hi seconds
    sample_every: float = 10.0  # soak only


FULL = Plan()
SHORT = Plan(rate=20.0, pairs=4, seconds=7.0, fault_at=2.0, down=2.0, drain=30.0)


def say(text: str) -> None:
    print(f"[reliability {time.strftime('%H:%M:%S')}] {text}", flush=True)


def signup_pairs(http_base: str, count: int) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """``2 * count`` new accounts, four at a time (each costs the server a PBKDF2 hash)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as pool:
        users = list(pool.map(lambda _: signup(http_base, prefix="rel_"), range(2 * count)))
    return [(users[2 * i], users[2 * i + 1]) for i in range(count)]


def _gaps(times: list[float], start: float, end: float) -> float:
    """The longest stretch within [start, end] with none of ``times`` (seconds)."""
    points = sorted(t for t in times if start <= t <= end)
    edges = [start, *points, end]
    return round(max(b - a for a, b in itertools.pairwise(edges)), 3)


async def run_with_fault(
    bases: list[str],
    http_base: Callable[[], str],
    plan: Plan,
    fault: Callable[[], tuple[float, float]],
) -> dict[str, Any]:
    """Traffic for ``plan.seconds``; ``fault()`` (blocking, in a thread) at ``fault_at``.

    ``fault`` returns the monotonic times the fault began and ended (the restart done,
    the lock released). ``http_base`` names a live server for the final reconciliation.
    """
    say(f"signing up {plan.pairs} pairs")
    pairs = await asyncio.to_thread(signup_pairs, http_base(), plan.pairs)
    load = Load(bases, pairs, churn=plan.churn, ack_timeout=plan.ack_timeout)
    await load.start()
    say(f"traffic: {plan.rate:g} msg/s for {plan.seconds:g} s")
    try:

        async def inject() -> tuple[float, float]:
            await asyncio.sleep(plan.fault_at)
            return await asyncio.to_thread(fault)

        fault_task = asyncio.create_task(inject())
        await load.drive(plan.rate, plan.seconds)
        start, end = await fault_task
        say("draining")
        drained = await load.drain(plan.drain)
    finally:
        await load.stop()
    say("reconciling")
    result = await asyncio.to_thread(reconcile, load, http_base())
    result["drained"] = drained
    result["plan"] = asdict(plan)
    result["load_average_1m"] = round(os.getloadavg()[0], 1)  # a shared machine's noise
    t0, ended = load.started, load.sending_ended
    result["fault"] = {"start_s": round(start - t0, 3), "end_s": round(end - t0, 3)}
    result["recovery"] = recovery(load, end)
    result["longest_ack_gap_s"] = _gaps(load.stats.ack_times, start, ended)
    result["longest_delivery_gap_s"] = _gaps(load.stats.delivery_times, start, ended)
    return result


def new_database(stack: Stack, kind: str) -> str:
    """A fresh, migrated database: ``postgres`` (on the shared server) or ``sqlite``."""
    url = stack.postgres_database() if kind == "postgres" else stack.sqlite_database("faults")
    migrate(server_env(url))
    return url


# --- a. Redis killed ---------------------------------------------------------------------------


def fault_redis(stack: Stack, plan: Plan, database_url: str) -> dict[str, Any]:
    """Two servers share a private Redis, which gets SIGKILL and a restart."""
    redis = stack.redis()
    servers = stack.servers("daphne", server_env(database_url, redis.url), 2)

    def fault() -> tuple[float, float]:
        say(f"SIGKILL redis-server on port {redis.port}")
        start = now()
        redis.stop()
        time.sleep(plan.down)
        redis.start()
        say("redis-server restarted (empty)")
        return start, now()

    bases = [s.ws for s in servers]
    result = asyncio.run(run_with_fault(bases, lambda: servers[0].http, plan, fault))
    result["setup"] = "2 daphne, private Redis, " + _db_kind(database_url)
    return result


# --- b. A server killed --------------------------------------------------------------------------


def fault_server(stack: Stack, plan: Plan, database_url: str) -> dict[str, Any]:
    """One of two servers gets SIGKILL; its clients fail over; it is restarted."""
    redis = stack.redis()
    servers = stack.servers("daphne", server_env(database_url, redis.url), 2)

    def fault() -> tuple[float, float]:
        say(f"SIGKILL server on port {servers[0].port}")
        start = now()
        servers[0].stop(signal.SIGKILL)
        time.sleep(plan.down)
        servers[0].start()
        say("server restarted")
        return start, now()

    bases = [s.ws for s in servers]
    result = asyncio.run(run_with_fault(bases, lambda: servers[1].http, plan, fault))
    result["setup"] = "2 daphne, private Redis, clients fail over, " + _db_kind(database_url)
    return result


# --- c. PostgreSQL restarted ---------------------------------------------------------------------


def fault_postgres(stack: Stack, plan: Plan) -> dict[str, Any]:
    """A private PostgreSQL cluster is shut down (fast) and started again."""
    cluster = PrivateCluster(stack).init()
    database_url = cluster.create_database()
    redis = stack.redis()
    env = server_env(database_url, redis.url)
    migrate(env)
    servers = stack.servers("daphne", env, 2)

    def fault() -> tuple[float, float]:
        say(f"pg_ctl stop -m fast (port {cluster.port})")
        start = now()
        cluster.stop("fast")
        time.sleep(plan.down)
        cluster.start()
        say("PostgreSQL started again")
        return start, now()

    bases = [s.ws for s in servers]
    result = asyncio.run(run_with_fault(bases, lambda: servers[0].http, plan, fault))
    result["setup"] = "2 daphne, private Redis, private PostgreSQL cluster"
    return result


# --- d. SQLite locked ----------------------------------------------------------------------------


def fault_sqlite(stack: Stack, plan: Plan) -> dict[str, Any]:
    """The embedded configuration; another process holds ``BEGIN EXCLUSIVE``."""
    path = stack.tmp / "embedded.sqlite3"
    env = server_env(f"sqlite:///{path}")
    migrate(env)
    servers = stack.servers("daphne", env, 1)

    def fault() -> tuple[float, float]:
        say(f"BEGIN EXCLUSIVE on {path.name} for {plan.down} s")
        start, end = hold_sqlite_lock(str(path), plan.down)
        say("lock released")
        return start, end

    result = asyncio.run(run_with_fault([servers[0].ws], lambda: servers[0].http, plan, fault))
    result["setup"] = "1 daphne, SQLite (WAL), in-memory layer"
    return result


FAULTS = {
    "redis": "Redis SIGKILL + restart",
    "server": "server SIGKILL + restart",
    "postgres": "PostgreSQL restart",
    "sqlite": "SQLite locked by another writer",
}


def _db_kind(url: str) -> str:
    return "PostgreSQL" if url.startswith("postgres") else "SQLite"


# --- Soak ----------------------------------------------------------------------------------------


def soak(
    stack: Stack,
    plan: Plan,
    database_url: str,
    pg_admin_url: str | None = None,
    nginx: bool = True,
) -> dict[str, Any]:
    """Two servers (PostgreSQL or SQLite + a private Redis), steady traffic with churn,
    and samples of each server's memory and file descriptors, the database's
    connections and Redis's memory."""
    redis = stack.redis()
    servers = stack.servers("daphne", server_env(database_url, redis.url), 2)
    if nginx:
        port = free_port()
        stack.nginx(port, [s.port for s in servers])
        bases = [f"ws://127.0.0.1:{port}"]
        http = f"http://127.0.0.1:{port}"
    else:
        bases = [s.ws for s in servers]
        http = servers[0].http
    database = database_url.rsplit("/", 1)[1] if database_url.startswith("postgres") else None
    samples: list[dict[str, Any]] = []
    load_ref: list[Load] = []

    def sample(label: str) -> None:
        row: dict[str, Any] = {"label": label, "t": round(now() - started[0], 1)}
        for i, server in enumerate(servers):
            row[f"server{i}"] = process_sample(server.pid)
        if database and pg_admin_url:
            row["pg_connections"] = pg_connections(pg_admin_url, database)
        row["redis_used_mb"] = redis_used_mb(redis)
        if load_ref:
            msgs = load_ref[0].msgs
            row["sent"] = len(msgs)
            row["acked"] = sum(m.ack_at is not None for m in msgs)
            row["delivered"] = sum(m.delivered_at is not None for m in msgs)
        samples.append(row)
        say(f"sample {row}")

    started = [now()]

    async def main() -> dict[str, Any]:
        pairs = await asyncio.to_thread(signup_pairs, http, plan.pairs)
        load = Load(bases, pairs, churn=plan.churn, ack_timeout=plan.ack_timeout)
        load_ref.append(load)
        await asyncio.to_thread(sample, "before clients")
        await load.start()
        await asyncio.to_thread(sample, "clients connected")

        async def sampler() -> None:
            while True:
                await asyncio.sleep(plan.sample_every)
                await asyncio.to_thread(sample, "traffic")

        task = asyncio.create_task(sampler())
        try:
            await load.drive(plan.rate, plan.seconds)
        finally:
            task.cancel()
        await asyncio.to_thread(sample, "traffic end")
        drained = await load.drain(plan.drain)
        await asyncio.to_thread(sample, "drained")
        await load.stop()
        await asyncio.sleep(1.0)
        await asyncio.to_thread(sample, "clients closed")
        result = await asyncio.to_thread(reconcile, load, http)
        result["drained"] = drained
        return result

    result = asyncio.run(main())
    result["plan"] = asdict(plan)
    result["setup"] = (
        f"2 daphne {'behind nginx' if nginx else '(clients split)'}, private Redis, "
        + _db_kind(database_url)
    )
    result["samples"] = samples
    result["load_average_1m"] = round(os.getloadavg()[0], 1)
    result["summary"] = soak_summary(samples, len(servers))
    return result


def soak_summary(samples: list[dict[str, Any]], servers: int) -> dict[str, Any]:
    """Start (clients connected), end (traffic end) and max of each sampled series."""
    during = [s for s in samples if s["label"] in {"clients connected", "traffic", "traffic end"}]
    closed = [s for s in samples if s["label"] == "clients closed"]

    def series(get: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
        values = [get(s) for s in during]
        values = [v for v in values if v is not None]
        after = [get(s) for s in closed]
        return {
            "start": values[0] if values else None,
            "end": values[-1] if values else None,
            "max": max(values) if values else None,
            "after_close": after[0] if after else None,
        }

    out: dict[str, Any] = {}
    for i in range(servers):
        name = f"server{i}"
        out[f"{name}_rss_mb"] = series(lambda s, name=name: s[name]["rss_mb"])  # type: ignore[misc]
        out[f"{name}_fds"] = series(lambda s, name=name: s[name]["fds"])  # type: ignore[misc]
    out["pg_connections"] = series(lambda s: s.get("pg_connections"))
    out["redis_used_mb"] = series(lambda s: s.get("redis_used_mb"))
    return out


def configured_postgres() -> str | None:
    url = os.environ.get("DATABASE_URL", "")
    return url if url.startswith(("postgres://", "postgresql://")) else None
