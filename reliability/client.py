"""The retrying PROTOCOL.md client of the faults and the soak, and the bookkeeping that
reconciles what it saw with the stored history (reliability/README.md, "The client")."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection

from tests.support import http_json, open_dm

TEXT = "reliability message"
RECONNECT_BACKOFF_MIN = 0.1
RECONNECT_BACKOFF_MAX = 1.0


def now() -> float:
    return time.monotonic()


@dataclass
class Msg:
    client_id: str
    pair: int
    index: int
    created: float
    sends: int = 0
    last_sent: float = 0.0
    sent_on: int = -1  # the sender's connection generation it was last sent on
    ack_at: float | None = None
    ack_id: int | None = None
    ack_seq: int | None = None
    ack_mismatch: int = 0
    delivered_at: float | None = None
    delivered_via: str = ""
    deliveries: int = 0


@dataclass
class Stats:
    """Everything the clients saw, for the report."""

    msgs: dict[str, Msg] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    reconnects: dict[str, int] = field(default_factory=dict)
    connect_failures: int = 0
    resends: int = 0
    seq_repeats: int = 0  # a recipient got a seq it already had
    seq_gaps: int = 0  # a recipient got seq > last + 1
    foreign: int = 0  # a message.new no sender of the run sent
    ack_times: list[float] = field(default_factory=list)
    delivery_times: list[float] = field(default_factory=list)

    def count(self, table: dict[str, int], key: str) -> None:
        table[key] = table.get(key, 0) + 1


class Endpoint:
    """The servers a client may use, preferring its own; rotates on connect failure."""

    def __init__(self, bases: Sequence[str], preferred: int) -> None:
        self.bases = list(bases)
        self.current = preferred % len(self.bases)

    def url(self, other: str, after: int) -> str:
        return f"{self.bases[self.current]}/ws/dm/{other}/?after={after}"

    def failed(self) -> None:
        self.current = (self.current + 1) % len(self.bases)


class _Drop(Exception):
    """Drop this socket and reconnect (timeout, error frame, churn, stall)."""


class Peer:
    """The connect / read / reconnect loop shared by both sides."""

    role = "peer"

    def __init__(
        self,
        stats: Stats,
        pair: int,
        me: dict[str, Any],
        other: dict[str, Any],
        endpoint: Endpoint,
        churn: tuple[float, float] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.stats = stats
        self.pair = pair
        self.me = me
        self.other = other
        self.endpoint = endpoint
        self.churn = churn
        self.rng = rng or random.Random(pair)
        self.conn: ClientConnection | None = None
        self.generation = 0
        self.ready = False
        self.stopping = False
        self.last_seq = 0
        self.next_churn = 0.0

    def after(self) -> int:
        return self.last_seq

    async def _connect(self) -> ClientConnection:
        delay = RECONNECT_BACKOFF_MIN
        while True:
            url = self.endpoint.url(self.other["account"], self.after())
            try:
                return await open_dm(
                    url,
                    self.me["token"],
                    5,
                    close_timeout=1,
                    ping_interval=None,
                    max_size=1 << 22,
                    max_queue=None,
                )
            except asyncio.CancelledError:
                raise
            except Exception:
                self.stats.connect_failures += 1
                self.endpoint.failed()
                if self.stopping:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_BACKOFF_MAX)

    async def run(self) -> None:
        while not self.stopping:
            try:
                self.conn = await self._connect()
            except Exception:
                return
            self.generation += 1
            if self.generation > 1:
                self.stats.count(self.stats.reconnects, self.role)
            if self.churn:
                self.next_churn = now() + self.rng.uniform(*self.churn)
            try:
                await self.on_open()
                self.ready = True
                await self._read()
            except (TimeoutError, _Drop, OSError):
                pass
            except Exception as exc:  # ConnectionClosed and friends
                if not type(exc).__module__.startswith("websockets"):
                    raise
            finally:
                self.ready = False
                conn, self.conn = self.conn, None
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(conn.close(), 2)

    async def _read(self) -> None:
        assert self.conn is not None
        while True:
            try:
                raw = await asyncio.wait_for(self.conn.recv(), 0.25)
            except TimeoutError:
                raw = None
            if raw is not None:
                await self.on_frame(orjson.loads(raw))
            await self.tick()
            if self.stopping:
                raise _Drop()
            if self.churn and now() >= self.next_churn:
                self.stats.count(self.stats.reconnects, f"{self.role}_churn")
                raise _Drop()

    async def send_frame(self, frame: dict[str, Any]) -> None:
        assert self.conn is not None
        await self.conn.send(orjson.dumps(frame).decode())

    async def on_open(self) -> None: ...

    async def on_frame(self, frame: dict[str, Any]) -> None: ...

    async def tick(self) -> None: ...


class Sender(Peer):
    role = "sender"

    window = 5  # messages in flight at most

    def __init__(self, *args: Any, ack_timeout: float = 3.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ack_timeout = ack_timeout
        self.timeout = ack_timeout  # grows while acks do not come
        self.unacked: dict[str, Msg] = {}  # in order; the first ``window`` are in flight
        self.index = 0
        self.last_ack = 0.0

    def new_message(self) -> Msg:
        msg = Msg(str(uuid.uuid4()), self.pair, self.index, now())
        self.index += 1
        self.stats.msgs[msg.client_id] = msg
        self.unacked[msg.client_id] = msg
        return msg

    def in_flight(self) -> list[Msg]:
        return list(itertools.islice(self.unacked.values(), self.window))

    async def offer(self) -> None:
        """Make one new message; send it now if the socket is up and the window open."""
        self.new_message()
        if self.ready and self.conn is not None:
            with contextlib.suppress(Exception):  # a failed send is retried on reconnect
                await self._send_window()

    async def _send_window(self) -> None:
        """Send what is in the window but not yet sent on this connection."""
        while True:
            pending = [m for m in self.in_flight() if m.sent_on != self.generation]
            if not pending:
                return
            for msg in pending:
                await self._send(msg)

    async def _send(self, msg: Msg) -> None:
        if msg.sends:
            self.stats.resends += 1
        msg.sends += 1
        msg.last_sent = now()
        msg.sent_on = self.generation
        await self.send_frame({"type": "message.send", "client_id": msg.client_id, "message": TEXT})

    async def on_open(self) -> None:
        self.last_ack = now()
        await self._send_window()

    async def on_frame(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if kind == "message.ack":
            msg = self.stats.msgs.get(str(frame.get("client_id")))
            if msg is None:
                self.stats.count(self.stats.errors, "ack_unknown")
                return
            if msg.ack_at is None:
                msg.ack_at, msg.ack_id, msg.ack_seq = now(), frame["id"], frame["seq"]
                self.stats.ack_times.append(msg.ack_at)
            elif (msg.ack_id, msg.ack_seq) != (frame["id"], frame["seq"]):
                msg.ack_mismatch += 1
            self.unacked.pop(msg.client_id, None)
            self.last_seq = max(self.last_seq, int(frame["seq"]))
            self.last_ack, self.timeout = now(), self.ack_timeout
            await self._send_window()
        elif kind == "message.new":
            self.last_seq = max(self.last_seq, int(frame["message"]["seq"]))
        elif kind == "sync.done":
            self.last_seq = max(self.last_seq, int(frame["last_seq"]))
        elif kind == "error":
            self.stats.count(self.stats.errors, str(frame.get("code")))
            if frame.get("ref") in self.unacked:
                await asyncio.sleep(0.2)  # the server is failing: back off, then retry
                raise _Drop()

    async def tick(self) -> None:
        sent = [m.last_sent for m in self.in_flight() if m.sent_on == self.generation]
        if sent and now() - max(min(sent), self.last_ack) > self.timeout:
            self.stats.count(self.stats.errors, "ack_timeout")
            self.timeout = min(self.timeout * 2, 30.0)
            raise _Drop()


class Recipient(Peer):
    role = "recipient"

    ping_every = 2.0
    stall_timeout = 10.0  # seconds without a frame before reconnecting

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.high = 0  # every seq up to here delivered, in order
        self.in_sync = False
        self.last_frame = 0.0
        self.last_ping = 0.0

    def after(self) -> int:
        return self.high

    async def on_open(self) -> None:
        self.in_sync = False
        self.last_frame = self.last_ping = now()

    async def on_frame(self, frame: dict[str, Any]) -> None:
        self.last_frame = now()
        kind = frame.get("type")
        if kind == "sync.done":
            self.in_sync = True
        elif kind == "message.new":
            await self._delivered(frame["message"])
        elif kind == "error":
            self.stats.count(self.stats.errors, "recipient_" + str(frame.get("code")))

    async def _delivered(self, message: dict[str, Any]) -> None:
        at = now()
        seq = int(message["seq"])
        if seq <= self.high:
            self.stats.seq_repeats += 1
        elif seq > self.high + 1:
            self.stats.seq_gaps += 1
        self.high = max(self.high, seq)
        msg = self.stats.msgs.get(str(message.get("client_id")))
        if msg is None or msg.pair != self.pair:
            self.stats.foreign += 1
            return
        msg.deliveries += 1
        if msg.deliveries == 1:
            msg.delivered_at = at
            msg.delivered_via = "live" if self.in_sync else "replay"
            self.stats.delivery_times.append(at)

    async def tick(self) -> None:
        t = now()
        if t - self.last_frame > self.stall_timeout:
            self.stats.count(self.stats.errors, "recipient_stall")
            raise _Drop()
        if t - self.last_ping > self.ping_every:
            self.last_ping = t
            await self.send_frame({"type": "ping"})


# --- Running a load ------------------------------------------------------------------------


@dataclass
class Load:
    """``pairs`` sender/recipient pairs, each on one of ``bases`` (spread over them)."""

    bases: list[str]
    pairs: list[tuple[dict[str, Any], dict[str, Any]]]
    churn: tuple[float, float] | None = None
    ack_timeout: float = 3.0
    stats: Stats = field(default_factory=Stats)
    senders: list[Sender] = field(default_factory=list)
    recipients: list[Recipient] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    started: float = 0.0
    sending_ended: float = 0.0

    async def start(self) -> None:
        n = len(self.bases)
        for i, (a, b) in enumerate(self.pairs):
            rng = random.Random(1000 + i)
            sender = Sender(
                self.stats,
                i,
                a,
                b,
                Endpoint(self.bases, i),
                churn=self.churn,
                rng=rng,
                ack_timeout=self.ack_timeout,
            )
            recipient = Recipient(
                self.stats, i, b, a, Endpoint(self.bases, (i + 1) % n), churn=self.churn, rng=rng
            )
            self.senders.append(sender)
            self.recipients.append(recipient)
        self.tasks = [asyncio.create_task(p.run()) for p in [*self.senders, *self.recipients]]
        deadline = now() + 90  # a busy shared machine can take long for many handshakes
        while not all(p.ready for p in [*self.senders, *self.recipients]):
            if now() > deadline:
                raise TimeoutError("clients did not connect within 90 s")
            for task in self.tasks:
                if task.done():
                    task.result()
            await asyncio.sleep(0.05)
        self.started = now()

    async def drive(self, rate: float, seconds: float) -> None:
        """Offer ``rate`` new messages a second, round-robin over the pairs."""
        total = int(rate * seconds)
        start = now()
        for i in range(total):
            wake = start + i / rate
            delay = wake - now()
            if delay > 0:
                await asyncio.sleep(delay)
            await self.senders[i % len(self.senders)].offer()
            for task in self.tasks:
                if task.done():
                    task.result()  # a client crashed: a harness bug, surface it
        self.sending_ended = now()

    def settled(self) -> bool:
        return all(m.ack_at is not None and m.delivered_at is not None for m in self.msgs)

    @property
    def msgs(self) -> list[Msg]:
        return list(self.stats.msgs.values())

    async def drain(self, timeout: float) -> bool:
        """Wait until every message is acked and delivered (at most ``timeout`` s)."""
        deadline = now() + timeout
        while now() < deadline:
            if self.settled():
                # a moment more, so that a late duplicate would still be seen
                await asyncio.sleep(0.5)
                return True
            await asyncio.sleep(0.05)
        return False

    async def stop(self) -> None:
        for peer in [*self.senders, *self.recipients]:
            peer.stopping = True
        _done, pending = await asyncio.wait(self.tasks, timeout=5)
        for task in pending:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


# --- Reconciling with the database -----------------------------------------------------------


def history(base: str, me: dict[str, Any], other: dict[str, Any]) -> list[dict[str, Any]]:
    """Every stored message of the pair's conversation, ascending seq, over HTTP."""
    out: list[dict[str, Any]] = []
    after = 0
    while True:
        url = f"{base}/api/dm/{other['account']}/messages?after={after}&limit=200"
        status, body = http_json("GET", url, token=me["token"])
        if status != 200:
            raise RuntimeError(f"history: {status} {body}")
        out += body["results"]
        if not body["has_more"] or not body["results"]:
            return out
        after = body["results"][-1]["seq"]


def reconcile(load: Load, http_base: str) -> dict[str, Any]:
    """Counts of what was sent, acked, stored and delivered, and every discrepancy."""
    stats = load.stats
    msgs = load.msgs
    stored_total = 0
    stored_dup = 0
    stored_unknown = 0
    seq_gaps_stored = 0
    ack_wrong = 0
    stored_ids: dict[str, dict[str, Any]] = {}
    for i, (a, b) in enumerate(load.pairs):
        rows = history(http_base, b, a)
        seqs = [r["seq"] for r in rows]
        if seqs != list(range(1, len(seqs) + 1)):
            seq_gaps_stored += 1
        for row in rows:
            stored_total += 1
            cid = str(row["client_id"])
            if cid in stored_ids:
                stored_dup += 1
                continue
            stored_ids[cid] = row
            msg = stats.msgs.get(cid)
            if msg is None or msg.pair != i:
                stored_unknown += 1
            elif msg.ack_at is not None and (msg.ack_id, msg.ack_seq) != (row["id"], row["seq"]):
                ack_wrong += 1
    sent = len(msgs)
    acked = sum(m.ack_at is not None for m in msgs)
    delivered = [m for m in msgs if m.delivered_at is not None]
    stored = sum(m.client_id in stored_ids for m in msgs)
    delivery_dups = sum(max(0, m.deliveries - 1) for m in msgs)
    undelivered = [m for m in msgs if m.delivered_at is None][:20]
    lost_detail = [
        {
            "pair": m.pair,
            "index": m.index,
            "seq": m.ack_seq,
            "created_s": round(m.created - load.started, 3),
            "acked_s": None if m.ack_at is None else round(m.ack_at - load.started, 3),
            "recipient_high": load.recipients[m.pair].high,
            "recipient_connections": load.recipients[m.pair].generation,
            "recipient_server": load.recipients[m.pair].endpoint.current,
        }
        for m in undelivered
    ]
    return {
        "lost_detail": lost_detail,
        "sent": sent,
        "acked": acked,
        "stored": stored,
        "stored_rows": stored_total,
        "delivered": len(delivered),
        "delivered_live": sum(m.delivered_via == "live" for m in delivered),
        "delivered_replay": sum(m.delivered_via == "replay" for m in delivered),
        # sent but never stored, or stored but never delivered
        "lost": sent - sum(m.client_id in stored_ids and m.delivered_at is not None for m in msgs),
        "unacked": sent - acked,
        "acked_not_stored": sum(
            m.ack_at is not None and m.client_id not in stored_ids for m in msgs
        ),
        "duplicated": stored_dup + delivery_dups + stats.seq_repeats,
        "duplicated_detail": {
            "stored_twice": stored_dup,
            "delivered_twice": delivery_dups,
            "seq_repeated_on_socket": stats.seq_repeats,
        },
        "out_of_order": stats.seq_gaps,
        "stored_seq_gaps": seq_gaps_stored,
        "stored_unknown": stored_unknown,
        "ack_mismatch": ack_wrong + sum(m.ack_mismatch for m in msgs),
        "foreign_deliveries": stats.foreign,
        "resends": stats.resends,
        "retried_messages": sum(m.sends > 1 for m in msgs),
        "reconnects": dict(stats.reconnects),
        "connect_failures": stats.connect_failures,
        "errors": dict(stats.errors),
        "ack_ms": _summary([(m.ack_at - m.created) for m in msgs if m.ack_at is not None]),
        "delivery_ms": _summary(
            [(m.delivered_at - m.created) for m in msgs if m.delivered_at is not None]
        ),
    }


def _summary(values: list[float]) -> dict[str, float | None]:
    values = sorted(v * 1000 for v in values)
    if not values:
        return {"p50": None, "p99": None, "max": None}

    def pick(q: float) -> float:
        return round(values[min(len(values) - 1, int(q * len(values)))], 1)

    return {"p50": pick(0.5), "p99": pick(0.99), "max": round(values[-1], 1)}


def recovery(load: Load, fault_end: float) -> dict[str, float | None]:
    """Seconds from ``fault_end`` to the first ack / delivery after it, and to catch-up.

    Catch-up: every message created before ``fault_end`` acked and delivered.
    """
    first_ack = min((t for t in load.stats.ack_times if t >= fault_end), default=None)
    first_new = min((t for t in load.stats.delivery_times if t >= fault_end), default=None)
    before = [m for m in load.msgs if m.created < fault_end]
    done = [max(m.ack_at or 0, m.delivered_at or 0) for m in before]
    complete = all(m.ack_at is not None and m.delivered_at is not None for m in before)
    catch_up = max(done, default=fault_end) if complete else None

    def rel(t: float | None) -> float | None:
        return None if t is None else round(max(0.0, t - fault_end), 3)

    return {
        "first_ack_s": rel(first_ack),
        "first_delivery_s": rel(first_new),
        "catch_up_s": rel(catch_up),
    }
