"""Django-side helpers, run as a subprocess with a server's environment
(docs/benchmarks.md, "Reads at scale"):

``python -m bench.djworker users N``   N accounts by bulk insert, with tokens, as JSON
``python -m bench.djworker reads``     build the reads-at-scale data set, time the pages
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import time
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "instamg.settings")

import django

django.setup()

import logging  # noqa: E402

logging.getLogger("django.request").setLevel(logging.ERROR)

from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.contrib.auth.hashers import make_password  # noqa: E402
from django.core.management.color import no_style  # noqa: E402
from django.db import connection, models  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402

from direct_messages.auth import token_issue  # noqa: E402
from direct_messages.models import DirectMessage, Room, RoomMember  # noqa: E402

User = get_user_model()
BASE_TIME = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
WORDS = [
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliet",
    "kilo",
    "lima",
    "mike",
]
NEEDLE = "needle"
IS_PG = connection.vendor == "postgresql"


def log(*args: Any) -> None:
    print("djworker:", *args, file=sys.stderr, flush=True)


# --- bulk insert ------------------------------------------------------------------------


def _const(field: models.Field, value: Any) -> Any:
    if IS_PG:
        return value
    return field.get_db_prep_save(value, connection)


def _adapt(field: models.Field, value: Any) -> Any:
    """A varying value as the database takes it (SQLite needs Django's adaptation)."""
    if IS_PG or value is None:
        return value
    if isinstance(value, dt.datetime):
        return str(value.astimezone(dt.UTC).replace(tzinfo=None))
    if isinstance(value, uuid.UUID):
        return value.hex
    if isinstance(value, bool):
        return int(value)
    return value


def bulk_insert(
    model: type[models.Model], rows: Iterable[dict[str, Any]], batch: int = 20000
) -> int:
    """Insert ``rows`` (dicts of attnames; the rest take the field defaults)."""
    fields = list(model._meta.concrete_fields)
    table = model._meta.db_table
    count = 0
    iterator = iter(rows)
    first = next(iterator, None)
    if first is None:
        return 0
    given = [f for f in fields if f.attname in first]
    fixed = [
        (f, _const(f, f.get_default()))
        for f in fields
        if f.attname not in first and not f.primary_key
    ]
    columns = [f.column for f in given] + [f.column for f, _ in fixed]
    fixed_values = tuple(v for _, v in fixed)
    quoted = ", ".join(connection.ops.quote_name(c) for c in columns)

    def tuples() -> Iterator[tuple[Any, ...]]:
        for row in _chain(first, iterator):
            yield tuple(_adapt(f, row[f.attname]) for f in given) + fixed_values

    with connection.cursor() as cursor:
        if IS_PG:
            with cursor.cursor.copy(f"COPY {table} ({quoted}) FROM STDIN") as copy:
                for values in tuples():
                    copy.write_row(values)
                    count += 1
        else:
            sql = f"INSERT INTO {table} ({quoted}) VALUES ({', '.join('?' * len(columns))})"
            chunk: list[tuple[Any, ...]] = []
            for values in tuples():
                chunk.append(values)
                if len(chunk) >= batch:
                    cursor.executemany(sql, chunk)
                    count += len(chunk)
                    chunk = []
            if chunk:
                cursor.executemany(sql, chunk)
                count += len(chunk)
    return count


def _chain(first: Any, rest: Iterator[Any]) -> Iterator[Any]:
    yield first
    yield from rest


def reset_sequences(*model_list: type[models.Model]) -> None:
    sql = connection.ops.sequence_reset_sql(no_style(), list(model_list))
    with connection.cursor() as cursor:
        for statement in sql:
            cursor.execute(statement)


def make_users(accounts: list[str]) -> list[dict[str, Any]]:
    """Accounts by bulk insert (one password hash for all); ids and tokens."""
    start = (User.objects.order_by("-pk").values_list("pk", flat=True).first() or 0) + 1
    password = make_password("bench-correct-horse-battery")
    now = dt.datetime.now(dt.UTC)
    rows = (
        {"id": start + i, "account": a, "password": password, "is_active": True, "date_joined": now}
        for i, a in enumerate(accounts)
    )
    with connection.constraint_checks_disabled():
        bulk_insert(User, rows)
    reset_sequences(User)
    users = []
    for i, account in enumerate(accounts):
        user = User(pk=start + i, account=account, password=password)  # the token holds its digest
        users.append({"id": start + i, "account": account, "token": token_issue(user)[0]})
    return users


# --- reads at scale ---------------------------------------------------------------------


def scale(quick: bool) -> dict[str, Any]:
    if quick:
        return {"convs": [10, 100, 1000], "big": 2000, "total": 20000, "deep": 900, "back": 1800}
    sizes = {"convs": [10, 1000, 10000], "big": 100_000, "total": 1_000_000}
    return sizes | {"deep": 9000, "back": 90_000}


def build(sc: dict[str, Any]) -> dict[str, Any]:
    """The data set: three inbox owners, their peers, and one very long conversation.

    Users ``own_<n>`` (n conversations each, with peers ``peer_0..``), and ``big_a`` and
    ``big_b`` who share one conversation of ``big`` messages and nothing else (so
    search as ``big_a`` covers exactly those). Every other message is spread evenly
    over the other rooms; timestamps grow with the message id.
    """
    t0 = time.perf_counter()
    n_peers = max(sc["convs"])
    owners = [f"own_{n}" for n in sc["convs"]]
    accounts = [*owners, "big_a", "big_b"] + [f"peer_{i}" for i in range(n_peers)]
    users = {u["account"]: u for u in make_users(accounts)}
    pairs: list[tuple[int, int]] = [(users["big_a"]["id"], users["big_b"]["id"])]
    for owner, n in zip(owners, sc["convs"], strict=True):
        pairs += [(users[owner]["id"], users[f"peer_{i}"]["id"]) for i in range(n)]
    small_rooms = len(pairs) - 1
    rest = sc["total"] - sc["big"]
    base, extra = divmod(rest, small_rooms)
    counts = [sc["big"]] + [base + (1 if i < extra else 0) for i in range(small_rooms)]
    room_start = (Room.objects.order_by("-pk").values_list("pk", flat=True).first() or 0) + 1
    msg_start = (
        DirectMessage.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
    ) + 1

    rooms, members = [], []
    spans = []
    next_id = msg_start
    for r, ((a, b), n) in enumerate(zip(pairs, counts, strict=True)):
        lo, hi = sorted((a, b))
        first_id, last_id = next_id, next_id + n - 1
        next_id += n
        spans.append((room_start + r, a, b, first_id, n))
        last_at = BASE_TIME + dt.timedelta(milliseconds=last_id)
        rooms.append(
            {
                "id": room_start + r,
                "key": f"dm.{lo}.{hi}",
                "user_lo_id": lo,
                "user_hi_id": hi,
                "last_seq": n,
                "last_message_id": last_id,
                "last_activity_at": last_at,
                "created_at": BASE_TIME,
            }
        )
        for user, other in ((a, b), (b, a)):
            members.append(
                {
                    "room_id": room_start + r,
                    "user_id": user,
                    "other_id": other,
                    "last_read_seq": n,
                    "unread_count": 0,
                    "last_activity_at": last_at,
                }
            )

    def messages() -> Iterator[dict[str, Any]]:
        for room_id, a, b, first_id, n in spans:
            for seq in range(1, n + 1):
                pk = first_id + seq - 1
                text = f"message {pk} about {WORDS[pk % len(WORDS)]} and {WORDS[(pk // 7) % len(WORDS)]}"
                if pk % 100 == 7:
                    text += f" with a {NEEDLE} in it"
                yield {
                    "id": pk,
                    "room_id": room_id,
                    "sender_id": a if seq % 2 else b,
                    "seq": seq,
                    "message": text,
                    "client_id": uuid.uuid4(),
                    "created_at": BASE_TIME + dt.timedelta(milliseconds=pk),
                }

    with connection.constraint_checks_disabled():
        # Rooms point at their last message: messages first, then rooms, on SQLite
        # (FK checks are deferred) and PostgreSQL (COPY in one transaction) alike.
        from django.db import transaction

        with transaction.atomic():
            if IS_PG:
                with connection.cursor() as cursor:
                    cursor.execute("SET CONSTRAINTS ALL DEFERRED")
            bulk_insert(Room, rooms)
            bulk_insert(RoomMember, members)
            inserted = bulk_insert(DirectMessage, messages())
    reset_sequences(Room, RoomMember, DirectMessage)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    seconds = time.perf_counter() - t0
    log(f"built {inserted} messages in {len(rooms)} rooms in {seconds:.1f} s")
    return {"users": users, "messages": inserted, "rooms": len(rooms), "build_seconds": seconds}


def measure(
    client: Client, url: str, token: str, reps: int
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    response = client.get(url, **headers)
    body = (
        response.json()
        if response.headers.get("Content-Type", "").startswith("application/json")
        else None
    )
    for _ in range(2):
        client.get(url, **headers)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        client.get(url, **headers)
        times.append((time.perf_counter() - t) * 1000)
    with CaptureQueriesContext(connection) as ctx:
        client.get(url, **headers)
    times.sort()
    slowest = max(ctx.captured_queries, key=lambda q: float(q["time"]), default=None)
    return {
        "url": url,
        "status": response.status_code,
        "median_ms": round(statistics.median(times), 3),
        "p90_ms": round(times[int(0.9 * (len(times) - 1))], 3),
        "queries": len(ctx.captured_queries),
        "results": len(body.get("results", [])) if isinstance(body, dict) else None,
        "query_ms": [round(float(q["time"]) * 1000, 2) for q in ctx.captured_queries],
        "slowest_query": slowest["sql"][:600] if slowest else None,
        "slowest_plan": explain(slowest["sql"]) if slowest else None,
    }, body


def explain(sql: str) -> list[str]:
    """The database's plan for a captured (already interpolated) SELECT."""
    if not sql.lstrip().upper().startswith("SELECT"):
        return []
    prefix = "EXPLAIN " if IS_PG else "EXPLAIN QUERY PLAN "
    try:
        with connection.cursor() as cursor:
            cursor.execute(prefix + sql)
            return [" ".join(str(c) for c in row) for row in cursor.fetchall()][:20]
    except Exception as exc:
        return [f"explain failed: {exc!r}"[:200]]


def inbox_cursor(client: Client, token: str, offset: int) -> str | None:
    """The opaque cursor after ``offset`` rows, walked through the API itself."""
    step = 200 if offset % 200 == 0 else 100
    cursor = None
    for _ in range(offset // step):
        url = f"/api/inbox?limit={step}" + (f"&cursor={cursor}" if cursor else "")
        body = client.get(url, HTTP_AUTHORIZATION=f"Bearer {token}").json()
        cursor = body.get("next_cursor")
        if not cursor:
            return None
    return cursor


def reads(quick: bool) -> dict[str, Any]:
    sc = scale(quick)
    data = build(sc)
    users = data["users"]
    reps = 5 if quick else 15
    client = Client()
    cases: dict[str, Any] = {}
    for n in sc["convs"]:
        cases[f"inbox_first_{n}"], _ = measure(
            client, "/api/inbox?limit=20", users[f"own_{n}"]["token"], reps
        )
    big_owner = users[f"own_{max(sc['convs'])}"]["token"]
    cursor = inbox_cursor(client, big_owner, sc["deep"])
    if cursor:
        cases[f"inbox_after_{sc['deep']}"], _ = measure(
            client, f"/api/inbox?limit=20&cursor={cursor}", big_owner, reps
        )
    small_owner = users[f"own_{min(sc['convs'])}"]["token"]
    cases["history_small_newest"], _ = measure(
        client, "/api/dm/peer_0/messages?limit=50", small_owner, reps
    )
    token = users["big_a"]["token"]
    cases["history_big_newest"], _ = measure(client, "/api/dm/big_b/messages?limit=50", token, reps)
    before = sc["big"] - sc["back"] + 1
    cases[f"history_{sc['back']}_back"], _ = measure(
        client, f"/api/dm/big_b/messages?limit=50&before={before}", token, reps
    )
    for name, url in (
        ("search_conversation", f"/api/dm/big_b/messages?q={NEEDLE}"),
        ("search_all", f"/api/search?q={NEEDLE}"),
    ):
        result, body = measure(client, url, token, reps)
        available = (
            result["status"] == 200
            and isinstance(body, dict)
            and "next_cursor" in body
            and all(NEEDLE in m.get("message", "") for m in body.get("results", []))
            and bool(body.get("results"))
        )
        result["available"] = available
        if not available:
            result["why"] = (
                f"HTTP {result['status']}"
                if result["status"] != 200
                else "q is ignored (no next_cursor / non-matching results)"
            )
        cases[name] = result
    return {
        "vendor": connection.vendor,
        "scale": sc,
        "messages": data["messages"],
        "rooms": data["rooms"],
        "build_seconds": round(data["build_seconds"], 1),
        "cases": cases,
        "sends": sends(30 if quick else 200, users[f"own_{min(sc['convs'])}"]),
    }


def sends(n: int, sender_info: dict[str, Any]) -> dict[str, Any]:
    """Queries and time of ``services.message_send`` (no transport), to a fresh peer."""
    from direct_messages import services

    peer = make_users([f"r_{uuid.uuid4().hex[:10]}"])[0]
    sender = User.objects.get(pk=sender_info["id"])
    services.message_send(sender=sender, account=peer["account"], client_id=uuid.uuid4(), text="x")
    counts, times = [], []
    for _ in range(n):
        with CaptureQueriesContext(connection) as ctx:
            t = time.perf_counter()
            services.message_send(
                sender=sender, account=peer["account"], client_id=uuid.uuid4(), text="hello"
            )
            times.append((time.perf_counter() - t) * 1000)
        counts.append(len(ctx.captured_queries))
    postgres_ms = _postgres_cpu_per_send(n * 10)
    kinds: dict[str, int] = {}
    for q in ctx.captured_queries:
        word = q["sql"].split(None, 1)[0].upper()
        kinds[word] = kinds.get(word, 0) + 1
    return {
        "vendor": connection.vendor,
        "queries_per_send": statistics.median(counts),
        "query_kinds": kinds,
        "queries": [q["sql"][:160] for q in ctx.captured_queries],
        "median_ms": round(statistics.median(times), 3),
        "postgres_cpu_ms_per_send": postgres_ms,
    }


def _postgres_cpu_per_send(n: int) -> float | None:
    """PostgreSQL's own CPU per send: this connection's server process, read from /proc
    around ``n`` sends, as in production (queries not logged, the statement prepared,
    the default rate limit): 100 senders take turns, 20 sends each at most, so that
    none is limited and each one's rate window is as long as a real user's.

    None on SQLite, or when the server process is not on this machine."""
    from django.test import override_settings

    from bench.procs import cpu_seconds
    from direct_messages import services
    from direct_messages.conf import DEFAULTS

    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    tag = uuid.uuid4().hex[:6]
    people = make_users([f"pg_{tag}_{i}" for i in range(200)])
    senders = [User.objects.get(pk=p["id"]) for p in people[:100]]
    pairs = list(zip(senders, [p["account"] for p in people[100:]], strict=True))
    limits = {k: DEFAULTS[k] for k in ("SEND_RATE_LIMIT", "SEND_RATE_WINDOW_SECONDS")}
    with override_settings(DIRECT_MESSAGES={**settings.DIRECT_MESSAGES, **limits}):
        for sender, account in pairs:  # the rooms and windows exist before measuring
            services.message_send(sender=sender, account=account, client_id=uuid.uuid4(), text="x")
        n = min(n, 20 * len(pairs))
        try:
            before = cpu_seconds(pid)
        except OSError:
            return None
        for i in range(n):
            sender, account = pairs[i % len(pairs)]
            services.message_send(sender=sender, account=account, client_id=uuid.uuid4(), text="hi")
        return round(1000 * (cpu_seconds(pid) - before) / n, 3)


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_users = sub.add_parser("users")
    p_users.add_argument("count", type=int)
    p_users.add_argument("--prefix", default="idle")
    p_reads = sub.add_parser("reads")
    p_reads.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.cmd == "users":
        tag = uuid.uuid4().hex[:6]
        out: Any = make_users([f"{args.prefix}_{tag}_{i}" for i in range(args.count)])
    else:
        out = reads(args.quick)
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
