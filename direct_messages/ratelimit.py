"""Sliding-window send limits per user and the typing throttle: in Redis when
configured, so they hold across processes; in process memory otherwise (the embedded,
single-process default).

Only accepted sends are recorded, so refused frames and retries never count.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import defaultdict, deque
from functools import cache
from typing import Any

from direct_messages.conf import dm_setting
from direct_messages.errors import RateLimited

logger = logging.getLogger(__name__)


@cache
def _redis() -> Any:
    import redis

    return redis.Redis.from_url(dm_setting("REDIS_URL"), socket_timeout=0.5)


class _MemoryWindow:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._hits: dict[int, deque[float]] = defaultdict(deque)

    def count(self, user_id: int, now: float, window: float) -> tuple[int, float]:
        with self._lock:
            hits = self._hits[user_id]
            while hits and hits[0] <= now - window:
                hits.popleft()
            return len(hits), (hits[0] if hits else now)

    def add(self, user_id: int, now: float) -> None:
        with self._lock:
            self._hits[user_id].append(now)

    def clear(self) -> None:
        with self._lock:
            self._hits.clear()


memory_window = _MemoryWindow()


def _key(user_id: int) -> str:
    return f"dm:sendrate:{user_id}"


def send_rate_check(user_id: int) -> None:
    """Raise :class:`RateLimited` when ``user_id`` has used up the window."""
    limit, window = dm_setting("SEND_RATE_LIMIT"), dm_setting("SEND_RATE_WINDOW_SECONDS")
    now = time.time()
    if dm_setting("REDIS_URL"):
        try:
            pipe = _redis().pipeline()
            pipe.zremrangebyscore(_key(user_id), 0, now - window)
            pipe.zcard(_key(user_id))
            pipe.zrange(_key(user_id), 0, 0, withscores=True)
            _, count, oldest = pipe.execute()
            first = oldest[0][1] if oldest else now
        except Exception as exc:  # Redis down: fail open, the database still works
            logger.warning("send rate limit skipped, Redis unavailable: %r", exc)
            return
    else:
        count, first = memory_window.count(user_id, now, window)
    if count >= limit:
        retry_after = max(1, int(first + window - now + 0.999))
        raise RateLimited(f"at most {limit} messages per {window} seconds", retry_after=retry_after)


def send_rate_record(user_id: int) -> None:
    now = time.time()
    if dm_setting("REDIS_URL"):
        try:
            pipe = _redis().pipeline()
            pipe.zadd(_key(user_id), {f"{now}:{uuid.uuid4().hex[:8]}": now})
            pipe.expire(_key(user_id), int(dm_setting("SEND_RATE_WINDOW_SECONDS")) + 1)
            pipe.execute()
        except Exception as exc:
            logger.warning("send rate not recorded, Redis unavailable: %r", exc)
    else:
        memory_window.add(user_id, now)


# --- typing ----------------------------------------------------------------------------

_typing_lock = threading.Lock()
_typing_until: dict[str, float] = {}


def _typing_key(room_key: str, user_id: int) -> str:
    return f"dm:typing:{room_key}:{user_id}"


def typing_claim(room_key: str, user_id: int, seconds: float) -> bool:
    """True if ``user_id`` may broadcast typing in ``room_key`` now (and takes the turn);
    False while an earlier broadcast from any of their sockets is under ``seconds`` old."""
    key = _typing_key(room_key, user_id)
    if dm_setting("REDIS_URL"):
        try:
            return bool(_redis().set(key, 1, nx=True, px=max(1, int(seconds * 1000))))
        except Exception as exc:  # Redis down: let typing through rather than lose it
            logger.warning("typing throttle skipped, Redis unavailable: %r", exc)
            return True
    now = time.monotonic()
    with _typing_lock:
        if _typing_until.get(key, 0.0) > now:
            return False
        _typing_until[key] = now + seconds
        if len(_typing_until) > 10_000:  # forget expired turns now and then
            for stale in [k for k, until in _typing_until.items() if until <= now]:
                del _typing_until[stale]
        return True


def typing_release(room_key: str, user_id: int) -> None:
    """Typing stopped: the next start is broadcast at once."""
    key = _typing_key(room_key, user_id)
    if dm_setting("REDIS_URL"):
        try:
            _redis().delete(key)
        except Exception as exc:
            logger.warning("typing throttle not released, Redis unavailable: %r", exc)
        return
    with _typing_lock:
        _typing_until.pop(key, None)
