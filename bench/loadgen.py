"""The load generator: PROTOCOL.md only, over real sockets (docs/benchmarks.md, "How
the load is made"): pairs of a sender and a recipient, ``message.send`` at a fixed total
rate, every message matched by ``client_id`` to its ack and its ``message.new``."""

from __future__ import annotations

import asyncio
import contextlib
import math
import resource
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection

from tests.support import open_dm, ws_connect

TEXT = "benchmark message, about the length of a short chat line"


def percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    rank = math.ceil(q / 100 * len(sorted_values))  # nearest-rank
    return sorted_values[min(len(sorted_values), max(1, rank)) - 1]


def summarize(values: list[float]) -> dict[str, float | None]:
    values = sorted(values)
    ms = [v * 1000 for v in values]
    return {
        "p50": percentile(ms, 50),
        "p90": percentile(ms, 90),
        "p99": percentile(ms, 99),
        "max": ms[-1] if ms else None,
        "n": len(ms),
    }


@dataclass
class Sent:
    pair: int
    index: int
    at: float
    measured: bool
    ack_at: float | None = None
    new_at: float | None = None
    deliveries: int = 0


@dataclass
class Run:
    """One load run's bookkeeping."""

    sent: dict[str, Sent] = field(default_factory=dict)
    last_index: dict[int, int] = field(default_factory=dict)
    duplicated: int = 0
    out_of_order: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    unexpected_closes: int = 0
    acked_measured: int = 0
    delivered_measured: int = 0
    last_delivery_at: float = 0.0


async def _read_sender(conn: ClientConnection, run: Run) -> None:
    async for raw in conn:
        frame = orjson.loads(raw)
        kind = frame.get("type")
        if kind == "message.ack":
            item = run.sent.get(frame.get("client_id"))
            if item is not None and item.ack_at is None:
                item.ack_at = time.perf_counter()
                run.acked_measured += item.measured
        elif kind == "error":
            code = str(frame.get("code"))
            run.errors[code] = run.errors.get(code, 0) + 1


async def _read_recipient(conn: ClientConnection, pair: int, run: Run) -> None:
    async for raw in conn:
        now = time.perf_counter()
        frame = orjson.loads(raw)
        kind = frame.get("type")
        if kind == "message.new":
            message = frame["message"]
        elif kind == "inbox.update":  # a recipient on /ws/inbox/ (Target.inbox_every)
            message = frame["conversation"].get("last_message") or {}
        else:
            continue
        item = run.sent.get(message.get("client_id"))
        if item is None or item.pair != pair:
            continue
        item.deliveries += 1
        if item.deliveries > 1:
            run.duplicated += 1
            continue
        item.new_at = now
        run.last_delivery_at = now
        run.delivered_measured += item.measured
        if item.index < run.last_index.get(pair, -1):
            run.out_of_order += 1
        run.last_index[pair] = max(item.index, run.last_index.get(pair, -1))


async def open_socket(url: str, token: str) -> ClientConnection:
    options: dict[str, Any] = {"ping_interval": None, "max_size": 1 << 20, "max_queue": None}
    if "/ws/inbox/" in url:  # no first frame to wait for
        return await ws_connect(url, token, open_timeout=30, **options)
    return await open_dm(url, token, 30, **options)


@dataclass
class Target:
    """Where sockets connect: ``url`` with ``{account}`` and, optionally, ``{node}``.

    With ``nodes``, pair ``i`` has its sender on ``nodes[i % n]`` and its recipient on
    the next node, so every delivery crosses processes and every process sends. With
    ``inbox_every`` = k, the recipient of every k-th pair (0, k, 2k, ...) listens on
    ``/ws/inbox/`` only: it is not looking at the conversation, so it may be notified,
    and its delivery is its ``inbox.update``.
    """

    url: str  # e.g. ws://127.0.0.1:P/ws/dm/{account}/?node={node}
    nodes: tuple[str, ...] = ("",)
    inbox_every: int = 0

    def urls(self, pair: int, sender: str, recipient: str) -> tuple[str, str]:
        n = len(self.nodes)
        recipient_url = self.url
        if self.inbox_every and pair % self.inbox_every == 0:
            recipient_url = self.url.replace("/ws/dm/{account}/", "/ws/inbox/")
        return (
            self.url.format(account=recipient, node=self.nodes[pair % n]),
            recipient_url.format(account=sender, node=self.nodes[(pair + 1) % n]),
        )


async def run_load(
    target: Target,
    pairs: list[tuple[dict[str, Any], dict[str, Any]]],
    rate: float,
    seconds: float,
    warmup: float = 1.0,
    drain: float = 5.0,
    on_ready: Callable[[], Awaitable[None]] | None = None,
    on_done: Callable[[], Awaitable[None]] | None = None,
) -> dict[str, Any]:
    """Send at ``rate`` messages/s for ``warmup`` + ``seconds``; stats of the measured part."""
    run = Run()
    conns: list[ClientConnection] = []
    readers: list[asyncio.Task[None]] = []
    try:
        senders = []
        for i, (a, b) in enumerate(pairs):
            sender_url, recipient_url = target.urls(i, a["account"], b["account"])
            s = await open_socket(sender_url, a["token"])
            r = await open_socket(recipient_url, b["token"])
            conns += [s, r]
            senders.append(s)
            readers.append(asyncio.create_task(_read_sender(s, run)))
            readers.append(asyncio.create_task(_read_recipient(r, i, run)))
        if on_ready:
            await on_ready()
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        result = await _drive(run, senders, rate, seconds, warmup, drain)
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        if on_done:
            await on_done()
        used = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
        result["loadgen_cpu_percent"] = round(100 * used / max(result["wall_seconds"], 1e-9), 1)
        return result
    finally:
        for task in readers:
            task.cancel()
        for conn in conns:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 2)
        await asyncio.gather(*readers, return_exceptions=True)


async def _drive(
    run: Run,
    senders: list[ClientConnection],
    rate: float,
    seconds: float,
    warmup: float,
    drain: float,
) -> dict[str, Any]:
    k = len(senders)
    total_warm = int(rate * warmup)
    total = total_warm + int(rate * seconds)
    next_index = [0] * k
    start = time.perf_counter()
    measure_start = start + warmup
    i = 0
    send_errors = 0
    # Bounded: ``total`` sends, then at most ``drain`` seconds of waiting.
    while i < total:
        due = min(total, int((time.perf_counter() - start) * rate) + 1)
        while i < due:
            pair = i % k
            client_id = str(uuid.uuid4())
            run.sent[client_id] = Sent(pair, next_index[pair], time.perf_counter(), i >= total_warm)
            next_index[pair] += 1
            frame = {"type": "message.send", "client_id": client_id, "message": TEXT}
            try:
                await senders[pair].send(orjson.dumps(frame).decode())
            except Exception:
                send_errors += 1
            i += 1
        wake = start + i / rate
        await asyncio.sleep(max(0.0, wake - time.perf_counter()))
    sent_end = time.perf_counter()
    measured = [s for s in run.sent.values() if s.measured]
    deadline = sent_end + drain
    while time.perf_counter() < deadline:
        if run.delivered_measured >= len(measured) and run.acked_measured >= len(measured):
            break
        await asyncio.sleep(0.02)
    delivered = [s for s in measured if s.new_at is not None]
    acked = [s for s in measured if s.ack_at is not None]
    first_at = min((s.at for s in measured), default=measure_start)
    last_at = max((s.new_at or 0.0 for s in measured), default=first_at)
    span = max(last_at - first_at, 1e-9)
    return {
        "rate_target": rate,
        "seconds": seconds,
        "pairs": k,
        "sent": len(measured),
        "send_rate": round(len(measured) / max(sent_end - measure_start, 1e-9), 1),
        "acked": len(acked),
        "delivered": len(delivered),
        "delivered_rate": round(len(delivered) / span, 1),
        "lost": len(measured) - len(delivered),
        "unacked": len(measured) - len(acked),
        "duplicated": run.duplicated,
        "out_of_order": run.out_of_order,
        "errors": run.errors,
        "send_errors": send_errors,
        "timeline": _timeline(delivered, first_at),
        "ack_ms": summarize([s.ack_at - s.at for s in acked if s.ack_at]),
        "delivery_ms": summarize([s.new_at - s.at for s in delivered if s.new_at]),
        "wall_seconds": round(time.perf_counter() - start, 2),
        "drain_seconds": drain,
    }


def _timeline(delivered: list[Sent], start: float) -> list[float]:
    """Worst delivery latency (ms) of the messages sent in each second of the run.

    A periodic stall (all sockets' heartbeats firing together, a checkpoint) shows
    up here as one bad second among good ones.
    """
    worst: dict[int, float] = {}
    for s in delivered:
        if s.new_at is None:
            continue
        second = int(s.at - start)
        worst[second] = max(worst.get(second, 0.0), (s.new_at - s.at) * 1000)
    return [round(worst.get(i, 0.0), 1) for i in range(max(worst, default=-1) + 1)]


def sustainable(result: dict[str, Any], p99_ms: float = 50.0) -> bool:
    """p99 delivery under ``p99_ms``, nothing lost or duplicated, the rate really offered."""
    p99 = result["delivery_ms"]["p99"]
    return (
        p99 is not None
        and p99 < p99_ms
        and result["lost"] == 0
        and result["duplicated"] == 0
        and result["unacked"] == 0
        and not result["errors"]
        and result["send_rate"] >= 0.95 * result["rate_target"]
    )
