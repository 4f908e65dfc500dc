"""The benchmark scenarios (docs/benchmarks.md, "Scenarios"): each starts what it needs
on a :class:`tests.support.Stack`."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import loadgen, procs
from bench.procs import SECRET_KEY, server_env
from direct_messages.conf import DEFAULTS
from tests.push_service import BrowserSubscription, PushService
from tests.support import (
    APP,
    PY,
    LiveServer,
    RedisServer,
    Stack,
    free_port,
    http_json,
    migrate,
    run,
    signup,
    spawn,
    stop,
)

CEILING_APP = "bench.ceiling:application"


def say(*args: Any) -> None:
    print("bench:", *args, file=sys.stderr, flush=True)


def arun(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run the client side on uvloop when it is there: less CPU taken from the servers."""
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


@dataclass
class Options:
    quick: bool = False
    seconds: float = 6.0
    warmup: float = 1.5
    drain: float = 5.0
    pairs: int = 50
    signup: str = "bulk"
    fixed_rate: float = 500.0
    sweep_start: float = 25.0
    sweep_factor: float = 2.0
    sweep_steps: int = 10
    sweep_max: float = 4000.0
    p99_ms: float = 50.0
    servers: list[str] = field(default_factory=lambda: ["daphne", "uvicorn"])
    layers: list[str] = field(default_factory=lambda: ["redis", "pubsub"])
    idle_count: int = 5000
    idle_window: float = 20.0
    idle_servers: list[str] = field(default_factory=lambda: ["daphne"])
    profile_rate: float = 20.0
    profile_seconds: float = 20.0
    profile_dir: Path | None = None
    profile_native: bool = False
    pg_synchronous_commit: bool = False
    retry_failed_steps: bool = True
    rates: list[float] = field(default_factory=list)
    notify_rate: float = 200.0
    report_rate: float = 1.0

    @classmethod
    def quick_mode(cls) -> Options:
        return cls(
            quick=True,
            seconds=3.0,
            warmup=0.5,
            drain=3.0,
            pairs=4,
            signup="api",
            sweep_start=50.0,
            sweep_steps=4,
            servers=["daphne"],
            layers=["redis"],
            idle_count=500,
            idle_window=5.0,
            idle_servers=["daphne"],
            profile_seconds=8.0,
        )


# --- load runs and sweeps -------------------------------------------------------------


def make_pairs(env: dict[str, str], base: str, opts: Options) -> list[Any]:
    """``opts.pairs`` pairs of new accounts: signed up (``api``) or bulk inserted."""
    n = 2 * opts.pairs
    if opts.signup == "api":
        users = [signup(base, prefix="bench_") for _ in range(n)]
    else:
        cmd = [PY, "-m", "bench.djworker", "users", str(n), "--prefix", "load"]
        users = json.loads(run(cmd, env))
    return list(zip(users[::2], users[1::2], strict=True))


def commandstats(redis: RedisServer) -> dict[str, int]:
    stats = redis.info("commandstats").items()
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats}


def start_floor(
    stack: Stack, db: str, fanout: str, redis_url: str = "", ports: list[int] | None = None
) -> list[LiveServer]:
    """The bare relay of :mod:`bench.floor` (the baseline)."""
    args = ("--database-url", db, "--secret-key", SECRET_KEY, "--fanout", fanout)
    args += ("--redis-url", redis_url) if redis_url else ()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return stack.servers("floor", env, ports or 1, args=args)


def load_once(
    target: loadgen.Target,
    pairs: list[Any],
    rate: float,
    opts: Options,
    redis: RedisServer | None = None,
    quiet_pids: list[int] | None = None,
    on_ready: Callable[[], None] | None = None,
    cpu_pids: list[int] | None = None,
    before_close: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """One load at ``rate``; ``before_close`` (blocking) runs once it is measured, before
    its sockets close."""
    stats: dict[str, Any] = {}
    load_average = os.getloadavg()[0]
    cpu_pids = list(cpu_pids or quiet_pids or [])

    async def ready() -> None:
        if on_ready:
            on_ready()
        stats["cpu"] = [procs.cpu_seconds(p) for p in cpu_pids]
        stats["by_process"] = procs.cpu_by_process(cpu_pids)
        stats["machine"], stats["steal"] = procs.machine_seconds()
        stats["wall"] = time.monotonic()
        if redis:
            stats["before"] = await asyncio.to_thread(commandstats, redis)

    async def done() -> None:
        stats["cpu_after"] = [procs.cpu_seconds(p) for p in cpu_pids]
        stats["by_process_after"] = procs.cpu_by_process(cpu_pids)
        stats["machine_after"], stats["steal_after"] = procs.machine_seconds()
        stats["wall_after"] = time.monotonic()
        if redis:
            stats["after"] = await asyncio.to_thread(commandstats, redis)
        if before_close:
            await asyncio.to_thread(before_close)

    result = arun(
        loadgen.run_load(
            target, pairs, rate, opts.seconds, opts.warmup, opts.drain, on_ready=ready, on_done=done
        )
    )
    if redis and "after" in stats:
        delta = {
            k: v - stats["before"].get(k, 0)
            for k, v in stats["after"].items()
            if v - stats["before"].get(k, 0) > 0
        }
        # Warm-up messages hit Redis too; divide by everything that was delivered.
        delivered_all = result["delivered"] + int(rate * opts.warmup)
        result["redis_commands"] = dict(sorted(delta.items(), key=lambda kv: -kv[1]))
        result["redis_commands_per_message"] = round(sum(delta.values()) / max(delivered_all, 1), 2)
    if "cpu_after" in stats:
        # CPU per message: the servers' own, and the whole machine's (everything, the
        # load generator and other tenants included), over warm-up + run + drain.
        total = max(1, result["delivered"] + int(rate * opts.warmup))
        used = sum(stats["cpu_after"]) - sum(stats["cpu"])
        result["server_cpu_ms_per_message"] = round(1000 * used / total, 3) if cpu_pids else None
        machine = stats["machine_after"] - stats["machine"]
        result["machine_cpu_ms_per_message"] = round(1000 * machine / total, 3)
        capacity = (stats["wall_after"] - stats["wall"]) * (os.cpu_count() or 1)
        steal = stats["steal_after"] - stats["steal"]
        result["steal_percent"] = round(100 * steal / capacity, 1) if capacity > 0 else None
        before, after = stats["by_process"], stats["by_process_after"]
        result["cpu_ms_per_message_by_process"] = {
            kind: round(1000 * (after[kind] - before.get(kind, 0.0)) / total, 3)
            for kind in sorted(after)
            if after[kind] - before.get(kind, 0.0) > 0
        }
    result["sustainable"] = loadgen.sustainable(result, opts.p99_ms)
    result["load_average_1min"] = round(load_average, 2)
    if quiet_pids:
        result["settle_seconds"] = round(procs.wait_quiet(quiet_pids), 1)
    d = result["delivery_ms"]
    say(
        f"  R={rate:>6.0f}/s sent={result['sent']} lost={result['lost']} dup={result['duplicated']}"
        f" ooo={result['out_of_order']} p50={_ms(d['p50'])} p99={_ms(d['p99'])} max={_ms(d['max'])}"
        f" loadgen={result['loadgen_cpu_percent']}% server_cpu/msg="
        f"{result.get('server_cpu_ms_per_message')}ms {'OK' if result['sustainable'] else 'FAIL'}"
    )
    if "machine_cpu_ms_per_message" in result:
        parts = result["cpu_ms_per_message_by_process"].items()
        say(
            f"           machine_cpu/msg={result['machine_cpu_ms_per_message']}ms ("
            + ", ".join(f"{kind} {ms}" for kind, ms in parts)
            + f"); steal {result['steal_percent']}% of the machine"
        )
    return result


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}ms"


def sweep(run: Callable[[float], dict[str, Any]], opts: Options) -> dict[str, Any]:
    """Raise the rate geometrically until a step fails, then bisect; bounded in steps."""
    if opts.rates:
        fixed = [run(r) for r in opts.rates]
        good = [s["rate_target"] for s in fixed if s["sustainable"]]
        bad = [s["rate_target"] for s in fixed if not s["sustainable"]]
        return {
            "sustainable_rate": max(good) if good else None,
            "first_failed_rate": min(bad) if bad else None,
            "steps": fixed,
        }
    steps: list[dict[str, Any]] = []
    best: float | None = None
    failed: float | None = None
    rate = opts.sweep_start
    for _ in range(opts.sweep_steps):
        result = run(rate)
        if not result["sustainable"] and result["lost"] == 0 and opts.retry_failed_steps:
            # A latency-only failure may be another tenant's burst on this shared
            # machine: measure once more and keep the second result.
            say("  (latency-only failure: measuring this rate once more)")
            retry = run(rate)
            retry["first_attempt"] = {k: result[k] for k in ("delivery_ms", "ack_ms", "lost")}
            result = retry
        steps.append(result)
        if result["sustainable"]:
            best = rate
            if failed is None:
                if rate >= opts.sweep_max:
                    break
                rate = min(opts.sweep_max, rate * opts.sweep_factor)
                continue
        else:
            failed = rate if failed is None else min(failed, rate)
        if best is None:
            rate = rate / opts.sweep_factor
            if rate < 5:
                break
            continue
        assert failed is not None
        middle = round((best + failed) / 2)
        if failed / best < 1.12 or middle in (best, failed):
            break
        rate = middle
    return {"sustainable_rate": best, "first_failed_rate": failed, "steps": steps}


# --- embedded -------------------------------------------------------------------------


def embedded(stack: Stack, opts: Options) -> dict[str, Any]:
    """One daphne, SQLite, in-memory layer; then the floor in one process, same DB."""
    db = stack.sqlite_database("embedded")
    env = server_env(db)
    migrate(env)
    out: dict[str, Any] = {"database": "sqlite", "layer": "memory", "commit": procs.git_commit()}
    pairs: list[Any] = []
    for key, what in (
        ("sweep", f"daphne, {opts.pairs} pairs ({opts.signup} signup)"),
        ("ceiling_sweep", "the floor's relay as a Channels consumer"),
        ("floor_sweep", "bare relay (memory fan-out, SQLite)"),
    ):
        if key == "floor_sweep":
            server = start_floor(stack, db, fanout="memory")[0]
        else:
            server = stack.server("daphne", env, CEILING_APP if key == "ceiling_sweep" else APP)
        with stack.running([server]):
            say(f"embedded {key}: {what} on :{server.port}")
            pairs = pairs or make_pairs(env, server.http, opts)
            target = loadgen.Target(server.ws + "/ws/dm/{account}/")
            out[key] = sweep(
                lambda r, t=target, q=pairs, p=[server.pid]: load_once(t, q, r, opts, quiet_pids=p),
                opts,
            )
    return out


# --- notifications and reports (issues 20 and 21) -------------------------------------

INBOX_EVERY = 2  # every other pair's recipient is not looking at the conversation
# The product's default (docs/notifications.md), which the bench leaves as it is.
PUSH_DELAY_SECONDS = float(DEFAULTS["PUSH_DELAY_SECONDS"])


class TimedPushService(PushService):
    """The tests' push service stand-in, noting in each push's headers when it arrived
    (the wall clock, as the messages' ``created_at``)."""

    def _receive(self, path: str, headers: dict[str, str], body: bytes) -> int:
        headers["x-arrived"] = repr(time.time())
        return super()._receive(path, headers, body)


def notify(stack: Stack, opts: Options) -> dict[str, Any]:
    """The embedded default at one rate: notifications off, off with reports beside the
    load, then on (a VAPID key, one ``dm_worker``, every recipient subscribed to a push
    service stand-in, every other pair's recipient not looking at the conversation)."""
    db = stack.sqlite_database("notify")
    off = server_env(db, DM_REPORT_RATE="1000000/hour")
    migrate(off)
    keys = dict(line.split("=", 1) for line in run([PY, "manage.py", "dm_vapid_keys"], off).split())
    on = dict(off, VAPID_PRIVATE_KEY=keys["VAPID_PRIVATE_KEY"])
    out: dict[str, Any] = {"database": "sqlite", "layer": "memory", "commit": procs.git_commit()}
    out |= {"rate": opts.notify_rate, "inbox_every": INBOX_EVERY}
    out["push_delay_seconds"] = PUSH_DELAY_SECONDS
    with TimedPushService(keys["VAPID_PUBLIC_KEY"]) as service:
        # http://127.0.0.1 endpoints are accepted with DEBUG on only: on for the server
        # that takes the subscriptions and for the worker, off for the servers under load.
        with stack.running([stack.server("daphne", dict(on, DEBUG="true"))]) as (server,):
            pairs = make_pairs(on, server.http, opts)
            browsers = {b["account"]: service.subscription(b["account"]) for _, b in pairs}
            for _, recipient in pairs:
                body = browsers[recipient["account"]].to_json()
                url = f"{server.http}/api/push/subscriptions"
                status, answer = http_json("POST", url, body, recipient["token"])
                if status != 201:
                    raise RuntimeError(f"subscription refused: {status} {answer}")
        with stack.running([stack.server("daphne", off)]) as (server,):
            target = loadgen.Target(server.ws + "/ws/dm/{account}/", inbox_every=INBOX_EVERY)
            say(f"notify: {opts.notify_rate}/s, notifications off, on :{server.port}")
            out["off"] = load_once(target, pairs, opts.notify_rate, opts, quiet_pids=[server.pid])
            say(f"notify: the same with {opts.report_rate} report/s beside the load")
            out["off_reports"] = _load_with_reports(server, target, pairs, opts)
        say(f"notify: {opts.notify_rate}/s, notifications on (one dm_worker)")
        out["on"] = _notifying_load(stack, on, db, service, browsers, pairs, opts)
    return out


def _load_with_reports(
    server: LiveServer, target: loadgen.Target, pairs: list[Any], opts: Options
) -> dict[str, Any]:
    """:func:`load_once` with ``POST /api/dm/{account}/report`` at ``opts.report_rate``
    beside it (each by a pair's recipient about its sender), from the sockets' opening
    until the server is idle again."""
    done = threading.Event()
    answers: list[tuple[int, float]] = []

    def reports() -> None:
        for i in itertools.count():
            if done.wait(1 / opts.report_rate):
                return
            sender, recipient = pairs[i % len(pairs)]
            url, t0 = f"{server.http}/api/dm/{sender['account']}/report", time.perf_counter()
            try:
                status, _ = http_json("POST", url, {"reason": "spam"}, recipient["token"], 10)
            except OSError:  # refused, timed out
                status = 0
            answers.append((status, time.perf_counter() - t0))

    thread = threading.Thread(target=reports, daemon=True)
    try:
        result = load_once(
            target, pairs, opts.notify_rate, opts, quiet_pids=[server.pid], on_ready=thread.start
        )
    finally:
        done.set()
        thread.join(15)
    statuses = Counter(str(status) for status, _ in answers)
    result["reports"] = {"rate": opts.report_rate, "statuses": dict(statuses)}
    result["reports"]["ms"] = loadgen.summarize([t for _, t in answers])
    return result


def _notifying_load(
    stack: Stack,
    env: dict[str, str],
    db: str,
    service: TimedPushService,
    browsers: dict[str, BrowserSubscription],
    pairs: list[Any],
    opts: Options,
) -> dict[str, Any]:
    """The load on a server with the VAPID key and one ``dm_worker`` as ``make run``
    starts it (polling once a second). The sockets stay open until every push due is
    in and the worker is idle: a recipient still looking at the conversation when its
    message's task runs must get nothing."""
    before = max(_stored(db), default=0)
    listeners = {b["account"] for i, (_, b) in enumerate(pairs) if i % INBOX_EVERY == 0}
    senders = {a["id"] for i, (a, _) in enumerate(pairs) if i % INBOX_EVERY == 0}
    sent: dict[int, tuple[int, float]] = {}
    worker_log = stack.tmp / "dm_worker.log"
    worker = spawn([PY, "manage.py", "dm_worker"], dict(env, DEBUG="true"), worker_log)
    stack.cleanups.append(lambda: stop(worker))

    def pushes_in() -> None:
        sent.update(_stored(db, before))
        expected = sum(1 for sender, _ in sent.values() if sender in senders)
        deadline = time.monotonic() + PUSH_DELAY_SECONDS + 90
        while (
            time.monotonic() < deadline
            and worker.poll() is None  # stopped: interrupted, or it died
            and _count(service, listeners) < expected
        ):
            time.sleep(0.2)
        procs.wait_quiet([worker.pid], timeout=30)  # the watchers' tasks have run too

    try:
        with stack.running([stack.server("daphne", env)]) as (server,):
            procs.wait_quiet([server.pid, worker.pid])  # both have started
            if worker.poll() is not None:
                raise RuntimeError(f"dm_worker exited with {worker.returncode}: {worker_log}")
            cpu = procs.cpu_seconds(worker.pid)
            target = loadgen.Target(server.ws + "/ws/dm/{account}/", inbox_every=INBOX_EVERY)
            result = load_once(
                target, pairs, opts.notify_rate, opts, cpu_pids=[server.pid], before_close=pushes_in
            )
            cpu = procs.cpu_seconds(worker.pid) - cpu
    finally:
        stop(worker)
    p = result["push"] = _pushes(service, browsers, sent, senders, listeners)
    p["worker_cpu_ms_per_message"] = round(1000 * cpu / max(len(sent), 1), 3)
    say(
        f"  pushes: {p['to_inbox_listeners']} of {p['expected']} due, {p['duplicates']} duplicated,"
        f" {p['to_conversation_watchers']} to watchers; commit to push"
        f" p50={_ms(p['commit_to_push_ms']['p50'])} p99={_ms(p['commit_to_push_ms']['p99'])}"
    )
    return result


def _stored(db: str, after_id: int = 0) -> dict[int, tuple[int, float]]:
    """The messages stored after ``after_id``: id -> (sender id, ``created_at`` as a Unix
    time; the send takes it just before its transaction, so a little before the commit)."""
    query = "SELECT id, sender_id, created_at FROM direct_messages_directmessage WHERE id > ?"
    with contextlib.closing(sqlite3.connect(db.removeprefix("sqlite:///"), timeout=10)) as conn:
        rows = conn.execute(query, (after_id,)).fetchall()
    at = {i: dt.datetime.fromisoformat(c).replace(tzinfo=dt.UTC) for i, _, c in rows}
    return {i: (sender, at[i].timestamp()) for i, sender, _ in rows}


def _count(service: TimedPushService, names: set[str]) -> int:
    return sum(1 for push in list(service.pushes) if push.path.rsplit("/", 1)[-1] in names)


def _pushes(
    service: TimedPushService,
    browsers: dict[str, BrowserSubscription],
    sent: dict[int, tuple[int, float]],
    senders: set[int],
    listeners: set[str],
) -> dict[str, Any]:
    """What the stand-in received of the messages ``sent``: counts, duplicates, and the
    time from commit to push, raw and without the notification delay."""
    seen: Counter[tuple[str, int]] = Counter()
    latencies = []
    for push in list(service.pushes):
        name = push.path.rsplit("/", 1)[-1]
        message_id = browsers[name].decrypt(push.body)["message_id"]
        if message_id in sent:
            seen[name, message_id] += 1
            latencies.append(float(push.headers["x-arrived"]) - sent[message_id][1])
    to_listeners = sum(1 for name, _ in seen if name in listeners)
    expected = sum(1 for sender, _ in sent.values() if sender in senders)
    return {
        "expected": expected,
        "received": sum(seen.values()),
        "to_inbox_listeners": to_listeners,
        "to_conversation_watchers": len(seen) - to_listeners,
        "missing": expected - to_listeners,
        "duplicates": sum(n - 1 for n in seen.values()),
        "rejected": len(service.rejected),
        "commit_to_push_ms": loadgen.summarize(latencies),
        "minus_delay_ms": loadgen.summarize([t - PUSH_DELAY_SECONDS for t in latencies]),
    }


# --- scaled ---------------------------------------------------------------------------


@dataclass
class Scaled:
    """PostgreSQL, Redis and nginx, shared by every scaled configuration of a run."""

    stack: Stack
    db: str
    redis: RedisServer
    ports: list[int]
    lb_port: int
    pairs: list[Any] = field(default_factory=list)

    @classmethod
    def start(cls, stack: Stack, opts: Options) -> Scaled:
        db = stack.postgres_database(opts.pg_synchronous_commit)
        redis = stack.redis()
        ports = [free_port(), free_port()]
        lb_port = free_port()
        migrate(server_env(db, redis.url))
        stack.nginx(lb_port, ports)
        return cls(stack, db, redis, ports, lb_port)

    @property
    def lb(self) -> str:
        return f"127.0.0.1:{self.lb_port}"

    def target(self) -> loadgen.Target:
        # Through nginx; the node hint puts each pair's two sockets on different processes.
        return loadgen.Target(f"ws://{self.lb}/ws/dm/{{account}}/?node={{node}}", ("a", "b"))

    def start_servers(
        self, kind: str, layer: str, app: str = APP, **extra: str
    ) -> list[LiveServer]:
        env = server_env(self.db, self.redis.url, CHANNEL_LAYER=layer, **extra)
        return self.stack.servers(kind, env, self.ports, app)

    def sweep(self, servers: list[LiveServer], opts: Options) -> dict[str, Any]:
        """A rate sweep through nginx against ``servers`` (already running)."""
        pairs = self.ensure_pairs(opts)
        pids = [s.pid for s in servers]
        return sweep(lambda r: load_once(self.target(), pairs, r, opts, self.redis, pids), opts)

    def ensure_pairs(self, opts: Options) -> list[Any]:
        if not self.pairs:
            env = server_env(self.db, self.redis.url)
            self.pairs = make_pairs(env, f"http://{self.lb}", opts)
        return self.pairs


# (result key, what it is, the servers' environment): the production default with one
# saving on its send path turned off.
SEND_PATH_VARIANTS = (
    (
        "orm_send_fixed",
        "sends through the ORM (SEND_STATEMENT off)",
        {"DM_SEND_STATEMENT": "false"},
    ),
    ("unprepared_fixed", "no prepared statements", {"DB_PREPARED_STATEMENTS": "false"}),
)


def scaled(stack: Stack, opts: Options) -> dict[str, Any]:
    sc = Scaled.start(stack, opts)
    out: dict[str, Any] = {"database": "postgresql", "configs": {}}
    for kind in opts.servers:
        for layer in opts.layers:
            name = f"{kind}+{layer}"
            servers = sc.start_servers(kind, layer)
            with stack.running(servers):
                say(f"scaled {name}: :{sc.ports[0]} and :{sc.ports[1]} behind nginx :{sc.lb_port}")
                pairs = sc.ensure_pairs(opts)
                pids = [s.pid for s in servers]
                result = {"server": kind, "layer": layer, "commit": procs.git_commit()}
                result["sweep"] = sweep(
                    lambda r, p=pids, q=pairs: load_once(sc.target(), q, r, opts, sc.redis, p), opts
                )
                # Last: an overloaded server would still be working off this run's
                # backlog during the next one.
                procs.wait_quiet(pids)
                result["fixed"] = load_once(
                    sc.target(), pairs, opts.fixed_rate, opts, sc.redis, cpu_pids=pids
                )
                out["configs"][name] = result
    # The same production default with one of its two savings on the send path turned
    # off: sends stored through the ORM instead of the send statement
    # (direct_messages/send_pg.py), or no prepared statements: what each saves, in this run.
    kind = "uvicorn" if "uvicorn" in opts.servers else opts.servers[0]
    for key, what, env in SEND_PATH_VARIANTS:
        variant = sc.start_servers(kind, "pubsub", **env)
        with stack.running(variant):
            say(f"scaled {kind}+pubsub, {what}")
            pids = [s.pid for s in variant]
            procs.wait_quiet(pids)
            out[key] = load_once(
                sc.target(), sc.ensure_pairs(opts), opts.fixed_rate, opts, sc.redis, cpu_pids=pids
            ) | {"server": kind, "layer": "pubsub"}
    # The framework ceiling on the production default (uvicorn, pub/sub): what Channels
    # and Django's database layer cost with nothing of the product on top.
    ceiling = sc.start_servers(kind, "pubsub", app=CEILING_APP)
    with stack.running(ceiling):
        say(f"scaled ceiling: the floor's relay as a Channels consumer on {kind}+pubsub")
        out["ceiling_sweep"] = sc.sweep(ceiling, opts) | {"server": kind}
    floors = start_floor(stack, sc.db, "redis", sc.redis.url, sc.ports)
    with stack.running(floors):
        say(f"scaled floor: two bare relays (Redis pub/sub, PostgreSQL) behind nginx :{sc.lb_port}")
        out["floor_sweep"] = sc.sweep(floors, opts)
        pairs = sc.ensure_pairs(opts)
        pids = [f.pid for f in floors]
        procs.wait_quiet(pids)
        out["floor_fixed"] = load_once(
            sc.target(), pairs, opts.fixed_rate, opts, sc.redis, cpu_pids=pids
        )
    return out


# --- reads ----------------------------------------------------------------------------


def reads(stack: Stack, opts: Options) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for vendor in ("sqlite", "postgresql"):
        db = stack.sqlite_database("reads") if vendor == "sqlite" else stack.postgres_database()
        env = server_env(db, LOG_LEVEL="ERROR")
        migrate(env)
        say(f"reads: building the data set on {vendor}")
        cmd = [PY, "-m", "bench.djworker", "reads"] + (["--quick"] if opts.quick else [])
        out[vendor] = json.loads(run(cmd, env, timeout=1200))
        if vendor == "sqlite":
            with contextlib.suppress(OSError):
                os.remove(db.removeprefix("sqlite:///"))
        for case, r in out[vendor]["cases"].items():
            say(f"  {vendor:10} {case:24} {r['median_ms']:>8.2f} ms  {r['queries']} queries")
    return out


# --- idle sockets ---------------------------------------------------------------------


async def _open_many(url: str, users: list[dict[str, Any]], concurrency: int = 64) -> Any:
    """One socket per user to its partner (users 2i and 2i+1); the open ones, failures."""
    sem = asyncio.Semaphore(concurrency)
    conns: list[Any] = []
    failures: dict[str, int] = {}

    async def one(user: dict[str, Any], partner: dict[str, Any]) -> None:
        async with sem:
            try:
                conn = await loadgen.open_socket(
                    url.format(account=partner["account"]), user["token"]
                )
                conns.append(conn)
            except Exception as exc:
                key = type(exc).__name__
                failures[key] = failures.get(key, 0) + 1

    jobs = []
    for a, b in zip(users[::2], users[1::2], strict=True):
        jobs += [one(a, b), one(b, a)]
    await asyncio.gather(*jobs)
    return conns, failures


async def _idle_measure(
    server: LiveServer, users: list[dict[str, Any]], opts: Options
) -> dict[str, Any]:
    url = server.ws + "/ws/dm/{account}/"
    warm, _ = await _open_many(url, users[:20])
    for conn in warm:
        await conn.close()
    await asyncio.sleep(1.0)
    pid = server.pid
    rss0 = procs.rss_bytes(pid)
    t0 = time.perf_counter()
    conns, failures = await _open_many(url, users)
    connect_seconds = time.perf_counter() - t0
    try:
        await asyncio.sleep(3.0)
        cpu0, w0 = procs.cpu_seconds(pid), time.perf_counter()
        await asyncio.sleep(opts.idle_window)
        cpu1, w1 = procs.cpu_seconds(pid), time.perf_counter()
        rss1 = procs.rss_bytes(pid)
    finally:
        await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)
    n = len(conns)
    return {
        "server": server.server,
        "connections": n,
        "failures": failures,
        "connect_seconds": round(connect_seconds, 1),
        "connects_per_second": round(n / max(connect_seconds, 1e-9), 1),
        "rss_before_mb": round(rss0 / 2**20, 1),
        "rss_after_mb": round(rss1 / 2**20, 1),
        "rss_per_connection_kb": round((rss1 - rss0) / max(n, 1) / 1024, 1),
        "idle_cpu_percent": round(100 * (cpu1 - cpu0) / (w1 - w0), 2),
        "idle_window_seconds": opts.idle_window,
    }


def idle(stack: Stack, opts: Options) -> dict[str, Any]:
    """N idle authenticated /ws/dm/ sockets on one process: RSS and CPU, vs the floor."""
    db = stack.sqlite_database("idle")
    env = server_env(db)
    migrate(env)
    users = json.loads(run([PY, "-m", "bench.djworker", "users", str(opts.idle_count)], env))
    out: dict[str, Any] = {"count": opts.idle_count, "database": "sqlite", "layer": "memory"}
    for kind in [*opts.idle_servers, "floor"]:
        if kind == "floor":
            server = start_floor(stack, db, fanout="memory")[0]
        else:
            server = stack.server(kind, env)
        with stack.running([server]):
            say(f"idle: {opts.idle_count} sockets on {kind} :{server.port}")
            result = arun(_idle_measure(server, users, opts))
            say(
                f"  {kind}: {result['connections']} open, {result['rss_per_connection_kb']} KiB/conn,"
                f" idle CPU {result['idle_cpu_percent']}%, failures {result['failures']}"
            )
            out[kind] = result
    return out


# --- profile --------------------------------------------------------------------------


def _py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(PY).parent / "py-spy")
    if not os.path.exists(found):
        raise RuntimeError("py-spy is not installed: .venv/bin/pip install py-spy")
    return found


def _profiled_load(
    stack: Stack,
    name: str,
    pid: int,
    target: loadgen.Target,
    pairs: list[Any],
    opts: Options,
    share: float,
    redis: RedisServer | None = None,
) -> dict[str, Any]:
    """A steady load with py-spy attached to ``pid`` from the moment the sockets are open.

    ``share``: the fraction of all messages that this process handles.
    """
    from bench import flame

    outdir = opts.profile_dir or stack.tmp
    outdir.mkdir(parents=True, exist_ok=True)
    raw = outdir / f"profile-{name.replace('+', '-')}.txt"
    sample_rate = 100 if opts.profile_native else 250
    duration = int(opts.profile_seconds + opts.warmup)
    cmd = [_py_spy(), "record", "--pid", str(pid), "--duration", str(duration)]
    cmd += ["--rate", str(sample_rate), "--format", "raw", "--threads", "--idle"]
    cmd += ["--output", str(raw)]
    # Native stacks show GIL waits but need a sampler that pauses the process.
    cmd += ["--native"] if opts.profile_native else ["--nonblocking"]
    spies: list[subprocess.Popen[bytes]] = []

    def attach() -> None:
        spies.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    run_opts = Options(**{**opts.__dict__, "seconds": opts.profile_seconds})
    say(f"profile {name}: {opts.profile_rate}/s under py-spy")
    try:
        load = load_once(
            target, pairs, opts.profile_rate, run_opts, redis, on_ready=attach, cpu_pids=[pid]
        )
        for spy in spies:
            spy.wait(timeout=duration + 30)
    finally:
        for spy in spies:
            if spy.poll() is None:
                spy.kill()
                spy.wait(5)
    handled = share * (load["sent"] + int(opts.profile_rate * opts.warmup))
    summary = (
        flame.summarize(raw, sample_rate, handled)
        if raw.exists()
        else {"error": "py-spy wrote nothing"}
    )
    return {"load": load, "profile": summary, "raw": str(raw)}


def profile(stack: Stack, opts: Options) -> dict[str, Any]:
    """py-spy on one server process under a steady load: scaled configs, then embedded."""
    sc = Scaled.start(stack, opts)
    out: dict[str, Any] = {}
    for kind, layer in [(k, la) for k in opts.servers for la in opts.layers]:
        servers = sc.start_servers(kind, layer)
        with stack.running(servers):
            pairs = sc.ensure_pairs(opts)
            # Process a sends for half of the pairs and delivers for the other half.
            out[f"{kind}+{layer}"] = _profiled_load(
                stack,
                f"{kind}+{layer}",
                servers[0].pid,
                sc.target(),
                pairs,
                opts,
                0.5,
                sc.redis,
            )
    db = stack.sqlite_database("profile")
    env = server_env(db)
    migrate(env)
    server = stack.server("daphne", env)
    with stack.running([server]):
        pairs = make_pairs(env, server.http, opts)
        target = loadgen.Target(server.ws + "/ws/dm/{account}/")
        out["embedded"] = _profiled_load(stack, "embedded", server.pid, target, pairs, opts, 1.0)
    return out
