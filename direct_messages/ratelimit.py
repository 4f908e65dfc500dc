"""Sliding-window send limits per user and the typing throttle: in Redis when
configured, so they hold across processes; in process memory otherwise (the embedded,
single-process default).

A send takes its place in the window before it is stored (checked and taken in one
step, so concurrent sends cannot overshoot) and gives it back if it is refused or turns
out to be a retry: only stored messages count.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import defaultdict
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
        self._hits: dict[int, dict[str, float]] = defaultdict(dict)

    def acquire(self, user_id: int, now: float, window: float, limit: int, token: str) -> float:
        """Take a place (0.0), or return the oldest place's time if the window is full."""
        with self._lock:
            hits = self._hits[user_id]
            for old in [t for t, at in hits.items() if at <= now - window]:
                del hits[old]
            if len(hits) >= limit:
                return min(hits.values())
            hits[token] = now
            return 0.0

    def release(self, user_id: int, token: str) -> None:
        with self._lock:
            self._hits[user_id].pop(token, None)

    def clear(self) -> None:
        with self._lock:
            self._hits.clear()


memory_window = _MemoryWindow()

# Check and take a place in one step (so concurrent sends cannot overshoot the limit),
# in one round trip: {1} when taken, {0, oldest} when the window is full.
_ACQUIRE_LUA = """
local now, window = tonumber(ARGV[1]), tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then
    return {0, redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')[2]}
end
redis.call('ZADD', KEYS[1], now, ARGV[4])
redis.call('PEXPIRE', KEYS[1], math.ceil(window * 1000) + 1000)
return {1}
"""


@cache
def _acquire_script() -> Any:
    return _redis().register_script(_ACQUIRE_LUA)


def _key(user_id: int) -> str:
    return f"dm:sendrate:{user_id}"


def send_rate_acquire(user_id: int) -> str | None:
    """Take one of ``user_id``'s places in the window, or raise :class:`RateLimited`.

    Returns the place's token: give it back with :func:`send_rate_release` if the send
    is then refused or turns out to be a retry, so that only stored messages count.
    """
    limit, window = dm_setting("SEND_RATE_LIMIT"), dm_setting("SEND_RATE_WINDOW_SECONDS")
    now, token = time.time(), uuid.uuid4().hex
    if dm_setting("REDIS_URL"):
        try:
            script = _acquire_script()
            taken, *oldest = script(keys=[_key(user_id)], args=[now, window, limit, token])
        except Exception as exc:  # Redis down: fail open, the database still works
            logger.warning("send rate limit skipped, Redis unavailable: %r", exc)
            return None
        first = 0.0 if taken else float(oldest[0])
    else:
        first = memory_window.acquire(user_id, now, window, limit, token)
    if first:
        retry_after = max(1, int(first + window - now + 0.999))
        raise RateLimited(f"at most {limit} messages per {window} seconds", retry_after=retry_after)
    return token


def send_rate_release(user_id: int, token: str | None) -> None:
    if token is None:
        return
    if dm_setting("REDIS_URL"):
        try:
            _redis().zrem(_key(user_id), token)
        except Exception as exc:
            logger.warning("send rate place not given back, Redis unavailable: %r", exc)
    else:
        memory_window.release(user_id, token)


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
