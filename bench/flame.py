"""Summaries of py-spy's raw (collapsed-stack) output: where a server's time goes, per
thread and per *layer* (the innermost frame of a known library or app decides).
Waits (``--idle`` samples) are their own layers."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

# (layer, substrings of "function (file:line)" frames), innermost match wins.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("db driver (psycopg / sqlite3)", ("psycopg/", "psycopg_pool/", "sqlite3/", "(sqlite3")),
    ("Django DB backend + transactions", ("django/db/backends/", "django/db/transaction.py")),
    ("Django ORM (query building, model init)", ("django/db/models/", "django/db/utils.py")),
    ("channels_redis layer", ("channels_redis/",)),
    ("redis-py client", ("redis/",)),
    ("msgpack", ("msgpack",)),
    ("pydantic validation", ("pydantic",)),
    ("JSON (orjson/json)", ("orjson", "json/")),
    ("asgiref sync<->async hops", ("asgiref/",)),
    ("thread pool / futures / locks", ("concurrent/futures/", "threading.py", "queue.py")),
    ("channels (consumer, layer API)", ("channels/",)),
    ("app: direct_messages", ("direct_messages/",)),
    ("app: decorators, users", ("decorators/", "users/")),
    ("Django other (signals, settings, utils)", ("django/",)),
    ("server: daphne / autobahn / twisted", ("daphne/", "autobahn/", "twisted/", "txaio/")),
    ("server: uvicorn / websockets", ("uvicorn/", "websockets/", "httptools", "uvloop")),
    ("asyncio event loop", ("asyncio/", "selectors.py")),
]

# Functions whose inclusive share is worth printing (substring of the frame text).
WATCH = [
    "frame_message_send",
    "message_send (direct_messages/services.py",
    "peer_resolve",
    "_existing_send",
    "room_get_or_create",
    "_message_insert",
    "message_out",
    "close_old_connections",
    "get_new_connection",
    "_close (django/db/backends",
    "_commit (django/db/backends",
    "execute (django/db/backends/utils.py",
    "AsyncToSync.__call__",
    "SyncToAsync.__call__",
    "publish (direct_messages/realtime.py",
    "group_send",
    "parse_frame",
    "send_json",
    "deliver (direct_messages/consumers.py",
    "receive (direct_messages/consumers.py",
    "_heartbeat",
]

_THREAD = re.compile(r"^thread \((\w+)\): ([^;]*)")


def parse(path: Path) -> list[tuple[str, list[str], int]]:
    samples = []
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        thread = "?"
        match = _THREAD.match(frames[0])
        if match:
            thread = match.group(2) or match.group(1)
            frames = frames[1:]
        samples.append((thread, frames, int(count)))
    return samples


# Waits: a sample whose innermost frame is one of these is not CPU (py-spy --idle).
WAITS: list[tuple[str, tuple[str, ...]]] = [
    ("wait: event loop idle (epoll)", ("select (selectors.py", "poll (selectors.py")),
    ("wait: database reply", ("wait (psycopg/", "wait_c (psycopg", "Connection.wait (psycopg")),
    ("wait: Redis reply", ("_read_from_socket (redis/", "read_response (redis/")),
    ("wait: thread idle, no work", ("_worker (concurrent/futures/thread.py",)),
    (
        "wait: lock / condition / future",
        ("Condition.wait (threading.py", "Event.wait", "Lock.acquire", "Future.result"),
    ),
]


def layer_of(frames: list[str]) -> str:
    leaf = frames[-1] if frames else ""
    for layer, needles in WAITS:
        if any(n in leaf for n in needles):
            if layer == "wait: lock / condition / future" and any(
                "AsyncToSync" in f for f in frames
            ):
                return "wait: sync thread blocked in async_to_sync (publish on the loop)"
            return layer
    for frame in reversed(frames):
        for layer, needles in LAYERS:
            if any(n in frame for n in needles):
                return layer
    return "other"


def summarize(
    path: Path, rate: float = 250.0, per_messages: float | None = None, top: int = 20
) -> dict[str, Any]:
    """Per thread: where its wall time goes (with ``--idle`` samples, waits included).

    With ``per_messages`` (messages this process handled), each share is also given as
    milliseconds of that thread per message: the cost that bounds throughput, since
    the thread that runs ``database_sync_to_async`` work is a single thread.
    """
    samples = parse(path)
    by_thread: dict[str, Counter[str]] = {}
    watch: dict[str, Counter[str]] = {}
    leaves: Counter[str] = Counter()
    for thread, frames, count in samples:
        layer = layer_of(frames)
        by_thread.setdefault(thread, Counter())[layer] += count
        if not layer.startswith("wait:") and frames:
            leaves[re.sub(r":\d+\)$", ")", frames[-1])] += count
        seen = watch.setdefault(thread, Counter())
        for name in WATCH:
            if any(name in f for f in frames):
                seen[name] += count
    threads = {}
    for thread, layers in sorted(by_thread.items(), key=lambda kv: -sum(kv[1].values())):
        total = sum(layers.values())
        busy = sum(v for k, v in layers.items() if not k.startswith("wait:"))
        if busy < 0.01 * total and thread != "MainThread":
            continue
        entry: dict[str, Any] = {
            "samples": total,
            "busy_percent": round(100 * busy / total, 1),
            "percent": {k: round(100 * v / total, 1) for k, v in layers.most_common()},
            "inclusive_percent": {
                k: round(100 * v / total, 1) for k, v in watch[thread].most_common()
            },
        }
        if per_messages:
            entry["inclusive_ms_per_message"] = {
                k: round(1000 * v / rate / per_messages, 3) for k, v in watch[thread].most_common()
            }
            entry["ms_per_message"] = {
                k: round(1000 * v / rate / per_messages, 3) for k, v in layers.most_common()
            }
            entry["ms_per_message_total_busy"] = round(1000 * busy / rate / per_messages, 3)
        threads[thread] = entry
    busy_total = sum(leaves.values()) or 1
    return {
        "sample_rate": rate,
        "per_messages": per_messages,
        "threads": threads,
        "top_cpu_leaves_percent": {
            k: round(100 * v / busy_total, 1) for k, v in leaves.most_common(top)
        },
    }
